"""Coverage of the multi-seed intervals under the crossed seeds x prompts design: prints a table.

    python benchmarks/coverage_bench.py [--reps 1000] [--old-reps 200] [--old-resamples 500]
        [--seed 0] [--k 1 2 3 5] [--n 100 500] [--markdown OUT]

Every seed of every method is judged on the same prompts. The simulation draws that design:

    eta[s, j] = logit(p) + a[s] + b[j],   a[s] ~ N(0, seed_sd^2),  b[j] ~ N(0, prompt_sd^2)
    latent = eta + eps, eps ~ Logistic(0, 1);  win if latent > d, loss if latent < -d, tie else

with a tie band ``d = TIE_BAND``, scores 1 / 1/2 / 0. The estimand is the population winrate,
the expected score over a fresh seed AND a fresh prompt,

    mu(p) = E_z[(sigmoid(logit p + z - d) + sigmoid(logit p + z + d)) / 2],
    z ~ N(0, seed_sd^2 + prompt_sd^2),

computed by Gauss-Hermite quadrature (exact to 1e-12 here). The paired difference is between
method A at ``p`` and method B at ``p - P_GAP``: B has its own seed effects and its own judge
noise but the same prompts, hence the same ``b[j]``; its estimand is ``mu(p) - mu(p - P_GAP)``.

For each cell (k seeds, n prompts, seed sd, prompt sd, p) it reports the fraction of repetitions
whose 95% interval covers the estimand: (old) `pooled_bootstrap_mean` / `paired_difference`,
called as the runner calls them, on ``--old-reps`` repetitions with ``--old-resamples``
resamples (the bootstrap is costly; its Monte Carlo standard error is about 0.015 at 200), and
(new) `crossed_mean` / `crossed_difference` on ``--reps`` repetitions, vectorised over them.
``undec`` is the share of repetitions whose new interval is flagged ``decidable=False``; with
k = 1 the new interval leaves seed-to-seed variation out by construction (flag ``k=1``). A cell
outside [0.94, 0.975] is marked ``<<`` (under) or ``>>`` (over).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from bench.stats import (
    CROSSED_MIN_DF,
    _crossed_moments,
    paired_difference,
    pooled_bootstrap_mean,
    student_t_quantile,
)

TIE_BAND = 0.5
"""Half-width ``d`` of the tie band on the latent logit scale (P(tie) = 0.24 at p = 1/2)."""
P_GAP = 0.1
"""Method B's ``p`` is method A's minus this."""
BAND = (0.94, 0.975)
"""Acceptable coverage of a nominal 95% interval (issue 10)."""
CONFIDENCE = 0.95


def population_winrate(p: float, seed_sd: float, prompt_sd: float) -> float:
    """``mu(p)``: the expected score over fresh seeds and prompts (module docstring)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # weight exp(-z^2 / 2)
    z = nodes * np.hypot(seed_sd, prompt_sd)
    eta = np.log(p / (1.0 - p)) + z
    score = 0.5 * (_sigmoid(eta - TIE_BAND) + _sigmoid(eta + TIE_BAND))
    return float((weights * score).sum() / weights.sum())


def simulate_scores(
    rng: np.random.Generator,
    reps: int,
    k: int,
    n: int,
    p: float,
    seed_sd: float,
    prompt_effects: np.ndarray,
) -> np.ndarray:
    """``[reps, k, n]`` scores of one method, its own seed effects, the given prompt effects."""
    seed_effects = rng.normal(0.0, seed_sd, size=(reps, k, 1))
    eta = np.log(p / (1.0 - p)) + seed_effects + prompt_effects[:, None, :]
    latent = eta + rng.logistic(size=(reps, k, n))
    return np.where(latent > TIE_BAND, 1.0, np.where(latent < -TIE_BAND, 0.0, 0.5))


def new_coverage(grids: np.ndarray, truth: float) -> tuple[float, float]:
    """Coverage of `crossed_mean`'s interval over ``[reps, k, n]`` grids, share undecidable.

    The same computation as `crossed_mean` (its `_crossed_moments` core), vectorised over
    repetitions; undecidable as `crossed_mean` flags it (never with k = 1).
    """
    moments = _crossed_moments(grids, CONFIDENCE)
    covered = np.abs(moments["mean"] - truth) <= moments["half_width"]
    limit = student_t_quantile((1.0 + CONFIDENCE) / 2.0, CROSSED_MIN_DF)
    undecidable = (moments["quantile"] > limit * (1.0 + 1e-9)) & (grids.shape[1] > 1)
    return float(covered.mean()), float(undecidable.mean())


