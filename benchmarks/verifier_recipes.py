"""Learned-verifier recipes on the micro tier (issue 11, item 1): prints a table, asserts nothing.

    python benchmarks/verifier_recipes.py [--seeds 0] [--budgets 250 1000] [--variants NAME ...]
        [--task KEY=VALUE ...] [--base KEY=VALUE ...] [--cache-dir DIR]

Builds (or reuses, from the cache) the base policy of `suites/micro/lab_keywords.yaml`, its pair
pool and its 500 held-out pairs on the `valid` prompts, exactly as the runner does, then trains
each verifier variant on the first n pairs of the pool and prints its held-out accuracy and mean
Bradley-Terry likelihood (`pair_metrics`) with the seconds its fit took. `--task` and `--base`
override a task parameter or a field of the base model's config (`--task n_train=10000` gives
the base before issue 11, `--base sft_epochs=2` a shorter SFT), so base recipes are compared on
their own pools. The committed results: `verifier_recipes.md`. No
variant reads the gold reward or `Task.features`: the oracle `kind: oracle_features` is left out on
purpose.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.config import load_suite
from bench.run.cache import Cache
from bench.run.runner import Runner
from bench.run.stage_store import METADATA_FILE
from bench.train.reward_models import (
    LogProbRewardModel,
    RewardModelSpec,
    pair_metrics,
    train_reward_model,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SUITE = REPO_ROOT / "suites/micro/lab_keywords.yaml"


def _logp(capacity: str, lr: float, epochs: float, **extra: Any) -> dict[str, Any]:
    """A `readout: logp` verifier's spec."""
    spec = {"kind": "global", "capacity": capacity, "readout": "logp", "lr": lr, "epochs": epochs}
    return spec | extra


VARIANTS: dict[str, dict[str, Any] | None] = {
    "zero-shot log pi_SFT": None,
    "global full (paper RM), lr 1e-3, 2 ep": {"kind": "global", "capacity": "full"},
    "global head, lr 1e-2, 8 ep": {"kind": "global", "capacity": "head", "lr": 1e-2, "epochs": 8},
    "local, lr 1e-3, 2 ep": {"kind": "local"},
    "local, lr 3e-4, 4 ep": {"kind": "local", "lr": 3e-4, "epochs": 4},
    "logp head, lr 1e-2, 8 ep": _logp("head", 1e-2, 8),
    "logp head, lr 3e-2, 2 ep": _logp("head", 3e-2, 2),
    "logp head, lr 3e-2, 8 ep": _logp("head", 3e-2, 8),
    "logp head, lr 3e-2, 16 ep": _logp("head", 3e-2, 16),
    "logp head, lr 1e-1, 8 ep": _logp("head", 1e-1, 8),
    "logp head+residual, lr 1e-2, 8 ep": _logp("head", 1e-2, 8, residual=True),
    "logp head+residual, lr 3e-2, 8 ep": _logp("head", 3e-2, 8, residual=True),
    "logp full, lr 1e-4, 4 ep": _logp("full", 1e-4, 4),
    "logp full, lr 3e-4, 4 ep": _logp("full", 3e-4, 4),
    "logp full, lr 1e-3, 2 ep": _logp("full", 1e-3, 2),
    "logp full+residual, lr 3e-4, 4 ep": _logp("full", 3e-4, 4, residual=True),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--base", nargs="*", default=[], help="KEY=VALUE base-model overrides")
    parser.add_argument("--task", nargs="*", default=[], help="KEY=VALUE task-param overrides")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/pftbench-verifier-cache"))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    overrides = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.base)}
    task_overrides = {k: ast.literal_eval(v) for k, v in (i.split("=", 1) for i in args.task)}
    suite = load_suite(SUITE)
    if task_overrides:
        params = {**suite.task.params, **task_overrides}
        suite = suite.model_copy(update={"task": suite.task.model_copy(update={"params": params})})
    if overrides:
        base_model = suite.base_model.model_copy(update=overrides)
        suite = suite.model_copy(update={"base_model": base_model})
    runner = Runner(Cache(args.cache_dir), None, progress=False, log=lambda _: None)
    task = runner.task(suite)
    print(f"task overrides: {task_overrides or 'none'}; base overrides: {overrides or 'none'}")
    print("| variant | seed | pairs | held-out accuracy | BT likelihood | fit s |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        # The largest budget's cell: its pairs are the whole pool, and every budget a prefix.
        cell = max((c for c in suite.cells() if c.seed == seed), key=lambda c: c.budget.count or 0)
        start = time.perf_counter()
        base_dir = runner.base_model_dir(cell)
        pool, heldout = runner.pairs(cell), runner.heldout_pairs(cell)
        setup_s = time.perf_counter() - start
        build = json.loads((base_dir / METADATA_FILE).read_text())["metrics"]
        print(
            f"<!-- seed {seed}: base, pool and held-out pairs ready in {setup_s:.1f} s; base "
            f"build {build['warmup_train_wall_s'] + build['sft_train_wall_s']:.1f} s training, "
            f"greedy gold reward {build['greedy_gold_reward']:.3f} -->",
            flush=True,
        )
        for name in args.variants:
            for budget in args.budgets:
                start = time.perf_counter()
                spec = VARIANTS[name]
                if spec is None:
                    from bench.train.modeling import load_causal_lm, load_tokenizer

                    model: Any = LogProbRewardModel(
                        load_causal_lm(base_dir).eval(), load_tokenizer(base_dir)
                    )
                else:
                    model, _ = train_reward_model(
                        RewardModelSpec(**spec),
                        task,
                        pool[:budget],
                        base_dir,
                        seed,
                        progress=False,
                    )
                fit_s = time.perf_counter() - start
                metrics = pair_metrics(model, heldout)
                print(
                    f"| {name} | {seed} | {budget} | {metrics['accuracy']:.3f} | "
                    f"{metrics['bt_likelihood']:.3f} | {fit_s:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
