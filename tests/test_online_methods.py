"""The online methods (online DPO, best-of-N, filter) end to end through the CLI on a seconds-long
micro suite, what their result lines report (verifier accuracy, KL, the compute counters,
BoN@N variants), best-of-N's nesting through its `generate` hook, determinism, and the
one-line config error for a bad verifier key.

The suite is tests/conftest.py's tiny suite made smaller (width 16, 200 training documents, 40
pairs, 40 held-out pairs, 30 evaluation prompts), so the base policy is weak: these tests check
the plumbing and the accounting, not which method wins.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.config import Cell, load_suite
from bench.evaluate.backends.hf import HFBackend, HFParams
from bench.evaluate.generation import Decoding
from bench.method_api import COUNTERS, GenerationContext, load_saved_verifier
from bench.registry import METHODS
from bench.run.cache import Cache
from bench.run.diagnostics import estimate_kl
from bench.run.runner import Runner
from bench.tasks.keywords import KeywordsParams, KeywordsTask
from bench.train.reward_models import pair_metrics, score_samples

# The online methods' suite, run once, then inspected.
pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("one_torch_thread")]

ONLINE_SUITE = """\
name: tiny-online
version: 1
tier: micro
description: A seconds-long micro suite for the online methods.
task:
  name: keywords
  params: {seed: 0, n_train: 200, n_valid: 40, n_eval: 30, pool_size: 40}
base_model:
  kind: micro
  n_embd: 16
  n_layer: 1
  n_head: 2
  initializer_range: 0.1
  pretrain_steps: 10
  sft_epochs: 1
  lr: 0.003
  batch_size: 32
  seed: 0
budgets: [40]
methods:
  - sft
  - method: dpo
    epochs: 1
  - method: online_dpo
    name: online_dpo_oracle
    reward_model: {kind: oracle_features}
    rounds: 2
    samples: 4
    epochs: 1
  - method: online_dpo
    name: online_dpo_implicit
    init: dpo
    init_dpo: {epochs: 1}
    reward_model: {kind: dpo, epochs: 1}
    samples: 4
    epochs: 1
  - method: best_of_n
    n: [1, 2, 4]
    reward_model: {kind: oracle_features}
  - method: filter
    n: 4
    epochs: 1
    reward_model: {kind: oracle_features}
generation:
  backend: hf
  n_eval_prompts: 30
  max_new_tokens: 7
judge:
  kind: gold
seeds: [0]
"""
N_PAIRS, N_VALID, N_EVAL = 40, 40, 30
TRAINED = ["sft", "dpo", "online_dpo_oracle", "online_dpo_implicit", "filter"]
WITH_VERIFIER = ["dpo", "online_dpo_oracle", "online_dpo_implicit", "best_of_n", "filter"]


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


def result_lines(results_dir: Path) -> dict[str, dict]:
    lines = [
        json.loads(line)
        for f in sorted(results_dir.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    return {line["method"]: line for line in lines}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The whole suite run once through the CLI; its suite file, cache and result lines."""
    root = tmp_path_factory.mktemp("online")
    suite = root / "suites" / "online.yaml"
    suite.parent.mkdir()
    suite.write_text(ONLINE_SUITE)
    cache, results = root / "cache", root / "results"
    rc = run_cli("run", suite, "--cache-dir", cache, "--results-dir", results, "--no-progress")
    assert rc == 0
    return {"suite": suite, "cache": cache, "lines": result_lines(results), "root": root}


def cell_of(suite_path: Path, method: str) -> Cell:
    (cell,) = load_suite(suite_path).cells([method])
    return cell


def test_every_method_has_a_result_line(lab: dict[str, Any]) -> None:
    lines = lab["lines"]
    assert sorted(lines) == sorted([*TRAINED, "best_of_n"])
    for line in lines.values():
        assert line["n_pairs"] == N_PAIRS
        assert line["n"] + line["n_failed"] == N_EVAL  # invalid outputs are in n (losses)
        assert len(line["outcomes"]) == N_EVAL
        assert line["metrics"]["counters"]["pairs_used"] == N_PAIRS
        assert "diagnostics" in line["timings"]


