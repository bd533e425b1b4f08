"""vLLM generation: the offline `vllm.LLM` engine behind the same interface as the HF backend.

The engine is started on first use and reused while the model directory stays the same; a
different directory starts a new one (`close()` releases it). The suite's decoding maps one to
one onto `SamplingParams`:

| Decoding           | SamplingParams                                      |
|--------------------|-----------------------------------------------------|
| n                  | n (greedy: 1, repeated n times; vLLM refuses n > 1) |
| temperature (0)    | temperature (0: greedy)                             |
| top_p              | top_p (top_k = 0: no top-k cut, as the HF backend)  |
| max_new_tokens     | max_tokens                                          |
| min_new_tokens     | min_tokens (EOS suppressed before)                  |
| stop               | stop (the text ends before the stop string)         |
| seed               | seed, per prompt (`request_seed`)                   |

Prompts are tokenised here with the model's own tokenizer and no special tokens, exactly as the
HF backend does, and handed to vLLM as token ids, so both backends see the same inputs. Samples
mean what the HF backend's mean (`to_sample`): `finished` when the output ended with EOS or a
stop string (vLLM's finish_reason "stop"), not at the length limit; the text decoded here as
the HF backend decodes it (no special tokens, not stripped, cut before a stop string);
token_ids ending with EOS when finished.

Online methods change the policy every round; two ways bring the new weights to the engine
(`weight_update` picks which one `set_policy` uses; both are public):
- `load_policy(model_dir)`: a new engine on the checkpoint the round saved (reload);
- `update_weights(model)`: the in-memory model's state_dict is sent to the running engine, whose
  workers load it in place (their `reload_weights`), with no restart.

vLLM and torch are imported inside functions only: validating a suite stays fast, and the module
imports where vLLM is not installed (the `vllm` package pins its own torch and transformers, so it
usually lives in its own environment: see the README).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench.config import StrictParams
from bench.evaluate.generation import Decoding
from bench.registry import register_backend
from bench.tasks.base import Sample

if TYPE_CHECKING:
    from torch import nn

SEED_STRIDE = 1_000_003
"""Request seeds of different `Decoding.seed`s lie this far apart (as the HF backend's batches)."""

INSECURE_SERIALIZATION_ENV = {"VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}
"""Set in this process for the life of a `weight_update: in_place` engine (its processes inherit
it; every side of their messages must agree on it): vLLM's messages between its processes carry
tensors only where their type is declared, so `update_weights` sends the state_dict pickled, as
one `StateDictWeights`. The processes are the engine's own, on this machine."""


class VLLMParams(StrictParams):
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs the model is split over (vLLM tensor parallelism, one worker process per GPU)."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of the accelerator's memory vLLM takes for weights, activations and KV cache (on
    the CPU build: of the CPU memory). Leave room for training when an online method trains on
    the same GPU."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' and activations' dtype; auto: vLLM's choice from the checkpoint's."""
    enforce_eager: bool = False
    """No CUDA graphs or torch.compile: a faster engine start, slower decoding on a GPU. On the
    CPU build compiling made the start 2.5 minutes and decoding no faster (the benchmark's
    model): use true there."""
    max_model_len: int | None = Field(None, ge=1)
    """Longest prompt + completion in tokens; None: the model's own limit (n_positions)."""
    max_num_seqs: int = Field(256, ge=1)
    """Sequences decoded together in one step (the batch size)."""
    kv_cache_gib: float | None = Field(None, gt=0)
    """KV cache size in GiB, overriding what gpu_memory_utilization would leave for it (vLLM's
    kv_cache_memory_bytes; on the CPU build the same as VLLM_CPU_KVCACHE_SPACE)."""
    cpu_offload_gib: float = Field(0.0, ge=0)
    """GiB of weights kept in CPU memory and streamed to the GPU each step (a model larger than
    the GPU; slow)."""
    enable_chunked_prefill: bool | None = None
    """Split long prompts' prefill over several steps; None: vLLM's default (on), except on the
    CPU build, where it is turned off: there vLLM 0.32 crashes when a seeded request's prefill is
    split ("CPU Generator does not use offset"), and every request here is seeded."""
    enable_prefix_caching: bool | None = None
    """Reuse the KV cache of shared prompt prefixes; None: vLLM's default for the model."""
    weight_update: Literal["reload", "in_place"] = "reload"
    """How an online method's new weights reach the engine each round (`set_policy`): reload
    (save the checkpoint, start a new engine on it) or in_place (send the in-memory weights to
    the running engine; see INSECURE_SERIALIZATION_ENV)."""


class VLLMBackend:
    """Samples with the offline vLLM engine; one engine at a time, started lazily."""

    def __init__(self, params: VLLMParams) -> None:
        self.params = params
        self._llm: Any = None
        self._environment = contextlib.ExitStack()
        """Restores the environment variables the engine was started with, on close."""
        self._tokenizer: Any = None
        self._model_dir: str | None = None
        """The checkpoint the engine holds; None once `update_weights` has replaced it."""

    # -- the GenerationBackend interface ----------------------------------------------------
    def generate(
        self, model_dir: Path, prompts: list[str], decoding: Decoding
    ) -> list[list[Sample]]:
        """`decoding.n` samples per prompt from the checkpoint in `model_dir`, in prompt order."""
        if self._model_dir != _key(model_dir):
            self.load_policy(model_dir)
        return self.sample(prompts, decoding)

    def close(self) -> None:
        """Shut the engine down (its worker processes, its memory); the next call starts anew."""
        if self._llm is not None:
            # Stops the engine's processes and tears down vLLM's distributed state, so that a
            # new engine can start in this process.
            self._llm.llm_engine.engine_core.shutdown()
        self._environment.close()
        self._llm, self._tokenizer, self._model_dir = None, None, None

    # -- online methods: the policy changes every round -------------------------------------
    def load_policy(self, model_dir: Path) -> None:
        """Start a new engine on the checkpoint in `model_dir` (model and tokenizer files)."""
        from bench.train.modeling import load_tokenizer

        self.close()
        p = self.params
        if p.weight_update == "in_place":
            self._environment.enter_context(_environment(INSECURE_SERIALIZATION_ENV))
        devices = engine_devices(p.tensor_parallel_size)
        if devices is not None:
            self._environment.enter_context(_environment({"CUDA_VISIBLE_DEVICES": devices}))
        from vllm import LLM
        from vllm.platforms import current_platform

        chunked_prefill = p.enable_chunked_prefill
        if chunked_prefill is None and current_platform.is_cpu():
            chunked_prefill = False

        self._llm = LLM(
            model=str(model_dir),
            tokenizer=str(model_dir),
            dtype=p.dtype,
            tensor_parallel_size=p.tensor_parallel_size,
            gpu_memory_utilization=p.gpu_memory_utilization,
            enforce_eager=p.enforce_eager,
            max_model_len=p.max_model_len,
            max_num_seqs=p.max_num_seqs,
            kv_cache_memory_bytes=int(p.kv_cache_gib * 2**30) if p.kv_cache_gib else None,
            cpu_offload_gb=p.cpu_offload_gib,
            enable_chunked_prefill=chunked_prefill,
            enable_prefix_caching=p.enable_prefix_caching,
            seed=0,
        )
        self._tokenizer = load_tokenizer(model_dir)
        self._model_dir = _key(model_dir)

    def update_weights(self, model: nn.Module) -> int:
        """Send `model`'s weights (a transformers model of the engine's architecture, e.g. the
        policy an online method trains) into the running engine; return how many tensors.

        Needs `weight_update: in_place` and an engine started on a checkpoint of the same
        architecture (`load_policy`). Each vLLM worker receives the whole state_dict and loads it
        with its `reload_weights` (vLLM's in-place reload for RL): the model's own
        `load_weights` maps the checkpoint names, fuses and shards the tensors, casts the dtype,
        then the post-load processing is redone so that the kernels see the new values. The
        prefix cache is emptied: its KV entries came from the old weights."""
        if self._llm is None or self.params.weight_update != "in_place":
            raise RuntimeError(
                "update_weights needs an engine started with weight_update: in_place "
                "(call load_policy first)"
            )
        weights = StateDictWeights({k: v.detach() for k, v in model.state_dict().items()})
        self._llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        self._llm.reset_prefix_cache()
        self._model_dir = None
        return len(weights.state_dict)

    def set_policy(self, model: nn.Module, tokenizer: Any, checkpoint_dir: Path) -> None:
        """Make the engine sample from `model`'s current weights, as `weight_update` says:
        reload saves model and tokenizer to `checkpoint_dir` and starts a new engine on it;
        in_place sends the weights to the running engine (`update_weights`; the first call, with
        no engine yet, starts one as reload does)."""
        if self.params.weight_update == "in_place" and self._llm is not None:
            self.update_weights(model)
            return
        model.save_pretrained(checkpoint_dir)
        tokenizer.save_pretrained(checkpoint_dir)
        self.load_policy(checkpoint_dir)

    def generate_from(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompts: list[str],
        decoding: Decoding,
        checkpoint_dir: Path,
    ) -> list[list[Sample]]:
        """`decoding.n` samples per prompt from an in-memory policy (an online method's round):
        `set_policy`, then `sample`. `checkpoint_dir` is where reload saves the weights.

        With `weight_update: reload` the engine is shut down afterwards: the policy trains next,
        its weights change, and the next round starts a new engine anyway, so the accelerator's
        memory goes to training meanwhile. An in_place engine stays up (leave training room with
        gpu_memory_utilization)."""
        self.set_policy(model, tokenizer, checkpoint_dir)
        samples = self.sample(prompts, decoding)
        if self.params.weight_update == "reload":
            self.close()
        return samples

    def sample(self, prompts: list[str], decoding: Decoding) -> list[list[Sample]]:
        """`decoding.n` samples per prompt from the weights the engine holds now."""
        if self._llm is None:
            raise RuntimeError("no engine: call generate, load_policy or set_policy first")
        token_ids = self._tokenizer(prompts, add_special_tokens=False).input_ids
        outputs = self._llm.generate(
            [{"prompt_token_ids": ids} for ids in token_ids],
            sampling_params=[
                _sampling_params(decoding, request_seed(decoding, i)) for i in range(len(prompts))
            ],
            use_tqdm=False,
        )
        # vLLM refuses n > 1 when greedy; greedy samples are identical, so repeat the one.
        copies = decoding.n if decoding.greedy else 1
        return [
            [
                to_sample(list(c.token_ids), c.finish_reason, self._tokenizer, decoding.stop)
                for c in o.outputs
            ]
            * copies
            for o in outputs
        ]


class StateDictWeights:
    """A state_dict as the (name, tensor) pairs vLLM's loaders iterate over; pickled whole to
    the engine's processes (a class importable there: this module)."""

    def __init__(self, state_dict: dict[str, Any]) -> None:
        self.state_dict = state_dict

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.state_dict.items())


