"""The vLLM backend against the HF backend on this machine, and the cost of a policy update.

    python benchmarks/vllm_bench.py [--prompts 256] [--prompt-words 32 128] [--new-tokens 64]
                                    [--repeats 2] [--updates 3] [--json OUT]

One run, one model, the same prompts for both backends. The model is a GPT-2 built from a config
(4 layers, width 256, 4 heads: 3.5M parameters, with a 1,028-word tokenizer; no download). For
each prompt length (`--prompt-words`, one token per word) there are 256 distinct prompts; both
backends decode them greedily in one batch (the HF backend's batch_size 256, vLLM's
max_num_seqs 256), exactly `--new-tokens` tokens each (min = max tokens: EOS suppressed).
tokens/s = prompts x new tokens / wall time of `generate`, after a warm-up call on 8 prompts;
the median of the timed calls is shown with their range.

HF runs here, in this venv, with torch's default thread count and with one thread (on a CPU
shared with other work one thread can be faster: idle OpenMP threads spin), `--repeats` calls
before the vLLM subprocess and as many after, so load that changes during the run shows in its
range. vLLM runs in a subprocess of the vLLM venv ($PFTBENCH_VLLM_PYTHON, else ./.vllm-venv:
vLLM pins its own torch and transformers) with the backend's defaults on this CPU (its engine
core and its worker are processes of their own; the worker computes on one core, the other is
left to the engine core).

Policy updates are what an online method pays per round to get its new weights into the
engine, `VLLMBackend.set_policy`: `reload` = save the checkpoint + start a new engine on it;
`in_place` = send the state_dict to the running engine, which loads it in place. Greedy
agreement = the share of prompts whose HF and vLLM texts are identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from judge_server import VLLM_PYTHON_ENV, vllm_python  # noqa: E402  (tests/ is not a package)
from vllm_worker import run_in_vllm_venv  # noqa: E402

from bench.evaluate.generation import Decoding  # noqa: E402

N_WORDS = 1024
MODEL_SHAPE = {"n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 256}
VLLM_PARAMS = {
    "dtype": "float32",
    "enforce_eager": True,  # torch.compile on this CPU: a 2.5-minute start, no faster here
    "gpu_memory_utilization": 0.05,
    "kv_cache_gib": 2,
    "max_num_seqs": 256,
}
"""The vLLM backend's parameters (plus weight_update)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--prompt-words", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per phase")
    parser.add_argument("--updates", type=int, default=3, help="timed policy updates per mode")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", nargs=2, type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_model(out: Path) -> int:
    """Save the benchmark's GPT-2 (random weights) and its word tokenizer; return #parameters."""
    from bench.tasks.keywords import SPECIAL_TOKENS, write_word_tokenizer
    from bench.train.modeling import build_gpt2, load_tokenizer

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


def make_prompts(n: int, n_words: int) -> list[str]:
    rng = random.Random(n_words)
    return [" ".join(f"w{rng.randrange(N_WORDS):04d}" for _ in range(n_words)) for _ in range(n)]


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

    from bench.evaluate.backends.vllm import VLLMBackend, VLLMParams
    from bench.train.modeling import load_tokenizer

    request = json.loads(request_path.read_text())
    model_dir = Path(request["model_dir"])
    decoding = Decoding(**request["decoding"])
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir)
    scratch = Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    check_prompts = next(iter(request["prompts"].values()))[:8]

    def train_step() -> None:
        """A stand-in for a round of training: every weight changes."""
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(1.0 + 1e-3)

    result: dict = {"generate": {}, "update_s": {}}
    backend = VLLMBackend(VLLMParams(**VLLM_PARAMS, weight_update="in_place"))
    try:
        start = time.perf_counter()
        backend.load_policy(model_dir)
        result["engine_start_s"] = time.perf_counter() - start
        for n_words, prompts in request["prompts"].items():
            seconds, samples = timed_generate(
                backend, model_dir, prompts, decoding, request["repeats"]
            )
            result["generate"][n_words] = {
                "seconds": seconds,
                "n_tokens": [s[0].n_tokens for s in samples],
                "texts": [s[0].text for s in samples],
            }
        result["update_s"]["in_place"] = []
        for step in range(request["updates"]):
            train_step()
            start = time.perf_counter()
            backend.set_policy(model, tokenizer, scratch / f"in_place-{step}")
            result["update_s"]["in_place"].append(time.perf_counter() - start)
        backend.sample(check_prompts, decoding)  # the engine still answers after the updates
    finally:
        backend.close()

    backend = VLLMBackend(VLLMParams(**VLLM_PARAMS, weight_update="reload"))
    try:
        result["update_s"]["reload"] = []
        for step in range(request["updates"]):
            train_step()
            start = time.perf_counter()
            backend.set_policy(model, tokenizer, scratch / f"reload-{step}")
            result["update_s"]["reload"].append(time.perf_counter() - start)
        backend.sample(check_prompts, decoding)
    finally:
        backend.close()
    result_path.write_text(json.dumps(result))


