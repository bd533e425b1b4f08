"""Regression checks: fresh cells against committed winrates, by `pftbench check` and pytest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY_SUITE
from result_factory import cell_line, shared_cache_dir, with_outcomes, write_bundle

from bench.cli import main
from bench.config import load_suite
from bench.report.integrity import number_discrepancies, outcome_problems
from bench.report.regression import Baseline, Status
from bench.report.results import ResultFileError, ResultLine, append_result, load_results

# -- comparisons on made-up lines ---------------------------------------------------------------


@pytest.fixture
def dpo_line(tiny_suite: Path) -> dict:
    (cell,) = load_suite(tiny_suite).cells(["dpo"], ["40"])
    return cell_line(cell)


def baseline_of(tmp_path: Path, *lines: dict) -> Baseline:
    for line in lines:
        append_result(tmp_path / "committed", ResultLine.model_validate(line))
    return Baseline.snapshot(tmp_path / "committed")


def test_a_reproduced_cell_holds(tmp_path, dpo_line):
    comparison = baseline_of(tmp_path, dpo_line).compare(ResultLine.model_validate(dpo_line))
    assert comparison.status is Status.HELD
    assert comparison.sentence == (
        "tiny-keywords v1 dpo[n=40,seed=0] has winrate 0.550 [0.428, 0.666] n=60, "
        "within the committed 0.550 [0.428, 0.666] n=60."
    )


def test_a_winrate_outside_the_committed_ci_is_shifted(tmp_path, dpo_line):
    fresh = ResultLine.model_validate(with_outcomes(dpo_line, "W" * 50 + "L" * 10))
    comparison = baseline_of(tmp_path, dpo_line).compare(fresh)
    assert comparison.status is Status.SHIFTED
    assert comparison.sentence == (
        "tiny-keywords v1 dpo[n=40,seed=0] has winrate 0.833 [0.716, 0.908] n=60, outside the "
        f"committed 95% CI of 0.550 [0.428, 0.666] n=60 (config {fresh.config_hash[:12]}); the "
        "verdicts of 32 of 60 prompts differ from the committed ones (first: prompt 2)."
    )


def test_a_verdict_that_differs_on_a_cpu_is_shifted_even_inside_the_ci(tmp_path, dpo_line):
    moved = with_outcomes(dpo_line, dpo_line["outcomes"].replace("L", "W", 2))
    comparison = baseline_of(tmp_path, dpo_line).compare(ResultLine.model_validate(moved))
    assert comparison.status is Status.SHIFTED
    assert comparison.sentence == (
        "tiny-keywords v1 dpo[n=40,seed=0] has winrate 0.583 [0.460, 0.697] n=60, within the "
        "committed 0.550 [0.428, 0.666] n=60, but the verdicts of 2 of 60 prompts differ from "
        "the committed ones (first: prompt 2), and two CPU runs of one config with the same "
        "processor, torch and thread count reproduce every verdict "
        f"(config {moved['config_hash'][:12]})."
    )


def test_a_verdict_that_differs_on_a_gpu_holds_inside_the_ci_and_is_counted(tmp_path, dpo_line):
    moved = with_outcomes(dpo_line, dpo_line["outcomes"].replace("L", "W", 2))
    moved["hardware"] = {"gpus": ["NVIDIA H100"]}
    comparison = baseline_of(tmp_path, dpo_line).compare(ResultLine.model_validate(moved))
    assert comparison.status is Status.HELD
    assert comparison.sentence.endswith(
        "; the verdicts of 2 of 60 prompts differ from the committed ones (first: prompt 2) "
        "(a run on a GPU, or on another processor, torch or thread count, need not reproduce "
        "every verdict)."
    )


def test_a_verdict_that_differs_at_another_thread_count_holds_inside_the_ci(tmp_path, dpo_line):
    # The committed line predates recorded thread counts: its cores (2) stand for them.
    moved = with_outcomes(dpo_line, dpo_line["outcomes"].replace("L", "W", 2))
    moved["hardware"] = {**dpo_line["hardware"], "torch_threads": 8}
    comparison = baseline_of(tmp_path, dpo_line).compare(ResultLine.model_validate(moved))
    assert comparison.status is Status.HELD
    moved["hardware"]["torch_threads"] = 2
    comparison = baseline_of(tmp_path, dpo_line).compare(ResultLine.model_validate(moved))
    assert comparison.status is Status.SHIFTED


def test_a_committed_winrate_edited_by_hand_is_corrupt_not_held(tmp_path, dpo_line):
    # Issue 13's attack: the committed winrate raised by 0.1, its interval left alone; the
    # fresh rerun lies within that interval, so an interval-only check said "held".
    edited = {**dpo_line, "winrate": dpo_line["winrate"] + 0.1}
    assert edited["ci_low"] <= dpo_line["winrate"] <= edited["ci_high"]
    baseline = baseline_of(tmp_path, edited)
    comparison = baseline.compare(ResultLine.model_validate(dpo_line))
    assert comparison.status is Status.CORRUPT
    assert comparison.sentence == (
        "tiny-keywords v1 dpo[n=40,seed=0]: the committed line "
        f"{tmp_path / 'committed' / 'tiny-keywords.jsonl'}:1 is not self-consistent, so it is "
        "no baseline: its winrate is 0.6500, but its outcomes give 0.5500."
    )


def test_a_committed_line_with_edited_counts_does_not_load(tmp_path, dpo_line):
    folder = tmp_path / "committed"
    folder.mkdir()
    write_bundle(folder / "tiny-keywords.jsonl", [{**dpo_line, "wins": dpo_line["wins"] + 5}])
    with pytest.raises(
        ResultFileError, match=r"tiny-keywords.jsonl:1: .*wins=35 \(outcomes say 30\)"
    ):
        Baseline.snapshot(folder)


def test_a_cell_without_a_committed_value_is_new(tmp_path, dpo_line):
    comparison = baseline_of(tmp_path).compare(ResultLine.model_validate(dpo_line))
    assert comparison.status is Status.NEW
    assert comparison.sentence.startswith(
        "tiny-keywords v1 dpo[n=40,seed=0] is new: no committed result in "
    )


def test_a_changed_config_is_new_and_says_what_changed(tmp_path, dpo_line):
    committed = json.loads(json.dumps(dpo_line))
    committed["config"]["method"]["config"]["lr"] = 0.01
    committed["config_hash"] = "0" * 64
    comparison = baseline_of(tmp_path, committed).compare(ResultLine.model_validate(dpo_line))
    assert comparison.status is Status.NEW
    assert (
        "is new: its config differs from the committed one's (method.config.lr is 0.001, the "
        "committed config gives 0.01), so its winrate 0.550 [0.428, 0.666] n=60 has nothing to "
        "compare with" in comparison.sentence
    )


def test_the_last_committed_line_of_a_config_is_the_baseline(tmp_path, dpo_line):
    newer = with_outcomes(dpo_line, "W" * 60)
    baseline = baseline_of(tmp_path, dpo_line, newer)
    assert baseline.compare(ResultLine.model_validate(newer)).status is Status.HELD
    assert Baseline.snapshot(tmp_path / "missing").by_config_hash == {}


# -- end to end on the tiny suite -------------------------------------------------------------


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> dict:
    """The tiny suite's sft[n=40] cell, run once into a results folder and a cache."""
    root = tmp_path_factory.mktemp("regression")
    suite = root / "suites" / "tiny.yaml"
    suite.parent.mkdir()
    suite.write_text(TINY_SUITE)
    cache, results = shared_cache_dir(tmp_path_factory), root / "committed"
    args = ["run", suite, "--method", "sft", "--budget", "40", "--cache-dir", cache]
    assert main([str(a) for a in [*args, "--results-dir", results, "--no-progress"]]) == 0
    (line,) = [json.loads(text) for text in (results / "tiny-keywords.jsonl").open()]
    return {"suite": suite, "cache": cache, "results": results, "line": line}


