"""Power: the smallest difference a design detects, and the seeds or prompts a claim would need.

A paired difference of two methods over ``k`` seeds x ``n`` prompts is estimated with the
variance components of `bench.report.stats.crossed_mean` (seed ``s2_seed``, prompt ``s2_prompt`` and
residual ``s2_resid``; every symbol as in its docstring). The variance of the mean splits into a
seed-level part ``A`` and a prompt part ``B``::

    A = MS_seeds / (k n)        (= s2_seed / k + s2_resid / (k n) in expectation)
    B = s2_prompt / n
    SE = sqrt(A + B),   half-width h = sqrt(t_{k-1}^2 A + t_{n-1}^2 B)   (Banerjee, as the CI)

With one seed, ``A`` is absent (not identified) and ``B`` is the one-sample ``var / n``.

**Minimum detectable effect** (MDE) at power ``1 - beta`` (80% by default): the true difference
that the interval excludes 0 for with probability ``1 - beta``::

    MDE = h + t_{df}(1 - beta) * SE,   df = (A + B)^2 / (A^2 / (k - 1) + B^2 / (n - 1))

the usual ``(z_{1-alpha/2} + z_{1-beta}) SE`` with the interval's own quantile in place of
``z_{1-alpha/2}`` and Satterthwaite's df for the power quantile (Cohen 1988, "Statistical Power
Analysis for the Behavioral Sciences", ch. 2; the crossed components as in Westfall, Kenny &
Judd 2014, "Statistical power and optimal design in experiments in which samples of
participants respond to samples of stimuli", J. Exp. Psych.: General 143(5), 2020-2045). The
components are the observed ones, so the MDE is itself an estimate; read it as a scale.

**Replication needed**: the design ``(k', n)`` (more seeds) or ``(k, n')`` (more prompts) whose
projected MDE, with the components above (``A' = max(MS_seeds, MS_resid) / n / k' + ...``),
fits a target: the observed difference for a ``beats`` claim, ``margin - |difference|`` for an
equivalence. More prompts alone cannot shrink the seed part, and with one seed the seed part is
unknown: those routes say so instead of giving a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.report.stats import CrossedEstimate, student_t_quantile

POWER = 0.8
"""Power of every minimum detectable effect and replication figure pftbench reports."""

MAX_SEEDS = 100
"""Largest number of seeds a replication figure searches; beyond it "more than 100"."""

MAX_PROMPTS = 1_000_000
"""Largest number of prompts a replication figure searches."""


@dataclass(frozen=True)
class Replication:
    """What would make a claim decidable: seeds at the current prompts, or prompts at the
    current seeds. None where that route cannot reach the target (the sentence says why)."""

    seeds: int | None
    prompts: int | None
    sentence: str
    """E.g. "about 9 seeds at 500 prompts, or more prompts cannot do it: the seed-to-seed
    variance dominates"."""


def minimum_detectable_effect(
    estimate: CrossedEstimate, power: float = POWER, confidence: float = 0.95
) -> float:
    """The MDE of a paired difference's design at ``power`` (module docstring); NaN when the
    difference has no spread at all."""
    seed_part, prompt_part = _parts(estimate)
    return _mde(seed_part, prompt_part, estimate.k, estimate.n, power, confidence)


def replication_needed(
    estimate: CrossedEstimate, target: float, power: float = POWER, confidence: float = 0.95
) -> Replication:
    """The seeds (at n prompts) or prompts (at k seeds) whose projected MDE is at most
    ``target`` (module docstring). ``target <= 0`` is reachable by no design."""
    if not target > 0:
        return Replication(None, None, "no number of seeds or prompts can: the target is 0")
    k, n = estimate.k, estimate.n
    if k == 1:
        seeds = None
        seed_words = (
            "a claim about fresh seeds needs at least 3: with one, the seed-to-seed variance "
            "is unknown"
        )
        total = estimate.residual_variance
        prompts = _search(
            lambda n_new: _mde(0.0, total / n_new, 1, n_new, power, confidence), n + 1, target
        )
    else:
        seed_level = max(estimate.ms_seeds, estimate.ms_residual) / n  # s2_seed + s2_resid / n
        residual = estimate.ms_residual
        seed_share = max(0.0, seed_level - residual / n)  # s2_seed
        prompt = estimate.prompt_variance

        def with_seeds(k_new: int) -> float:
            return _mde(seed_level / k_new, prompt / n, k_new, n, power, confidence)

        def with_prompts(n_new: int) -> float:
            seed_part = (seed_share + residual / n_new) / k
            return _mde(seed_part, prompt / n_new, k, n_new, power, confidence)

        seeds = _search(with_seeds, k + 1, target, MAX_SEEDS)
        seed_words = (
            f"about {seeds} seeds at {n} prompts"
            if seeds is not None
            else f"more than {MAX_SEEDS} seeds at {n} prompts"
        )
        prompts = _search(with_prompts, n + 1, target)
    if prompts is not None:
        prompt_words = f"about {prompts} prompts at {k} seed{'s' if k > 1 else ''}"
    elif k > 1:
        prompt_words = "more prompts alone cannot do it: the seed-to-seed variance dominates"
    else:
        prompt_words = f"more than {MAX_PROMPTS} prompts"
    if k == 1:
        return Replication(seeds, prompts, f"{prompt_words} ({seed_words})")
    return Replication(seeds, prompts, f"{seed_words}; or {prompt_words}")


def _parts(estimate: CrossedEstimate) -> tuple[float, float]:
    """(A, B) of the module docstring."""
    if estimate.k == 1:
        return 0.0, estimate.variance_of_mean
    return estimate.ms_seeds / (estimate.k * estimate.n), estimate.prompt_variance / estimate.n


def _mde(
    seed_part: float, prompt_part: float, k: int, n: int, power: float, confidence: float
) -> float:
    variance = seed_part + prompt_part
    if not variance > 0:
        return math.nan
    upper = (1.0 + confidence) / 2.0
    t_seeds = float(student_t_quantile(upper, k - 1)) if k > 1 else 0.0
    t_prompts = float(student_t_quantile(upper, n - 1))
    half_width = math.sqrt(t_seeds**2 * seed_part + t_prompts**2 * prompt_part)
    denominator = (seed_part**2 / (k - 1) if k > 1 else 0.0) + prompt_part**2 / (n - 1)
    df = variance**2 / denominator if denominator > 0 else math.inf
    # The power quantile's df to 0.01: a figure of power needs no more, and rounded df repeat,
    # so student_t_quantile's cache serves them (each fresh quantile costs about 50 ms).
    power_quantile = float(student_t_quantile(power, round(df, 2) if math.isfinite(df) else df))
    return half_width + power_quantile * math.sqrt(variance)


def _search(mde_at, start: int, target: float, limit: int = MAX_PROMPTS) -> int | None:
    """The smallest size >= start (up to limit) with mde_at(size) <= target, or None.

    Doubling, then bisection: the MDE falls as the size grows.
    """
    if not mde_at(limit) <= target:
        return None
    low, high = start, start
    while not mde_at(high) <= target:
        low, high = high + 1, min(limit, high * 2)
    while low < high:
        middle = (low + high) // 2
        if mde_at(middle) <= target:
            high = middle
        else:
            low = middle + 1
    return high
