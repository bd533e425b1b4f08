"""Throughput of the pairwise LLM judge against a real loopback server: prints figures.

    python benchmarks/judge_bench.py [--items 128] [--in-flight 1 8 32] [--repeat 2] [--json OUT]

Starts `vllm serve` (the vLLM venv of the server tests: $PFTBENCH_VLLM_PYTHON or ./.vllm-venv)
on 127.0.0.1 with the tiny GPT-2 judge of tests/judge_server.py, its answers forced to one
letter by structured outputs, and judges `--items` synthetic TL;DR items in both orders (two
requests per item) with `max_in_flight` = N for each N, every time on a fresh answer cache, so
that every request goes to the server. Judgments/s = items / wall time of `judge()`; requests/s
counts both orders. Each N runs `--repeat` times and the fastest run is shown with the slowest
beside it: on a machine shared with other work the spread says how much to trust a figure.
Then it reruns the last N on a filled cache (no request at all) to show what a cached rerun
costs. The server and this client share the machine's cores, so the figures
say how well the judge keeps a local server busy, not what a hosted API would sustain (there the
latency per request is seconds and N is what sets the throughput).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from judge_server import (  # noqa: E402  (a test helper: tests/ is not a package)
    SERVED_MODEL,
    STRUCTURED_CHOICE,
    VllmServer,
    build_tiny_judge_model,
    vllm_python,
)

from bench.evaluate.judge_cache import JudgeCache  # noqa: E402
from bench.tasks.base import Sample, Task  # noqa: E402
from judges.llm_pairwise import LlmPairwiseJudge, LlmPairwiseParams  # noqa: E402

KEY_ENV = "PFTBENCH_BENCH_JUDGE_KEY"


class _StringTask(Task):
    name = "bench"

    def examples(self, split: str, n: int | None = None) -> list:
        return []

    def pool_size(self) -> int:
        return 1

    def preference_pool(self, size: int, seed: int, sample) -> list:
        return []


def items(n: int) -> tuple[list[str], list[Sample], list[str]]:
    """n distinct TL;DR-shaped items (~60 words of post, short summaries)."""
    prompts, outputs, references = [], [], []
    for i in range(n):
        prompts.append(
            f"SUBREDDIT: r/advice\nTITLE: Question number {i} about my flat\nPOST: My landlord "
            f"wants {100 + i} more each month, the heating broke in week {i % 52} and he has not "
            "fixed it. My lease ends in spring. Friends say I should move out, my parents say I "
            "should negotiate. I like the neighbourhood and my commute is short.\nTL;DR:"
        )
        outputs.append(Sample(f"rent up by {100 + i}, heating broken, move or stay?", 12, True))
        references.append(f"Landlord raises rent {100 + i} and won't fix heating: negotiate?")
    return prompts, outputs, references


def judge_once(base_url: str, cache_path: Path, n_in_flight: int, n_items: int) -> dict:
    params = LlmPairwiseParams(
        base_url=base_url,
        model=SERVED_MODEL,
        api_key_env=KEY_ENV,
        extra_body=STRUCTURED_CHOICE,
        max_tokens=4,
        max_in_flight=n_in_flight,
    )
    judge = LlmPairwiseJudge(params, _StringTask(), JudgeCache(cache_path))
    prompts, outputs, references = items(n_items)
    start = time.perf_counter()
    judgments = judge.judge(prompts, outputs, references)
    wall_s = time.perf_counter() - start
    stats = judge.stats()
    return {
        "in_flight": n_in_flight,
        "items": n_items,
        "requests_sent": stats["n_sent"],
        "wall_s": round(wall_s, 3),
        "judgments_per_s": round(n_items / wall_s, 2),
        "requests_per_s": round(stats["n_sent"] / wall_s, 2),
        "input_tokens": stats["input_tokens"],
        "invalid": sum(j.verdict.value == "I" for j in judgments),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    python = vllm_python()
    if python is None:
        print("no vLLM venv: run .ci/run, or set PFTBENCH_VLLM_PYTHON", file=sys.stderr)
        return 2
    key = os.urandom(16).hex()
    os.environ[KEY_ENV] = key
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="judge-bench-") as scratch:
        root = Path(scratch)
        model_dir = build_tiny_judge_model(root / "model")
        with VllmServer(python, model_dir, key, root / "server.log") as server:
            print(f"vllm serve ready in {server.start_s:.1f} s (tiny GPT-2, loopback)")
            judge_once(server.base_url, root / "warmup.sqlite", 4, 8)  # first-request costs
            rows = []
            for n in args.in_flight:
                runs = [
                    judge_once(server.base_url, root / f"n{n}-{k}.sqlite", n, args.items)
                    for k in range(args.repeat)
                ]
                best = max(runs, key=lambda run: run["judgments_per_s"])
                best["slowest_judgments_per_s"] = min(r["judgments_per_s"] for r in runs)
                rows.append(best)
            last = args.in_flight[-1]
            cached = judge_once(server.base_url, root / f"n{last}-0.sqlite", last, args.items)
    print()
    print("| in flight (N) | items | requests | wall s | judgments/s (slowest run) | requests/s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['in_flight']} | {row['items']} | {row['requests_sent']} | {row['wall_s']} "
            f"| {row['judgments_per_s']} ({row['slowest_judgments_per_s']}) "
            f"| {row['requests_per_s']} |"
        )
    print(
        f"| cached rerun (N={last}) | {cached['items']} | {cached['requests_sent']} "
        f"| {cached['wall_s']} | {cached['judgments_per_s']} | - |"
    )
    base = rows[0]["judgments_per_s"]
    print()
    print(
        "speed-up over N=1: "
        + ", ".join(f"N={r['in_flight']} {r['judgments_per_s'] / base:.2f}x" for r in rows)
    )
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "cached": cached}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
