"""Coverage of the multi-seed intervals under the crossed seeds x prompts design: prints a table.

    python benchmarks/coverage_bench.py [--reps 4000] [--old-reps 200] [--old-resamples 500]
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

With one seed (k = 1) the seed effect is not replicated, and `crossed_mean` claims only to cover
*this seed's* mean over fresh prompts (it says so: ``seed_variance_identified=False``). Those
rows are judged against that conditional estimand, drawn afresh in every repetition,

    mu(p | a) = E_z[(sigmoid(logit p + a + z - d) + sigmoid(logit p + a + z + d)) / 2],
    z ~ N(0, prompt_sd^2),  a = the repetition's seed effect,

and ``mu_A(p | a_A) - mu_B(p - P_GAP | a_B)`` for the difference (both methods' seed effects).
Their coverage of the fresh-seed estimand ``mu(p)`` is printed too, as information (column
``k=1 fresh seed``): it falls as the seed sd grows, which is what the flag warns of.

For each cell (k seeds, n prompts, seed sd, prompt sd, p) it reports the fraction of repetitions
whose 95% interval covers the estimand: (old) `pooled_bootstrap_mean` / `paired_difference`,
called as the runner calls them, on ``--old-reps`` repetitions with ``--old-resamples``
resamples (the bootstrap is costly; its Monte Carlo standard error is about 0.015 at 200), and
(new) `crossed_mean` / `crossed_difference` with ``bounds`` (0, 1) / (-1, 1), as a winrate is
scored, on ``--reps`` repetitions, vectorised over them. ``undec`` is the share of repetitions
whose new interval is flagged ``decidable=False``. A coverage outside [0.94, 0.975] is marked
``<<`` (under) or ``>>`` (over); the summary counts the new ones and sets the count against
Monte Carlo noise: the number expected outside if every cell covered exactly 0.95, and for each
cell outside, the binomial probability of a coverage at least that far out if its true coverage
were on the band's edge.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
from numpy.typing import ArrayLike

from bench.report.stats import _crossed_moments, paired_difference, pooled_bootstrap_mean

TIE_BAND = 0.5
"""Half-width ``d`` of the tie band on the latent logit scale (P(tie) = 0.24 at p = 1/2)."""
P_GAP = 0.1
"""Method B's ``p`` is method A's minus this."""
BAND = (0.94, 0.975)
"""Acceptable coverage of a nominal 95% interval (issue 10)."""
CONFIDENCE = 0.95
WINRATE_BOUNDS = (0.0, 1.0)
"""Range of a tie-aware winrate score, passed to `crossed_mean` as ``bounds``."""
DIFFERENCE_BOUNDS = (-1.0, 1.0)
"""Range of a difference of two such scores, passed to `crossed_difference`."""


def expected_score(p: float, offset: ArrayLike, sd: float) -> np.ndarray:
    """``E_z[score]`` at ``logit p + offset + z``, ``z ~ N(0, sd^2)``, by Gauss-Hermite quadrature.

    Args:
        p: the method's win probability before seed and prompt effects.
        offset: ``[...]`` fixed logit offsets (a drawn seed effect, or 0).
        sd: standard deviation of the effect integrated out.

    Returns:
        ``[...]`` expected scores (ties score 1/2).
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # weight exp(-z^2 / 2)
    eta = np.log(p / (1.0 - p)) + np.asarray(offset, dtype=np.float64)[..., None] + nodes * sd
    score = 0.5 * (_sigmoid(eta - TIE_BAND) + _sigmoid(eta + TIE_BAND))
    return (weights * score).sum(axis=-1) / weights.sum()


def population_winrate(p: float, seed_sd: float, prompt_sd: float) -> float:
    """``mu(p)``: the expected score over fresh seeds and prompts (module docstring)."""
    return float(expected_score(p, 0.0, float(np.hypot(seed_sd, prompt_sd))))


def conditional_winrate(p: float, seed_effects: np.ndarray, prompt_sd: float) -> np.ndarray:
    """``mu(p | a)``: the expected score of a seed with effect ``a`` over fresh prompts.

    Args:
        p: as in :func:`population_winrate`.
        seed_effects: ``[...]`` drawn seed effects ``a``.
        prompt_sd: sd of the prompt effect, the only one integrated out.

    Returns:
        ``[...]`` conditional winrates.
    """
    return expected_score(p, seed_effects, prompt_sd)