def shifted_baseline(folder: Path, line: dict) -> Path:
    """A results folder whose committed sft[n=40] winrate is well above the fresh one."""
    folder.mkdir()
    outcomes = line["outcomes"].replace("L", "W", 25)
    write_bundle(folder / "tiny-keywords.jsonl", [with_outcomes(line, outcomes)])
    return folder


def check(committed: dict, baseline: Path) -> int:
    args = ["check", committed["suite"], "--method", "sft", "--budget", "40"]
    args += ["--cache-dir", committed["cache"], "--baseline-dir", baseline, "--no-progress"]
    return main([str(a) for a in args])


@pytest.mark.e2e
def test_check_passes_on_the_committed_results_and_writes_nothing(committed, capsys):
    before = (committed["results"] / "tiny-keywords.jsonl").read_text()
    assert check(committed, committed["results"]) == 0
    out = capsys.readouterr().out
    assert "held: tiny-keywords v1 sft[n=40,seed=0] has winrate " in out
    assert out.rstrip().endswith(": 1 held, 0 shifted, 0 corrupt, 0 new")
    assert (committed["results"] / "tiny-keywords.jsonl").read_text() == before


@pytest.mark.e2e
def test_a_run_records_what_its_outcomes_follow_from(committed):
    line = ResultLine.model_validate(committed["line"])
    assert line.reference_rewards is not None and len(line.reference_rewards) == 60
    assert line.order_answers is None  # the gold judge asks no one
    assert number_discrepancies(line) == [] and outcome_problems(line) == []


