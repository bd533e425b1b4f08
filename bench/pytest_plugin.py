"""pytest plugin: suites as test items.

`pytest suites/ --method=dpo` collects every runnable `suites/**/*.yaml` (bases named `_*.yaml`
are skipped), and any suite file named on the command line wherever it lies, into one item per
(method, budget, seed) cell, with ids like
`suites/micro/keywords.yaml::dpo[n=250,seed=0]`. An item runs its cell (or reuses it from the
cache), appends its result line, and checks the suite's expectations for it; a failure is one
sentence with the numbers and their CI. In a multi-seed suite the expectations are checked by
an extra item per (method, budget), e.g. `dpo[n=250,seeds=0+1+2]`, on the pooled seeds.

With `--regression` (or the ini option `pftbench_regression = true`) each cell item also compares
its winrate with the committed leaderboard value of the same cell (`bench.report.regression`):
outside the committed 95% CI fails, with one sentence; a cell with no committed value is reported as
new. The committed lines are read once, after collection and before any item runs or appends.

Every suite item carries the marker `e2e` (and the suite's `gpu`, `api`, `slow`), so that
`pytest -m "not e2e"` keeps the fast tests. After the run, the terminal summary lists why items
skipped: one line per reason with its count, suites skipped for one reason on one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.config import Cell, Suite, is_suite_file, load_suite
from bench.errors import ConfigError

_SESSION = pytest.StashKey[Any]()
_BASELINE = pytest.StashKey[Any]()
_SUITES = pytest.StashKey[list]()
_SUITE_SKIPS = pytest.StashKey[dict]()


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
        help="where result lines go (default: <rootdir>/results; the committed "
        "leaderboard/results only when named)",
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
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: $OMP_NUM_THREADS, else the physical cores available)",
    )
    group.addoption(
        "--micro-batch-size",
        type=int,
        default=None,
        help="examples per forward/backward pass in training (gradients accumulated over a "
        "step's batch: less memory, same gradient; not part of any cache key)",
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


MARKERS = {
    "gpu": "needs a CUDA GPU",
    "api": "needs an API key for a judge endpoint",
    "slow": "long-running; run with --run-slow",
    "e2e": "end to end: trains and judges models (every suite cell is one), or runs a server "
    "or a browser; -m 'not e2e' keeps the fast unit and contract tests",
}
"""The markers this plugin puts on suite items (a suite's `requires`, and e2e), registered here."""


def pytest_configure(config: pytest.Config) -> None:
    from bench.run import threads

    try:
        threads.configure(config.getoption("threads"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    micro_batch_size = config.getoption("micro_batch_size")
    if micro_batch_size is not None and micro_batch_size < 1:
        raise pytest.UsageError(
            f"--micro-batch-size: expected a positive integer, got {micro_batch_size}"
        )
    for name, description in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {description}")
    config.stash[_SUITES] = []
    config.stash[_SUITE_SKIPS] = {}


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SESSION in config.stash:
        config.stash[_SESSION].runner.close_backends()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A suite file named on the command line, wherever it is; in a directory, those under suites/.

    Only folders named `suites` are searched, so that other YAML (configs/accelerate/*.yaml, test
    fixtures) is never mistaken for a suite.
    """
    if is_suite_file(file_path) and (
        "suites" in file_path.parts or parent.session.isinitpath(file_path)
    ):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from bench.run.selection import UsageError, check_filters

    # Every suite collected, also one whose cells the filters all left out: that is the mistake.
    suites = config.stash[_SUITES]
    option = config.getoption
    try:
        check_filters(suites, option("method"), option("budget"), option("seed"))
    except UsageError as error:
        raise pytest.UsageError(str(error)) from None
    if any(isinstance(item, CellItem) for item in items) and regression_enabled(config):
        from bench.report.regression import Baseline
        from bench.report.results import ResultFileError

        # Read now, before any item runs: the items append their fresh lines to results_dir.
        try:
            config.stash[_BASELINE] = Baseline.snapshot(baseline_dir(config))
        except ResultFileError as error:
            raise pytest.UsageError(str(error)) from None


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    skips = [skip_of(report, config) for report in terminalreporter.stats.get("skipped", [])]
    if skips:
        terminalreporter.section("skipped, by reason")
        for line in skip_summary(skips):
            terminalreporter.write_line(line)
    session = config.stash.get(_SESSION, None)
    if session is not None and session.lines:
        terminalreporter.section("pftbench results")
        terminalreporter.write_line(session.table())
        regression = session.regression_report()
        if regression:
            terminalreporter.section("pftbench regression check")
            for line in regression:
                terminalreporter.write_line(line)


@dataclass(frozen=True)
class Skip:
    """One skipped item: where it is and why."""

    where: str
    """The suite file or the test file."""
    reason: str
    """For a suite, what it says of the suite file ("is marked slow; run it with --run-slow")."""
    is_suite: bool


def skip_of(report: pytest.TestReport | pytest.CollectReport, config: pytest.Config) -> Skip:
    """The Skip a skipped report stands for: its suite's reasons, else the skip's own."""
    suite_skip = config.stash[_SUITE_SKIPS].get(report.nodeid)
    if suite_skip is not None:
        return Skip(*suite_skip, is_suite=True)
    _, _, message = report.longrepr  # (path, line, "Skipped: reason") for every skip
    return Skip(report.nodeid.split("::")[0], message.removeprefix("Skipped: "), is_suite=False)


def skip_summary(skips: Iterable[Skip], max_names: int = 6) -> list[str]:
    """One line per distinct reason, most items first: how many skipped, where, and why.

    The items of several suites skipped for the same reason share a line, which names the
    suites by file stem (at most `max_names`), e.g.
    `skipped 48 in 3 suites (lab_hidden, lab_keywords, lab_smoke): each is marked slow; run it
    with --run-slow`.
    """
    groups: dict[tuple[str, bool], list[str]] = {}
    for skip in skips:
        groups.setdefault((skip.reason, skip.is_suite), []).append(skip.where)
    lines = []
    for (reason, is_suite), wheres in sorted(groups.items(), key=lambda group: -len(group[1])):
        places = sorted(set(wheres))
        if len(places) == 1:
            where = f"{places[0]} {reason}" if is_suite else f"{places[0]}: {reason}"
            lines.append(f"skipped {len(wheres)}: {where}")
            continue
        names = [Path(place).stem if is_suite else Path(place).name for place in places]
        shown = ", ".join(names[:max_names])
        if len(names) > max_names:
            shown += f" and {len(names) - max_names} more"
        kind, why = ("suites", f"each {reason}") if is_suite else ("files", reason)
        lines.append(f"skipped {len(wheres)} in {len(places)} {kind} ({shown}): {why}")
    return lines


def regression_enabled(config: pytest.Config) -> bool:
    """--regression, else the ini option pftbench_regression."""
    flag = config.getoption("regression")
    return bool(flag) if flag is not None else bool(config.getini("pftbench_regression"))


def results_dir_for(config: pytest.Config) -> Path:
    """--results-dir, else <rootdir>/results: never the committed leaderboard by default."""
    results = config.getoption("results_dir")
    return Path(results) if results else config.rootpath / "results"


def baseline_dir(config: pytest.Config) -> Path:
    """The committed leaderboard, wherever --results-dir sends this run's lines."""
    baseline = config.getoption("regression_baseline")
    return Path(baseline) if baseline else config.rootpath / "leaderboard" / "results"


def session_for(config: pytest.Config) -> Any:
    """The run's `bench.run.session.Session`: one runner, every line kept, the baseline if any."""
    if _SESSION not in config.stash:
        from bench.run.cache import Cache
        from bench.run.runner import Runner
        from bench.run.session import Session

        cache_dir = config.getoption("pftbench_cache_dir")
        cache = Cache(Path(cache_dir)) if cache_dir else Cache.default()
        runner = Runner(
            cache,
            results_dir_for(config),
            progress=False,
            log=lambda _: None,
            micro_batch_size=config.getoption("micro_batch_size"),
        )
        config.stash[_SESSION] = Session(runner, config.stash.get(_BASELINE, None))
    return config.stash[_SESSION]


class SuiteFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        from bench.run.selection import check_groups, missing_resources

        # Read from the absolute path (the cwd may be anywhere); shown and recorded in result
        # lines (`suite_file`) relative to rootdir, as the committed lines have it.
        rootpath = self.config.rootpath
        shown = self.path.relative_to(rootpath) if self.path.is_relative_to(rootpath) else self.path
        try:
            suite = load_suite(self.path, shown=str(shown))
        except ConfigError as error:
            raise self.CollectError(str(error)) from None
        self.config.stash[_SUITES].append(suite)
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
            item.add_marker(pytest.mark.e2e)
            for resource in suite.requires:
                item.add_marker(getattr(pytest.mark, resource))
            if reasons:
                reason = "; ".join(reasons)
                item.add_marker(pytest.mark.skip(reason=f"{suite.source} {reason}"))
                self.config.stash[_SUITE_SKIPS][item.nodeid] = (suite.source, reason)
        return items


class ExpectationFailed(Exception):
    """The cell ran, but its results contradict the suite's expectations."""


class CellItem(pytest.Item):
    def __init__(self, *, suite: Suite, cell: Cell, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.cell = cell

    def runtest(self) -> None:
        from bench.run.selection import CheckGroup

        session = session_for(self.config)
        line = session.run(self.cell)
        self.user_properties.append(
            ("winrate", f"{line.winrate:.4f} [{line.ci_low:.4f}, {line.ci_high:.4f}]")
        )
        one_seed = len(self.suite.seeds) == 1
        failures = session.check(CheckGroup(self.cell, (self.cell.seed,))) if one_seed else []
        if self.cell in session.comparisons:
            self.user_properties.append(("regression", session.comparisons[self.cell].status.value))
        shifted = session.regression_failure(self.cell)
        if shifted:
            failures.append(shifted)
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
        from bench.run.selection import CheckGroup

        failures = session_for(self.config).check(CheckGroup(self.cell, self.seeds))
        if failures:
            raise ExpectationFailed("\n".join(failures))
