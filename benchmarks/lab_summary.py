"""Summarise the generation-verification-gap lab from its result lines.

    python benchmarks/lab_summary.py [--results-dir leaderboard/results] [SUITE ...]

Prints, per lab suite: winrates pooled over seeds (method x budget), the paired difference of
every online method against offline DPO (seeds x prompts, 95% CI: the H6 test), each verifier's
held-out accuracy and Bradley-Terry likelihood, KL(policy || SFT) and output length, and the
BoN@N curve; then the views of `bench.report.views` over the chosen suites: the verifiers with
seed intervals, mean reward against KL, Tajwar et al.'s 2x2 where a suite has it, and compute.
Everything is recomputed from the per-prompt outcomes the result lines keep.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from bench.evaluate.verdicts import outcomes_from_string
from bench.report import views
from bench.report.power import minimum_detectable_effect
from bench.report.results import ResultLine, latest_per_cell, load_results
from bench.report.stats import WINRATE_BOUNDS, crossed_mean, verdict_scores
from bench.report.summary import difference, pool

OFFLINE = "dpo"
LAB_SUITES = ("micro-lab-keywords", "micro-lab-bandit", "micro-lab-hidden", "micro-lab-smoke")


def mean_of(values: list[float | None]) -> str:
    present = [v for v in values if v is not None]
    return f"{statistics.mean(present):.3f}" if present else "-"


def summarise(lines: list[ResultLine], suite: str) -> None:
    lines = [line for line in latest_per_cell(lines) if line.suite == suite]
    if not lines:
        return
    cells: dict[tuple[str, str], dict[int, ResultLine]] = defaultdict(dict)
    for line in lines:
        cells[(line.method, line.budget)][line.seed] = line
    methods = list(dict.fromkeys(line.method for line in lines))
    budgets = sorted(
        {line.budget for line in lines},
        key=lambda b: next(x.n_pairs for x in lines if x.budget == b),
    )
    print(f"\n## {suite} (v{lines[0].suite_version}, judge {lines[0].judge['id']})\n")
    print(
        "Winrate against the references (invalid outputs lost), pooled over seeds (95% CI, "
        "crossed seeds x prompts):\n"
    )
    print("| method | " + " | ".join(budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for method in methods:
        row = []
        for budget in budgets:
            by_seed = cells.get((method, budget), {})
            if not by_seed:
                row.append("-")
                continue
            estimate = pool([by_seed[s] for s in sorted(by_seed)]).winrate
            row.append(
                f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
                if estimate
                else "-"
            )
        print(f"| {method} | " + " | ".join(row) + " |")

    print(f"\nOnline minus offline ({OFFLINE}), paired over the same prompts and seeds:\n")
    print("| method | " + " | ".join(budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for method in methods:
        if method in (OFFLINE, "sft"):
            continue
        row = []
        for budget in budgets:
            mine, theirs = cells.get((method, budget), {}), cells.get((OFFLINE, budget), {})
            seeds = sorted(set(mine) & set(theirs))
            if not seeds:
                row.append("-")
                continue
            diff = difference([mine[s] for s in seeds], [theirs[s] for s in seeds])
            if diff is None:
                row.append("-")
                continue
            mark = " *" if diff.low > 0 else (" (-)" if diff.high < 0 else "")
            mark += "" if diff.decidable else " ?"
            row.append(
                f"{diff.value:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]{mark} "
                f"(MDE {minimum_detectable_effect(diff):.3f})"
            )
        print(f"| {method} | " + " | ".join(row) + " |")
    print(
        "\n`*`: the CI lies above 0; `(-)`: below 0; `?`: undecidable (fewer than 3 seeds). "
        "MDE: the difference this design detects with 80% power (bench.report.power)."
    )

    print(
        "\nDiagnostics, mean over seeds: the verifier's held-out accuracy and BT likelihood, "
        "KL(policy || SFT), output length (tokens), gold reward:\n"
    )
    print("| method | budget | RM accuracy | RM BT likelihood | KL | length | reward |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        for budget in budgets:
            by_seed = list(cells.get((method, budget), {}).values())
            if not by_seed:
                continue

            rm = (line.metrics.get("reward_model") or {} for line in by_seed)
            rm = list(rm)
            kl = [(line.metrics.get("kl") or {}).get("kl") for line in by_seed]
            cols = [
                mean_of([r.get("accuracy") for r in rm]),
                mean_of([r.get("bt_likelihood") for r in rm]),
                mean_of(kl),
                mean_of([line.metrics.get("mean_length_tokens") for line in by_seed]),
                mean_of([line.mean_reward for line in by_seed]),
            ]
            print(f"| {method} | {budget} | " + " | ".join(cols) + " |")

    curves = [line for line in lines if line.metrics.get("variants")]
    if curves:
        print("\nBest-of-N curve (winrate pooled over seeds):\n")
        ns = sorted(
            {name for line in curves for name in line.metrics["variants"]},
            key=lambda n: int(n.split("=")[1]),
        )
        print("| method | budget | " + " | ".join(f"BoN@{n.split('=')[1]}" for n in ns) + " |")
        print("|---|---|" + "---|" * len(ns))
        for method in methods:
            for budget in budgets:
                by_seed = [
                    line
                    for line in cells.get((method, budget), {}).values()
                    if line.metrics.get("variants")
                ]
                if not by_seed:
                    continue
                row = []
                for n in ns:
                    groups = [
                        verdict_scores(
                            outcomes_from_string(line.metrics["variants"][n]["outcomes"])
                        )
                        for line in by_seed
                        if n in line.metrics["variants"]
                    ]
                    value = crossed_mean(groups, bounds=WINRATE_BOUNDS).value if groups else None
                    row.append(f"{value:.3f}" if value is not None else "-")
                print(f"| {method} | {budget} | " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", default=list(LAB_SUITES))
    parser.add_argument("--results-dir", type=Path, default=Path("leaderboard/results"))
    args = parser.parse_args()
    lines = load_results(args.results_dir)
    for suite in args.suites:
        summarise(lines, suite)
    chosen = [line for line in latest_per_cell(lines) if line.suite in args.suites]
    for view in (
        views.markdown_verifiers(views.verifier_table(chosen)),
        views.markdown_reward_kl(views.reward_kl_table(chosen)),
        views.markdown_quadrants(views.quadrant_table(chosen)),
        views.markdown_compute(views.compute_table(chosen)),
    ):
        if view:
            print("\n" + view)


if __name__ == "__main__":
    main()
