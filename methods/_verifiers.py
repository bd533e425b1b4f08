"""Fitting the verifier an online method optimises against (not a method: no registration).

`global` and `local` reward models are trained by `bench.reward_models`; a `dpo` one is the
implicit reward of an offline DPO policy trained here on the same pairs.
"""

from __future__ import annotations

from pathlib import Path

from bench.method_api import MethodContext
from bench.reward_models import (
    INVALID_SCORE,
    RewardModel,
    RewardModelSpec,
    load_reward_model,
    save_implicit_reward,
    train_reward_model,
)
from bench.tasks.base import Sample


def fit_reward_model(
    ctx: MethodContext, spec: RewardModelSpec, rm_dir: Path
) -> tuple[RewardModel, dict]:
    """Train the verifier `spec` describes on the budget's pairs and save it to `rm_dir`."""
    if spec.kind == "dpo":
        from bench.modeling import load_tokenizer
        from methods.dpo import DPOConfig, train_policy

        policy_dir = rm_dir / "policy"
        dpo_cfg = DPOConfig(
            beta=spec.beta, lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size
        )
        metrics = train_policy(ctx, dpo_cfg, ctx.pairs, policy_dir, desc="rm dpo")
        load_tokenizer(ctx.base_model_dir).save_pretrained(policy_dir)
        save_implicit_reward(
            rm_dir, policy=policy_dir, reference=ctx.base_model_dir, beta=spec.beta
        )
        return load_reward_model(rm_dir, ctx.task), metrics
    model, metrics = train_reward_model(
        spec,
        ctx.task,
        ctx.pairs,
        ctx.base_model_dir,
        ctx.seed,
        progress=ctx.progress,
        micro_batch_size=ctx.micro_batch_size,
    )
    model.save(rm_dir)
    return model, metrics


def score_samples(
    model: RewardModel, prompts: list[str], samples: list[list[Sample]]
) -> list[list[float]]:
    """The verifier's score of every sample, per prompt; an unfinished sample scores lowest."""
    flat_prompts = [p for p, group in zip(prompts, samples, strict=True) for _ in group]
    flat_samples = [s for group in samples for s in group]
    flat_scores = model.score(flat_prompts, [s.text for s in flat_samples])
    flat_scores = [
        score if s.finished else INVALID_SCORE
        for score, s in zip(flat_scores, flat_samples, strict=True)
    ]
    out, start = [], 0
    for group in samples:
        out.append(flat_scores[start : start + len(group)])
        start += len(group)
    return out


def unique_prompts(ctx: MethodContext) -> list[str]:
    """The budget's prompts, each once, in pool order: the prompts online methods sample on."""
    return list(dict.fromkeys(pair.prompt for pair in ctx.pairs))
