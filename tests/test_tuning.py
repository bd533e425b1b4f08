"""`pftbench tune` (bench/run/tuning.py): grids, settings, and scores on the valid split."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from bench.config import load_suite
from bench.run import tuning
from bench.run.cache import Cache
from bench.run.runner import Runner

SUITE = """\
name: tune-demo
version: 1
tier: micro
task:
  name: keywords
  params: {seed: 0, n_train: 200, n_valid: 24, n_eval: 30, pool_size: 40}
base_model: {kind: micro, n_embd: 16, n_layer: 1, n_head: 2, initializer_range: 0.1,
             pretrain_steps: 10, sft_epochs: 1, lr: 0.003, batch_size: 32, seed: 0}
budgets: [40]
seeds: [0, 1]
methods:
  - sft
  - {method: dpo, epochs: 1, lr: 0.001}
  - {method: best_of_n, n: [1, 2], reward_model: {kind: oracle_features}}
generation: {backend: hf, n_eval_prompts: 30, max_new_tokens: 7}
judge: {kind: gold}
"""


def test_parse_grid_reads_yaml_values_and_refuses_malformed_items() -> None:
    assert tuning.parse_grid(["lr=3e-4,0.001", "loss=sigmoid,ipo", "x.y=1"]) == {
        "lr": [3e-4, 0.001],
        "loss": ["sigmoid", "ipo"],
        "x.y": [1],
    }
    for bad in (["lr"], ["=1"], ["lr="], ["lr=1", "lr=2"]):
        with pytest.raises(ValueError, match="--grid"):
            tuning.parse_grid(bad)


def test_grid_points_vary_the_first_key_slowest() -> None:
    assert tuning.grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


def test_a_dotted_setting_merges_into_the_nested_block() -> None:
    overrides = {"reward_model": {"kind": "global", "lr": 0.001}, "epochs": 4}
    merged = tuning.with_setting(overrides, {"reward_model.lr": 0.01, "beta": 0.5})
    assert merged == {"reward_model": {"kind": "global", "lr": 0.01}, "epochs": 4, "beta": 0.5}
    assert overrides["reward_model"]["lr"] == 0.001  # the suite's entry is left alone


def test_a_dotted_setting_changes_the_default_block_the_entry_leaves_alone(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUITE.replace(", reward_model: {kind: oracle_features}", ""))
    (entry,) = [e for e in load_suite(tmp_path / "s.yaml").methods if e.name == "best_of_n"]
    tuned = tuning.tuned_entry(entry, {"reward_model.lr": 0.1})
    from bench.train.reward_models import LEARNED_VERIFIER

    expected = {**LEARNED_VERIFIER.model_dump(mode="json"), "lr": 0.1}
    assert tuned.config["reward_model"] == expected


def test_a_setting_the_method_refuses_names_it(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(SUITE)
    entry = next(e for e in load_suite(tmp_path / "s.yaml").methods if e.name == "dpo")
    assert tuning.tuned_entry(entry, {"lr": 0.01}).config["lr"] == 0.01
    with pytest.raises(ValueError, match="dpo: unknown key 'lrr'; allowed keys: "):
        tuning.tuned_entry(entry, {"lrr": 0.01})
    with pytest.raises(ValueError, match="dpo: beta: "):
        tuning.tuned_entry(entry, {"beta": -1.0})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tune")
    (root / "s.yaml").write_text(SUITE)
    suite = load_suite(root / "s.yaml")
    runner = Runner(Cache(root / "cache"), None, progress=False, log=lambda _: None)
    points = tuning.tune(runner, suite, "dpo", {"lr": [0.001, 0.01]})
    return {"root": root, "suite": suite, "runner": runner, "points": points}


def test_each_point_is_scored_on_the_valid_prompts_over_the_seeds(tuned: dict) -> None:
    points = tuned["points"]
    assert [p.setting for p in points] == [{"lr": 0.001}, {"lr": 0.01}]
    for point in points:
        assert point.seeds == [0, 1] and point.budget == "n=40" and point.n_pairs == 40
        # min(n_eval_prompts 30, the 24 valid prompts) on each of 2 seeds
        assert point.winrate.n == 24 and point.winrate.k == 2
        assert point.reward is not None and point.verifier is not None  # DPO's implicit reward
    # The point equal to the suite's own setting trained the suite's own cell: same cache key.
    runner, suite = tuned["runner"], tuned["suite"]
    (own,) = [c for c in suite.cells(["dpo"]) if c.seed == 0]
    same = tuning.tuned_entry(own.method, {"lr": 0.001})
    assert same == own.method
    assert Cache(tuned["root"] / "cache").path("models", runner.keys(own).policy).is_dir()


def test_the_valid_evaluation_is_cached_and_judged_on_valid_references(tuned: dict) -> None:
    runner, suite = tuned["runner"], tuned["suite"]
    (cell,) = [c for c in suite.cells(["dpo"]) if c.seed == 1]
    first = tuning.valid_evaluation(runner, cell, None)
    again = tuning.valid_evaluation(runner, cell, None)
    assert first["outcomes"] == again["outcomes"] and len(first["outcomes"]) == 24
    task = runner.task(suite)
    valid = task.examples("valid", 24)
    # The gold judge's score of each output is its gold reward on the valid prompt.
    assert all(
        score is None or score <= task.optimal_reward(example.prompt) + 1e-9
        for score, example in zip(first["scores"], valid, strict=True)
    )


def test_a_method_with_a_generate_hook_is_scored_through_it(tuned: dict) -> None:
    points = tuning.tune(tuned["runner"], tuned["suite"], "best_of_n", {"n": [[1, 2]]}, seeds=[0])
    (point,) = points
    assert point.verifier is not None and point.verifier > 0.5  # the oracle on valid pairs


def test_the_cli_prints_the_table_and_marks_the_best(tuned: dict, capsys) -> None:
    root = tuned["root"]
    out = root / "table.md"
    args = ["tune", str(root / "s.yaml"), "--method", "dpo", "--grid", "lr=0.001,0.01"]
    args += ["--cache-dir", str(root / "cache"), "--no-progress", "--out", str(out)]
    assert main(args) == 0
    text = out.read_text()
    assert "## tune-demo v1: dpo on the valid split" in text
    assert "Grid (2 points): lr in [0.001, 0.01]. Chosen by reward on the valid split." in text
    assert text.count("| best |") == 1
    assert text in capsys.readouterr().out
    assert main(["tune", str(root / "s.yaml"), "--method", "dpo", "--grid", "lr"]) == 2
    assert main(["tune", str(root / "s.yaml"), "--method", "nope", "--grid", "lr=1"]) == 2
    err = capsys.readouterr().err
    assert "pftbench tune: --grid 'lr': expected KEY=VALUE[,VALUE...]" in err
    assert "no method entry 'nope'; entries: sft, dpo, best_of_n" in err
