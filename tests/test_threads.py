"""The torch thread count and OpenMP wait policy a run chooses (bench/run/threads.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.cli import main
from bench.run import threads


def test_the_count_comes_from_the_option_then_the_environment_then_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.choose_threads(5) == (5, "--threads")
    assert threads.choose_threads() == (3, "OMP_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "4,1")  # nested levels: the first is torch's pool
    assert threads.choose_threads() == (4, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.choose_threads() == (threads.available_cores(), "available cores")


def test_available_cores_never_exceed_the_cpus_this_process_may_use():
    allowed = len(os.sched_getaffinity(0))
    assert 1 <= threads.available_cores() <= allowed


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_count_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(ValueError, match=f"OMP_NUM_THREADS={value!r}: expected a positive"):
        threads.choose_threads()


def test_the_cli_refuses_a_bad_thread_count_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("OMP_NUM_THREADS", "many")
    assert main(["validate", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "pftbench: OMP_NUM_THREADS='many': expected a positive integer\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path), "--threads", "0"])
    assert exit_info.value.code == 2


def _configured_in_a_fresh_process(env: dict[str, str], requested: int | None) -> dict:
    """configure() then import torch, in a new interpreter: what torch and OpenMP got."""
    code = (
        "import json, os\n"
        "from bench.run import threads\n"
        f"plan = threads.configure({requested!r})\n"
        "import torch\n"
        "print(json.dumps({'plan': [plan.threads, plan.source, plan.waiting],"
        " 'torch': torch.get_num_threads()}))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_configure_before_torch_sets_the_count_and_a_short_spin_then_sleep():
    got = _configured_in_a_fresh_process({}, 1)
    waiting = "OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000"
    assert got == {"plan": [1, "--threads", waiting], "torch": 1}
    # A user's own thread count and waiting are kept, and nothing is added to the waiting.
    users = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1"}
    got = _configured_in_a_fresh_process(users, None)
    assert got == {"plan": [1, "OMP_NUM_THREADS", "OMP_WAIT_POLICY=ACTIVE"], "torch": 1}
    got = _configured_in_a_fresh_process({"GOMP_SPINCOUNT": "300000"}, 1)
    assert got == {"plan": [1, "--threads", "GOMP_SPINCOUNT=300000"], "torch": 1}


def test_configure_after_torch_still_sets_the_count():
    import torch

    before = torch.get_num_threads()
    saved = os.environ.get("OMP_NUM_THREADS")
    try:
        plan = threads.configure(1)
        assert plan.threads == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def test_result_lines_record_the_thread_count():
    import torch

    from bench.report.results import provenance

    assert provenance(os.getcwd())["hardware"]["torch_threads"] == torch.get_num_threads()
