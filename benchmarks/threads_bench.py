"""A cold micro run on an idle and on a busy machine, with and without pftbench's thread setup.

    python benchmarks/threads_bench.py [--suite FILE] [--jobs 2] [--repeat 3] [--json OUT]

Prints figures, asserts nothing. Each row times cold `pftbench run SUITE`s (fresh cache:
base-model build, pool, training, generation, judging) in a subprocess, `--repeat` times in
turn (median [min, max]: busy timings vary by tens of percent), on a machine that is

- **idle**: nothing else runs (the load average is printed: check it is near 0);
- **busy, one-thread jobs**: `--jobs` other processes run beside it, each a torch matmul loop
  on one thread (the common "other job": a single-threaded program);
- **busy, torch-default jobs**: the same jobs with torch's defaults (as many threads as cores,
  OpenMP threads that spin while they wait), as other torch programs run.

and two ways of running it:

- **now**: `pftbench run` as it is (bench/run/threads.py: OpenMP threads spin about 0.1 ms, then
  sleep; the thread count fixed from the cores).
- **before**: the same with `GOMP_SPINCOUNT=300000`, libgomp's spin when no wait policy is set
  (about 3 ms per wait); pftbench then leaves OpenMP's waiting alone, as it did before.

On 2 cores with 2 one-thread jobs, a fair share leaves the run 1 of 2 cores (2x its idle time);
with 2 two-thread jobs, 2 of 6 threads (3x): the best any thread setting can do.

The suite defaults to a reduced copy of the micro default suite (100 warm-up steps, 1 SFT
epoch on 3,000 references, the SFT cell only), whose cold run is mostly the base-model build
that dominates the README's first command; `--suite suites/micro/keywords.yaml` times the real
one (minutes idle, far longer busy "before").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
  params: {{n_train: 3000, pool_size: 1000}}
base_model:
  pretrain_steps: 100
  sft_epochs: 1
budgets: [250]
methods: [sft]
"""

BUSY_JOB = """\
import time, torch
if {threads}:
    torch.set_num_threads({threads})
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
    parser.add_argument("--repeat", type=int, default=1, help="cold runs per row (median shown)")
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
        # Exit code 1 is also a failed expectation, so completion is judged by the result lines.
        if not any(Path(scratch, "results").glob("*.jsonl")):
            tail = done.stderr[-2000:]
            raise RuntimeError(
                f"{' '.join(command)} wrote no result (exit {done.returncode}):\n{tail}"
            )
    return seconds


def start_busy_jobs(count: int, threads: int, seconds: float) -> list[subprocess.Popen]:
    """`count` torch processes on `threads` threads each (0: torch's default, spin-waiting)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    code = BUSY_JOB.format(seconds=seconds, threads=threads)
    jobs = [subprocess.Popen([sys.executable, "-c", code], env=env) for _ in range(count)]
    time.sleep(3)  # let them import torch and start computing
    return jobs


def _median(times: list[float | None]) -> float | None:
    """The median of the runs; None if any timed out (its time is unknown, only long)."""
    return None if None in times else statistics.median(times)


def _summary(times: list[float | None], idle: float | None) -> str:
    median = _median(times)
    if median is None or idle is None:
        return "timed out"
    spread = f" [{min(times):.1f}, {max(times):.1f}]" if len(times) > 1 else ""
    return f"{median:.1f} s{spread} ({median / idle:.1f}x)"


def main(args: argparse.Namespace) -> dict[str, list[float | None]]:
    with tempfile.TemporaryDirectory() as scratch:
        suite = args.suite
        if suite is None:
            suite = Path(scratch) / "threads_bench.yaml"
            base = REPO_ROOT / "suites" / "micro" / "_micro_base.yaml"
            suite.write_text(REDUCED_SUITE.format(base=base))
        suite = suite.resolve()
        print(f"suite: {args.suite or 'reduced micro default (base build + sft cell)'}")
        print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
        figures: dict[str, list[float | None]] = {}
        machines = {
            "idle": None,
            f"busy, {args.jobs} one-thread jobs": 1,
            f"busy, {args.jobs} torch-default jobs": 0,
        }
        for machine, job_threads in machines.items():
            jobs = []
            if job_threads is not None:
                jobs = start_busy_jobs(args.jobs, job_threads, args.timeout * 2)
            try:
                for _ in range(args.repeat):
                    for mode, env in (("now", {}), ("before", BEFORE_ENV)):
                        seconds = time_cold_run(suite, env, args.timeout)
                        figures.setdefault(f"{machine}: {mode}", []).append(seconds)
                        shown = f"{seconds:7.1f} s" if seconds is not None else "timed out"
                        print(f"{machine:32} {mode:7} {shown}", flush=True)
            finally:
                for job in jobs:
                    job.kill()
                    job.wait()
    print()
    print("| machine | pftbench now | before (spin-wait) |")
    print("|---|---|---|")
    idle = _median(figures["idle: now"])
    for machine in machines:
        cells = [_summary(figures[f"{machine}: {mode}"], idle) for mode in ("now", "before")]
        print(f"| {machine} | {cells[0]} | {cells[1]} |")
    print(f"(x: median against idle, now; load average at the end: {os.getloadavg()[0]:.2f})")
    if args.json is not None:
        args.json.write_text(json.dumps({"jobs": args.jobs, **figures}, indent=1))
    return figures


if __name__ == "__main__":
    main(parse_args())
