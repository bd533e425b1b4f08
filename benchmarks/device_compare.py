"""Do a run's result lines agree with the committed ones of the same cells? Prints, asserts nothing.

    python benchmarks/device_compare.py FRESH.jsonl [FRESH.jsonl ...] [--baseline-dir DIR]

Written for the GPU check (`benchmarks/device_check.sh`): its lines, computed on CUDA, against
the committed lines, computed on CPU. Each fresh line is matched with the committed line of the
same config hash (same suite version, resolved config, budget and seed) and the script prints,
per cell: both winrates with their 95% intervals, the paired difference fresh - committed over
the same evaluation prompts (`bench.report.stats.crossed_difference` with one seed: the
interval covers that difference on fresh prompts, not a fresh seed), both mean gold rewards,
and how many prompts got another verdict. "agrees" means the difference's interval contains 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.report.regression import Baseline
from bench.report.results import latest_per_cell, load_result_file
from bench.report.stats import crossed_difference, verdict_scores

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fresh", nargs="+", type=Path, help="result files of the run to compare")
    parser.add_argument("--baseline-dir", type=Path, default=REPO_ROOT / "leaderboard/results")
    args = parser.parse_args(argv)
    baseline = Baseline.snapshot(args.baseline_dir)
    print(
        f"{'cell':44} {'fresh winrate':>22} {'committed':>22} {'fresh - committed':>24} "
        f"{'gold reward fresh / committed':>30} {'verdicts moved':>15}"
    )
    for path in args.fresh:
        for line in latest_per_cell(load_result_file(path)):
            cell = f"{line.suite} {line.method}[{line.budget},seed={line.seed}]"
            committed = baseline.by_config_hash.get(line.config_hash)
            if committed is None:
                print(f"{cell:44} no committed line with config {line.config_hash[:12]}")
                continue
            diff = crossed_difference(
                verdict_scores(line.outcomes),
                verdict_scores(committed.outcomes),
                bounds=(-1.0, 1.0),
            )
            moved = sum(a != b for a, b in zip(line.outcomes, committed.outcomes, strict=True))
            agrees = "agrees" if diff.low <= 0 <= diff.high else "DIFFERS"
            print(
                f"{cell:44} {_interval(line.winrate, line.ci_low, line.ci_high):>22} "
                f"{_interval(committed.winrate, committed.ci_low, committed.ci_high):>22} "
                f"{_interval(diff.value, diff.low, diff.high, signed=True):>24} "
                f"{_reward(line.mean_reward)} / {_reward(committed.mean_reward):<14} "
                f"{moved:>4} of {len(line.outcomes)}  {agrees}"
            )
    return 0


def _interval(value: float, low: float, high: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value:{sign}.3f} [{low:{sign}.3f}, {high:{sign}.3f}]"


def _reward(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
