"""One session: select cells -> run them -> check expectations -> compare with the leaderboard.

`pftbench run`, `pftbench check` and the pytest plugin are three faces of this module; none of
them holds logic the others lack. A session runs each cell at most once (its line is kept), so
an expectation that compares with another method's cells runs those once too, and the rules of
`bench.report.expectations` only ever read lines. With a baseline
(`bench.report.regression.Baseline`, read before anything runs) every line is compared with the
committed leaderboard as it arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import Cell
from bench.report.expectations import check_expectation
from bench.report.regression import Baseline, Comparison, Status, is_failure, summary
from bench.report.results import ResultLine
from bench.run.runner import Runner
from bench.run.selection import CheckGroup, check_filters, load_all, missing_resources


@dataclass(frozen=True)
class Selection:
    """The cells a command means, and the suites it skipped with why."""

    cells: list[Cell]
    skipped: list[str]
    """One sentence per skipped suite: `<file> <reasons>`."""


def select(
    paths: Iterable[str | Path],
    methods: Sequence[str] | None = None,
    budgets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    run_slow: bool = False,
) -> Selection:
    """The cells of the suites at `paths` that pass the filters, skipping suites that cannot
    run here. Raises `bench.run.selection.UsageError` for a filter no suite has."""
    suites = load_all(paths)
    check_filters(suites, methods, budgets, seeds)
    cells, skipped = [], []
    for suite in suites:
        reasons = missing_resources(suite, run_slow)
        if reasons:
            skipped.append(f"{suite.source} {'; '.join(reasons)}")
            continue
        cells += suite.cells(methods, budgets, seeds)
    return Selection(cells, skipped)


@dataclass
class Session:
    """Runs cells through `runner`, keeps their lines, checks and compares them."""

    runner: Runner
    baseline: Baseline | None = None
    """The committed leaderboard, read before anything ran; None: no regression check."""
    lines: dict[Cell, ResultLine] = field(default_factory=dict)
    """Every cell run in this session, in the order it ran."""
    comparisons: dict[Cell, Comparison] = field(default_factory=dict)

    def run(self, cell: Cell) -> ResultLine:
        """The cell's line, run once per session (and compared with the baseline if any)."""
        if cell not in self.lines:
            line = self.runner.run_cell(cell)
            self.lines[cell] = line
            if self.baseline is not None:
                self.comparisons[cell] = self.baseline.compare(line)
        return self.lines[cell]

    def check(self, group: CheckGroup) -> list[str]:
        """One sentence per failed expectation of the group's (method, budget), its seeds
        pooled; the cells an expectation compares with are run first (once)."""
        cell, seeds = group.cell, list(group.seeds)
        expectations = cell.suite.expectations_for(cell)
        names = {cell.method.name}
        for expectation in expectations:
            names |= {expectation.beats, expectation.equivalent_to} - {None}
        entries = {entry.name: entry for entry in cell.suite.methods}
        lines = {
            name: [self.run(Cell(cell.suite, entries[name], cell.budget, s)) for s in seeds]
            for name in sorted(names)
        }
        return [
            failure
            for expectation in expectations
            for failure in check_expectation(
                expectation, cell.method.name, cell.budget.label, seeds, lines
            )
        ]

    def regression_failure(self, cell: Cell) -> str | None:
        """The comparison's sentence when the cell shifted or met a corrupt baseline."""
        comparison = self.comparisons.get(cell)
        return comparison.sentence if comparison and is_failure(comparison.status) else None

    def table(self) -> str:
        """The table of the cells run, seeds pooled, with each suite's MDE under it."""
        from bench.report.leaderboard import print_table

        return print_table(list(self.lines.values()))

    def regression_report(self) -> list[str]:
        """Every comparison that did not hold, then the one-line summary; empty without a
        baseline or a comparison."""
        if self.baseline is None or not self.comparisons:
            return []
        comparisons = list(self.comparisons.values())
        return [
            f"{c.status.value}: {c.sentence}" for c in comparisons if c.status is not Status.HELD
        ] + [summary(comparisons, self.baseline)]

    def run_all(
        self, cells: Sequence[Cell], progress: Callable[[Sequence[Cell]], Iterable[Cell]] = iter
    ) -> None:
        """Run `cells` in order (through `progress`, e.g. a tqdm bar); backends closed after."""
        try:
            for cell in progress(cells):
                self.run(cell)
        finally:
            self.runner.close_backends()