def simulate_scores(
    rng: np.random.Generator, p: float, seed_effects: np.ndarray, prompt_effects: np.ndarray
) -> np.ndarray:
    """``[reps, k, n]`` scores of one method with the given seed and prompt effects.

    Args:
        rng: draws the judge noise.
        p: the method's win probability before seed and prompt effects.
        seed_effects: ``[reps, k]`` this method's own seed effects.
        prompt_effects: ``[reps, n]`` prompt effects, shared by every seed and method.
    """
    eta = np.log(p / (1.0 - p)) + seed_effects[:, :, None] + prompt_effects[:, None, :]
    latent = eta + rng.logistic(size=eta.shape)
    return np.where(latent > TIE_BAND, 1.0, np.where(latent < -TIE_BAND, 0.0, 0.5))


def new_coverage(
    grids: np.ndarray, truth: ArrayLike, bounds: tuple[float, float]
) -> tuple[float, float]:
    """Coverage of `crossed_mean`'s interval over ``[reps, k, n]`` grids, share undecidable.

    The same computation as ``crossed_mean(grid, bounds=bounds)`` (its `_crossed_moments`
    core, flag included), vectorised over repetitions. ``truth`` is a scalar or one estimand
    per repetition (``[reps]``).
    """
    moments = _crossed_moments(grids, CONFIDENCE, bounds)
    covered = (moments["low"] <= truth) & (truth <= moments["high"])
    return float(covered.mean()), float(1.0 - moments["decidable"].mean())


def old_coverage(
    a_grids: np.ndarray, b_grids: np.ndarray | None, truth: ArrayLike, resamples: int
) -> float:
    """Coverage of `pooled_bootstrap_mean` (or `paired_difference` when ``b_grids`` is given)."""
    if len(a_grids) == 0:  # --old-reps 0: the old intervals are skipped
        return float("nan")
    truths = np.broadcast_to(np.asarray(truth, dtype=np.float64), (len(a_grids),))
    covered = 0
    for rep, a_grid in enumerate(a_grids):
        if b_grids is None:
            estimate = pooled_bootstrap_mean(list(a_grid), n_resamples=resamples, seed=rep)
        else:
            estimate = paired_difference(
                list(a_grid), list(b_grids[rep]), n_resamples=resamples, seed=rep
            )
        covered += estimate.low <= truths[rep] <= estimate.high
    return covered / len(a_grids)


def binomial_tail(reps: int, coverage: float, observed: float) -> float:
    """``P(X / reps <= observed)`` (``>=`` above ``coverage``), ``X ~ Binomial(reps, coverage)``.

    The chance of a simulated coverage at least as far from ``coverage`` on that side; exact,
    by summing the binomial probabilities in log space.
    """
    count = round(observed * reps)
    successes = range(count + 1) if observed <= coverage else range(count, reps + 1)
    log_terms = [
        math.lgamma(reps + 1)
        - math.lgamma(x + 1)
        - math.lgamma(reps - x + 1)
        + x * math.log(coverage)
        + (reps - x) * math.log1p(-coverage)
        for x in successes
    ]
    largest = max(log_terms)
    return math.exp(largest) * sum(math.exp(term - largest) for term in log_terms)


