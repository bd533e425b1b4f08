"""Methods reach the gold reward and its features only through the verifier named an oracle.

`MethodContext.task` and `GenerationContext.task` are `MethodTask` views (bench/tasks/base.py): the
gold reward, the reward's features, the pool's labelling, anything private and the `eval` split
raise `OracleAccessError`. `reward_model: {kind: oracle_features}` is the one way through, and a
cell that took it is marked in its result line (`metrics.oracles`).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.config import StrictParams
from bench.method_api import GenerationContext, MethodContext
from bench.registry import register_method
from bench.tasks.base import MethodTask, OracleAccessError, Sample
from bench.tasks.keywords import KeywordsParams, KeywordsTask
from bench.train.preference import fit_verifier
from bench.train.reward_models import RewardModelSpec

REPO_ROOT = Path(__file__).resolve().parents[1]

ORACLE_MEMBERS = ["gold_reward", "features", "worst_gold_reward", "preference_pool", "pool_metrics"]
"""What the judge and the pool builder read and a method must not: the gold reward, its terms,
its range and the labelling of the pairs (a method gets the labelled pairs in `ctx.pairs`)."""


@pytest.fixture
def task() -> KeywordsTask:
    return KeywordsTask(KeywordsParams(n_train=50, n_valid=10, n_eval=10, pool_size=20))


# `params`, `_score` and `_rng` exist on the keywords task: its reward weights, its scorer and the
# RNG the labels come from. Anything not on the view's allow-list is refused.
@pytest.mark.parametrize("member", [*ORACLE_MEMBERS, "params", "_score", "_rng", "_task"])
def test_the_view_refuses_the_oracles_and_anything_private(task: KeywordsTask, member: str) -> None:
    assert member == "_task" or hasattr(task, member)
    view = MethodTask(task)
    with pytest.raises(OracleAccessError, match=f"cannot read the task's '{member}'"):
        getattr(view, member)
    assert view.oracles_used == []


def test_the_view_refuses_the_evaluation_split(task: KeywordsTask) -> None:
    view = MethodTask(task)
    with pytest.raises(OracleAccessError, match="not 'eval'"):
        view.examples("eval")
    assert view.examples("train", 3) == task.examples("train", 3)
    assert view.examples("valid", 2) == task.examples("valid", 2)


def test_the_view_passes_what_training_needs(task: KeywordsTask) -> None:
    view = MethodTask(task)
    assert view.name == "keywords"
    assert view.min_new_tokens() == task.min_new_tokens()
    assert view.max_new_tokens() == task.max_new_tokens()
    assert view.pool_size() == task.pool_size()
    samples = [Sample("w01 w02", finished=True, n_tokens=3), Sample("w01", False, 7)]
    assert view.validity(samples) == task.validity(samples)
    with pytest.raises(AttributeError, match="read-only"):
        view.gold_reward = lambda prompt, output: 1.0


def test_method_code_names_no_oracle() -> None:
    """No built-in method or the example plugin calls a task's oracle members directly."""
    sources = [*sorted((REPO_ROOT / "methods").glob("*.py"))]
    sources += sorted((REPO_ROOT / "examples").rglob("*.py"))
    for path in sources:
        tree = ast.parse(path.read_text())
        named = {
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in ORACLE_MEMBERS
        }
        assert not named, f"{path.relative_to(REPO_ROOT)} reads {sorted(named)}"


# -- through the runner ----------------------------------------------------------------------------
class ProbeConfig(StrictParams):
    use_oracle: bool = False
    """Also fit the oracle verifier, the named way through."""


def _try_oracles(task: Any) -> dict[str, str]:
    """member -> "refused" or "READ" for each oracle member and the eval split."""
    tried = {}
    for member in ORACLE_MEMBERS:
        try:
            getattr(task, member)
            tried[member] = "READ"
        except OracleAccessError:
            tried[member] = "refused"
    try:
        task.examples("eval")
        tried["examples('eval')"] = "READ"
    except OracleAccessError:
        tried["examples('eval')"] = "refused"
    return tried


def _probe_generate(gen: GenerationContext, cfg: ProbeConfig) -> dict[str, list[Sample]]:
    refused = _try_oracles(gen.task)
    assert set(refused.values()) == {"refused"}, refused
    return {"main": [s[0] for s in gen.backend.generate(gen.policy_dir, gen.prompts, gen.decoding)]}


@register_method("test_oracle_probe", config=ProbeConfig, generate=_probe_generate)
def _probe_train(ctx: MethodContext, cfg: ProbeConfig) -> dict[str, Any]:
    metrics: dict[str, Any] = {"view": type(ctx.task).__name__, "tried": _try_oracles(ctx.task)}
    if cfg.use_oracle:
        _, metrics["rm_train"] = fit_verifier(ctx, RewardModelSpec(kind="oracle_features"))
    ctx.save_base_as_policy()
    return metrics