def test_verifier_metrics_on_held_out_pairs(lab: dict[str, Any]) -> None:
    lines = lab["lines"]
    assert "reward_model" not in lines["sft"]["metrics"]  # sft trains no verifier
    runner = Runner(Cache(lab["cache"]), None, progress=False, log=lambda _: None)
    valid_prompts = {e.prompt for e in runner.task(load_suite(lab["suite"])).examples("valid")}
    for method in WITH_VERIFIER:
        reported = lines[method]["metrics"]["reward_model"]
        assert set(reported) == {"accuracy", "bt_likelihood", "n"}
        # HELDOUT_PAIRS is 500, but the task has only 40 valid prompts: one pair each.
        assert reported["n"] == N_VALID
        assert 0 <= reported["accuracy"] <= 1 and 0 < reported["bt_likelihood"] < 1

        # Recomputed here: the verifier the method saved, on the held-out pairs of the valid
        # split (never the training pool's prompts).
        cell = cell_of(lab["suite"], method)
        heldout = runner.heldout_pairs(cell)
        assert {p.prompt for p in heldout} <= valid_prompts
        policy_dir = Cache(lab["cache"]).path("models", runner.keys(cell).policy)
        verifier = load_saved_verifier(policy_dir, runner.task(cell.suite))
        assert verifier is not None
        assert pair_metrics(verifier, heldout) == pytest.approx(reported)
    sft_dir = Cache(lab["cache"]).path("models", runner.keys(cell_of(lab["suite"], "sft")).policy)
    assert load_saved_verifier(sft_dir, runner.task(load_suite(lab["suite"]))) is None

    # The oracle verifier is the one online_dpo_oracle, best_of_n and filter share (same spec,
    # same pairs, deterministic Newton fit): the same figures.
    oracle = lines["online_dpo_oracle"]["metrics"]
    assert oracle["train"]["reward_model"] == "oracle-features"
    assert len(oracle["train"]["rm_train"]["weights"]) == 4
    for method in ("best_of_n", "filter"):
        assert lines[method]["metrics"]["reward_model"] == oracle["reward_model"]
    assert lines["online_dpo_implicit"]["metrics"]["train"]["reward_model"] == "dpo"


def test_a_cell_that_reached_the_oracle_is_marked_one(lab: dict[str, Any]) -> None:
    lines = lab["lines"]
    for method in ("online_dpo_oracle", "best_of_n", "filter"):
        assert lines[method]["metrics"]["oracles"] == ["oracle_features"], method
    for method in ("sft", "dpo", "online_dpo_implicit"):
        assert lines[method]["metrics"]["oracles"] == [], method


def test_kl_is_reported_for_trained_policies_only(lab: dict[str, Any]) -> None:
    lines = lab["lines"]
    for method in TRAINED:
        kl = lines[method]["metrics"]["kl"]
        assert set(kl) == {"kl", "kl_stderr", "n"}
        assert kl["n"] == N_EVAL  # min(KL_PROMPTS = 200, 30 evaluation prompts)
        assert math.isfinite(kl["kl"]) and kl["kl_stderr"] >= 0
    # best-of-N's policy is the SFT policy plus a reranker: KL of a policy does not describe it.
    assert "kl" not in lines["best_of_n"]["metrics"]
    # SFT with epochs 0 *is* the reference: log pi - log pi_ref is 0 on every sample.
    assert lines["sft"]["metrics"]["kl"] == {"kl": 0.0, "kl_stderr": 0.0, "n": N_EVAL}
    # A trained policy moved away from it (its per-sample log-ratios are not all 0).
    for method in ("dpo", "online_dpo_oracle", "online_dpo_implicit", "filter"):
        assert lines[method]["metrics"]["kl"]["kl_stderr"] > 0


def test_kl_estimate_is_not_below_zero(lab: dict[str, Any]) -> None:
    """KL >= 0, so an unbiased estimate is not many standard errors below 0. 20 samples on each
    of the 30 evaluation prompts of the trained online policy: sd about 0.002."""
    cell = cell_of(lab["suite"], "online_dpo_oracle")
    runner = Runner(Cache(lab["cache"]), None, progress=False, log=lambda _: None)
    keys = runner.keys(cell)
    prompts = [e.prompt for e in runner.task(cell.suite).examples("eval", N_EVAL)] * 20
    kl = estimate_kl(
        Cache(lab["cache"]).path("models", keys.policy),
        Cache(lab["cache"]).path("models", keys.base),
        prompts,
        Decoding(max_new_tokens=7, min_new_tokens=2, seed=0),
        seed=0,
    )
    assert kl["n"] == 600
    assert kl["kl"] > -3 * kl["kl_stderr"], kl


STAGE_SECONDS = ("verifier_fit_s", "sample_s", "score_s", "train_s")


