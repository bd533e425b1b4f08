"""Regression checks: a fresh cell's winrate against the committed leaderboard value.

A committed result line and a fresh one describe the same cell when they share the suite, the
suite version, the config hash (the resolved config, method config, budget and seed included),
the budget and the seed. Results are deterministic for a config and seed on a CPU, so a fresh
winrate outside the committed 95% CI, or (both runs with the same CPU arithmetic: no GPU, the
same processor, torch version and thread count) any prompt whose verdict differs from the
committed one, means that code changed what the cell computes.

A committed line is only a baseline if it is self-consistent: its winrate, CI and mean reward
must be what its own per-prompt outcomes and rewards give (`bench.report.integrity`). A line edited
by hand (a winrate raised, its interval left alone) is reported as corrupt, never compared.

    baseline = Baseline.snapshot(results_dir)   # BEFORE any run appends to results_dir
    comparison = baseline.compare(fresh_line)   # held, shifted, corrupt or new, in one sentence

`pftbench check` and `pytest suites/ --regression` are the two faces of this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from bench.report.integrity import number_discrepancies
from bench.report.results import ResultLine, latest_per_cell, load_located_results
from bench.run.hashing import short


class Status(str, Enum):
    HELD = "held"
    """The fresh winrate lies inside the committed 95% CI."""
    SHIFTED = "shifted"
    """The fresh winrate lies outside the committed CI, or (both runs with the same CPU
    arithmetic, which reproduces every verdict) some prompt's verdict differs: a regression (or
    an improvement) to explain and, if intended, to commit with a new suite version or config."""
    CORRUPT = "corrupt"
    """The committed line is not self-consistent (a number its own outcomes or rewards do not
    give): it was edited after the run, so it is no baseline. A failure, like SHIFTED."""
    NEW = "new"
    """No committed line has the cell's config hash: nothing to compare with, not a failure."""


@dataclass(frozen=True)
class Comparison:
    status: Status
    line: ResultLine
    """The fresh line."""
    committed: ResultLine | None
    """The committed line it was compared with (None when new)."""
    sentence: str
    """One plain sentence with both values and both CIs."""


@dataclass(frozen=True)
class Baseline:
    """The committed result lines, read once, before any run adds to them."""

    source: Path
    by_config_hash: dict[str, ResultLine]
    """config_hash -> the last committed line of it (a rerun supersedes)."""
    by_cell: dict[tuple, ResultLine]
    """(suite, suite_version, method, budget, seed) -> the last committed line of that cell,
    whatever its config: to say why a fresh cell found no committed value."""
    places: dict[str, str]
    """config_hash -> `file:line` of its line in `by_config_hash`, for messages about it."""

    @classmethod
    def snapshot(cls, results_dir: Path) -> Baseline:
        """Read every committed line of `results_dir` now; a missing folder is an empty baseline.

        Raises ResultFileError naming `file:line` for a line that is not a valid result line.
        """
        results_dir = Path(results_dir)
        located = load_located_results(results_dir) if results_dir.is_dir() else []
        lines = latest_per_cell(line for _, line in located)
        return cls(
            results_dir,
            {line.config_hash: line for line in lines},
            {_cell_key(line): line for line in lines},
            {line.config_hash: place for place, line in located},
        )

    def __len__(self) -> int:
        return len(self.by_config_hash)

    def compare(self, line: ResultLine) -> Comparison:
        """Whether `line` reproduces the committed line of the same cell (see `Status`)."""
        committed = self.by_config_hash.get(line.config_hash)
        if committed is not None and (
            committed.suite,
            committed.suite_version,
            committed.budget,
            committed.seed,
        ) != (line.suite, line.suite_version, line.budget, line.seed):
            committed = None  # a hash collision in name only: never compare different cells
        where = f"{line.suite} v{line.suite_version} {cell_id(line)}"
        if committed is None:
            return Comparison(Status.NEW, line, None, self._new_sentence(where, line))
        discrepancies = number_discrepancies(committed)
        if discrepancies:
            return Comparison(
                Status.CORRUPT,
                line,
                committed,
                f"{where}: the committed line {self.places[committed.config_hash]} is not "
                f"self-consistent, so it is no baseline: its "
                f"{'; its '.join(str(d) for d in discrepancies)}.",
            )
        differing = _differing_prompts(line.outcomes, committed.outcomes)
        verdicts = _verdicts_sentence(differing, committed)
        if not _within(line.winrate, committed):
            return Comparison(
                Status.SHIFTED,
                line,
                committed,
                f"{where} has winrate {_estimate(line)}, outside the committed 95% CI of "
                f"{_estimate(committed)} (config {short(line.config_hash)}); {verdicts}.",
            )
        held = f"{where} has winrate {_estimate(line)}, within the committed {_estimate(committed)}"
        if not differing:
            return Comparison(Status.HELD, line, committed, held + ".")
        arithmetic = _cpu_arithmetic(line)
        if arithmetic is not None and arithmetic == _cpu_arithmetic(committed):
            return Comparison(
                Status.SHIFTED,
                line,
                committed,
                f"{held}, but {verdicts}, and two CPU runs of one config with the same "
                "processor, torch and thread count reproduce every verdict "
                f"(config {short(line.config_hash)}).",
            )
        return Comparison(
            Status.HELD,
            line,
            committed,
            f"{held}; {verdicts} (a run on a GPU, or on another processor, torch or thread count, "
            "need not reproduce every verdict).",
        )

    def _new_sentence(self, where: str, line: ResultLine) -> str:
        same_cell = self.by_cell.get(_cell_key(line))
        if same_cell is None:
            return (
                f"{where} is new: no committed result in {self.source} has its config hash "
                f"{short(line.config_hash)}; its winrate is {_estimate(line)}."
            )
        differences = list(
            config_differences(line.config, same_cell.config, "the committed config")
        )
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        return (
            f"{where} is new: its config differs from the committed one's ({shown}), so its "
            f"winrate {_estimate(line)} has nothing to compare with (committed "
            f"{_estimate(same_cell)}); bump the suite version if old results no longer compare."
        )