def expected_outside(reps: int, cells: int, coverage: float = CONFIDENCE) -> float:
    """Cells expected outside :data:`BAND` by chance alone if each covered exactly ``coverage``."""
    # The largest count below the band and the smallest above it (1e-9: 0.94 * reps in floats).
    below = binomial_tail(reps, coverage, (math.ceil(BAND[0] * reps - 1e-9) - 1) / reps)
    above = binomial_tail(reps, coverage, (math.floor(BAND[1] * reps + 1e-9) + 1) / reps)
    return cells * (below + above)


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
    parser.add_argument("--reps", type=int, default=4000, help="repetitions per cell (new)")
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

    def standard_error(reps: int) -> float:
        return math.sqrt(CONFIDENCE * (1.0 - CONFIDENCE) / reps) if reps else float("nan")

    lines = [
        f"Coverage of nominal 95% intervals, band {BAND}; new: {args.reps} reps (Monte Carlo "
        f"standard error {standard_error(args.reps):.4f} at 0.95), old: {args.old_reps} reps "
        f"x {args.old_resamples} resamples (standard error {standard_error(args.old_reps):.3f}); "
        f"new with bounds {WINRATE_BOUNDS} (winrate) and {DIFFERENCE_BOUNDS} (difference); "
        f"tie band d = {TIE_BAND}, method B at p - {P_GAP}; seed {args.seed}",
        "",
        "k=1 rows: the interval covers this seed's mean over fresh prompts, and is judged "
        "against it (old and new); fresh-seed variation is not identified (flagged: "
        "seed_variance_identified=False). The band applies to that conditional coverage; "
        "'k=1 fresh seed' is the new interval's coverage of the fresh-seed winrate and "
        "difference, for information only.",
        "",
        "| k | n | seed sd | prompt sd | p | winrate old | winrate new | diff old | diff new "
        "| undec (win/diff) | k=1 fresh seed (win/diff) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    start = time.perf_counter()
    outside = []
    cells = list(itertools.product(args.k, args.n, args.seed_sd, args.prompt_sd, args.p))
    for cell, (k, n, seed_sd, prompt_sd, p) in enumerate(cells):
        rng = np.random.default_rng([args.seed, cell])
        reps = max(args.reps, args.old_reps)
        prompt_effects = rng.normal(0.0, prompt_sd, size=(reps, n))
        seeds_a = rng.normal(0.0, seed_sd, size=(reps, k))
        a = simulate_scores(rng, p, seeds_a, prompt_effects)
        seeds_b = rng.normal(0.0, seed_sd, size=(reps, k))
        b = simulate_scores(rng, p - P_GAP, seeds_b, prompt_effects)
        population_a = population_winrate(p, seed_sd, prompt_sd)
        population_diff = population_a - population_winrate(p - P_GAP, seed_sd, prompt_sd)
        if k == 1:
            truth_a = conditional_winrate(p, seeds_a[:, 0], prompt_sd)
            truth_diff = truth_a - conditional_winrate(p - P_GAP, seeds_b[:, 0], prompt_sd)
        else:
            truth_a, truth_diff = np.full(reps, population_a), np.full(reps, population_diff)
        new, old = slice(0, args.reps), slice(0, args.old_reps)
        new_win, undec_win = new_coverage(a[new], truth_a[new], WINRATE_BOUNDS)
        new_diff, undec_diff = new_coverage((a - b)[new], truth_diff[new], DIFFERENCE_BOUNDS)
        old_win = old_coverage(a[old], None, truth_a[old], args.old_resamples)
        old_diff = old_coverage(a[old], b[old], truth_diff[old], args.old_resamples)
        if k == 1:
            flag = "k=1: this seed's mean"
            fresh_win, _ = new_coverage(a[new], population_a, WINRATE_BOUNDS)
            fresh_diff, _ = new_coverage((a - b)[new], population_diff, DIFFERENCE_BOUNDS)
            fresh = f"{fresh_win:.3f}/{fresh_diff:.3f}"
        else:
            flag, fresh = f"{undec_win:.2f}/{undec_diff:.2f}", "-"
        line = (
            f"| {k} | {n} | {seed_sd:g} | {prompt_sd:g} | {p:g} | {_mark(old_win)} | "
            f"{_mark(new_win)} | {_mark(old_diff)} | {_mark(new_diff)} | {flag} | {fresh} |"
        )
        print(line, flush=True)
        lines.append(line)
        for name, coverage, undecidable in (
            ("winrate", new_win, undec_win),
            ("diff", new_diff, undec_diff),
        ):
            if not BAND[0] <= coverage <= BAND[1]:
                edge = BAND[0] if coverage < BAND[0] else BAND[1]
                tail = binomial_tail(args.reps, edge, coverage)
                outside.append(
                    (
                        k,
                        undecidable >= 0.5,
                        tail,
                        f"{name} k={k} n={n} seed_sd={seed_sd:g} prompt_sd={prompt_sd:g} "
                        f"p={p:g}: {coverage:.4f}, P(this far out | true coverage {edge}) = "
                        f"{tail:.2g}; {undecidable:.0%} flagged undecidable",
                    )
                )
    n_coverages = 2 * len(cells)
    bonferroni = 0.05 / n_coverages
    flagged = [item for item in outside if item[1]]
    expected = expected_outside(args.reps, n_coverages)
    summary = [
        "",
        f"new intervals outside the band: {len(outside)} of {n_coverages} "
        f"({sum(k == 1 for k, _, _, _ in outside)} of them with k = 1, {len(flagged)} in cells "
        f"where most intervals are flagged undecidable); expected from Monte Carlo noise alone "
        f"if every one covered exactly {CONFIDENCE}: {expected:.2f}",
        *(f"- {description}" for _, _, _, description in outside),
        f"outside by more than Monte Carlo noise (that probability below 0.05 / {n_coverages} "
        f"= {bonferroni:.2g}, Bonferroni): {sum(tail < bonferroni for *_, tail, _ in outside)}, "
        f"of them mostly flagged undecidable: {sum(tail < bonferroni for *_, tail, _ in flagged)}",
        f"wall time {time.perf_counter() - start:.0f} s",
    ]
    print("\n".join(summary))
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write("\n".join(lines + summary) + "\n")


if __name__ == "__main__":
    main()