def test_every_method_counts_its_compute(lab: dict[str, Any]) -> None:
    """Each line records every counter (bench.method_api.COUNTERS), each what that method's
    work adds up to: samples = prompts x samples x rounds, one verifier query per sample, the
    tokens its training loops report, and stage seconds inside the training stage's time."""
    # The 40 pool pairs are on the first 40 training documents, all distinct: 40 prompts.
    task = KeywordsTask(KeywordsParams(n_train=200, n_valid=40, n_eval=30, pool_size=40))
    assert len({e.prompt for e in task.examples("train", N_PAIRS)}) == N_PAIRS
    lines = lab["lines"]
    for method, line in lines.items():
        counters = line["metrics"]["counters"]
        assert set(counters) == set(COUNTERS), method
        assert counters["pairs_used"] == N_PAIRS
        assert all(counters[stage] >= 0 for stage in STAGE_SECONDS), method
        assert sum(counters[stage] for stage in STAGE_SECONDS) <= line["timings"]["train"]

    def counted(method: str) -> dict[str, float]:
        counters = lines[method]["metrics"]["counters"]
        return {k: v for k, v in counters.items() if k not in STAGE_SECONDS}

    # online_dpo_oracle: R = 2 rounds x K = 4 samples x 40 prompts = 320 samples, each scored
    # once; the policy's tokens are its two rounds' loops'; the oracle trains no tokens.
    oracle = lines["online_dpo_oracle"]["metrics"]
    rounds = oracle["train"]["rounds"]
    assert len(rounds) == 2 and all(0 < r["pairs_built"] <= 40 for r in rounds)
    assert counted("online_dpo_oracle") == {
        "pairs_used": 40,
        "samples_generated": 320,
        "rm_queries": 320,
        "tokens_trained": sum(r["train_tokens"] for r in rounds),
        "verifier_tokens_trained": 0,
    }
    assert min(r["train_tokens"] for r in rounds) > 0
    assert min(oracle["counters"][stage] for stage in ("sample_s", "train_s")) > 0

    # online_dpo_implicit: 1 round x 4 samples x 40 prompts; init from offline DPO, whose
    # ceil(40 / 32) = 2 steps of one epoch are the policy's too; its `dpo` verifier is a DPO
    # policy of its own, whose tokens are the verifier's.
    implicit = lines["online_dpo_implicit"]["metrics"]
    assert implicit["train"]["init_dpo"]["train_steps"] == 2
    (round_report,) = implicit["train"]["rounds"]
    assert counted("online_dpo_implicit") == {
        "pairs_used": 40,
        "samples_generated": 160,
        "rm_queries": 160,
        "tokens_trained": implicit["train"]["init_dpo"]["train_tokens"]
        + round_report["train_tokens"],
        "verifier_tokens_trained": implicit["train"]["rm_train"]["train_tokens"],
    }
    assert implicit["counters"]["verifier_fit_s"] > 0

    # filter: N = 4 samples x 40 prompts, once; it keeps at most one per prompt.
    filtered = lines["filter"]["metrics"]
    assert 0 < filtered["train"]["kept"] <= 40
    assert counted("filter") == {
        "pairs_used": 40,
        "samples_generated": 160,
        "rm_queries": 160,
        "tokens_trained": filtered["train"]["train_tokens"],
        "verifier_tokens_trained": 0,
    }

    # Offline DPO samples nothing and queries no verifier; SFT at epochs 0 does nothing at all;
    # best-of-N trains nothing here, its samples are at inference (4 per evaluation prompt).
    none = {name: 0 for name in COUNTERS if name not in STAGE_SECONDS}
    assert counted("dpo") == {
        **none,
        "pairs_used": 40,
        "tokens_trained": lines["dpo"]["metrics"]["train"]["train_tokens"],
    }
    assert lines["dpo"]["metrics"]["counters"]["train_s"] > 0
    assert lines["sft"]["metrics"]["counters"] == {**dict.fromkeys(COUNTERS, 0), "pairs_used": 40}
    assert counted("best_of_n") == {**none, "pairs_used": 40}
    assert lines["best_of_n"]["metrics"]["eval_samples_per_prompt"] == 4
    for method in TRAINED:
        assert lines[method]["metrics"]["eval_samples_per_prompt"] == 1


def test_best_of_n_variants_are_judged(lab: dict[str, Any]) -> None:
    lines = lab["lines"]
    variants = lines["best_of_n"]["metrics"]["variants"]
    assert sorted(variants) == ["n=1", "n=2", "n=4"]
    for variant in variants.values():
        assert len(variant["outcomes"]) == N_EVAL
        winrate = variant["winrate"]
        assert winrate["n"] + variant["outcomes"].count("F") == N_EVAL
        assert winrate["low"] <= winrate["value"] <= winrate["high"]
    # The headline is the largest N.
    assert lines["best_of_n"]["outcomes"] == variants["n=4"]["outcomes"]
    for method in TRAINED:
        assert lines[method]["metrics"]["variants"] == {}


