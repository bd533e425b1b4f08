"""The vLLM backend against the HF backend on this machine, and the cost of a policy update.

    python benchmarks/vllm_bench.py [--prompts 256] [--new-tokens 64] [--repeats 3] [--json OUT]

One run, same model, same prompts. The model is a GPT-2 built from a config (4 layers, width 256,
4 heads, 3.5M parameters, a 1,028-word tokenizer; no download), the prompts 256 distinct strings
of 32 words; both backends decode greedily exactly `--new-tokens` tokens per prompt (min =
max tokens, EOS suppressed), all 256 prompts in one batch (the HF backend's batch_size 256,
vLLM's max_num_seqs 256). tokens/s = prompts x new tokens / wall time of `generate`, after a
warm-up call; the median of `--repeats` calls is shown.

HF runs here, in this venv, with torch's default thread count and again with one thread (on a
CPU shared with other work one thread is often faster: idle OpenMP threads spin). vLLM runs in
a subprocess of the vLLM venv ($PFTBENCH_VLLM_PYTHON, else ./.vllm-venv: vLLM pins its own
torch and transformers), once per `weight_update` mode: `reload` (the engine core in its own
process) and `in_place` (the engine core in the worker's process). HF is measured before and
after the vLLM subprocess, so load that changes during the run shows in its spread.

The update figures are what an online method pays per round to get its new weights into the
engine, `VLLMBackend.set_policy`: reload = save the checkpoint + start a new engine on it;
in_place = copy the state_dict into the running engine. Greedy agreement = the share of prompts
whose HF and vLLM texts are identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from judge_server import VLLM_PYTHON_ENV, vllm_python  # noqa: E402  (tests/ is not a package)

from bench.generation import Decoding  # noqa: E402

N_WORDS = 1024
MODEL_SHAPE = {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 128}
VLLM_PARAMS = {
    "dtype": "float32",
    "enforce_eager": True,
    "gpu_memory_utilization": 0.05,
    "kv_cache_gib": 1,
    "max_num_seqs": 256,
}
"""The vLLM backend's parameters in both modes (plus weight_update)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls each")
    parser.add_argument("--updates", type=int, default=3, help="timed policy updates per mode")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_model(out: Path) -> int:
    """Save the benchmark's GPT-2 (random weights) and its word tokenizer; return #parameters."""
    from bench.modeling import build_gpt2, load_tokenizer
    from bench.tasks.keywords import SPECIAL_TOKENS, write_word_tokenizer

    write_word_tokenizer(SPECIAL_TOKENS + [f"w{i:04d}" for i in range(N_WORDS)], out)
    tokenizer = load_tokenizer(out)
    model = build_gpt2(
        vocab_size=len(tokenizer),
        initializer_range=0.05,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=0,
        **MODEL_SHAPE,
    )
    model.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def make_prompts(n: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(f"w{rng.randrange(N_WORDS):04d}" for _ in range(32)) for _ in range(n)]


def timed_generate(backend, model_dir: Path, prompts: list[str], decoding: Decoding, repeats: int):
    """Warm up on 8 prompts, then `repeats` timed calls: (seconds per call, last samples)."""
    backend.generate(model_dir, prompts[:8], decoding)
    seconds, samples = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        samples = backend.generate(model_dir, prompts, decoding)
        seconds.append(time.perf_counter() - start)
    return seconds, samples


