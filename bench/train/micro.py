"""Build the micro tier's base (SFT) policy from scratch on a task with a gold reward.

Two phases, both plain SFT on the task's format (loss on the summary and EOS only):
1. warm-up on low-diversity documents (few distinct words), where copying a frequent document
   word is easy to discover; without it a tiny transformer sits on a no-copying plateau for
   over a thousand steps (issue 2's finding);
2. SFT on the `train` split's references.
The result is a standard `GPT2LMHeadModel` plus a word-level tokenizer, `save_pretrained` to a
directory that HF and vLLM both load.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.tasks.base import Task


def build_base_policy(
    task: Task,
    cfg: Any,
    out_dir: Path,
    *,
    progress: bool = True,
    micro_batch_size: int | None = None,
) -> dict[str, Any]:
    """Train the base policy described by `cfg` (a MicroBaseModel) into `out_dir`; return its
    metrics: training figures and the greedy policy's gold reward next to the reference's."""
    from bench.train import training
    from bench.train.modeling import (
        build_gpt2,
        device,
        encode_completions,
        load_tokenizer,
        sft_loss,
    )

    task.write_tokenizer(out_dir)
    tokenizer = load_tokenizer(out_dir)
    train = task.examples("train")
    prompt_len = len(tokenizer(train[0].prompt, add_special_tokens=False).input_ids)
    model = build_gpt2(
        vocab_size=len(tokenizer),
        n_positions=prompt_len + task.max_new_tokens() + 1,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        initializer_range=cfg.initializer_range,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=cfg.seed,
    ).to(device())

    def collate(examples: list) -> dict:
        return encode_completions(
            tokenizer, [e.prompt for e in examples], [e.reference for e in examples]
        )

    metrics: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    phases = [
        ("warmup", task.examples("pretrain", cfg.pretrain_steps * cfg.batch_size), 1.0),
        ("sft", train, float(cfg.sft_epochs)),
    ]
    for phase, examples, epochs in phases:
        loop = training.LoopConfig(
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            epochs=epochs,
            micro_batch_size=micro_batch_size,
            warmup_ratio=0.02,
            seed=cfg.seed,
        )
        report = training.run(
            model, examples, collate, sft_loss, loop, desc=f"base {phase}", progress=progress
        )
        metrics.update({f"{phase}_{k}": v for k, v in report.summary().items()})
    model.save_pretrained(out_dir)
    metrics.update(_greedy_quality(task, model, tokenizer))
    return metrics


def _greedy_quality(task: Task, model: Any, tokenizer: Any, n: int = 200) -> dict[str, float]:
    """Gold reward of the base policy's greedy summaries and of the references on `valid`."""
    from bench.evaluate.backends.hf import generate_with
    from bench.evaluate.generation import Decoding

    examples = task.examples("valid")[:n]
    start = time.perf_counter()
    decoding = Decoding(max_new_tokens=task.max_new_tokens(), min_new_tokens=task.min_new_tokens())
    samples = [
        s[0] for s in generate_with(model, tokenizer, [e.prompt for e in examples], decoding, 256)
    ]
    rewards = [
        task.gold_reward(e.prompt, s.text) if s.finished else None
        for e, s in zip(examples, samples, strict=True)
    ]
    valid = [r for r in rewards if r is not None]
    return {
        "greedy_gold_reward": statistics.mean(valid) if valid else float("nan"),
        "greedy_valid_rate": len(valid) / len(rewards),
        "reference_gold_reward": statistics.mean(
            task.gold_reward(e.prompt, e.reference) for e in examples
        ),
        "quality_eval_s": round(time.perf_counter() - start, 3),
    }
