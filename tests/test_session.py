"""One session for the CLI and the plugin (issue 9): run once, check from lines, compare."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from result_factory import shared_cache_dir

from bench.cli import main
from bench.report.regression import Baseline
from bench.run.cache import Cache
from bench.run.runner import Runner
from bench.run.selection import CheckGroup
from bench.run.session import Session, select

pytestmark = pytest.mark.e2e  # the tiny suite trains: seconds


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return shared_cache_dir(tmp_path_factory)


class CountingRunner(Runner):
    """A runner that counts how often each cell is asked for."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: dict[str, int] = {}

    def run_cell(self, cell):
        self.calls[cell.id] = self.calls.get(cell.id, 0) + 1
        return super().run_cell(cell)


def test_an_expectation_runs_the_cells_it_compares_with_once(tiny_suite, cache_dir, tmp_path):
    tiny_suite.write_text(
        tiny_suite.read_text() + "expectations:\n  - {method: dpo, budget: 40, beats: sft}\n"
    )
    selection = select([tiny_suite], methods=["dpo"], budgets=["40"])
    assert [cell.id for cell in selection.cells] == ["dpo[n=40,seed=0]"]
    runner = CountingRunner(Cache(cache_dir), tmp_path / "results", progress=False, log=print)
    session = Session(runner)
    session.run_all(selection.cells)
    (group,) = [CheckGroup(selection.cells[0], (0,))]
    first = session.check(group)
    second = session.check(group)
    assert first == second and len(first) == 1  # dpo does not beat sft on the tiny suite
    assert "was expected to beat sft" in first[0]
    # sft at n=40 was not selected: the session ran it once, for the expectation.
    assert runner.calls == {"dpo[n=40,seed=0]": 1, "sft[n=40,seed=0]": 1}


def test_run_with_regression_compares_every_cell_with_the_committed_lines(
    tiny_suite, cache_dir, tmp_path, capsys
):
    committed = tmp_path / "committed"
    args = ["--cache-dir", str(cache_dir), "--no-progress", "--method", "sft"]
    assert main(["run", str(tiny_suite), "--results-dir", str(committed), *args]) == 0
    capsys.readouterr()
    results = tmp_path / "results"
    code = main(
        ["run", str(tiny_suite), "--results-dir", str(results), "--regression"]
        + ["--baseline-dir", str(committed), *args]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"regression check against 2 committed cells in {committed}: 2 held" in out
    # `pftbench check` is the same session without writing or checking expectations.
    assert main(["check", str(tiny_suite), "--baseline-dir", str(committed), *args]) == 0
    assert "2 held, 0 shifted, 0 corrupt, 0 new" in capsys.readouterr().out


def test_a_shifted_cell_fails_run_with_regression(tiny_suite, cache_dir, tmp_path, capsys):
    committed = tmp_path / "committed"
    args = ["--cache-dir", str(cache_dir), "--no-progress", "--method", "sft", "--budget", "40"]
    assert main(["run", str(tiny_suite), "--results-dir", str(committed), *args]) == 0
    # The committed line moved by hand (and made self-consistent): the rerun no longer holds.
    import json

    from result_factory import with_numbers

    path = next(committed.glob("*.jsonl"))
    line = json.loads(path.read_text())
    flipped = "".join("W" if v == "L" else v for v in line["outcomes"])
    moved = with_numbers({**line, "outcomes": flipped})
    path.write_text(json.dumps(moved) + "\n")
    capsys.readouterr()
    code = main(
        ["run", str(tiny_suite), "--results-dir", str(tmp_path / "results"), "--regression"]
        + ["--baseline-dir", str(committed), *args]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED tiny-keywords v1 sft[n=40,seed=0] has winrate" in out
    assert "1 shifted" in out


def test_the_baseline_is_read_before_the_run_writes(tiny_suite, cache_dir, tmp_path):
    # Results written into the baseline folder itself never become their own baseline.
    folder = tmp_path / "board"
    baseline = Baseline.snapshot(folder)
    runner = Runner(Cache(cache_dir), folder, progress=False, log=lambda _: None)
    session = Session(runner, baseline)
    session.run_all(select([tiny_suite], methods=["sft"], budgets=["40"]).cells)
    assert [c.status.value for c in session.comparisons.values()] == ["new"]
    shutil.rmtree(folder)