# -- the vLLM side: runs in the vLLM venv ---------------------------------------------------
def vllm_worker(request_path: Path, result_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from bench.backends.vllm import VLLMBackend, VLLMParams
    from bench.modeling import load_tokenizer

    request = json.loads(request_path.read_text())
    model_dir, prompts = Path(request["model_dir"]), request["prompts"]
    decoding = Decoding(**request["decoding"])
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    scratch = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    result = {}
    for mode in ("reload", "in_place"):
        backend = VLLMBackend(VLLMParams(**VLLM_PARAMS, weight_update=mode))
        try:
            start = time.perf_counter()
            backend.load_policy(model_dir)
            engine_start_s = time.perf_counter() - start
            seconds, samples = timed_generate(
                backend, model_dir, prompts, decoding, request["repeats"]
            )
            update_s = []
            for step in range(request["updates"]):
                with torch.no_grad():  # a stand-in for a round of training
                    for parameter in model.parameters():
                        parameter.mul_(1.0 + 1e-3)
                start = time.perf_counter()
                backend.set_policy(model, tokenizer, scratch / f"{mode}-{step}")
                update_s.append(time.perf_counter() - start)
            backend.sample(prompts[:8], decoding)  # the engine still answers after the updates
        finally:
            backend.close()
        result[mode] = {
            "engine_start_s": engine_start_s,
            "generate_s": seconds,
            "n_tokens": [s[0].n_tokens for s in samples],
            "texts": [s[0].text for s in samples],
            "update_s": update_s,
        }
    result_path.write_text(json.dumps(result))


def run_vllm(python: Path, request: dict, work: Path) -> dict:
    (work / "request.json").write_text(json.dumps(request))
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    log_path = work / "vllm_worker.log"
    with open(log_path, "wb") as log:
        done = subprocess.run(
            [str(python), __file__, "--worker", "request.json", "result.json"],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise SystemExit(f"the vLLM worker exited with {done.returncode}:\n{tail}")
    return json.loads((work / "result.json").read_text())


def measure_hf(model_dir: Path, prompts: list[str], decoding: Decoding, repeats: int) -> dict:
    """Seconds per call with torch's default thread count and with one thread."""
    import torch

    from bench.backends.hf import HFBackend, HFParams

    default_threads = torch.get_num_threads()
    out = {}
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        seconds, samples = timed_generate(
            HFBackend(HFParams(batch_size=256)), model_dir, prompts, decoding, repeats
        )
        out[threads] = {"generate_s": seconds, "texts": [s[0].text for s in samples]}
    torch.set_num_threads(default_threads)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        vllm_worker(*args.worker)
        return
    python = vllm_python()
    if python is None:
        raise SystemExit(f"no vLLM venv: run .ci/run, or set {VLLM_PYTHON_ENV}")
    work = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    model_dir = work / "model"
    n_parameters = build_model(model_dir)
    prompts = make_prompts(args.prompts)
    decoding = Decoding(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    n_tokens = args.prompts * args.new_tokens
    print(
        f"GPT-2 {MODEL_SHAPE}, {n_parameters / 1e6:.2f}M parameters; {args.prompts} prompts x "
        f"{args.new_tokens} new tokens, greedy, one batch; load average before "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    hf_before = measure_hf(model_dir, prompts, decoding, args.repeats)
    request = {
        "model_dir": str(model_dir),
        "prompts": prompts,
        "decoding": dataclasses.asdict(decoding),
        "repeats": args.repeats,
        "updates": args.updates,
    }
    vllm = run_vllm(python, request, work)
    hf_after = measure_hf(model_dir, prompts, decoding, args.repeats)
    load_after = os.getloadavg()[0]

    for mode, figures in vllm.items():
        if set(figures["n_tokens"]) != {args.new_tokens}:
            raise SystemExit(f"vLLM ({mode}) did not generate exactly {args.new_tokens} tokens")

    def rate(seconds: list[float]) -> float:
        return n_tokens / statistics.median(seconds)

    rows = {}
    for threads in hf_before:
        seconds = hf_before[threads]["generate_s"] + hf_after[threads]["generate_s"]
        rows[f"HF, {threads} torch thread{'s' if threads > 1 else ''}"] = seconds
    rows["vLLM, engine in its own process (reload)"] = vllm["reload"]["generate_s"]
    rows["vLLM, engine in-process (in_place)"] = vllm["in_place"]["generate_s"]
    best_hf = max(rate(s) for name, s in rows.items() if name.startswith("HF"))
    best_vllm = max(rate(s) for name, s in rows.items() if name.startswith("vLLM"))

    print(f"\n{'backend':<44}{'tokens/s':>10}{'s/call [min, max]':>22}{'x best HF':>11}")
    for name, seconds in rows.items():
        spread = f"{statistics.median(seconds):.2f} [{min(seconds):.2f}, {max(seconds):.2f}]"
        print(f"{name:<44}{rate(seconds):>10.0f}{spread:>22}{rate(seconds) / best_hf:>11.2f}")
    print(f"vLLM / HF (best of each): {best_vllm / best_hf:.2f}x (target >= 3x)")

    hf_texts = hf_before[max(hf_before)]["texts"]
    agreements = {
        mode: sum(a == b for a, b in zip(hf_texts, vllm[mode]["texts"], strict=True)) / len(prompts)
        for mode in vllm
    }
    print(
        "greedy agreement with HF (identical texts / prompts, n="
        f"{len(prompts)}): "
        + ", ".join(f"{mode} {value:.3f}" for mode, value in agreements.items())
    )

    print(f"\n{'policy update (set_policy)':<44}{'s/update [min, max]':>24}")
    for mode, label in (
        ("reload", "reload: save + new engine"),
        ("in_place", "in_place: state_dict into the engine"),
    ):
        seconds = vllm[mode]["update_s"]
        spread = f"{statistics.median(seconds):.3f} [{min(seconds):.3f}, {max(seconds):.3f}]"
        print(f"{label:<44}{spread:>24}")
    reload_s = statistics.median(vllm["reload"]["update_s"])
    in_place_s = statistics.median(vllm["in_place"]["update_s"])
    print(
        f"in_place is {reload_s / in_place_s:.0f}x faster per update; engine start "
        f"{vllm['reload']['engine_start_s']:.1f} s (own process), "
        f"{vllm['in_place']['engine_start_s']:.1f} s (in-process); "
        f"load average after {load_after:.1f}"
    )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "n_parameters": n_parameters,
                    "n_tokens_per_call": n_tokens,
                    "tokens_per_s": {name: rate(s) for name, s in rows.items()},
                    "seconds_per_call": rows,
                    "vllm_over_hf": best_vllm / best_hf,
                    "greedy_agreement": agreements,
                    "update_s": {mode: vllm[mode]["update_s"] for mode in vllm},
                    "engine_start_s": {mode: vllm[mode]["engine_start_s"] for mode in vllm},
                },
                indent=1,
            )
        )


if __name__ == "__main__":  # vLLM spawns processes that re-import this module
    main()