def test_best_of_n_is_nested(lab: dict[str, Any]) -> None:
    """Through the `generate` hook: BoN@1 is the first of the N samples, BoN@n picks among the
    first n, so the verifier's score of the pick never falls as n grows; and the runner judged
    exactly these outputs."""
    cell = cell_of(lab["suite"], "best_of_n")
    runner = Runner(Cache(lab["cache"]), None, progress=False, log=lambda _: None)
    task = runner.task(cell.suite)
    policy_dir = Cache(lab["cache"]).path("models", runner.keys(cell).policy)
    prompts = [e.prompt for e in task.examples("eval", N_EVAL)]
    # The suite's evaluation decoding (greedy; the hook samples at its own temperature).
    decoding = Decoding(max_new_tokens=7, min_new_tokens=2, seed=0)
    entry = METHODS.get("best_of_n")
    cfg = entry.config(**cell.method.config)
    gen = GenerationContext(policy_dir, task, prompts, decoding, HFBackend(HFParams()))
    variants = entry.generate(gen, cfg)
    assert sorted(variants) == ["main", "n=1", "n=2", "n=4"]
    assert variants["main"] == variants["n=4"]

    # The same N = 4 samples drawn here: T = 0.7 (the config's), the eval seed and length limits.
    samples = HFBackend(HFParams()).generate(
        policy_dir,
        prompts,
        Decoding(max_new_tokens=7, n=4, temperature=0.7, min_new_tokens=2, seed=0),
    )
    verifier = load_saved_verifier(policy_dir, task)
    assert verifier is not None
    scores = score_samples(verifier, prompts, samples)
    assert variants["n=1"] == [group[0] for group in samples]
    for i, group in enumerate(samples):
        picks = {n: variants[f"n={n}"][i] for n in (1, 2, 4)}
        assert picks[2] in group[:2]
        pick_score = {n: scores[i][group.index(picks[n])] for n in (1, 2, 4)}
        assert pick_score[2] == max(scores[i][:2])
        assert pick_score[4] == max(scores[i])
        assert pick_score[1] <= pick_score[2] <= pick_score[4]
    # Not vacuous: on some prompt the verifier preferred a later sample to the first.
    assert any(variants["n=4"][i] != samples[i][0] for i in range(N_EVAL))

    # The runner judged these very outputs: each variant's mean gold reward, recomputed, an
    # invalid output at the task's worst gold reward (as in the headline mean reward).
    judged = lab["lines"]["best_of_n"]["metrics"]["variants"]
    for n in (1, 2, 4):
        rewards = [
            task.gold_reward(p, s.text) if s.finished else None
            for p, s in zip(prompts, variants[f"n={n}"], strict=True)
        ]
        floored = [task.worst_gold_reward() if r is None else r for r in rewards]
        assert judged[f"n={n}"]["mean_reward"] == pytest.approx(sum(floored) / len(floored))


def test_the_same_online_cell_twice_in_fresh_caches_is_identical(lab: dict[str, Any]) -> None:
    root = lab["root"]
    args = ("run", lab["suite"], "--method", "online_dpo_oracle", "--no-progress")
    assert run_cli(*args, "--cache-dir", root / "cache2", "--results-dir", root / "results2") == 0
    first = lab["lines"]["online_dpo_oracle"]
    (second,) = result_lines(root / "results2").values()
    assert second["outcomes"] == first["outcomes"]
    assert second["rewards"] == first["rewards"]
    for key in ("kl", "reward_model"):
        assert second["metrics"][key] == first["metrics"][key]
    # Every count is the same; only the wall seconds differ.
    counts = [
        {k: v for k, v in line["metrics"]["counters"].items() if k not in STAGE_SECONDS}
        for line in (first, second)
    ]
    assert counts[0] == counts[1]
    assert second["metrics"]["train"]["rounds"] == first["metrics"]["train"]["rounds"]
    # The trained policies themselves are bit-identical.
    cell = cell_of(lab["suite"], "online_dpo_oracle")
    key = Runner(Cache(lab["cache"]), None).keys(cell).policy
    weights = [
        (cache / "models" / key / "model.safetensors").read_bytes()
        for cache in (lab["cache"], root / "cache2")
    ]
    assert weights[0] == weights[1]


def test_validate_names_a_bad_verifier_key_in_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        ONLINE_SUITE.replace(
            "reward_model: {kind: dpo, epochs: 1}", "reward_model: {kind: dpo, epochz: 1}"
        )
    )
    assert run_cli("validate", bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err
    assert "methods[3].reward_model.epochz" in err
    assert "epochs" in err  # the allowed keys are listed
    assert "Traceback" not in err


def test_validate_names_a_bad_verifier_value(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad_value.yaml"
    bad.write_text(
        ONLINE_SUITE.replace(
            "    n: [1, 2, 4]\n    reward_model: {kind: oracle_features}\n",
            "    n: [1, 2, 4]\n    reward_model: {capacity: probe}\n",
        )
    )
    assert run_cli("validate", bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "methods[4].reward_model.capacity" in err and "'head'" in err
