"""End to end: the tiny micro suite through the CLI and through the pytest plugin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from result_factory import shared_cache_dir

from bench.cli import main

# Whole suites through the CLI and pytest: seconds to a minute each.
pytestmark = pytest.mark.e2e


def run_cli(*args: str | Path) -> int:
    return main([str(a) for a in args])


def result_lines(results_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted(results_dir.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def test_cli_runs_the_suite_and_a_rerun_reuses_every_cell(
    tiny_suite: Path, tmp_path: Path, capsys
) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    assert (
        run_cli("run", tiny_suite, "--cache-dir", cache, "--results-dir", results, "--no-progress")
        == 0
    )
    lines = result_lines(results)
    assert [(line["method"], line["budget"]) for line in lines] == [
        ("sft", "n=40"),
        ("sft", "n=120"),
        ("dpo", "n=40"),
        ("dpo", "n=120"),
    ]
    for line in lines:
        assert line["n"] + line["n_failed"] == 60
        assert line["ci_low"] <= line["winrate"] <= line["ci_high"]
        assert len(line["outcomes"]) == 60
        assert set(line["timings"]) == {"base", "pool", "train", "generate", "judge", "diagnostics"}
        assert line["config"]["method"]["name"] == line["method"]
        assert line["packages"]["torch"] and line["hardware"]["cpu_count"] >= 1
    assert lines[2]["n_pairs"] == 40 and lines[3]["n_pairs"] == 120
    out = capsys.readouterr().out
    assert "dpo" in out and "n=120" in out

    # A warm rerun: same numbers, no new result lines, and (in a fresh process) no torch import.
    code = (
        "import sys; from bench.cli import main; "
        f"rc = main(['run', {str(tiny_suite)!r}, '--cache-dir', {str(cache)!r}, "
        f"'--results-dir', {str(results)!r}, '--no-progress']); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'a cached rerun imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert result_lines(results) == lines


def test_cli_run_writes_to_results_not_to_the_committed_leaderboard(
    tiny_suite: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "leaderboard" / "results").mkdir(parents=True)
    monkeypatch.chdir(checkout)
    cache = shared_cache_dir(tmp_path_factory)
    args = ("run", tiny_suite, "--method", "sft", "--budget", "40", "--no-progress")
    assert run_cli(*args, "--cache-dir", cache) == 0
    assert [line["suite"] for line in result_lines(checkout / "results")] == ["tiny-keywords"]
    assert list((checkout / "leaderboard" / "results").iterdir()) == []


def test_same_seed_gives_the_same_numbers_in_fresh_caches(tiny_suite: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        args = ("run", tiny_suite, "--method", "dpo", "--budget", "40", "--no-progress")
        assert (
            run_cli(*args, "--cache-dir", tmp_path / name, "--results-dir", tmp_path / f"r{name}")
            == 0
        )
    first, second = result_lines(tmp_path / "ra"), result_lines(tmp_path / "rb")
    assert [line["outcomes"] for line in first] == [line["outcomes"] for line in second]
    assert [line["rewards"] for line in first] == [line["rewards"] for line in second]
    assert first[0]["config_hash"] == second[0]["config_hash"]


def test_validate_reports_a_bad_key_in_one_line(
    tiny_suite_text: str, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "suites" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text(tiny_suite_text.replace("    epochs: 1\n", "    epochz: 1\n"))
    assert run_cli("validate", bad) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and "methods[1].epochz" in err and "epochs" in err
    assert "Traceback" not in err


def test_a_run_killed_mid_way_resumes_from_the_cache(tiny_suite: Path, tmp_path: Path) -> None:
    cache, results = tmp_path / "cache", tmp_path / "results"
    args = [
        sys.executable,
        "-m",
        "bench.cli",
        "run",
        str(tiny_suite),
        "--cache-dir",
        str(cache),
        "--results-dir",
        str(results),
        "--no-progress",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(cache.glob("pools/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    base_meta = next(
        p
        for p in cache.glob("models/*/pftbench.json")
        if "parameters" in json.loads(p.read_text())["metrics"]
    )
    built_at = base_meta.stat().st_mtime_ns
    assert not results.exists() or len(result_lines(results)) < 4

    completed = subprocess.run(args, capture_output=True, text=True, check=True)
    assert base_meta.stat().st_mtime_ns == built_at, "the base model was rebuilt"
    assert "base policy" not in completed.stdout + completed.stderr
    assert len(result_lines(results)) == 4


def test_pytest_plugin_collects_cells_with_readable_ids(
    tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    pytester.makefile(".yaml", **{"suites/tiny": tiny_suite_text})
    result = pytester.runpytest("--collect-only", "-q", "suites", "--method=dpo")
    result.stdout.fnmatch_lines(
        ["suites/tiny.yaml::dpo[[]n=40,seed=0[]]", "suites/tiny.yaml::dpo[[]n=120,seed=0[]]"]
    )
    assert "sft[" not in result.stdout.str()


def test_pytest_plugin_runs_cells_and_explains_a_failed_expectation(
    tiny_suite_text: str, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    suite = (
        tiny_suite_text
        + "expectations:\n  - method: sft\n    min_winrate: 0.99\n"
        + "  - method: dpo\n    min_winrate: 0.0\n"
    )
    pytester.makefile(".yaml", **{"suites/tiny": suite})
    cache, results = tmp_path / "cache", tmp_path / "results"
    result = pytester.runpytest(
        "suites", "--budget=40", f"--pftbench-cache-dir={cache}", f"--results-dir={results}"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*sft at n=40 (seed 0) has winrate 0.* [[]0.*, 0.*[]] n=*, "
            "below the expected minimum 0.99.*"
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert len(result_lines(results)) == 2


def test_pytest_plugin_reports_a_broken_suite_in_one_line(
    tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    pytester.makefile(
        ".yaml", **{"suites/tiny": tiny_suite_text.replace("tier: micro", "tier: huge")}
    )
    result = pytester.runpytest("suites")
    result.stdout.fnmatch_lines(["*suites/tiny.yaml: tier: got 'huge'*micro*small*paper*"])


def test_pytest_plugin_runs_suite_files_named_on_the_command_line_from_anywhere(
    tiny_suite_text: str,
    pytester: pytest.Pytester,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One file under rootdir in a folder not named suites, one outside rootdir, run from a
    # third folder: each is read from its own path, and recorded as before (relative to rootdir
    # when under it).
    inside = pytester.path / "mysuites" / "tiny.yaml"
    inside.parent.mkdir()
    inside.write_text(tiny_suite_text)
    outside = tmp_path / "elsewhere" / "tiny.yaml"
    outside.parent.mkdir()
    outside.write_text(tiny_suite_text.replace("name: tiny-keywords", "name: tiny-elsewhere"))
    (pytester.path / "work").mkdir()
    monkeypatch.chdir(pytester.path / "work")
    results = tmp_path / "results"
    result = pytester.runpytest(
        "../mysuites/tiny.yaml",
        str(outside),
        f"--rootdir={pytester.path}",
        "--method=sft",
        "--budget=40",
        # A fresh cache: a cached cell would bring back the suite_file of its first run.
        f"--pftbench-cache-dir={tmp_path / 'cache'}",
        f"--results-dir={results}",
    )
    result.assert_outcomes(passed=2)
    lines = {line["suite"]: line["suite_file"] for line in result_lines(results)}
    assert lines == {"tiny-keywords": "mysuites/tiny.yaml", "tiny-elsewhere": str(outside)}

    # Under suites/ too, the file is read from its path, not from rootdir's relative one.
    pytester.makefile(".yaml", **{"suites/tiny": tiny_suite_text})
    collected = pytester.runpytest(
        "--collect-only", "-q", "../suites", f"--rootdir={pytester.path}", "--method=sft"
    )
    collected.stdout.fnmatch_lines(["suites/tiny.yaml::sft[[]n=40,seed=0[]]"])


def test_pytest_plugin_searches_directories_only_under_suites(
    tiny_suite_text: str, pytester: pytest.Pytester
) -> None:
    pytester.makefile(".yaml", **{"suites/tiny": tiny_suite_text, "configs/tiny": tiny_suite_text})
    result = pytester.runpytest("--collect-only", "-q", ".", "--method=dpo")
    result.stdout.fnmatch_lines(["suites/tiny.yaml::dpo[[]n=40,seed=0[]]"])
    assert "configs/" not in result.stdout.str()
