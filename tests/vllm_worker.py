"""The vLLM side of tests/test_vllm_backend.py, run with the vLLM venv's python.

    python tests/vllm_worker.py REQUEST.json RESULT.json

REQUEST.json: {"model_a": dir, "model_b": dir, "prompts": [...], "max_new_tokens": int,
"stop": [...]}; model b is model a with perturbed weights, saved with its tokenizer. The worker
runs every check of the test through one `VLLMBackend` (`weight_update: in_place`), in this
order, and writes the samples of each to RESULT.json as {name: [[sample dict, ...], ...]}:

- greedy, n=2, sampled (seed 1 twice, seed 2), min_tokens, stop string on model a;
- in_place: model b's weights (loaded here with transformers) sent into the running engine;
- reload: `generate` on model b's directory (a new engine);
- back_to_a: `generate` on model a's directory again (a new engine: the in-place update must
  not be mistaken for model a's checkpoint).

Three engine starts in all.

    python tests/vllm_worker.py suite SUITE.yaml CACHE_DIR RESULT.json

runs a whole suite on the vLLM backend through the runner (`run_suite`). `run_in_vllm_venv`
(also used by benchmarks/vllm_bench.py) starts a script like this one from the main venv.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_in_vllm_venv(
    python: Path, args: list[str], cwd: Path, log_path: Path, timeout_s: float
) -> None:
    """Run `python args...` with the repository importable, output to `log_path`, in a process
    group of its own: on a timeout or an interrupt the whole group goes (vLLM's engine and
    workers are its children). A failure raises with the end of the log."""
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        HF_HUB_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(python), *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=timeout_s)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    if returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{args[0]} exited with {returncode}; its log ends:\n{tail}")


def main(request_path: Path, result_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from bench.evaluate.backends.vllm import VLLMBackend, VLLMParams
    from bench.evaluate.generation import Decoding

    request = json.loads(request_path.read_text())
    prompts, model_a, model_b = request["prompts"], request["model_a"], request["model_b"]
    greedy = Decoding(max_new_tokens=request["max_new_tokens"])
    sampled = dataclasses.replace(greedy, n=4, temperature=1.0, top_p=0.9, seed=1)
    backend = VLLMBackend(
        VLLMParams(
            dtype="float32",
            enforce_eager=True,
            gpu_memory_utilization=0.05,
            kv_cache_gib=1,
            max_model_len=64,
            weight_update="in_place",
        )
    )
    results, timings = {}, {}
    try:
        start = time.perf_counter()
        results["greedy"] = backend.generate(model_a, prompts, greedy)
        timings["engine_start_and_greedy_s"] = time.perf_counter() - start
        results["greedy_n2"] = backend.generate(model_a, prompts, dataclasses.replace(greedy, n=2))
        results["sampled_seed1"] = backend.generate(model_a, prompts, sampled)
        results["sampled_seed1_again"] = backend.generate(model_a, prompts, sampled)
        results["sampled_seed2"] = backend.generate(
            model_a, prompts, dataclasses.replace(sampled, seed=2)
        )
        results["min_tokens"] = backend.generate(
            model_a, prompts, dataclasses.replace(greedy, min_new_tokens=greedy.max_new_tokens)
        )
        results["stop"] = backend.generate(
            model_a, prompts, dataclasses.replace(greedy, stop=tuple(request["stop"]))
        )
        start = time.perf_counter()
        backend.update_weights(AutoModelForCausalLM.from_pretrained(model_b).eval())
        timings["update_weights_s"] = time.perf_counter() - start
        results["in_place"] = backend.sample(prompts, greedy)
        results["reload"] = backend.generate(model_b, prompts, greedy)
        results["back_to_a"] = backend.generate(model_a, prompts, greedy)
    finally:
        backend.close()
    payload = {
        "samples": {
            name: [[dataclasses.asdict(s) for s in group] for group in groups]
            for name, groups in results.items()
        },
        "timings": timings,
    }
    result_path.write_text(json.dumps(payload))


def run_suite(suite_path: Path, cache_dir: Path, result_path: Path) -> None:
    """Run every cell of a suite whose backend is vLLM, as `pftbench run` does, and write the
    result lines and the calls online methods made to `VLLMBackend.generate_from` (recorded on
    their way to the real method) to RESULT.json as {"lines": [...], "generate_from": [...]}."""
    from bench.config import load_suite
    from bench.evaluate.backends.vllm import VLLMBackend
    from bench.run.cache import Cache
    from bench.run.runner import Runner

    calls = []
    generate_from = VLLMBackend.generate_from

    def recorded(self, model, tokenizer, prompts, decoding, checkpoint_dir):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        samples = generate_from(self, model, tokenizer, prompts, decoding, checkpoint_dir)
        calls.append(
            {
                "prompts": len(prompts),
                "n": decoding.n,
                "temperature": decoding.temperature,
                "seed": decoding.seed,
                "samples": sum(len(group) for group in samples),
                "engine_left_running": self._llm is not None,
                "wall_s": time.perf_counter() - start,
            }
        )
        return samples

    VLLMBackend.generate_from = recorded
    runner = Runner(Cache(cache_dir), None, progress=False, log=print)
    try:
        lines = [
            runner.run_cell(cell).model_dump(mode="json") for cell in load_suite(suite_path).cells()
        ]
    finally:
        runner.close_backends()
    result_path.write_text(json.dumps({"lines": lines, "generate_from": calls}))


if __name__ == "__main__":  # vLLM may spawn processes that re-import this module
    if sys.argv[1] == "suite":
        run_suite(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]))
