"""Winrates, mean rewards and differences with confidence intervals; numpy only.

Every number pftbench reports comes from :func:`crossed_mean` / :func:`crossed_difference`: the
grand mean of a ``[k seeds, n prompts]`` grid with an interval from the variance components of
that crossed design (every seed is judged on the same prompts), a t quantile per component, and
for bounded scores a Wilson-type score interval; their docstrings give the equations, the
references and the simulated coverage (benchmarks/coverage_bench.py). One result line is the
``k = 1`` case (:func:`winrate_estimate`, :func:`mean_reward_estimate`); `bench.report.summary`
pools a cell's seeds and pairs two cells.

Per-prompt scores (:func:`verdict_scores`): a win 1, a tie 1/2, a loss 0, an invalid output 0
(the policy's failure is a loss), a failed judgment NaN (left out). ``valid_only=True`` leaves
invalid outputs out too, for the secondary valid-only winrate. NaN marks a value to leave out:
it is dropped and not counted in ``n``.

The bootstrap estimators (:func:`bootstrap_mean`, :func:`pooled_bootstrap_mean`,
:func:`paired_difference`) are what pftbench reported before issue 10. The hierarchical one
redraws prompts independently within each seed, which under-covers when seeds share their
prompts (0.785-0.945 in the lab's regime); they are kept as the "old" column of the coverage
benchmark, and :func:`length_controlled_winrate` still resamples this way (its multi-seed
interval is approximate, as the README says). Resamples are drawn as index matrices of shape
``[n_resamples, n]`` from ``np.random.default_rng(seed)``: the same inputs and seed give the
same numbers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from bench.evaluate.verdicts import Verdict

_MAX_DRAWS_PER_BLOCK = 1 << 18
"""Largest index matrix drawn at once (2 MiB of int64): long inputs stay in memory, and blocks
this small are reused by the allocator instead of being mapped afresh (about 2x faster)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval and the number of observations behind it."""

    value: float
    """Point estimate (a mean, a winrate, or a difference of means)."""
    low: float
    """Lower end of the percentile confidence interval."""
    high: float
    """Upper end of the percentile confidence interval."""
    n: int
    """Number of valid observations used, summed over seeds (invalid ones are not counted)."""
    n_seeds: int = 1
    """Number of training seeds pooled into the estimate."""
    confidence: float = 0.95
    """Nominal coverage of the interval."""

    def __str__(self) -> str:
        text = f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}] n={self.n}"
        if self.n_seeds > 1:
            text += f" seeds={self.n_seeds}"
        if self.confidence != 0.95:
            # A 90% interval printed like a 95% one would overstate the certainty.
            text += f" ci={self.confidence:.0%}"
        return text

    def to_dict(self) -> dict:
        """Plain, JSON-serialisable fields for result lines."""
        return {
            "value": float(self.value),
            "low": float(self.low),
            "high": float(self.high),
            "n": int(self.n),
            "n_seeds": int(self.n_seeds),
            "confidence": float(self.confidence),
        }


def verdict_scores(verdicts: Sequence[Verdict], *, valid_only: bool = False) -> np.ndarray:
    """Per-prompt scores in prompt order: WIN 1.0, TIE 0.5, LOSS 0.0, INVALID 0.0, FAILED NaN.

    Args:
        verdicts: ``[n_prompts]`` verdicts (members of :class:`Verdict` or their letters).
        valid_only: score an invalid output (the policy's fault) NaN too, as the secondary
            valid-only winrate does; by default it is a loss, as in the headline winrate.

    Returns:
        float64 array of shape ``[n_prompts]``; its NaN-free mean is the winrate
        ``(wins + ties / 2) / n`` over the prompts it counts.
    """
    scores = [
        Verdict(verdict).valid_score if valid_only else Verdict(verdict).score
        for verdict in verdicts
    ]
    return np.array([np.nan if score is None else score for score in scores], dtype=np.float64)


def bootstrap_mean(
    values: ArrayLike, *, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> Estimate:
    """Mean of the valid values with a percentile bootstrap interval over observations.

    Args:
        values: ``[n]`` per-prompt values; NaN marks an invalid observation and is dropped.
        n_resamples: number of bootstrap resamples ``B``.
        confidence: nominal coverage ``c`` of the interval, in (0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``mean(x)`` over the ``n_valid`` non-NaN values, with the ``(1 - c) / 2`` and
        ``(1 + c) / 2`` quantiles of the ``B`` resampled means as the interval.

    Raises:
        ValueError: no valid observation, ``values`` not 1-D, or a bad ``confidence``.
    """
    return pooled_bootstrap_mean(
        [values], n_resamples=n_resamples, confidence=confidence, seed=seed
    )


def pooled_bootstrap_mean(
    groups: Sequence[ArrayLike],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean over seeds of the per-seed means, with a hierarchical bootstrap interval.

    Args:
        groups: ``k`` arrays, one per training seed, of shape ``[n_s]`` (per-prompt values,
            NaN = invalid, dropped). Seeds may have different numbers of prompts.
        n_resamples: number of bootstrap resamples ``B``.
        confidence: nominal coverage ``c`` of the interval, in (0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``(1 / k) * sum_s mean(x_s)`` (each seed weighs the same). Interval: in each of the
        ``B`` resamples draw ``k`` seeds with replacement, redraw the prompts of each drawn seed
        with replacement, and average the ``k`` resampled seed means; percentile interval.
        ``n`` is the number of valid values summed over seeds. With one group this is exactly
        :func:`bootstrap_mean` with the same ``seed``.

    Raises:
        ValueError: no groups, a group without a valid observation, a group that is not 1-D,
            or a bad ``confidence`` or ``n_resamples``.
    """
    valid_groups = [_valid_values(group, f"group {index}") for index, group in enumerate(groups)]
    return _hierarchical_bootstrap(valid_groups, n_resamples, confidence, seed)


def paired_difference(
    a_groups: Sequence[ArrayLike],
    b_groups: Sequence[ArrayLike],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Mean difference ``a - b`` between two methods judged on the same prompts.

    Args:
        a_groups: ``k`` arrays, one per seed, of shape ``[n_s]``: per-prompt values of method A.
        b_groups: ``k`` arrays aligned with ``a_groups``: method B on the same prompts, same
            order. A pair where either side is NaN is dropped.
        n_resamples: number of bootstrap resamples ``B``.
        confidence: nominal coverage ``c`` of the interval, in (0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``(1 / k) * sum_s mean(a_s - b_s)`` over the valid pairs, with the interval of
        :func:`pooled_bootstrap_mean` computed on the per-prompt differences (a resampled prompt
        brings both of its values). ``n`` counts the valid pairs. An interval that excludes 0
        says that A and B differ at this confidence.

    Raises:
        ValueError: different numbers of seeds, a seed whose two arrays differ in length, a
            seed without a valid pair, or a bad ``confidence`` or ``n_resamples``.
    """
    if len(a_groups) != len(b_groups):
        raise ValueError(
            f"paired_difference needs the same seeds on both sides: "
            f"{len(a_groups)} groups in a_groups, {len(b_groups)} in b_groups"
        )
    differences = []
    for index, (a_group, b_group) in enumerate(zip(a_groups, b_groups, strict=True)):
        a_values = _as_1d(a_group, f"a_groups[{index}]")
        b_values = _as_1d(b_group, f"b_groups[{index}]")
        if a_values.shape != b_values.shape:
            raise ValueError(
                f"paired_difference needs aligned prompts: seed {index} has "
                f"{a_values.shape[0]} values in a_groups and {b_values.shape[0]} in b_groups"
            )
        # NaN - x is NaN, so a pair with either side invalid drops out here.
        differences.append(_valid_values(a_values - b_values, f"the pairs of seed {index}"))
    return _hierarchical_bootstrap(differences, n_resamples, confidence, seed)


WINRATE_BOUNDS = (0.0, 1.0)
"""The range of a winrate score (loss 0, tie 1/2, win 1): `crossed_mean`'s bounded interval."""


def winrate_estimate(verdicts: Sequence[Verdict | str], *, valid_only: bool = False) -> Estimate:
    """The winrate of one run's per-prompt verdicts with its 95% CI, as its result line states it.

    The one computation behind a result line's ``winrate``, ``ci_low``, ``ci_high`` and ``n``
    (and, with ``valid_only``, its ``valid_winrate`` fields): the runner writes them with it,
    and `pftbench submit` and `pftbench check` recompute them with it, so a recomputation gives
    back exactly the stored numbers. It is :func:`crossed_mean` of one seed with the winrate's
    bounds (:data:`WINRATE_BOUNDS`), the interval the coverage benchmark checks.

    Args:
        verdicts: ``[n_prompts]`` verdicts (members of :class:`Verdict` or their letters).
        valid_only: leave invalid outputs out (the secondary winrate) instead of counting them
            as losses (the headline). Failed judgments are left out either way.

    Returns:
        The estimate; NaN with ``n = 0`` when no prompt counts (every judgment failed, or with
        ``valid_only`` a policy that never finishes an output), which a result line records
        rather than failing.
    """
    return one_seed_estimate(verdict_scores(verdicts, valid_only=valid_only), WINRATE_BOUNDS)


def mean_reward_estimate(
    rewards: Sequence[float | None] | None, floor: float | None = None
) -> Estimate | None:
    """The mean per-prompt reward of one run with its 95% CI, as its result line states it.

    The one computation behind ``mean_reward``, ``reward_ci_low`` and ``reward_ci_high`` (the
    runner, `pftbench submit` and `pftbench check` all call it): :func:`crossed_mean` of one
    seed over the rewards.

    Args:
        rewards: ``[n_prompts]`` rewards, None where the output was invalid; or None.
        floor: the reward an invalid output counts as (the judge's worst score, so that failing
            never pays); None leaves invalid outputs out of the mean.

    Returns:
        The estimate, or None when there is no reward at all (no rewards, or every output
        invalid and no floor).
    """
    if rewards is None or (floor is None and all(reward is None for reward in rewards)):
        return None
    missing = np.nan if floor is None else float(floor)
    values = np.array([missing if reward is None else reward for reward in rewards], dtype=float)
    return one_seed_estimate(values, None)


def one_seed_estimate(values: ArrayLike, bounds: tuple[float, float] | None) -> Estimate:
    """:func:`crossed_mean` of one seed's ``[n]`` values (NaN dropped) as an :class:`Estimate`.

    NaN with ``n = 0`` when no value is valid; with a single valid value the interval is the
    ``bounds`` (NaN without them): one prompt says nothing about the spread.
    """
    array = _as_1d(values, "values")
    valid = array[~np.isnan(array)]
    if valid.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if valid.size == 1:
        low, high = bounds if bounds is not None else (float("nan"), float("nan"))
        return Estimate(float(valid[0]), float(low), float(high), 1)
    estimate = crossed_mean(valid, bounds=bounds)
    return Estimate(estimate.value, estimate.low, estimate.high, estimate.n)


def per_seed(groups: Sequence[ArrayLike], **kwargs) -> list[Estimate]:
    """:func:`bootstrap_mean` of each group, in order, for per-seed tables.

    ``kwargs`` (``n_resamples``, ``confidence``, ``seed``) go to every call unchanged.
    """
    return [bootstrap_mean(group, **kwargs) for group in groups]


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per prompt), got shape {array.shape}")
    return array


def _valid_values(values: ArrayLike, name: str) -> np.ndarray:
    array = _as_1d(values, name)
    valid = array[~np.isnan(array)]
    if valid.size == 0:
        raise ValueError(f"no valid observations in {name}: {array.size} values, all NaN or none")
    return valid


def _hierarchical_bootstrap(
    groups: list[np.ndarray], n_resamples: int, confidence: float, seed: int
) -> Estimate:
    """Two-stage percentile bootstrap of the mean of group means; groups hold valid values."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not groups:
        raise ValueError("no valid observations: no groups given")

    # Work on values shifted by their minimum: when every value is equal, every deviation and
    # every resampled mean is exactly 0, so the interval collapses onto the value itself.
    shift = min(float(group.min()) for group in groups)
    deviations = [group - shift for group in groups]
    n_groups = len(deviations)

    rng = np.random.default_rng(seed)
    drawn_groups = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    resampled_group_means = np.empty((n_resamples, n_groups))
    for slot in range(n_groups):
        for group_index, group in enumerate(deviations):
            rows = np.flatnonzero(drawn_groups[:, slot] == group_index)
            resampled_group_means[rows, slot] = _resampled_means(group, rows.size, rng)
    resampled_means = resampled_group_means.mean(axis=1)

    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled_means, [tail, 1.0 - tail])
    value = np.mean([group.mean() for group in deviations])
    return Estimate(
        value=float(shift + value),
        low=float(shift + low),
        high=float(shift + high),
        n=sum(group.size for group in groups),
        n_seeds=n_groups,
        confidence=confidence,
    )


def _resampled_means(values: np.ndarray, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_rows`` resamples of ``values`` ``[n]``, each of size n drawn with replacement.

    Returns ``[n_rows]``. Index matrices ``[rows, n]`` are drawn in blocks to bound memory.
    """
    n_values = values.size
    rows_per_block = max(1, _MAX_DRAWS_PER_BLOCK // n_values)
    means = np.empty(n_rows)
    for start in range(0, n_rows, rows_per_block):
        stop = min(start + rows_per_block, n_rows)
        indices = rng.integers(0, n_values, size=(stop - start, n_values))
        means[start:stop] = values[indices].mean(axis=1)
    return means


LENGTH_CONTROL_RIDGE = 1e-4
"""L2 penalty on the length-control fit's (intercept, slope), per unit of mean log-likelihood."""


def length_controlled_winrate(
    score_groups: Sequence[ArrayLike],
    length_difference_groups: Sequence[ArrayLike],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Winrate at equal output and reference lengths, from a logistic fit of the verdicts on length.

    The model (after AlpacaEval's length-controlled winrate, Dubois et al. 2024, reduced to the
    length term so that it works for any reference set):

        P(output beats reference | d) = sigmoid(a + b * x),   x = d / sqrt(mean(d^2))

    where ``d`` is the output's length minus the reference's (in words) on a prompt. ``x`` is
    scaled to unit root-mean-square but not centred, so that ``x = 0`` still means equal lengths.
    The target is the verdict's score (win 1, tie 1/2, loss 0; invalid prompts dropped), a
    fractional target in the Bernoulli log-likelihood. ``(a, b)`` maximise the mean
    log-likelihood minus ``LENGTH_CONTROL_RIDGE / 2 * (a^2 + b^2)``; the weak penalty keeps the fit
    finite when length separates wins from losses perfectly (where the unpenalised maximum does
    not exist) and moves an ordinary fit by less than 1e-3. Fitted by Newton's method (IRLS).

    The length-controlled winrate is ``sigmoid(a)``: the fitted probability of a win at zero
    length difference. When verdicts do not depend on length it is close to the raw winrate;
    when length alone decides them it is close to 1/2.

    Several seeds: their prompts are fitted together, each seed's prompts weighted ``1 / n_s`` so
    that every seed weighs the same (as in :func:`pooled_bootstrap_mean`). Interval: the
    hierarchical bootstrap of :func:`pooled_bootstrap_mean` (draw seeds, then prompts within
    them), refitting the model on each of the ``B`` resamples; percentile interval.

    Args:
        score_groups: ``k`` arrays, one per seed, of shape ``[n_s]``: per-prompt verdict scores
            (:func:`verdict_scores`; NaN = invalid, dropped).
        length_difference_groups: ``k`` arrays aligned with ``score_groups``: output length minus
            reference length per prompt (NaN = unknown, dropped).
        n_resamples: number of bootstrap resamples ``B``.
        confidence: nominal coverage ``c`` of the interval, in (0, 1).
        seed: seed of ``np.random.default_rng``.

    Returns:
        ``sigmoid(a)`` with its percentile interval; ``n`` counts the prompts fitted.

    Raises:
        ValueError: different numbers of groups, misaligned arrays, a seed without a valid
            prompt, or a bad ``confidence`` or ``n_resamples``.
    """
    if len(score_groups) != len(length_difference_groups):
        raise ValueError(
            f"length_controlled_winrate needs one length array per score array: "
            f"{len(score_groups)} score groups, {len(length_difference_groups)} length groups"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not score_groups:
        raise ValueError("no valid observations: no groups given")
    targets, differences = [], []
    for index, (scores, lengths) in enumerate(
        zip(score_groups, length_difference_groups, strict=True)
    ):
        score_values = _as_1d(scores, f"score_groups[{index}]")
        length_values = _as_1d(lengths, f"length_difference_groups[{index}]")
        if score_values.shape != length_values.shape:
            raise ValueError(
                f"length_controlled_winrate needs aligned prompts: seed {index} has "
                f"{score_values.shape[0]} scores and {length_values.shape[0]} length differences"
            )
        valid = ~np.isnan(score_values) & ~np.isnan(length_values)
        if not valid.any():
            raise ValueError(f"no valid observations in seed {index}")
        targets.append(score_values[valid])
        differences.append(length_values[valid])

    y = np.concatenate(targets)
    d = np.concatenate(differences)
    rms = float(np.sqrt(np.mean(d**2)))
    x = d / rms if rms > 0 else d
    sizes = np.array([group.size for group in targets])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    seed_weights = np.repeat(1.0 / sizes, sizes)

    intercept, _ = _fit_logistic(x, y, seed_weights[None, :])
    value = _sigmoid(intercept[0])

    # Resample weights: how often each pooled prompt is drawn, over the k seed slots of a
    # resample, times its seed's weight 1 / n_s. Built in blocks of rows to bound memory.
    rng = np.random.default_rng(seed)
    n_groups = len(targets)
    drawn_groups = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    rows_per_block = max(1, _MAX_DRAWS_PER_BLOCK // y.size)
    resampled = np.empty(n_resamples)
    for start in range(0, n_resamples, rows_per_block):
        stop = min(start + rows_per_block, n_resamples)
        counts = np.zeros((stop - start, y.size))
        for slot in range(n_groups):
            groups_drawn = drawn_groups[start:stop, slot]
            for group_index in range(n_groups):
                rows = np.flatnonzero(groups_drawn == group_index)
                if rows.size == 0:
                    continue
                size, offset = sizes[group_index], offsets[group_index]
                picks = rng.integers(0, size, size=(rows.size, size)) + offset
                flat = (rows[:, None] * y.size + picks).ravel()
                counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
        block_intercepts, _ = _fit_logistic(x, y, counts * seed_weights[None, :])
        resampled[start:stop] = _sigmoid(block_intercepts)

    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled, [tail, 1.0 - tail])
    return Estimate(
        value=float(value),
        low=float(low),
        high=float(high),
        n=int(y.size),
        n_seeds=n_groups,
        confidence=confidence,
    )


def _sigmoid(z: ArrayLike) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def _fit_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, *, max_iterations: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Penalised logistic fits of ``y ~ sigmoid(a + b x)``, one per row of ``weights``.

    Args:
        x: ``[n]`` covariate; y: ``[n]`` targets in [0, 1]; weights: ``[r, n]`` non-negative
            observation weights (a bootstrap resample per row).

    Returns:
        ``(a, b)``, each ``[r]``: the maximisers of ``sum_i w_i l_i / sum_i w_i - ridge / 2 *
        (a^2 + b^2)``, ``l_i`` the Bernoulli log-likelihood, by Newton steps with the 2 x 2
        Hessian inverted in closed form, until every step is below 1e-10.
    """
    weights = weights / weights.sum(axis=1, keepdims=True)
    a = np.zeros(weights.shape[0])
    b = np.zeros(weights.shape[0])
    wx, wxx = weights * x, weights * x * x
    for _ in range(max_iterations):
        p = _sigmoid(a[:, None] + b[:, None] * x)
        residual = y - p
        grad_a = (weights * residual).sum(axis=1) - LENGTH_CONTROL_RIDGE * a
        grad_b = (wx * residual).sum(axis=1) - LENGTH_CONTROL_RIDGE * b
        curvature = p * (1.0 - p)
        h_aa = (weights * curvature).sum(axis=1) + LENGTH_CONTROL_RIDGE
        h_ab = (wx * curvature).sum(axis=1)
        h_bb = (wxx * curvature).sum(axis=1) + LENGTH_CONTROL_RIDGE
        determinant = h_aa * h_bb - h_ab * h_ab
        step_a = (h_bb * grad_a - h_ab * grad_b) / determinant
        step_b = (h_aa * grad_b - h_ab * grad_a) / determinant
        a, b = a + step_a, b + step_b
        if max(np.abs(step_a).max(), np.abs(step_b).max()) < 1e-10:
            break
    return a, b


# Crossed seeds x prompts design ---------------------------------------------------------------

CROSSED_MIN_DF = 2.0
""":func:`crossed_mean` calls its interval undecidable when it is wider, in standard errors, than
a t interval with this many degrees of freedom (4.30 at 95%): the seed-to-seed variance then
dominates and rests on a single seed contrast (k = 2). The interval is still printed, flagged.
A zero variance estimate with k >= 2 is flagged too (an interval without a scale)."""

MIN_DECIDABLE_SEEDS = 3
"""Fewest seeds whose interval may support a claim (k = 1 aside, whose interval is about its own
seed). With two seeds the seed variance rests on one contrast: the interval is wide when the
seeds disagree and narrow when they happen to agree, so the narrow ones are the wrong ones. In
simulation (benchmarks/coverage_bench.py, 20,000 repetitions, four cells) the k = 2 intervals
that passed the width rule covered only 0.32 to 0.87; every k = 2 interval is flagged."""


@dataclass(frozen=True)
class CrossedEstimate:
    """The mean of a ``[k seeds, n prompts]`` grid with a t interval from its variance components.

    Built by :func:`crossed_mean`; its docstring gives every equation.
    """

    value: float
    """Grand mean of the complete prompts (a winrate, a mean reward, or a paired difference)."""
    low: float
    """Lower end of the interval: the t interval (3) of :func:`crossed_mean`, or with
    ``bounds`` the Wilson-type score interval (4)."""
    high: float
    """Upper end of the interval."""
    n: int
    """Number of prompts used (those valid in every seed)."""
    k: int
    """Number of seeds (rows)."""
    confidence: float
    """Nominal coverage of the interval."""
    standard_error: float
    """Estimated standard error of ``value``: ``sqrt(variance_of_mean)``."""
    variance_of_mean: float
    """Estimated ``Var(grand mean)``, eq. (2) of :func:`crossed_mean`."""
    df: float
    """Satterthwaite degrees of freedom of ``variance_of_mean`` (``n - 1`` when ``k = 1``); a
    diagnostic, the interval uses ``quantile``."""
    quantile: float
    """Half-width of the interval in standard errors: ``(high - low) / 2 / standard_error``
    (when ``standard_error`` is 0: ``t_{n - 1}`` with one seed, ``inf`` with more)."""
    seed_variance: float
    """Seed component ``max(0, (MS_seeds - MS_resid) / n)``, reported (``Var_hat`` uses
    ``MS_seeds`` itself); NaN when ``k = 1``: not identified."""
    prompt_variance: float
    """Prompt component ``sigma2_prompt``, clamped at 0, eq. (2) (NaN when ``k = 1``)."""
    residual_variance: float
    """Residual (seed x prompt interaction plus judge noise) ``sigma2_resid`` (total variance of
    the values when ``k = 1``)."""
    ms_seeds: float
    """Mean square of the seed (row) means, ``n * var(row means)``; NaN when ``k = 1``."""
    ms_prompts: float
    """Mean square of the prompt (column) means, ``k * var(column means)``."""
    ms_residual: float
    """Residual mean square of the two-way table; NaN when ``k = 1``."""
    n_dropped_prompts: int
    """Prompts dropped because at least one seed had NaN there."""
    seed_variance_identified: bool
    """False when ``k = 1``: seed-to-seed variation is then not in the interval."""
    decidable: bool
    """False when the interval cannot be trusted to support a claim (see ``note``)."""
    note: str
    """Empty, or a sentence on what the interval leaves out or why it is undecidable."""
    bounds: tuple[float, float] | None = None
    """The range the values are known to lie in, as given (``None``: unbounded)."""


def crossed_mean(
    values: ArrayLike,
    *,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> CrossedEstimate:
    """Grand mean of a crossed seeds x prompts grid, with a variance-components t interval.

    Every seed of every method is judged on the same evaluation prompts, so seeds and prompts
    are *crossed*: a hard prompt is hard for every seed. The estimand is the expected value for
    a fresh seed on a fresh prompt, and the grand mean's sampling variance has three parts.
    Model (random effects; holds for any exchangeable crossed array through its ANOVA / Hoeffding
    decomposition, Owen 2007, "The pigeonhole bootstrap", Ann. Appl. Stat. 1(2), 386-411)::

        y[s, j] = mu + a[s] + b[j] + e[s, j],   s = 1..k seeds, j = 1..n prompts,
        Var(a) = sigma2_seed, Var(b) = sigma2_prompt, Var(e) = sigma2_resid, all uncorrelated,
        Var(ybar) = sigma2_seed / k + sigma2_prompt / n + sigma2_resid / (k n).        (1)

    Mean squares of the two-way table without replication, with their expectations (the
    standard expected mean squares of the two-way random-effects ANOVA, e.g. Searle, Casella &
    McCulloch 1992, "Variance Components", ch. 4 on balanced data; Owen 2007)::

        MS_seeds   = n * sum_s (ybar[s, .] - ybar)^2 / (k - 1)     E = s2_resid + n s2_seed
        MS_prompts = k * sum_j (ybar[., j] - ybar)^2 / (n - 1)     E = s2_resid + k s2_prompt
        MS_resid   = sum_sj (y - ybar[s, .] - ybar[., j] + ybar)^2 / ((k - 1)(n - 1))
                                                                   E = s2_resid

    (``s2_x`` short for ``sigma2_x``), so ``(MS_seeds + MS_prompts - MS_resid) / (k n)`` is
    unbiased for (1). Read it as two parts: ``MS_seeds / (k n) = var(row means) / k`` is the
    seed-level variance of the mean (seed effects plus residual noise, ``k - 1`` df), and
    ``(MS_prompts - MS_resid) / k = sigma2_prompt`` is the prompt difficulty shared by every
    seed, which the row means cannot see because they all contain it. The estimate used::

        sigma2_prompt = max(0, (MS_prompts - MS_resid) / k),                             (2)
        Var_hat = MS_seeds / (k n) + sigma2_prompt / n.

    Only the prompt component is clamped (a negative estimate means the prompts add nothing
    beyond the residual noise). The seed mean square is never dropped, even when it is below
    ``MS_resid``: clamping ``sigma2_seed`` at zero and then using ``MS_prompts`` with its large
    df is what under-covered in simulation (0.92-0.94 at k = 3, benchmarks/coverage_bench.py).

    Interval (Banerjee 1961, "On confidence interval for two-means problem based on separate
    estimates of variances and tabulated values of t-table", Sankhya A 23, 359-378): each part
    of ``Var_hat`` gets the t quantile of its own mean square's degrees of freedom::

        half_width = sqrt(t_{k-1}^2 * MS_seeds / (k n) + t_{n-1}^2 * sigma2_prompt / n),   (3)
        interval = ybar +- half_width,   t_d = t quantile at (1 + c) / 2 with d df.

    When one part dominates, (3) is the exact t interval of that part (the seed-level t with
    ``k - 1`` df when prompts add nothing, the prompt-level t when seeds agree); in between it is
    conservative, where the Satterthwaite (1946) t with plug-in df under-covered (0.88-0.94 at
    k = 2-3, seed sd 0.1-0.4, prompt sd 1). The Satterthwaite df,
    ``Var_hat^2 / sum_i (c_i MS_i)^2 / df_i`` over the mean squares in (2), is reported as a
    diagnostic. With k = 2 and the seed part dominant, (3) is up to ``t_1 = 12.7`` standard
    errors wide: honest but unable to decide anything, so an interval wider than a 2-df t
    (:data:`CROSSED_MIN_DF`) is flagged ``decidable=False`` with a note.

    With ``k >= 2`` a zero ``Var_hat`` (the seeds' means exactly equal and the prompts adding
    nothing beyond the residual, which discrete scores make common: 5% of repetitions at
    k = 2, n = 100, p = 0.95 in simulation) gives a zero-width interval that never covers; it
    is flagged ``decidable=False`` as well.

    One seed (``k = 1``): seeds are not replicated, so the seed component is not identified.
    The estimand is then this seed's mean over fresh prompts, not a fresh seed's, and the
    result says so (``seed_variance_identified=False``, ``note``). ``Var_hat = s2 / n``, with
    ``s2`` the variance of the ``n`` values (divisor ``n - 1``). Without ``bounds`` the
    interval is the one-sample t, ``ybar +- t_{n-1} sqrt(Var_hat)``.

    Bounded values, ``bounds = (L, U)`` (winrate scores: ``(0, 1)``; a paired difference of
    them: ``(-1, 1)``): a Wilson-type score interval for a bounded mean (Wilson 1927, "Probable
    inference, the law of succession, and statistical inference", JASA 22, 209-212). Near a
    bound the t interval fails because the spread of bounded values shrinks with the distance
    of their mean to the bound: a sample whose mean lands close to 1 also has a small variance,
    so its t interval is narrowest exactly when it is furthest off (the Wald interval's failure
    for a proportion; Brown, Cai & DasGupta 2001, "Interval estimation for a binomial
    proportion", Statist. Sci. 16, 101-133), and it can reach past the bound. Wilson's interval
    evaluates the variance at the candidate mean instead of at the sample mean. Scores with ties
    are not Bernoulli, so the variance of the mean is taken as proportional to a Bernoulli's of
    the same mean, ``mu (1 - mu) / n_eff``, with the effective ``n_eff`` estimated at the sample
    (a quasi-binomial variance); ``q`` is the t interval's own quantile, so the interval has the
    width of (3) or of the one-sample t, moved and reshaped by the bound::

        m = (ybar - L) / (U - L),
        1 / n_eff = Var_hat / ((U - L)^2 m (1 - m)),
                    or 1 / (k n) (r = 1) when m is 0 or 1 or Var_hat = 0,
        q = t_{n-1} (k = 1);  (3)'s half-width / sqrt(Var_hat) (k >= 2; t_{k-1} when 0 / 0),
        interval: the mu with (m - mu)^2 <= q^2 mu (1 - mu) / n_eff,                     (4)
        centre = (m + q^2 / (2 n_eff)) / (1 + q^2 / n_eff),
        half   = q / (1 + q^2 / n_eff) * sqrt(m (1 - m) / n_eff + q^2 / (4 n_eff^2)),
        interval = L + (U - L) * [centre - half, centre + half].

    With one seed ``n_eff = n / r``, ``r = s2_u / (m (1 - m))`` the variance ratio of the
    rescaled values ``u = (y - L) / (U - L)`` to a Bernoulli of the same mean; with binary
    values ``r = n / (n - 1)``, so (4) is Wilson's interval with t for z and the unbiased
    variance. ``r = 1`` at ``m = 0`` or 1 keeps the interval from collapsing when every prompt
    is a win (it is then ``[n / (n + q^2), 1]`` on the ``u`` scale), and likewise when every
    value is the same inside the bounds (all ties). The point estimate and ``Var_hat`` stay the
    sample's; only the interval moves, toward the middle of the range.

    Simulated (benchmarks/coverage_bench.py; ties; bounds ``(0, 1)`` for winrates and
    ``(-1, 1)`` for differences; 20,000 repetitions a cell unless said): one seed against this
    seed's mean at p = 0.95, n = 100, the t covered 0.916-0.928 (its misses nearly all on one
    side) and (4) 0.947; with k = 3 or 5 seeds, seed sd 0.4 and no prompt effect at p = 0.95,
    (3) covered 0.935-0.943 and (4) 0.943-0.957. In the other cells checked so (p = 0.5, 0.8;
    k = 1, 3, 5) the two differed by less than 0.005; with k = 2, where ``q`` reaches t_1 =
    12.7, (4) is the wider near a bound. Over the whole 4,000-repetition grid (k in {1, 2, 3,
    5}, n in {100, 500}, seed sd 0-0.4, prompt sd 0 or 1, p in {0.5, 0.8, 0.95}) (4) covered
    0.942-0.960 with one seed and 0.945-0.975 with 3 or 5; with 2 it over-covers, up to 0.987,
    in cells whose intervals are mostly (83-97%) flagged undecidable.

    Invalid values: a prompt with NaN in any seed is dropped from every seed (listwise), so that
    the grid stays complete and balanced and every seed is compared on the same prompts;
    ``n_dropped_prompts`` counts them. (Issue 10 scores a policy's invalid output as a loss, so
    NaN is left for failed judgments, which are not the policy's doing.)

    Args:
        values: ``[k, n]`` per-seed, per-prompt values (a 1-D ``[n]`` array is one seed); NaN =
            invalid. Tie-aware winrate scores (1, 1/2, 0) go in as they are.
        confidence: nominal coverage ``c``, in (0, 1).
        bounds: ``(L, U)``, the range every value is known to lie in, or ``None``; it selects
            the score interval (4). Winrate scores lie in ``(0, 1)``.

    Returns:
        The :class:`CrossedEstimate`.

    Raises:
        ValueError: not 1-D or 2-D, no seed, fewer than 2 complete prompts, a bad
            ``confidence``, bounds that are not finite with ``L < U``, or a value outside them.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    grid = np.asarray(values, dtype=np.float64)
    bounds = _checked_bounds(grid, bounds)
    if grid.ndim == 1:
        grid = grid[None, :]
    if grid.ndim != 2 or grid.shape[0] == 0:
        raise ValueError(
            f"crossed_mean needs a [k seeds, n prompts] array with k >= 1, got shape {grid.shape}"
        )
    complete = ~np.isnan(grid).any(axis=0)
    n_dropped = int(grid.shape[1] - complete.sum())
    grid = grid[:, complete]
    k, n = grid.shape
    if n < 2:
        raise ValueError(
            f"crossed_mean needs at least 2 prompts valid in every seed, got {n} "
            f"({n_dropped} dropped for NaN)"
        )
    moments = _crossed_moments(grid, confidence, bounds)
    quantile = float(moments["quantile"])
    value = float(moments["mean"])
    df = float(moments["df"])
    if k == 1:
        identified, decidable = False, True
        note = (
            "one seed: the interval covers this seed's mean over fresh prompts; "
            "seed-to-seed variation is not identified and not in it"
        )
        if bounds is not None:
            note += f" (Wilson-type score interval for a mean bounded by {bounds})"
    else:
        identified = True
        decidable = bool(moments["decidable"])
        t_quantile = float(moments["t_quantile"])
        limit = float(student_t_quantile((1.0 + confidence) / 2.0, CROSSED_MIN_DF))
        if decidable:
            note = ""
        elif k < MIN_DECIDABLE_SEEDS:
            note = (
                f"undecidable: {k} seeds estimate the seed-to-seed variance from one contrast, "
                "so the interval is narrow exactly when the two seeds happen to agree (those "
                f"covered 0.32-0.87 in simulation); run at least {MIN_DECIDABLE_SEEDS} seeds"
            )
        elif np.isinf(t_quantile):
            note = (
                f"undecidable: the variance estimate is 0 (the {k} seeds have equal means and "
                "the prompts add nothing beyond the residual), so the interval has no scale; "
                "run more seeds"
            )
        else:
            note = (
                f"undecidable: the interval is {t_quantile:.1f} standard errors wide on each "
                f"side (more than t with {CROSSED_MIN_DF:g} df, {limit:.1f}) because the "
                f"seed-to-seed variance, estimated from {k} seeds, dominates; run more seeds"
            )
    return CrossedEstimate(
        value=value,
        low=float(moments["low"]),
        high=float(moments["high"]),
        n=int(n),
        k=int(k),
        confidence=confidence,
        standard_error=float(np.sqrt(moments["variance_of_mean"])),
        variance_of_mean=float(moments["variance_of_mean"]),
        df=df,
        quantile=quantile,
        seed_variance=float(moments["seed_variance"]),
        prompt_variance=float(moments["prompt_variance"]),
        residual_variance=float(moments["residual_variance"]),
        ms_seeds=float(moments["ms_seeds"]),
        ms_prompts=float(moments["ms_prompts"]),
        ms_residual=float(moments["ms_residual"]),
        n_dropped_prompts=n_dropped,
        seed_variance_identified=identified,
        decidable=decidable,
        note=note,
        bounds=bounds,
    )


def _checked_bounds(
    grid: np.ndarray, bounds: tuple[float, float] | None
) -> tuple[float, float] | None:
    """``bounds`` as two floats, after checking them and that no valid value lies outside."""
    if bounds is None:
        return None
    try:
        low, high = (float(bound) for bound in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be a pair (low, high) of numbers, got {bounds!r}") from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"bounds must be finite with low < high, got ({low}, {high})")
    outside = grid[(grid < low) | (grid > high)]  # NaN compares False: invalid values pass
    if outside.size:
        raise ValueError(
            f"{outside.size} value(s) lie outside bounds ({low:g}, {high:g}), e.g. {outside[0]:g}; "
            "winrate scores lie in (0, 1) and paired differences of them in (-1, 1)"
        )
    return (low, high)


def crossed_difference(
    a_values: ArrayLike,
    b_values: ArrayLike,
    *,
    confidence: float = 0.95,
    bounds: tuple[float, float] | None = None,
) -> CrossedEstimate:
    """Mean difference ``a - b`` of two methods on the same ``[k, n]`` seeds x prompts grid.

    :func:`crossed_mean` of ``a - b``: row ``s`` pairs seed ``s`` of A with seed ``s`` of B (the
    pair's two seeds are independent draws, so a row of differences is one draw of a "seed
    pair"), column ``j`` is prompt ``j`` for both. A prompt's difficulty, shared by A and B,
    cancels in ``a - b``; what is left of it is the prompt component of the differences. A cell
    NaN on either side drops that prompt (listwise, as in :func:`crossed_mean`).

    Args:
        a_values: ``[k, n]`` values of method A (a 1-D ``[n]`` array is one seed).
        b_values: ``[k, n]`` values of method B, same seeds order and prompts.
        confidence: nominal coverage ``c``, in (0, 1).
        bounds: the range of the *differences*, passed to :func:`crossed_mean` as it is: for
            two winrate scores in ``[0, 1]``, ``(-1, 1)``.

    Raises:
        ValueError: the two grids differ in shape, or as :func:`crossed_mean`.
    """
    a_grid = np.asarray(a_values, dtype=np.float64)
    b_grid = np.asarray(b_values, dtype=np.float64)
    if a_grid.shape != b_grid.shape:
        raise ValueError(
            f"crossed_difference needs the same seeds and prompts on both sides: "
            f"a has shape {a_grid.shape}, b has shape {b_grid.shape}"
        )
    return crossed_mean(a_grid - b_grid, confidence=confidence, bounds=bounds)


def _crossed_moments(
    grid: np.ndarray, confidence: float, bounds: tuple[float, float] | None = None
) -> dict[str, np.ndarray]:
    """Mean squares, components, ``Var_hat``, its df, the interval and its flag, of grids.

    Args:
        grid: ``[..., k, n]`` complete (NaN-free) grids; leading axes are independent grids
            (the coverage simulation passes ``[reps, k, n]``).
        confidence: nominal coverage ``c``.
        bounds: ``(L, U)`` with every value inside (checked by :func:`crossed_mean`), or
            ``None``; it selects the score interval (4).

    Returns:
        Arrays of shape ``[...]`` keyed ``mean``, ``ms_seeds``, ``ms_prompts``, ``ms_residual``,
        ``seed_variance``, ``prompt_variance``, ``residual_variance``, ``variance_of_mean``,
        ``df``, ``low``, ``high``, ``half_width`` (``(high - low) / 2``), ``quantile``,
        ``t_quantile`` (the half-width of the t interval (3) in standard errors) and
        ``decidable`` (equations in :func:`crossed_mean`). When ``Var_hat`` is 0, ``df`` is
        ``inf`` and both quantiles are ``t_{n - 1}`` with one seed, ``inf`` (undecidable) with
        more.
    """
    probability = (1.0 + confidence) / 2.0
    k, n = grid.shape[-2], grid.shape[-1]
    mean = grid.mean(axis=(-2, -1))
    t_prompts = float(student_t_quantile(probability, n - 1.0))
    if k == 1:
        total = grid[..., 0, :].var(axis=-1, ddof=1)
        missing = np.full(np.shape(mean), np.nan)
        variance = total / n
        moments = {
            "ms_seeds": missing,
            "ms_prompts": total,
            "ms_residual": missing,
            "seed_variance": missing,
            "prompt_variance": missing,
            "residual_variance": total,
            "df": np.where(variance > 0, float(n - 1), np.inf),
        }
        t_half_width = t_prompts * np.sqrt(variance)
        # Nothing to flag with one seed; a zero variance is a zero-width t, (4) widens it.
        degenerate_quantile, degenerate_flag = t_prompts, t_prompts
    else:
        row_means = grid.mean(axis=-1)
        column_means = grid.mean(axis=-2)
        ms_seeds = n * row_means.var(axis=-1, ddof=1)
        ms_prompts = k * column_means.var(axis=-1, ddof=1)
        residuals = (
            grid - row_means[..., :, None] - column_means[..., None, :] + mean[..., None, None]
        )
        df_seeds, df_prompts, df_residual = k - 1.0, n - 1.0, (k - 1.0) * (n - 1.0)
        ms_residual = (residuals**2).sum(axis=(-2, -1)) / df_residual
        # Var_hat = MS_seeds / (k n) + max(0, MS_prompts - MS_resid) / (k n): the seed mean
        # square is never clamped away (see crossed_mean), only the prompt component is.
        scale = 1.0 / (k * n)
        prompt_kept = ms_prompts > ms_residual
        prompt_variance = np.where(prompt_kept, (ms_prompts - ms_residual) / k, 0.0)
        variance = scale * ms_seeds + prompt_variance / n
        denominator = (scale * ms_seeds) ** 2 / df_seeds + np.where(
            prompt_kept,
            (scale * ms_prompts) ** 2 / df_prompts + (scale * ms_residual) ** 2 / df_residual,
            0.0,
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(denominator > 0, variance**2 / denominator, np.inf)
        moments = {
            "ms_seeds": ms_seeds,
            "ms_prompts": ms_prompts,
            "ms_residual": ms_residual,
            "seed_variance": np.maximum(ms_seeds - ms_residual, 0.0) / n,
            "prompt_variance": prompt_variance,
            "residual_variance": ms_residual,
            "df": df,
        }
        # Banerjee's interval: each part of Var_hat gets the t quantile of its own mean square.
        t_seeds = float(student_t_quantile(probability, df_seeds))
        t_half_width = np.sqrt(t_seeds**2 * scale * ms_seeds + t_prompts**2 * prompt_variance / n)
        # Var_hat = 0 (seeds with equal means, prompts adding nothing): no scale, no claim.
        degenerate_quantile, degenerate_flag = t_seeds, np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        t_quantile = np.where(variance > 0, t_half_width / np.sqrt(variance), degenerate_flag)
    limit = float(student_t_quantile(probability, CROSSED_MIN_DF))
    # With k = 3 and no prompt component the quantile is t_2 itself: equal, not wider.
    # Two seeds are never decidable: see MIN_DECIDABLE_SEEDS.
    decidable = np.full(np.shape(mean), k == 1) | (
        (k >= MIN_DECIDABLE_SEEDS) & (t_quantile <= limit * (1.0 + 1e-9))
    )
    if bounds is None:
        low, high = mean - t_half_width, mean + t_half_width
    else:
        score_quantile = np.where(variance > 0, t_quantile, degenerate_quantile)
        low, high = _bounded_score_interval(mean, variance, score_quantile, k * n, bounds)
    half_width = (high - low) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        quantile = np.where(variance > 0, half_width / np.sqrt(variance), degenerate_flag)
    return {
        "mean": mean,
        **moments,
        "variance_of_mean": variance,
        "low": low,
        "high": high,
        "half_width": half_width,
        "quantile": quantile,
        "t_quantile": t_quantile,
        "decidable": decidable,
    }


def _bounded_score_interval(
    mean: np.ndarray,
    variance_of_mean: np.ndarray,
    quantile: ArrayLike,
    n_values: int,
    bounds: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (4) of :func:`crossed_mean`: the Wilson-type interval for ``[...]`` bounded means.

    Args:
        mean: ``[...]`` grand means of values in ``bounds``.
        variance_of_mean: ``[...]`` their ``Var_hat``.
        quantile: ``[...]`` (or scalar) ``q``, the t interval's half-width in standard errors.
        n_values: ``k n``, the values behind each mean; ``1 / n_eff = 1 / n_values`` (``r = 1``)
            where the mean sits on a bound or ``Var_hat`` is 0.
        bounds: ``(L, U)``.

    Returns:
        ``(low, high)``, arrays of shape ``[...]`` inside ``bounds``.
    """
    lower, upper = bounds
    width = upper - lower
    m = np.clip((mean - lower) / width, 0.0, 1.0)  # clip: rounding at a bound
    bernoulli = m * (1.0 - m)
    spread_seen = (bernoulli > 0) & (variance_of_mean > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse_n_eff = np.where(
            spread_seen, variance_of_mean / width**2 / bernoulli, 1.0 / n_values
        )
    shrink = quantile**2 * inverse_n_eff  # q^2 / n_eff
    centre = (m + shrink / 2.0) / (1.0 + shrink)
    # m (1 - m) / n_eff + q^2 / (4 n_eff^2)
    spread = bernoulli * inverse_n_eff + (shrink / 2.0 / quantile) ** 2
    half = quantile / (1.0 + shrink) * np.sqrt(spread)
    return lower + width * (centre - half), lower + width * (centre + half)


def student_t_quantile(probability: float, df: ArrayLike) -> np.ndarray:
    """Quantile of Student's t at ``probability`` for real, even fractional, ``df``; numpy only.

    Inverts the CDF ``F(t) = 1 - I_x(df / 2, 1 / 2) / 2`` for ``t > 0``, ``x = df / (df + t^2)``
    (Abramowitz & Stegun 26.7.1), by bisection on ``t``; ``I_x`` is the regularised incomplete
    beta by its continued fraction (Numerical Recipes 3rd ed., sec. 6.4). ``df = inf`` gives the
    normal quantile. Accurate to about 1e-9.

    Args:
        probability: in (1/2, 1).
        df: ``[...]`` degrees of freedom, > 0 (``inf`` allowed).

    Returns:
        ``[...]`` quantiles.
    """
    if not 0.5 < probability < 1.0:
        raise ValueError(f"probability must lie in (1/2, 1), got {probability}")
    if np.ndim(df) == 0:
        # Scalars recur (t_{k-1}, t_{n-1} for every cell of a leaderboard): computed once.
        return np.asarray(_scalar_t_quantile(float(probability), float(df)))
    return _t_quantiles(probability, np.asarray(df, dtype=np.float64))


@functools.lru_cache(maxsize=4096)
def _scalar_t_quantile(probability: float, df: float) -> float:
    return float(_t_quantiles(probability, np.asarray(df, dtype=np.float64)))


def _t_quantiles(probability: float, df: np.ndarray) -> np.ndarray:
    """:func:`student_t_quantile` of an array of df, by bisection (its docstring)."""
    finite_df = np.where(np.isfinite(df), np.minimum(df, 1e6), 1e6)  # t_1e6 = normal to 1e-6
    tail = 2.0 * (1.0 - probability)  # two-sided tail mass I_x(df/2, 1/2) at the quantile
    low = np.zeros_like(finite_df)
    high = np.full_like(finite_df, 1.0)
    # Grow the upper bracket until I_x at it is below the tail (t large enough).
    for _ in range(200):
        too_small = _incomplete_beta(finite_df / 2.0, finite_df / (finite_df + high**2)) > tail
        if not too_small.any():
            break
        high = np.where(too_small, high * 2.0, high)
    for _ in range(100):
        middle = (low + high) / 2.0
        above = _incomplete_beta(finite_df / 2.0, finite_df / (finite_df + middle**2)) > tail
        low = np.where(above, middle, low)
        high = np.where(above, high, middle)
    return (low + high) / 2.0


def _incomplete_beta(a: np.ndarray, x: np.ndarray, b: float = 0.5) -> np.ndarray:
    """Regularised incomplete beta ``I_x(a, b)``, elementwise, by Lentz's continued fraction."""
    a, x = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(x, dtype=np.float64))
    swap = x > (a + 1.0) / (a + b + 2.0)  # the fraction converges fast below this point
    aa = np.where(swap, b, a)
    bb = np.where(swap, a, b)
    xx = np.where(swap, 1.0 - x, x)
    log_front = (
        _log_gamma(aa + bb)
        - _log_gamma(aa)
        - _log_gamma(bb)
        + aa * np.log(np.maximum(xx, 1e-300))
        + bb * np.log(np.maximum(1.0 - xx, 1e-300))
    )
    tiny = 1e-300
    c = np.ones_like(xx)
    d = 1.0 - (aa + bb) * xx / (aa + 1.0)
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, 300):
        for numerator in (
            m * (bb - m) * xx / ((aa + 2 * m - 1) * (aa + 2 * m)),
            -(aa + m) * (aa + bb + m) * xx / ((aa + 2 * m) * (aa + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + numerator / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            h = h * d * c
        if np.all(np.abs(d * c - 1.0) < 1e-14):
            break
    fraction = np.exp(log_front) * h / aa
    result = np.where(swap, 1.0 - fraction, fraction)
    return np.where(xx <= 0.0, np.where(swap, 1.0, 0.0), result)


def _log_gamma(z: np.ndarray) -> np.ndarray:
    """``log Gamma(z)`` for ``z > 0``, elementwise (math.lgamma, which numpy lacks)."""
    from math import lgamma

    return np.vectorize(lgamma, otypes=[np.float64])(z)