PROBE_SUITE = """\
name: oracle-probe
version: 1
tier: micro
task:
  name: keywords
  params: {seed: 0, n_train: 100, n_valid: 20, n_eval: 10, pool_size: 20}
base_model: {kind: micro, n_embd: 16, n_layer: 1, n_head: 2, initializer_range: 0.1,
             pretrain_steps: 5, sft_epochs: 1,
             lr: 0.003, batch_size: 32, seed: 0}
budgets: [20]
methods:
  - test_oracle_probe
  - {method: test_oracle_probe, name: probe_with_oracle, use_oracle: true}
generation: {backend: hf, n_eval_prompts: 10, max_new_tokens: 7}
judge: {kind: gold}
seeds: [0]
"""


def test_a_method_reaches_the_oracle_only_by_name(tmp_path: Path) -> None:
    suite = tmp_path / "probe.yaml"
    suite.write_text(PROBE_SUITE)
    results = tmp_path / "results"
    args = ["run", str(suite), "--no-progress", "--threads", "1"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(results)]) == 0
    lines = {
        line["method"]: line
        for line in map(json.loads, (results / "oracle-probe.jsonl").read_text().splitlines())
    }
    for name in ("test_oracle_probe", "probe_with_oracle"):
        train = lines[name]["metrics"]["train"]
        assert train["view"] == "MethodTask"
        assert set(train["tried"].values()) == {"refused"}, train["tried"]
    # The named oracle went through and the cell says so; the probe that did not use it is clean.
    assert len(lines["probe_with_oracle"]["metrics"]["train"]["rm_train"]["weights"]) == 4
    assert lines["probe_with_oracle"]["metrics"]["oracles"] == ["oracle_features"]
    assert lines["test_oracle_probe"]["metrics"]["oracles"] == []


# -- on the leaderboard ----------------------------------------------------------------------------
def test_the_leaderboard_marks_oracle_rows() -> None:
    """The committed micro-lab-smoke v1 lines predate the oracle's name: their `global-linear`
    verifier read the features, so those rows are oracle rows; the learned ones are not."""
    from bench.report.leaderboard import (
        ORACLE_EXPLANATION,
        cell_table,
        gap_table,
        markdown_gap,
        markdown_tables,
    )
    from bench.report.pages import render_html
    from bench.report.results import load_result_file

    lines = [
        line
        for line in load_result_file(REPO_ROOT / "leaderboard/results/micro-lab-smoke.jsonl")
        if line.suite_version == 1
    ]
    table = cell_table(lines)
    oracle_of = dict(zip(table["method"], table["oracle"], strict=True))
    assert oracle_of["online_dpo_linear"] and oracle_of["best_of_n"] and oracle_of["filter"]
    assert not any(oracle_of[m] for m in ("dpo", "online_dpo_full", "best_of_n_full"))
    text = markdown_tables(table)
    rows = {row.split("|")[1].strip() for row in text.splitlines() if row.startswith("| ")}
    assert {"online_dpo_linear (oracle)", "online_dpo_full"} <= rows
    assert "best_of_n (oracle) (16 samples/prompt)" in rows
    assert ORACLE_EXPLANATION in text
    gap_text = markdown_gap(gap_table(lines))
    assert "online_dpo_linear (oracle) - dpo" in gap_text and "online_dpo_full - dpo" in gap_text
    assert "(oracle)</span>" in render_html(lines)


def test_best_of_n_is_shown_beside_its_inference_cost() -> None:
    """Older lines infer N from their variants; new ones record what the backend decoded."""
    from bench.report.leaderboard import (
        COST_EXPLANATION,
        cell_table,
        markdown_tables,
        samples_per_prompt,
    )
    from bench.report.results import load_result_file

    lines = [
        line
        for line in load_result_file(REPO_ROOT / "leaderboard/results/micro-lab-smoke.jsonl")
        if line.suite_version == 2
    ]
    by_method = {line.method: line for line in lines}
    assert samples_per_prompt(by_method["best_of_n_oracle"]) == 16
    assert samples_per_prompt(by_method["dpo"]) == 1
    recorded = by_method["dpo"].model_copy(
        update={"metrics": {**by_method["dpo"].metrics, "eval_samples_per_prompt": 4.0}}
    )
    assert samples_per_prompt(recorded) == 4
    text = markdown_tables(cell_table(lines))
    rows = {row.split("|")[1].strip() for row in text.splitlines() if row.startswith("| ")}
    assert "best_of_n_oracle (oracle) (16 samples/prompt)" in rows and "dpo" in rows
    assert COST_EXPLANATION in text


def test_the_runner_records_the_samples_decoded_per_prompt(tmp_path: Path) -> None:
    suite = tmp_path / "probe.yaml"
    suite.write_text(
        PROBE_SUITE.replace(
            "  - test_oracle_probe\n  - {method: test_oracle_probe, name: probe_with_oracle, "
            "use_oracle: true}\n",
            "  - sft\n  - {method: best_of_n, n: [1, 3], reward_model: {kind: oracle_features}}\n",
        )
    )
    results = tmp_path / "results"
    args = ["run", str(suite), "--no-progress", "--threads", "1"]
    assert main([*args, "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(results)]) == 0
    lines = {
        line["method"]: line
        for line in map(json.loads, (results / "oracle-probe.jsonl").read_text().splitlines())
    }
    assert lines["sft"]["metrics"]["eval_samples_per_prompt"] == 1
    assert lines["best_of_n"]["metrics"]["eval_samples_per_prompt"] == 3
