"""How many CPU threads torch uses, and how they wait, chosen once per process before torch loads.

Two facts measured on 2 cores (`benchmarks/threads_bench.py`, numbers in the README):

- torch's intra-op pool is OpenMP (libgomp in the Linux wheels), whose idle threads spin for
  about 3 ms by default before they sleep. Beside other busy processes a spinning thread steals
  the core its sibling needs, and every one of the thousands of small parallel regions of a
  micro-tier step waits for a descheduled thread: a cold micro run took 5x its idle time beside
  two single-threaded jobs, 12x beside two torch jobs. So, unless the user chose how OpenMP
  waits, threads spin only briefly and then sleep: `OMP_WAIT_POLICY=PASSIVE` (every OpenMP) with
  `GOMP_SPINCOUNT=10000` (libgomp: about 0.1 ms of spinning first, which keeps the idle speed
  that pure PASSIVE, no spinning at all, lost: about 10% on the micro tier).
- The thread count changes the last digits of float reductions, and over a few hundred
  training steps those can change an output. So the count is not derived from the current
  load (that would make numbers depend on what else runs): it is `--threads`, else
  `OMP_NUM_THREADS`, else the physical cores this process may run on (its CPU affinity, capped
  by a cgroup CPU quota). The count is recorded in every result line's hardware provenance.
  The wait policy changes no number, only the time.

The CLI and the pytest plugin call `configure` before anything imports torch. OpenMP reads its
settings when torch is first imported, so the waiting cannot change afterwards; the thread
count still can, and is set on torch directly if it is already loaded.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "10000"}
"""How OpenMP threads wait when the user has set neither variable: a short spin, then sleep."""


@dataclass(frozen=True)
class ThreadPlan:
    """The threads a process uses for torch's intra-op work, and where the number came from."""

    threads: int
    source: str
    """"--threads", "OMP_NUM_THREADS" or "available cores"."""
    waiting: str
    """How torch's OpenMP threads wait, as the environment says ("OMP_WAIT_POLICY=PASSIVE
    GOMP_SPINCOUNT=10000" unless the user set either, "OpenMP's default" if nothing is set)."""


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
    subprocesses) and, where the user set neither `OMP_WAIT_POLICY` nor `GOMP_SPINCOUNT` and
    torch is not loaded yet, `WAITING`; calls `torch.set_num_threads` when torch is loaded.
    """
    threads, source = choose_threads(requested)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    elif not any(name in os.environ for name in WAITING):
        os.environ.update(WAITING)
    return ThreadPlan(threads, source, waiting())


def waiting() -> str:
    """How OpenMP threads wait, as this process's environment sets it."""
    settings = [f"{name}={os.environ[name]}" for name in WAITING if name in os.environ]
    return " ".join(settings) or "OpenMP's default"


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
