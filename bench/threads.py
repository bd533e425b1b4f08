"""How many CPU threads torch uses, chosen once per process, before torch is imported.

Two facts measured on 2 cores (`benchmarks/threads_bench.py`, numbers in the README):

- torch's intra-op pool is OpenMP, whose idle threads spin by default. Beside other busy
  processes a spinning thread steals the core its sibling needs, and every one of the
  thousands of small parallel regions of a micro-tier step waits for a descheduled thread:
  a training step ran about 15x slower beside two other torch jobs. With the OpenMP wait policy
  PASSIVE an idle thread sleeps instead, and the same step costs about a fair share of the
  machine. So PASSIVE is the default here (a user's own `OMP_WAIT_POLICY` is kept).
- The thread count changes the last digits of float reductions, and over a few hundred
  training steps those can change an output. So the count is not derived from the current
  load (that would make numbers depend on what else runs): it is `--threads`, else
  `OMP_NUM_THREADS`, else the physical cores this process may run on (its CPU affinity, capped
  by a cgroup CPU quota). The count is recorded in every result line's hardware provenance.

The CLI and the pytest plugin call `configure` before anything imports torch. OpenMP reads its
settings when torch is first imported, so the wait policy cannot change afterwards; the thread
count still can, and is set on torch directly if it is already loaded.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

WAIT_POLICY = "PASSIVE"
"""OpenMP wait policy set when the user has not chosen one: idle threads sleep, never spin."""


@dataclass(frozen=True)
class ThreadPlan:
    """The threads a process uses for torch's intra-op work, and where the number came from."""

    threads: int
    source: str
    """"--threads", "OMP_NUM_THREADS" or "available cores"."""
    wait_policy: str
    """The OpenMP wait policy in force for torch (PASSIVE unless the user set another)."""


def choose_threads(requested: int | None = None) -> tuple[int, str]:
    """The thread count and its source: `requested`, else `$OMP_NUM_THREADS`, else the cores.

    Raises ValueError for an `OMP_NUM_THREADS` that is not a positive integer, naming it.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be a positive integer, got {requested}")
        return requested, "--threads"
    from_env = os.environ.get("OMP_NUM_THREADS")
    if from_env is not None and from_env.strip():
        # OpenMP also accepts a comma list (nested levels); the first level is torch's pool.
        first = from_env.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise ValueError(f"OMP_NUM_THREADS={from_env!r}: expected a positive integer")
        return int(first), "OMP_NUM_THREADS"
    return available_cores(), "available cores"


def available_cores() -> int:
    """Physical cores among the CPUs this process may run on, capped by its cgroup CPU quota.

    Hyperthread siblings count once (as torch's own default does): two threads on one core
    share its arithmetic units. Where the topology cannot be read, every allowed CPU counts.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        cpus = list(range(os.cpu_count() or 1))
    cores = _physical_cores(cpus) or len(cpus)
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def configure(requested: int | None = None) -> ThreadPlan:
    """Fix this process's torch threads (see the module doc) and return what was chosen.

    Sets `OMP_NUM_THREADS` (children inherit it: accelerate workers, the vLLM venv's
    subprocesses) and, unless set, `OMP_WAIT_POLICY`; calls `torch.set_num_threads` when torch
    is already imported.
    """
    threads, source = choose_threads(requested)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    else:
        torch.set_num_threads(threads)
    return ThreadPlan(threads, source, os.environ.get("OMP_WAIT_POLICY", "ACTIVE (default)"))


def _physical_cores(cpus: list[int]) -> int | None:
    """Distinct (package, core) pairs among `cpus` in sysfs; None when it cannot be read."""
    topology = Path("/sys/devices/system/cpu")
    pairs = set()
    for cpu in cpus:
        folder = topology / f"cpu{cpu}" / "topology"
        try:
            package = (folder / "physical_package_id").read_text().strip()
            core = (folder / "core_id").read_text().strip()
        except OSError:
            return None
        pairs.add((package, core))
    return len(pairs) or None


def _cgroup_cpu_quota() -> int | None:
    """CPUs a cgroup v2 quota allows (`cpu.max` "200000 100000" -> 2); None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))