@pytest.mark.e2e
def test_check_fails_a_shifted_winrate_in_one_sentence(committed, tmp_path, capsys):
    baseline = shifted_baseline(tmp_path / "shifted", committed["line"])
    old = load_results(baseline)[0]
    assert check(committed, baseline) == 1
    out = capsys.readouterr().out.splitlines()
    fresh = committed["line"]
    assert out[0] == (
        f"FAILED tiny-keywords v1 sft[n=40,seed=0] has winrate {fresh['winrate']:.3f} "
        f"[{fresh['ci_low']:.3f}, {fresh['ci_high']:.3f}] n={fresh['n']}, outside the committed "
        f"95% CI of {old.winrate:.3f} [{old.ci_low:.3f}, {old.ci_high:.3f}] n={old.n} "
        f"(config {old.config_hash[:12]}); the verdicts of 25 of 60 prompts differ from the "
        f"committed ones (first: prompt {fresh['outcomes'].index('L')})."
    )
    assert out[1].endswith(": 0 held, 1 shifted, 0 corrupt, 0 new")


@pytest.mark.e2e
def test_check_fails_a_committed_winrate_edited_by_hand(committed, tmp_path, capsys):
    baseline = tmp_path / "edited"
    baseline.mkdir()
    line = committed["line"]
    write_bundle(baseline / "tiny-keywords.jsonl", [{**line, "winrate": line["winrate"] + 0.1}])
    assert check(committed, baseline) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"FAILED tiny-keywords v1 sft[n=40,seed=0]: the committed line {baseline}/"
        "tiny-keywords.jsonl:1 is not self-consistent, so it is no baseline: its winrate is "
        f"{line['winrate'] + 0.1:.4f}, but its outcomes give {line['winrate']:.4f}."
    )
    assert out[1].endswith(": 0 held, 0 shifted, 1 corrupt, 0 new")


@pytest.mark.e2e
def test_check_reports_a_cell_without_committed_value_as_new(committed, tmp_path, capsys):
    assert check(committed, tmp_path / "nothing-committed") == 0
    out = capsys.readouterr().out
    assert "new: tiny-keywords v1 sft[n=40,seed=0] is new: no committed result in " in out
    assert out.rstrip().endswith(": 0 held, 0 shifted, 0 corrupt, 1 new")


def pytest_args(committed: dict) -> list[str]:
    return ["suites", "--method=sft", "--budget=40", f"--pftbench-cache-dir={committed['cache']}"]