def old_coverage(
    a_grids: np.ndarray, b_grids: np.ndarray | None, truth: float, resamples: int
) -> float:
    """Coverage of `pooled_bootstrap_mean` (or `paired_difference` when ``b_grids`` is given)."""
    if len(a_grids) == 0:  # --old-reps 0: the old intervals are skipped
        return float("nan")
    covered = 0
    for rep, a_grid in enumerate(a_grids):
        if b_grids is None:
            estimate = pooled_bootstrap_mean(list(a_grid), n_resamples=resamples, seed=rep)
        else:
            estimate = paired_difference(
                list(a_grid), list(b_grids[rep]), n_resamples=resamples, seed=rep
            )
        covered += estimate.low <= truth <= estimate.high
    return covered / len(a_grids)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _mark(coverage: float) -> str:
    if np.isnan(coverage):
        return "-"
    if coverage < BAND[0]:
        return f"{coverage:.3f} <<"
    if coverage > BAND[1]:
        return f"{coverage:.3f} >>"
    return f"{coverage:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=1000, help="repetitions per cell (new)")
    parser.add_argument("--old-reps", type=int, default=200, help="repetitions per cell (old)")
    parser.add_argument("--old-resamples", type=int, default=500, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seed-sd", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4])
    parser.add_argument("--prompt-sd", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--p", type=float, nargs="+", default=[0.5, 0.8, 0.95])
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args()

    lines = [
        f"Coverage of nominal 95% intervals, band {BAND}; new: {args.reps} reps, old: "
        f"{args.old_reps} reps x {args.old_resamples} resamples; tie band d = {TIE_BAND}, "
        f"method B at p - {P_GAP}; seed {args.seed}",
        "",
        "| k | n | seed sd | prompt sd | p | winrate old | winrate new | diff old | diff new "
        "| undec (win/diff) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    start = time.perf_counter()
    outside = []
    grid = itertools.product(args.k, args.n, args.seed_sd, args.prompt_sd, args.p)
    for cell, (k, n, seed_sd, prompt_sd, p) in enumerate(grid):
        rng = np.random.default_rng([args.seed, cell])
        reps = max(args.reps, args.old_reps)
        prompt_effects = rng.normal(0.0, prompt_sd, size=(reps, n))
        a = simulate_scores(rng, reps, k, n, p, seed_sd, prompt_effects)
        b = simulate_scores(rng, reps, k, n, p - P_GAP, seed_sd, prompt_effects)
        truth_a = population_winrate(p, seed_sd, prompt_sd)
        truth_diff = truth_a - population_winrate(p - P_GAP, seed_sd, prompt_sd)
        new_win, undec_win = new_coverage(a[: args.reps], truth_a)
        new_diff, undec_diff = new_coverage((a - b)[: args.reps], truth_diff)
        old_win = old_coverage(a[: args.old_reps], None, truth_a, args.old_resamples)
        old_diff = old_coverage(
            a[: args.old_reps], b[: args.old_reps], truth_diff, args.old_resamples
        )
        flag = "k=1" if k == 1 else f"{undec_win:.2f}/{undec_diff:.2f}"
        line = (
            f"| {k} | {n} | {seed_sd:g} | {prompt_sd:g} | {p:g} | {_mark(old_win)} | "
            f"{_mark(new_win)} | {_mark(old_diff)} | {_mark(new_diff)} | {flag} |"
        )
        print(line, flush=True)
        lines.append(line)
        for name, coverage in (("winrate", new_win), ("diff", new_diff)):
            if not BAND[0] <= coverage <= BAND[1]:
                outside.append(
                    f"{name} k={k} n={n} seed_sd={seed_sd:g} prompt_sd={prompt_sd:g} p={p:g}"
                )
    summary = [
        "",
        f"new intervals outside the band: {len(outside)} "
        f"({sum(item.split()[1] == 'k=1' for item in outside)} of them with k = 1)",
        *(f"- {item}" for item in outside),
        f"wall time {time.perf_counter() - start:.0f} s",
    ]
    print("\n".join(summary))
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write("\n".join(lines + summary) + "\n")


if __name__ == "__main__":
    main()