def sampling_kwargs(decoding: Decoding, seed: int) -> dict[str, Any]:
    """The `SamplingParams` arguments of one prompt's request (the table in the module doc)."""
    return {
        "n": 1 if decoding.greedy else decoding.n,  # greedy: one sample, repeated by `sample`
        "temperature": decoding.temperature,
        "top_p": 1.0 if decoding.greedy else decoding.top_p,
        "top_k": 0,
        "max_tokens": decoding.max_new_tokens,
        "min_tokens": decoding.min_new_tokens,
        "stop": list(decoding.stop) or None,
        "seed": seed,
        # The text is decoded here as the HF backend decodes it; vLLM needs its own only to
        # find stop strings.
        "detokenize": bool(decoding.stop),
    }


def request_seed(decoding: Decoding, prompt_index: int) -> int:
    """The seed of prompt `prompt_index`'s request. vLLM seeds a request's i-th sample with
    seed + i, so prompts are `n` apart: no two samples of one call share a seed, and a prompt's
    samples do not depend on the batch it was scheduled in."""
    return decoding.seed * SEED_STRIDE + prompt_index * decoding.n


def to_sample(
    token_ids: list[int], finish_reason: str | None, tokenizer: Any, stop: tuple[str, ...]
) -> Sample:
    """A vLLM completion as the HF backend's Sample: finished when vLLM stopped it (finish_reason
    "stop": EOS or a stop string), the text decoded without special tokens and cut before the
    first stop string, token_ids ending with EOS when finished (appended after a stop string,
    as the HF backend does). Unlike the HF backend, a PAD token the model generated stays: here
    it cannot be padding."""
    eos = tokenizer.eos_token_id
    kept = token_ids[:-1] if token_ids and token_ids[-1] == eos else token_ids
    text = tokenizer.decode(kept, skip_special_tokens=True)
    for marker in stop:
        if marker in text:
            text = text[: text.index(marker)]
    finished = finish_reason == "stop"
    generated = [*kept, eos] if finished else kept
    return Sample(text=text, n_tokens=len(generated), finished=finished, token_ids=generated)


def engine_devices(tensor_parallel_size: int) -> str | None:
    """CUDA_VISIBLE_DEVICES for this process's engine under `accelerate launch`: the GPU of
    the process (its LOCAL_RANK-th visible one), so that N processes start N engines on N GPUs
    rather than all on the first. None in a single process: the engine sees what it is given."""
    from bench.train import distributed

    if not distributed.is_distributed():
        return None
    if tensor_parallel_size != 1:
        raise ValueError(
            f"tensor_parallel_size {tensor_parallel_size} under accelerate launch: each process "
            "starts its own vLLM engine on its own GPU, so use tensor_parallel_size: 1 there "
            "(or run the suite in one process)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return visible.split(",")[local_rank]
    return str(local_rank)


def _sampling_params(decoding: Decoding, seed: int) -> Any:
    from vllm import SamplingParams

    return SamplingParams(**sampling_kwargs(decoding, seed))


def _key(model_dir: Path | str) -> str:
    return str(Path(model_dir).resolve())


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@register_backend("vllm", config=VLLMParams)
def make_vllm_backend(params: VLLMParams) -> VLLMBackend:
    return VLLMBackend(params)
