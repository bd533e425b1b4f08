"""pytest plugin: suites as test items.

`pytest suites/ --method=dpo` collects every runnable `suites/**/*.yaml` (bases named `_*.yaml`
are skipped) into one item per (method, budget, seed) cell, with ids like
`suites/micro/keywords.yaml::dpo[n=250,seed=0]`. An item runs its cell (or reuses it from the
cache), appends its result line, and checks the suite's expectations for it; a failure is one
sentence with the numbers and their CI. In a multi-seed suite the expectations are checked by
an extra item per (method, budget), e.g. `dpo[n=250,seeds=0+1+2]`, on the pooled seeds.

With `--regression` (or the ini option `pftbench_regression = true`) each cell item also compares
its winrate with the committed leaderboard value of the same cell (`bench.regression`): outside
the committed 95% CI fails, with one sentence; a cell with no committed value is reported as new.
The committed lines are read once, after collection and before any item runs or appends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.config import Cell, Suite, is_suite_file, load_suite
from bench.errors import ConfigError

_RUNNER = pytest.StashKey[Any]()
_LINES = pytest.StashKey[dict]()
_BASELINE = pytest.StashKey[Any]()
_COMPARISONS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pftbench", "pftbench suites")
    group.addoption(
        "--method", action="append", default=None, help="only this method entry or id (repeatable)"
    )
    group.addoption(
        "--budget",
        action="append",
        default=None,
        help="only this budget, e.g. 250 or n=250 (repeatable)",
    )
    group.addoption(
        "--seed", action="append", type=int, default=None, help="only this seed (repeatable)"
    )
    group.addoption(
        "--results-dir",
        default=None,
        help="where result lines go (default: <rootdir>/leaderboard/results)",
    )
    group.addoption(
        "--pftbench-cache-dir",
        dest="pftbench_cache_dir",
        default=None,
        help="cache root (default $PFTBENCH_CACHE_DIR or ~/.cache/pftbench)",
    )
    group.addoption(
        "--run-slow", action="store_true", default=False, help="also run suites marked slow"
    )
    group.addoption(
        "--regression",
        action="store_true",
        default=None,
        help="also compare each cell's winrate with the committed leaderboard value",
    )
    group.addoption(
        "--regression-baseline",
        default=None,
        help="the committed result lines to compare with (default: <rootdir>/leaderboard/results)",
    )
    parser.addini(
        "pftbench_regression",
        type="bool",
        default=False,
        help="run the regression check as if --regression were given",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LINES] = {}
    config.stash[_COMPARISONS] = []


def pytest_unconfigure(config: pytest.Config) -> None:
    if _RUNNER in config.stash:
        config.stash[_RUNNER].close_backends()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if "suites" in file_path.parts and is_suite_file(file_path):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from bench.selection import UsageError, check_methods

    suites = {
        id(item.suite): item.suite for item in items if isinstance(item, (CellItem, CheckItem))
    }
    try:
        check_methods(config.getoption("method"), list(suites.values()))
    except UsageError as error:
        raise pytest.UsageError(str(error)) from None
    if suites and regression_enabled(config):
        from bench.regression import Baseline
        from bench.results import ResultFileError

        # Read now, before any item runs: the items append their fresh lines to results_dir.
        try:
            config.stash[_BASELINE] = Baseline.snapshot(baseline_dir(config))
        except ResultFileError as error:
            raise pytest.UsageError(str(error)) from None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, {})
    if lines:
        from bench.leaderboard import print_table

        terminalreporter.section("pftbench results")
        terminalreporter.write_line(print_table(list(lines.values())))
    comparisons = config.stash.get(_COMPARISONS, [])
    if comparisons:
        from bench.regression import Status, summary

        terminalreporter.section("pftbench regression check")
        for comparison in comparisons:
            if comparison.status is not Status.HELD:
                terminalreporter.write_line(f"{comparison.status.value}: {comparison.sentence}")
        terminalreporter.write_line(summary(comparisons, config.stash[_BASELINE]))


def regression_enabled(config: pytest.Config) -> bool:
    """--regression, else the ini option pftbench_regression."""
    flag = config.getoption("regression")
    return bool(flag) if flag is not None else bool(config.getini("pftbench_regression"))


def results_dir_for(config: pytest.Config) -> Path:
    results = config.getoption("results_dir")
    return Path(results) if results else config.rootpath / "leaderboard" / "results"


def baseline_dir(config: pytest.Config) -> Path:
    """The committed leaderboard, wherever --results-dir sends this run's lines."""
    baseline = config.getoption("regression_baseline")
    return Path(baseline) if baseline else config.rootpath / "leaderboard" / "results"


def runner_for(config: pytest.Config) -> Any:
    if _RUNNER not in config.stash:
        from bench.cache import Cache
        from bench.runner import Runner

        cache_dir = config.getoption("pftbench_cache_dir")
        cache = Cache(Path(cache_dir)) if cache_dir else Cache.default()
        config.stash[_RUNNER] = Runner(
            cache, results_dir_for(config), progress=False, log=lambda _: None
        )
    return config.stash[_RUNNER]


class SuiteFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        from bench.selection import check_groups, missing_resources

        try:
            suite = load_suite(
                self.path.relative_to(self.config.rootpath)
                if self.path.is_relative_to(self.config.rootpath)
                else self.path
            )
        except ConfigError as error:
            raise self.CollectError(str(error)) from None
        option = self.config.getoption
        cells = suite.cells(option("method"), option("budget"), option("seed"))
        reasons = missing_resources(suite, option("run_slow"))
        items: list[pytest.Item] = [
            CellItem.from_parent(self, name=cell.id, suite=suite, cell=cell) for cell in cells
        ]
        if len(suite.seeds) > 1:
            items += [
                CheckItem.from_parent(
                    self, name=group.id, suite=suite, cell=group.cell, seeds=group.seeds
                )
                for group in check_groups(cells)
            ]
        for item in items:
            for resource in suite.requires:
                item.add_marker(getattr(pytest.mark, resource))
            if reasons:
                item.add_marker(pytest.mark.skip(reason=f"{suite.source} {'; '.join(reasons)}"))
        return items


class ExpectationFailed(Exception):
    """The cell ran, but its results contradict the suite's expectations."""


class CellItem(pytest.Item):
    def __init__(self, *, suite: Suite, cell: Cell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.cell = cell

    def runtest(self) -> None:
        runner = runner_for(self.config)
        line = runner.run_cell(self.cell)
        self.config.stash[_LINES][self.cell] = line
        self.user_properties.append(
            ("winrate", f"{line.winrate:.4f} [{line.ci_low:.4f}, {line.ci_high:.4f}]")
        )
        failures = runner.check(self.cell, line) if len(self.suite.seeds) == 1 else []
        if _BASELINE in self.config.stash:
            from bench.regression import is_failure

            comparison = self.config.stash[_BASELINE].compare(line)
            self.config.stash[_COMPARISONS].append(comparison)
            self.user_properties.append(("regression", comparison.status.value))
            if is_failure(comparison.status):
                failures.append(comparison.sentence)
        if failures:
            raise ExpectationFailed("\n".join(failures))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ExpectationFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.suite.name}::{self.name}"


class CheckItem(CellItem):
    """Checks a (method, budget)'s expectations over all its seeds, pooled."""

    def __init__(self, *, seeds: tuple[int, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seeds = seeds

    def runtest(self) -> None:
        runner = runner_for(self.config)
        line = runner.run_cell(self.cell)
        failures = runner.check(self.cell, line, list(self.seeds))
        if failures:
            raise ExpectationFailed("\n".join(failures))
