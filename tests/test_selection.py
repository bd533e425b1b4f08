"""Which suites and cells a command means: filters that name nothing are usage errors.

Nothing here trains: a rejected filter stops the CLI and pytest before any cell runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import TINY_SUITE

from bench.cli import main
from bench.config import validate_suite
from bench.run.selection import UsageError, check_filters

TINY = validate_suite(yaml.safe_load(TINY_SUITE), "tiny.yaml")
"""Methods sft, dpo; budgets n=40, n=120; seed 0."""
OTHER = validate_suite(
    {**yaml.safe_load(TINY_SUITE), "name": "other", "budgets": [40, 0.5], "seeds": [0, 1]},
    "other.yaml",
)
"""Budgets n=40, frac=0.5; seeds 0, 1."""


@pytest.mark.parametrize(
    ("methods", "budgets", "seeds"),
    [
        (None, None, None),
        (["dpo", "sft"], ["40", "n=120"], [0]),
        # A value that only one of the suites has still selects cells there.
        (None, ["frac=0.5"], None),
        (None, ["0.5"], [1]),
    ],
)
def test_filters_that_some_suite_has_are_accepted(methods, budgets, seeds) -> None:
    check_filters([TINY, OTHER], methods, budgets, seeds)


@pytest.mark.parametrize(
    ("methods", "budgets", "seeds", "message"),
    [
        (["nope", "dpo"], None, None, "no suite has method 'nope'; methods: dpo, sft"),
        (None, ["500"], None, "no suite has budget '500'; budgets: n=40, n=120, frac=0.5"),
        (None, ["40", "frac=0.25", "n=7"], None, "no suite has budget 'frac=0.25', 'n=7'; "),
        (None, ["abc"], None, "malformed budget 'abc'; expected a count (250 or n=250) or a "),
        (None, ["0"], None, "malformed budget '0'; expected a count"),
        (None, None, [7, 0], "no suite has seed 7; seeds: 0, 1"),
    ],
)
def test_a_filter_no_suite_has_is_a_usage_error_listing_what_exists(
    methods, budgets, seeds, message
) -> None:
    with pytest.raises(UsageError) as error:
        check_filters([TINY, OTHER], methods, budgets, seeds)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_with_no_suite_selected_there_is_nothing_to_filter() -> None:
    check_filters([], ["nope"], ["abc"], [7])


@pytest.mark.parametrize("command", ["run", "check"])
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--budget", "abc", "pftbench: malformed budget 'abc'; expected a count (250 or n=250) "),
        ("--budget", "500", "pftbench: no suite has budget '500'; budgets: n=40, n=120"),
        ("--seed", "7", "pftbench: no suite has seed 7; seeds: 0"),
        ("--method", "nope", "pftbench: no suite has method 'nope'; methods: dpo, sft"),
    ],
)
def test_cli_rejects_a_filter_that_matches_nothing_in_one_line(
    command: str, flag: str, value: str, message: str, tiny_suite: Path, tmp_path: Path, capsys
) -> None:
    where = ["--results-dir", tmp_path / "r"] if command == "run" else ["--baseline-dir", tmp_path]
    args = [command, tiny_suite, flag, value, "--cache-dir", tmp_path / "cache", *where]
    assert main([str(a) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert len(captured.err.splitlines()) == 1 and captured.out == ""
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--budget=500", "no suite has budget '500'; budgets: n=40, n=120"),
        ("--budget=abc", "malformed budget 'abc'; expected a count (250 or n=250) or a *"),
        ("--seed=7", "no suite has seed 7; seeds: 0"),
        ("--method=nope", "no suite has method 'nope'; methods: dpo, sft"),
    ],
)
def test_pytest_rejects_a_filter_no_suite_has(
    option: str, message: str, tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    pytester.makefile(".yaml", **{"suites/tiny": tiny_suite_text})
    result = pytester.runpytest("suites", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_pytest_accepts_a_seed_only_one_suite_has(
    tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    pytester.makefile(".yaml", **{"suites/tiny": tiny_suite_text})
    pytester.makefile(".yaml", **{"suites/seeds": tiny_suite_text.replace("[0]", "[0, 3]")})
    result = pytester.runpytest("--collect-only", "-q", "suites", "--seed=3", "--method=sft")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["suites/seeds.yaml::sft[[]n=40,seed=3[]]"])
    assert "tiny.yaml" not in result.stdout.str()
