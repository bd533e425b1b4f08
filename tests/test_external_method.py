"""A method from outside this repository: the example package, really installed, end to end.

The package `examples/pftbench-example-method` is installed with pip into a folder of its own
(a real install: a dist-info with its entry point in the group `pftbench.methods`); processes
that have that folder on PYTHONPATH see its method, `example_sft_chosen`, and run it through the
CLI and through pytest, submit its results and render them on both leaderboard pages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_SUITE
from result_factory import shared_cache_dir

from bench.cli import main

# Installs a package, then runs, submits and renders its cells.
pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = REPO_ROOT / "examples" / "pftbench-example-method"
METHOD = "example_sft_chosen"
DPO_ENTRY = "  - method: dpo\n    epochs: 1\n    lr: 0.001\n"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package installed by pip into its own folder (no network, no deps)."""
    root = tmp_path_factory.mktemp("external")
    source = root / "source"
    # Built from a copy: pip writes build/ and *.egg-info next to the sources.
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    site = root / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    return site


def in_subprocess(args: list[str], site: Path | None, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A suites folder with the tiny suite whose second entry is the external method."""
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "tiny.yaml").write_text(TINY_SUITE.replace(DPO_ENTRY, f"  - {METHOD}\n"))
    return tmp_path


def test_the_install_is_a_real_distribution_with_the_entry_point(installed):
    (dist_info,) = installed.glob("pftbench_example_method-*.dist-info")
    assert "[pftbench.methods]\nexample_sft_chosen = pftbench_example_method" in (
        (dist_info / "entry_points.txt").read_text()
    )
    assert (dist_info / "RECORD").is_file()


def test_the_registry_sees_the_method_only_where_it_is_installed(installed, tmp_path):
    code = ["-c", "from bench.registry import METHODS; print(' '.join(METHODS.names()))"]
    with_package = in_subprocess(code, installed, tmp_path)
    without = in_subprocess(code, None, tmp_path)
    assert with_package.returncode == 0, with_package.stderr
    assert METHOD in with_package.stdout.split()
    assert METHOD not in without.stdout.split()


def test_the_repository_suite_with_the_method_validates(installed):
    suite = EXAMPLE / "suites" / "micro-keywords.yaml"
    completed = in_subprocess(["-m", "bench.cli", "validate", str(suite)], installed, REPO_ROOT)
    assert completed.returncode == 0, completed.stderr
    assert "(micro-keywords v2: 1 methods x 1 budgets x 1 seeds = 1 cells)" in completed.stdout


def test_run_pytest_submit_and_both_pages(installed, workdir, tmp_path_factory, capsys):
    cache = shared_cache_dir(tmp_path_factory)
    validate = in_subprocess(["-m", "bench.cli", "validate", "suites"], installed, workdir)
    assert validate.returncode == 0, validate.stderr
    assert "ok suites/tiny.yaml (tiny-keywords v1: 2 methods" in validate.stdout

    # The CLI.
    run = in_subprocess(
        ["-m", "bench.cli", "run", "suites/tiny.yaml", "--method", METHOD, "--budget", "40"]
        + ["--cache-dir", str(cache), "--results-dir", "results", "--no-progress"],
        installed,
        workdir,
    )
    assert run.returncode == 0, run.stderr
    (line,) = [json.loads(text) for text in (workdir / "results" / "tiny-keywords.jsonl").open()]
    assert (line["method"], line["method_id"], line["budget"]) == (METHOD, METHOD, "n=40")
    assert line["method_family"] == "offline"  # the plugin declares none: the default
    assert line["metrics"]["train"]["informative_pairs"] <= 40
    assert line["n"] + line["n_failed"] == 60

    # pytest, through the plugin: the same cell, answered from the cache.
    tests = in_subprocess(
        ["-m", "pytest", "-v", "-p", "no:cacheprovider", "suites", f"--method={METHOD}"]
        + ["--budget=40", f"--pftbench-cache-dir={cache}", "--results-dir=pytest-results"],
        installed,
        workdir,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]
    assert "suites/tiny.yaml::example_sft_chosen[n=40,seed=0] PASSED" in tests.stdout
    (again,) = [json.loads(t) for t in (workdir / "pytest-results" / "tiny-keywords.jsonl").open()]
    assert again["outcomes"] == line["outcomes"]

    # Submitted, then on both pages.
    submit = in_subprocess(
        ["-m", "bench.cli", "submit", "results/tiny-keywords.jsonl", "--results-dir", "board"],
        installed,
        workdir,
    )
    assert submit.returncode == 0, submit.stderr
    assert "merged tiny-keywords v1 example_sft_chosen[n=40,seed=0]" in submit.stdout
    board = in_subprocess(
        ["-m", "bench.cli", "leaderboard", "--results-dir", "board", "--out", "board/README.md"],
        installed,
        workdir,
    )
    assert board.returncode == 0, board.stderr
    readme = (workdir / "board" / "README.md").read_text()
    assert f"| {METHOD} | {line['winrate']:.3f} [" in readme
    page = (workdir / "board" / "index.html").read_text()
    assert f'data-method="{METHOD}"' in page and f"{line['winrate']:.3f}</td>" in page

    # The maintainers' side: a checkout without the package accepts the lines as a new method
    # entry of the repository's suite, whose protocol they match.
    (workdir / "suites" / "tiny.yaml").write_text(TINY_SUITE)
    args = ["submit", str(workdir / "results" / "tiny-keywords.jsonl")]
    args += ["--suites-dir", str(workdir / "suites"), "--results-dir", str(workdir / "official")]
    assert main(args) == 0
    assert "example_sft_chosen (method example_sft_chosen) is a new method entry" in (
        capsys.readouterr().out
    )