@pytest.mark.e2e
def test_pytest_regression_fails_a_shifted_cell(committed, pytester, tmp_path):
    pytester.makefile(".yaml", **{"suites/tiny": committed["suite"].read_text()})
    baseline = shifted_baseline(tmp_path / "shifted", committed["line"])
    result = pytester.runpytest(
        *pytest_args(committed),
        "--regression",
        f"--regression-baseline={baseline}",
        f"--results-dir={tmp_path / 'fresh'}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "tiny-keywords v1 sft[[]n=40,seed=0[]] has winrate 0.* [[]*[]] n=60, outside the "
            "committed 95% CI of 0.* [[]*[]] n=60 (config *); the verdicts of 25 of 60 prompts "
            "differ from the committed ones (first: prompt *).",
            "*regression check against 1 committed cells in *: 0 held, 1 shifted, 0 corrupt, 0 new",
        ]
    )
    assert "Traceback" not in result.stdout.str()


@pytest.mark.e2e
def test_pytest_writes_results_apart_from_the_baseline_it_checks_against(committed, pytester):
    # By default the items read the committed leaderboard/results and append to results/.
    pytester.makefile(".yaml", **{"suites/tiny": committed["suite"].read_text()})
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\npftbench_regression = true\n")
    baseline = pytester.path / "leaderboard" / "results"
    baseline.mkdir(parents=True)
    committed_text = (committed["results"] / "tiny-keywords.jsonl").read_text()
    (baseline / "tiny-keywords.jsonl").write_text(committed_text)
    result = pytester.runpytest(*pytest_args(committed))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*: 1 held, 0 shifted, 0 corrupt, 0 new"])
    assert [line.suite for line in load_results(pytester.path / "results")] == ["tiny-keywords"]
    assert (baseline / "tiny-keywords.jsonl").read_text() == committed_text


@pytest.mark.e2e
def test_pytest_regression_compares_with_the_results_before_the_run(committed, pytester):
    # When the run appends to the baseline folder itself (named on purpose): read before the
    # run, the cell is new; read after, it would have been compared with its own fresh line.
    pytester.makefile(".yaml", **{"suites/tiny": committed["suite"].read_text()})
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\npftbench_regression = true\n")
    result = pytester.runpytest(*pytest_args(committed), "--results-dir=leaderboard/results")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "new: tiny-keywords v1 sft[[]n=40,seed=0[]] is new: no committed result in *",
            "*: 0 held, 0 shifted, 0 corrupt, 1 new",
        ]
    )
    assert len(load_results(pytester.path / "leaderboard" / "results")) == 1

    rerun = pytester.runpytest(*pytest_args(committed), "--results-dir=leaderboard/results")
    rerun.assert_outcomes(passed=1)
    rerun.stdout.fnmatch_lines(["*: 1 held, 0 shifted, 0 corrupt, 0 new"])


@pytest.mark.e2e
def test_pytest_regression_fails_a_corrupt_committed_line(committed, pytester, tmp_path):
    pytester.makefile(".yaml", **{"suites/tiny": committed["suite"].read_text()})
    baseline = tmp_path / "edited"
    baseline.mkdir()
    line = committed["line"]
    write_bundle(baseline / "tiny-keywords.jsonl", [{**line, "winrate": line["winrate"] + 0.1}])
    result = pytester.runpytest(
        *pytest_args(committed),
        "--regression",
        f"--regression-baseline={baseline}",
        f"--results-dir={tmp_path / 'fresh'}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "tiny-keywords v1 sft[[]n=40,seed=0[]]: the committed line *tiny-keywords.jsonl:1 is "
            "not self-consistent, so it is no baseline: its winrate is *, but its outcomes give *.",
            "*: 0 held, 0 shifted, 1 corrupt, 0 new",
        ]
    )


@pytest.mark.e2e
def test_pytest_without_regression_compares_nothing(committed, pytester, tmp_path):
    pytester.makefile(".yaml", **{"suites/tiny": committed["suite"].read_text()})
    baseline = shifted_baseline(tmp_path / "shifted", committed["line"])
    result = pytester.runpytest(*pytest_args(committed), f"--regression-baseline={baseline}")
    result.assert_outcomes(passed=1)
    assert "regression check" not in result.stdout.str()
