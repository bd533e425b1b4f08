"""Is a result line self-consistent? Its summary numbers recomputed from its own per-prompt data.

A result line states numbers (winrate, its CI, mean reward, its CI) and the per-prompt data they
come from (`outcomes`, `rewards`). Both `pftbench submit` (a bundle line) and `pftbench check`
(a committed line, before a fresh rerun is compared with it) ask this module whether the numbers
are what the data gives, with the very functions the runner wrote them with
(`bench.stats.winrate_estimate`, `bench.stats.mean_reward_estimate`), so a recomputation of an
honest line gives back exactly its numbers. The counts (wins, losses, ties, n, n_invalid) are
checked against `outcomes` when a line is loaded (`ResultLine`'s validator): a line whose counts
disagree never loads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.results import ResultLine
from bench.stats import Estimate, mean_reward_estimate, winrate_estimate
from bench.verdicts import outcomes_from_string

NUMBER_TOLERANCE = 1e-6
"""How far a stated number may be from its recomputation (JSON round trips, rounding)."""


@dataclass(frozen=True)
class Discrepancy:
    """One stated number of a line that its per-prompt data does not give."""

    field: str
    """The result-line field, e.g. "winrate"."""
    stated: float | None
    recomputed: float | None
    source: str
    """What it was recomputed from: "its outcomes" or "its rewards"."""

    def __str__(self) -> str:
        return (
            f"{self.field} is {_number(self.stated)}, but {self.source} give "
            f"{_number(self.recomputed)}"
        )


def number_discrepancies(line: ResultLine) -> list[Discrepancy]:
    """The summary numbers of `line` that its outcomes and rewards do not give (empty: all do).

    winrate, ci_low and ci_high are recomputed from `outcomes` (NaN when no verdict is valid);
    mean_reward, reward_ci_low and reward_ci_high from `rewards` (None when there is no reward).
    """
    winrate = winrate_estimate(outcomes_from_string(line.outcomes))
    reward = mean_reward_estimate(line.rewards)
    expected: list[tuple[str, float | None, str]] = [
        *_fields(("winrate", "ci_low", "ci_high"), winrate, "its outcomes"),
        *_fields(("mean_reward", "reward_ci_low", "reward_ci_high"), reward, "its rewards"),
    ]
    return [
        Discrepancy(name, getattr(line, name), value, source)
        for name, value, source in expected
        if not _same(getattr(line, name), value)
    ]


def _fields(
    names: tuple[str, str, str], estimate: Estimate | None, source: str
) -> list[tuple[str, float | None, str]]:
    if estimate is None:
        return [(name, None, source) for name in names]
    values = (estimate.value, estimate.low, estimate.high)
    return [(name, value, source) for name, value in zip(names, values, strict=True)]


def _same(stated: float | None, recomputed: float | None) -> bool:
    if stated is None or recomputed is None:
        return stated is None and recomputed is None
    if math.isnan(stated) or math.isnan(recomputed):
        return math.isnan(stated) and math.isnan(recomputed)
    return abs(stated - recomputed) <= NUMBER_TOLERANCE


def _number(value: float | None) -> str:
    return "absent" if value is None else f"{value:.4f}"
