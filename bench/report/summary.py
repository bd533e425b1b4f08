"""Every number of a result line and of a leaderboard cell, from per-prompt records: one place.

`line_numbers` gives a result line's summary fields from its own outcomes and rewards (the
runner writes a line with it, `pftbench migrate` rewrites old lines with it,
`bench.report.integrity` recomputes a stated line with it). `pool` gives a cell's numbers over its
seeds, and `difference` (`reward_difference`) the paired winrate (mean reward) difference of two
cells (the leaderboard, the page, the run's table, the expectations and the lab summary read
them).

Every seed of every method is judged on the same evaluation prompts, so a cell's result lines
form a crossed ``[k seeds, n prompts]`` grid, and two methods' cells share its columns. The
numbers here are `bench.report.stats.crossed_mean` / `crossed_difference` of those grids, the
intervals the coverage benchmark checks (`benchmarks/coverage_bench.py`).

Per prompt: the headline winrate scores an invalid output (I) as a loss and leaves a failed
judgment (F) out; the valid-only winrate leaves both out; the mean reward counts an invalid
output at the line's `reward_floor`. A prompt left out in any seed is left out of every seed
(listwise), so the grid stays complete. With one seed every number is exactly the one its result
line states (`line_numbers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.evaluate.verdicts import Verdict, outcomes_from_string
from bench.report.results import ResultLine
from bench.report.stats import (
    WINRATE_BOUNDS,
    CrossedEstimate,
    crossed_mean,
    mean_reward_estimate,
    verdict_scores,
    winrate_estimate,
)

DIFFERENCE_BOUNDS = (-1.0, 1.0)
"""The range of a paired winrate difference of two scores in [0, 1]."""


NUMBER_FIELDS = (
    "winrate",
    "ci_low",
    "ci_high",
    "valid_winrate",
    "valid_ci_low",
    "valid_ci_high",
    "mean_reward",
    "reward_ci_low",
    "reward_ci_high",
)
"""The stated numbers of a line that `line_numbers` derives from its per-prompt records."""


def line_numbers(
    outcomes: str, rewards: list[float | None] | None, reward_floor: float | None
) -> dict[str, Any]:
    """Every summary field of a result line, from its per-prompt records: the one derivation.

    The runner writes a line with it, `pftbench migrate` rewrites old lines with it, and
    `bench.report.integrity` recomputes a stated line with it. Returns the counts (wins, losses,
    ties, n_invalid, n_failed, n), the headline winrate and its CI
    (`bench.report.stats.winrate_estimate`: invalid outputs are losses), the valid-only winrate, and
    the mean reward with invalid outputs at `reward_floor`
    (`bench.report.stats.mean_reward_estimate`), with `reward_floor` itself.
    """
    verdicts = outcomes_from_string(outcomes)
    winrate = winrate_estimate(verdicts)
    valid = winrate_estimate(verdicts, valid_only=True)
    reward = mean_reward_estimate(rewards, reward_floor)
    return {
        "winrate": winrate.value,
        "ci_low": winrate.low,
        "ci_high": winrate.high,
        "n": winrate.n,
        "n_invalid": outcomes.count(Verdict.INVALID.value),
        "n_failed": outcomes.count(Verdict.FAILED.value),
        "wins": outcomes.count(Verdict.WIN.value),
        "losses": outcomes.count(Verdict.LOSS.value),
        "ties": outcomes.count(Verdict.TIE.value),
        "valid_winrate": valid.value,
        "valid_ci_low": valid.low,
        "valid_ci_high": valid.high,
        "mean_reward": reward.value if reward else None,
        "reward_ci_low": reward.low if reward else None,
        "reward_ci_high": reward.high if reward else None,
        "reward_floor": reward_floor,
    }


@dataclass(frozen=True)
class CellNumbers:
    """A cell's numbers over its seeds; an estimate is None where no prompt counts."""

    seeds: list[int]
    winrate: CrossedEstimate | None
    """Headline: invalid outputs are losses, failed judgments left out."""
    valid_winrate: CrossedEstimate | None
    """Secondary: invalid outputs left out too."""
    mean_reward: CrossedEstimate | None
    """Invalid outputs at `reward_floor` (left out when it is None); None without rewards."""
    reward_floor: float | None
    n_invalid: int
    """Invalid outputs, summed over seeds."""
    n_failed: int
    """Failed judgments, summed over seeds."""


