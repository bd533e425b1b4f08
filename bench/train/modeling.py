"""Models and the tensors they eat: building the micro GPT-2, loading checkpoints, batching
prompt/completion pairs, and gathering sequence log-probabilities.

Every method computes its log-probs here, so a fix to masking or padding reaches all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def quiet_transformers() -> None:
    """Silence transformers' per-load progress bars and advice: the runner reports stages."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def device() -> torch.device:
    """The device this process trains and generates on: CUDA when there is one (under
    `accelerate launch`, the process's own GPU: its LOCAL_RANK), else the CPU."""
    import os

    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def load_tokenizer(model_dir: Path | str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_dir: Path | str, dtype: str = "float32") -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    return model.to(device())


def build_gpt2(
    vocab_size: int,
    n_positions: int,
    n_embd: int,
    n_layer: int,
    n_head: int,
    initializer_range: float,
    eos_token_id: int,
    pad_token_id: int,
    seed: int,
) -> PreTrainedModel:
    """A freshly initialised standard `GPT2LMHeadModel`, so vLLM can load the same checkpoint.

    No dropout: a 200k-parameter model on 10k examples does not need it, and without it the
    policy and its frozen reference agree exactly at the start of preference training."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    quiet_transformers()
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        initializer_range=initializer_range,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config)


def disable_dropout(model: PreTrainedModel) -> None:
    """Zero every dropout probability, so the trained policy's log-probs are comparable with the
    reference's (computed in eval mode) from step 0, as in the DPO reference implementation."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def encode_completions(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_prompt_tokens: int | None = None,
    max_completion_tokens: int | None = None,
) -> dict[str, torch.Tensor]:
    """Tokenise prompt + completion + EOS, right-padded (see `batch_from_token_ids`).

    Prompts are cut from the left (keep the end, next to the completion), completions from the
    right, as the paper's TL;DR preprocessing does.
    """
    prompt_rows, completion_rows = [], []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        completion_ids = tokenizer(completion, add_special_tokens=False).input_ids
        if max_prompt_tokens is not None:
            prompt_ids = (
                prompt_ids[len(prompt_ids) - max_prompt_tokens :] if max_prompt_tokens > 0 else []
            )
        if max_completion_tokens is not None:
            completion_ids = completion_ids[:max_completion_tokens]
        prompt_rows.append(prompt_ids)
        completion_rows.append(completion_ids + [tokenizer.eos_token_id])
    return batch_from_token_ids(prompt_rows, completion_rows, tokenizer.pad_token_id)


def batch_from_token_ids(
    prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, torch.Tensor]:
    """Rows of prompt + completion token ids, right-padded.

    Returns input_ids, attention_mask and loss_mask, each [B, T]; loss_mask is 1 on the
    completion's tokens (the tokens whose log-probs count), 0 on prompt and padding.
    """
    import torch

    rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, row) in enumerate(zip(prompt_ids, rows, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention_mask[i, : len(row)] = 1
        loss_mask[i, len(prompt) : len(row)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def map_batches(
    items: Sequence[Any], batch_size: int, fn: Callable[[Sequence[Any]], list[Any]]
) -> list[Any]:
    """`fn` over consecutive batches of `items` (one result per item), results concatenated:
    for inference whose memory is not known ahead (reference log-probs, verifier scores on a
    large model). A batch that runs out of CUDA memory is retried at half the size, which is
    then kept; each process decides alone (no collective runs inside)."""
    import warnings

    import torch

    out: list[Any] = []
    start, size = 0, batch_size
    while start < len(items):
        batch = items[start : start + size]
        try:
            out += fn(batch)
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size = (size + 1) // 2
            warnings.warn(
                f"out of memory at a batch of {len(batch)}: continuing with {size}", stacklevel=2
            )
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += len(batch)
    return out


def token_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi(token_t | tokens_<t) for every position t >= 1, masked by loss_mask: [B, T-1]."""
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    logps = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    return logps * batch["loss_mask"][:, 1:]


def sequence_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log pi(completion | prompt) = sum of the completion's token log-probs: [B]."""
    return token_logps(model, batch).sum(-1)


def sft_loss(
    model: PreTrainedModel, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean negative log-likelihood per completion token (completion and EOS only)."""
    logps = token_logps(model, batch)
    n_tokens = batch["loss_mask"][:, 1:].sum()
    loss = -logps.sum() / n_tokens.clamp(min=1)
    return loss, {"nll": loss.item()}


def concat_batches(
    first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], pad_token_id: int
) -> dict[str, Any]:
    """Stack two right-padded batches along the batch axis, padding to the wider one: [2B, T].

    DPO runs chosen and rejected through the model in one forward pass this way.
    """
    import torch

    width = max(first["input_ids"].shape[1], second["input_ids"].shape[1])

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    return {
        key: torch.cat(
            [
                pad(first[key], pad_token_id if key == "input_ids" else 0),
                pad(second[key], pad_token_id if key == "input_ids" else 0),
            ]
        )
        for key in ("input_ids", "attention_mask", "loss_mask")
    }


def encode_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[Any]) -> dict[str, Any]:
    """Preference pairs as one batch: the B chosen rows, then the B rejected rows: [2B, T],
    right-padded (`encode_completions` of each side, then `concat_batches`)."""
    prompts = [pair.prompt for pair in pairs]
    return concat_batches(
        encode_completions(tokenizer, prompts, [pair.chosen for pair in pairs]),
        encode_completions(tokenizer, prompts, [pair.rejected for pair in pairs]),
        tokenizer.pad_token_id,
    )