def run_vllm(python: Path, request: dict, work: Path) -> dict:
    (work / "request.json").write_text(json.dumps(request))
    run_in_vllm_venv(
        python,
        [__file__, "--worker", "request.json", "result.json"],
        cwd=work,
        log_path=work / "vllm_worker.log",
        timeout_s=3600,
    )
    return json.loads((work / "result.json").read_text())


# -- the HF side and the report: runs here ---------------------------------------------------
def measure_hf(model_dir: Path, prompts: dict, decoding: Decoding, repeats: int) -> dict:
    """{(n_words, threads): (seconds per call, texts)} with torch's default threads and one."""
    import torch

    from bench.evaluate.backends.hf import HFBackend, HFParams

    default_threads = torch.get_num_threads()
    out = {}
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for n_words, word_prompts in prompts.items():
            backend = HFBackend(HFParams(batch_size=256))
            seconds, samples = timed_generate(backend, model_dir, word_prompts, decoding, repeats)
            out[n_words, threads] = (seconds, [s[0].text for s in samples])
    torch.set_num_threads(default_threads)
    return out


def spread(seconds: list[float]) -> str:
    return f"{statistics.median(seconds):.2f} [{min(seconds):.2f}, {max(seconds):.2f}]"


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
    prompts = {str(n): make_prompts(args.prompts, n) for n in args.prompt_words}
    decoding = Decoding(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
    n_tokens = args.prompts * args.new_tokens
    load_before = os.getloadavg()[0]
    print(
        f"GPT-2 {MODEL_SHAPE}: {n_parameters / 1e6:.2f}M parameters. {args.prompts} prompts of "
        f"{' / '.join(prompts)} tokens, {args.new_tokens} new tokens each, greedy, one batch. "
        f"{os.cpu_count()} CPUs, load average {load_before:.1f} before"
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

    figures: dict = {"n_parameters": n_parameters, "tokens_per_call": n_tokens, "by_length": {}}
    print(f"\n{'prompt':>7}  {'backend':<26}{'tokens/s':>9}{'s/call [min, max]':>22}{'x HF':>7}")
    for n_words in prompts:
        generated = vllm["generate"][n_words]
        if set(generated["n_tokens"]) != {args.new_tokens}:
            raise SystemExit(f"vLLM did not generate exactly {args.new_tokens} tokens per prompt")
        rows = {}
        for words, threads in hf_before:
            if words == n_words:
                seconds = hf_before[words, threads][0] + hf_after[words, threads][0]
                rows[f"HF, {threads} thread{'s' * (threads > 1)}"] = seconds
        rows["vLLM"] = generated["seconds"]
        rates = {name: n_tokens / statistics.median(s) for name, s in rows.items()}
        best_hf = max(rate for name, rate in rates.items() if name.startswith("HF"))
        for name, seconds in rows.items():
            print(
                f"{n_words:>7}  {name:<26}{rates[name]:>9.0f}{spread(seconds):>22}"
                f"{rates[name] / best_hf:>7.2f}"
            )
        hf_texts = hf_before[n_words, max(t for _, t in hf_before)][1]
        agreement = sum(a == b for a, b in zip(hf_texts, generated["texts"], strict=True)) / len(
            hf_texts
        )
        print(
            f"{'':>7}  vLLM / best HF: {rates['vLLM'] / best_hf:.2f}x (target >= 3x); greedy "
            f"agreement {agreement:.3f} (identical texts / prompts, n={len(hf_texts)})"
        )
        figures["by_length"][n_words] = {
            "tokens_per_s": rates,
            "seconds_per_call": rows,
            "vllm_over_best_hf": rates["vLLM"] / best_hf,
            "greedy_agreement": agreement,
        }

    print(f"\n{'policy update per round (set_policy)':<44}{'s/update [min, max]':>22}")
    labels = {
        "reload": "reload: save + start a new engine",
        "in_place": "in_place: state_dict into the engine",
    }
    for mode, label in labels.items():
        print(f"{label:<44}{spread(vllm['update_s'][mode]):>22}")
    reload_s = statistics.median(vllm["update_s"]["reload"])
    in_place_s = statistics.median(vllm["update_s"]["in_place"])
    print(
        f"in_place is {reload_s / in_place_s:.0f}x faster per update. First engine start "
        f"{vllm['engine_start_s']:.1f} s; load average {load_after:.1f} after"
    )
    figures |= {
        "update_s": vllm["update_s"],
        "engine_start_s": vllm["engine_start_s"],
        "load_average": [load_before, load_after],
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":  # vLLM spawns processes that re-import this module
    main()
