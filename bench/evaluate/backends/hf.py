"""HF transformers generation: batched, KV cache, left padding, seeded sampling.

Prompts are sorted by length so a batch holds similar lengths (less padding), and results are
put back in prompt order. Sampling is seeded per batch, so the same prompts, decoding and seed
give the same samples on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench.config import StrictParams
from bench.evaluate.generation import Decoding
from bench.registry import register_backend
from bench.tasks.base import Sample

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class HFParams(StrictParams):
    batch_size: int = Field(256, ge=1)
    """Sequences per `generate` call (prompts per call = batch_size // n)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights' dtype while generating."""


class HFBackend:
    def __init__(self, params: HFParams) -> None:
        self.params = params
        self._loaded: tuple[str, Any, Any] | None = None

    def generate(
        self, model_dir: Path, prompts: list[str], decoding: Decoding
    ) -> list[list[Sample]]:
        model, tokenizer = self._load(model_dir)
        return generate_with(model, tokenizer, prompts, decoding, self.params.batch_size)

    def generate_from(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        prompts: list[str],
        decoding: Decoding,
        checkpoint_dir: Path,
    ) -> list[list[Sample]]:
        """Samples from the in-memory model itself, on its device and in its dtype (`dtype` is
        not applied); `checkpoint_dir` is not needed."""
        return generate_with(model, tokenizer, prompts, decoding, self.params.batch_size)

    def close(self) -> None:
        self._loaded = None

    def _load(self, model_dir: Path) -> tuple[Any, Any]:
        from bench.train.modeling import load_causal_lm, load_tokenizer

        key = str(Path(model_dir).resolve())
        if self._loaded is None or self._loaded[0] != key:
            model = load_causal_lm(model_dir, self.params.dtype).eval()
            self._loaded = (key, model, load_tokenizer(model_dir))
        return self._loaded[1], self._loaded[2]


def generate_with(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    decoding: Decoding,
    batch_size: int,
) -> list[list[Sample]]:
    """`decoding.n` samples per prompt from an in-memory model (online methods call this)."""
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=decoding.max_new_tokens,
        min_new_tokens=decoding.min_new_tokens or None,
        do_sample=not decoding.greedy,
        temperature=decoding.temperature if not decoding.greedy else None,
        top_p=decoding.top_p if not decoding.greedy else None,
        top_k=0 if not decoding.greedy else None,
        num_return_sequences=decoding.n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False).input_ids]
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and max(lengths, default=0) + decoding.max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt ({max(lengths)} tokens) plus max_new_tokens "
            f"({decoding.max_new_tokens}) exceeds the model's {limit} positions: lower "
            f"generation.max_new_tokens or use a model with a longer context"
        )
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    per_call = max(1, batch_size // decoding.n)
    results: list[list[Sample]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    for batch_index, start in enumerate(range(0, len(order), per_call)):
        indices = order[start : start + per_call]
        enc = tokenizer(
            [prompts[i] for i in indices],
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        ).to(model.device)
        torch.manual_seed(decoding.seed * 1_000_003 + batch_index)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        for row, token_ids in enumerate(new_tokens):
            results[indices[row // decoding.n]].append(
                _to_sample(token_ids, tokenizer, decoding.stop)
            )
    model.train(was_training)
    return results


def _to_sample(
    token_ids: list[int], tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...]
) -> Sample:
    eos = tokenizer.eos_token_id
    finished = eos in token_ids
    kept = token_ids[: token_ids.index(eos)] if finished else token_ids
    if not finished and tokenizer.pad_token_id != eos:
        kept = [t for t in kept if t != tokenizer.pad_token_id]
    # The text is kept exactly as decoded (no strip): a BPE completion such as " I" re-encodes
    # to the tokens the policy generated only with its leading space, and methods train on it.
    text = tokenizer.decode(kept, skip_special_tokens=True)
    for marker in stop:
        if marker in text:
            text, finished = text[: text.index(marker)], True
    generated = kept + [eos] if finished else kept
    return Sample(text=text, n_tokens=len(generated), finished=finished, token_ids=generated)


@register_backend("hf", config=HFParams)
def make_hf_backend(params: HFParams) -> HFBackend:
    return HFBackend(params)
