"""A cold micro run on an idle and on a busy machine, with and without pftbench's thread setup.

    python benchmarks/threads_bench.py [--suite FILE] [--jobs 2] [--json OUT]

Prints figures, asserts nothing. Each row times one cold `pftbench run SUITE` (fresh cache:
base-model build, pool, training, generation, judging) in a subprocess:

- **idle**: nothing else runs (the load average is printed: check it is near 0).
- **busy**: `--jobs` other torch processes run beside it, each a matmul loop with torch's
  defaults (as many threads as cores, OpenMP threads that spin while idle): the "two other
  jobs" of a shared machine.

and two ways of running it:

- **now**: `pftbench run` as it is (bench/threads.py: the OpenMP wait policy PASSIVE, the thread
  count fixed from the cores).
- **before**: the same with `GOMP_SPINCOUNT=300000`, which restores the spin-wait libgomp uses
  when no wait policy is set (about 3 ms of spinning per wait), i.e. pftbench before the change.

The suite defaults to a reduced copy of the micro default suite (100 warm-up steps, 1 SFT
epoch on 3,000 references, the SFT cell only), whose cold run is mostly the base-model build
that dominates the README's first command; `--suite suites/micro/keywords.yaml` times the real
one (minutes idle, far longer busy "before").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

REDUCED_SUITE = """\
include: {base}
name: threads-bench
version: 1
description: The micro default suite cut down to its base build and SFT cell, for timing.
task:
  params: {{n_train: 3000}}
base_model:
  pretrain_steps: 100
  sft_epochs: 1
budgets: [250]
methods: [sft]
"""

BUSY_JOB = """\
import time, torch
a = torch.randn(256, 256)
end = time.monotonic() + {seconds}
while time.monotonic() < end:
    a = torch.relu(a @ a)
    a = a / a.norm()
"""

BEFORE_ENV = {"GOMP_SPINCOUNT": "300000"}
"""libgomp's spin count when OMP_WAIT_POLICY is unset: how pftbench's torch waited before."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, help="the suite to time (default: a reduced one)")
    parser.add_argument("--jobs", type=int, default=2, help="busy torch jobs beside the run")
    parser.add_argument(
        "--timeout", type=float, default=1500, help="give up on one run after this many seconds"
    )
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures")
    return parser.parse_args(argv)


def time_cold_run(suite: Path, extra_env: dict[str, str], timeout: float) -> float | None:
    """Wall seconds of `pftbench run SUITE` on a fresh cache; None if it ran past `timeout`."""
    pftbench = Path(sys.executable).with_name("pftbench")
    with tempfile.TemporaryDirectory() as scratch:
        command = [str(pftbench), "run", str(suite), "--no-progress"]
        command += ["--cache-dir", f"{scratch}/cache", "--results-dir", f"{scratch}/results"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
        start = time.perf_counter()
        try:
            done = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env={**env, **extra_env},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None
        seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: an expectation failed; the run itself completed
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def start_busy_jobs(count: int, seconds: float) -> list[subprocess.Popen]:
    """`count` torch processes with torch's default threads and OpenMP spin-waiting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    code = BUSY_JOB.format(seconds=seconds)
    jobs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(count)]
    time.sleep(3)  # let them import torch and start computing
    return jobs


def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as scratch:
        suite = args.suite
        if suite is None:
            suite = Path(scratch) / "threads_bench.yaml"
            base = REPO_ROOT / "suites" / "micro" / "_micro_base.yaml"
            suite.write_text(REDUCED_SUITE.format(base=base))
        suite = suite.resolve()
        print(f"suite: {args.suite or 'reduced micro default (base build + sft cell)'}")
        print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
        figures: dict[str, object] = {"jobs": args.jobs}
        for machine in ("idle", "busy"):
            jobs = start_busy_jobs(args.jobs, args.timeout * 2) if machine == "busy" else []
            try:
                for mode, env in (("now", {}), ("before", BEFORE_ENV)):
                    seconds = time_cold_run(suite, env, args.timeout)
                    figures[f"{machine}_{mode}_s"] = seconds
                    shown = f"{seconds:7.1f} s" if seconds is not None else "timed out"
                    print(f"{machine:5} {mode:7} {shown}", flush=True)
            finally:
                for job in jobs:
                    job.kill()
                    job.wait()
    print()
    print(f"| machine | pftbench now | before (spin-wait) |  ({args.jobs} busy torch jobs)")
    print("|---|---|---|")
    idle = figures["idle_now_s"]
    for machine in ("idle", "busy"):
        cells = []
        for mode in ("now", "before"):
            seconds = figures[f"{machine}_{mode}_s"]
            cells.append(
                f"{seconds:.1f} s ({seconds / idle:.1f}x)" if seconds is not None else "timed out"
            )
        print(f"| {machine} | {cells[0]} | {cells[1]} |")
    print(f"(x: against idle, now; load average at the end: {os.getloadavg()[0]:.2f})")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main(parse_args())