def config_differences(
    config: Any, reference: Any, reference_name: str = "the reference", where: str = ""
) -> Iterable[str]:
    """`key.path is X, <reference_name> gives Y` for each leaf where two configs differ."""
    if isinstance(config, dict) and isinstance(reference, dict):
        for key in sorted(set(config) | set(reference), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in config:
                yield f"{path} is missing ({reference_name} gives {reference[key]!r})"
            elif key not in reference:
                yield f"{path} is {config[key]!r}, absent from {reference_name}"
            else:
                yield from config_differences(config[key], reference[key], reference_name, path)
    elif config != reference or type(config) is not type(reference):
        yield f"{where or 'config'} is {config!r}, {reference_name} gives {reference!r}"


def _cell_key(line: ResultLine) -> tuple:
    return (line.suite, line.suite_version, line.method, line.budget, line.seed)


def cell_id(line: ResultLine) -> str:
    """`dpo[n=250,seed=0]`, as the suite's cells are named."""
    return f"{line.method}[{line.budget},seed={line.seed}]"


def summary(comparisons: Sequence[Comparison], baseline: Baseline) -> str:
    """One line: how many cells held, shifted, met a corrupt baseline and were new."""
    counts = {status: 0 for status in Status}
    for comparison in comparisons:
        counts[comparison.status] += 1
    return (
        f"regression check against {len(baseline)} committed cells in {baseline.source}: "
        f"{counts[Status.HELD]} held, {counts[Status.SHIFTED]} shifted, "
        f"{counts[Status.CORRUPT]} corrupt, {counts[Status.NEW]} new"
    )


def is_failure(status: Status) -> bool:
    """Whether a comparison fails the check: the cell shifted, or its baseline is corrupt."""
    return status in (Status.SHIFTED, Status.CORRUPT)


def _differing_prompts(outcomes: str, committed: str) -> list[int]:
    """Prompt indices whose verdicts differ (positions only one side has count as differing)."""
    longest = max(len(outcomes), len(committed))
    return [
        index
        for index in range(longest)
        if outcomes[index : index + 1] != committed[index : index + 1]
    ]


def _verdicts_sentence(differing: list[int], committed: ResultLine) -> str:
    n_prompts = len(committed.outcomes)
    if not differing:
        return f"the verdicts of all {n_prompts} prompts are the committed ones"
    first = differing[0]
    return (
        f"the verdicts of {len(differing)} of {n_prompts} prompts differ from the committed ones "
        f"(first: prompt {first})"
    )


def _cpu_arithmetic(line: ResultLine) -> tuple | None:
    """What a CPU run's last digits depend on: processor, torch version and thread count.

    None for a GPU run. Lines written before the thread count was recorded ran with torch's
    default, one thread per core, which `cpu_count` stands for on machines without hyperthreads.
    """
    if line.hardware.get("gpus"):
        return None
    threads = line.hardware.get("torch_threads", line.hardware.get("cpu_count"))
    return (line.hardware.get("processor"), line.packages.get("torch"), threads)


def _within(winrate: float, committed: ResultLine) -> bool:
    if math.isnan(winrate) or math.isnan(committed.winrate):
        return math.isnan(winrate) and math.isnan(committed.winrate)
    return committed.ci_low <= winrate <= committed.ci_high


def _estimate(line: ResultLine) -> str:
    if line.n == 0:
        return f"undefined (no valid judgment, {line.n_invalid} invalid)"
    return f"{line.winrate:.3f} [{line.ci_low:.3f}, {line.ci_high:.3f}] n={line.n}"