def pool(lines: Sequence[ResultLine]) -> CellNumbers:
    """The numbers of one cell's seed lines (one line per seed, in seed order).

    Raises:
        ValueError: the lines disagree on the number of prompts or on the reward floor (they
            are not one cell's seeds).
    """
    lines = list(lines)
    floors = {line.reward_floor for line in lines}
    if len(floors) > 1:
        raise ValueError(f"the seeds of one cell disagree on reward_floor: {sorted(floors)}")
    rewards = None
    if all(line.rewards is not None for line in lines):
        rewards = _estimate([_rewards(line) for line in lines], None)
    return CellNumbers(
        seeds=[line.seed for line in lines],
        winrate=_estimate([scores(line) for line in lines], WINRATE_BOUNDS),
        valid_winrate=_estimate([scores(line, valid_only=True) for line in lines], WINRATE_BOUNDS),
        mean_reward=rewards,
        reward_floor=next(iter(floors)),
        n_invalid=sum(line.n_invalid for line in lines),
        n_failed=sum(line.n_failed for line in lines),
    )


def difference(
    a_lines: Sequence[ResultLine], b_lines: Sequence[ResultLine]
) -> CrossedEstimate | None:
    """The paired headline-winrate difference A - B over seeds both ran, on the same prompts.

    ``a_lines[s]`` and ``b_lines[s]`` are the two methods' lines of seed ``s``; None when fewer
    than two prompts count on both sides in every seed.
    """
    if len(a_lines) != len(b_lines):
        raise ValueError(
            f"a paired difference needs the same seeds: {len(a_lines)} lines against {len(b_lines)}"
        )
    a = _grid([scores(line) for line in a_lines])
    b = _grid([scores(line) for line in b_lines])
    if a.shape != b.shape:
        raise ValueError(
            f"a paired difference needs the same prompts: {a.shape[1]} against {b.shape[1]}"
        )
    return _crossed(a - b, DIFFERENCE_BOUNDS)


def reward_difference(
    a_lines: Sequence[ResultLine], b_lines: Sequence[ResultLine]
) -> CrossedEstimate | None:
    """The paired mean-reward difference A - B (the gold reward where the judge is gold) over
    seeds both ran, on the same prompts: an invalid output counts at its line's `reward_floor`
    (left out where that is None), as in the cell's mean reward. None when a side records no
    rewards, the two sides' floors differ, or fewer than two prompts count on both sides."""
    if len(a_lines) != len(b_lines):
        raise ValueError(
            f"a paired difference needs the same seeds: {len(a_lines)} lines against {len(b_lines)}"
        )
    lines = [*a_lines, *b_lines]
    if not lines or any(line.rewards is None for line in lines):
        return None
    if len({line.reward_floor for line in lines}) > 1:
        return None
    a, b = _grid([_rewards(line) for line in a_lines]), _grid([_rewards(line) for line in b_lines])
    if a.shape != b.shape:
        raise ValueError(
            f"a paired difference needs the same prompts: {a.shape[1]} against {b.shape[1]}"
        )
    return _crossed(a - b, None)


def _rewards(line: ResultLine) -> list[float]:
    missing = np.nan if line.reward_floor is None else float(line.reward_floor)
    return [missing if r is None else r for r in line.rewards or []]


def scores(line: ResultLine, *, valid_only: bool = False) -> np.ndarray:
    """``[n]`` per-prompt winrate scores of a line (`bench.report.stats.verdict_scores`)."""
    return verdict_scores(outcomes_from_string(line.outcomes), valid_only=valid_only)


def _estimate(
    rows: list[np.ndarray] | list[list[float]], bounds: tuple[float, float] | None
) -> CrossedEstimate | None:
    return _crossed(_grid(rows), bounds)


def _grid(rows: list[np.ndarray] | list[list[float]]) -> np.ndarray:
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(f"the seeds of one cell disagree on the number of prompts: {lengths}")
    return np.array(rows, dtype=np.float64).reshape(len(rows), -1)


def _crossed(grid: np.ndarray, bounds: tuple[float, float] | None) -> CrossedEstimate | None:
    if grid.shape[0] == 0 or (~np.isnan(grid).any(axis=0)).sum() < 2:
        return None
    return crossed_mean(grid, bounds=bounds)
