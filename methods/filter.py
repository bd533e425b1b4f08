"""Filter (rejection-sampling fine-tuning): sample N outputs per training prompt from the SFT
policy, keep the verifier's best, and fine-tune on those with the SFT loss.

It learns from the same verifier as online DPO but with maximum likelihood on the winners only.
"""

from __future__ import annotations

from pydantic import Field

from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.registry import register_method
from bench.train.preference import fit_verifier, unique_prompts
from bench.train.reward_models import INVALID_SCORE, LEARNED_VERIFIER, RewardModelSpec


class FilterConfig(StrictParams):
    n: int = Field(8, ge=1)
    """Samples per prompt; the verifier keeps one."""
    temperature: float = Field(0.7, gt=0)
    """Sampling temperature of the N candidates."""
    reward_model: RewardModelSpec = LEARNED_VERIFIER
    """The verifier, trained on the budget's pairs."""
    epochs: float = Field(2.0, gt=0)
    """Passes of SFT over the kept outputs."""
    lr: float = Field(1e-3, gt=0)
    """Peak AdamW learning rate of the SFT on the kept outputs."""
    batch_size: int = Field(64, ge=1)
    """Kept outputs per optimiser step."""


@register_method("filter", config=FilterConfig, family="online", negative_gradient=False)
def train(ctx: MethodContext, cfg: FilterConfig) -> dict:
    from bench.train.modeling import encode_completions, load_causal_lm, load_tokenizer, sft_loss

    verifier, rm_metrics = fit_verifier(ctx, cfg.reward_model)
    tokenizer = load_tokenizer(ctx.base_model_dir)
    model = load_causal_lm(ctx.base_model_dir)
    prompts = unique_prompts(ctx.pairs)
    decoding = ctx.decoding(cfg.n, cfg.temperature, seed=ctx.seed)
    samples = ctx.sample(model, tokenizer, prompts, decoding)
    scores = ctx.score(verifier, prompts, samples)
    kept = []
    for prompt, group, group_scores in zip(prompts, samples, scores, strict=True):
        best = max(range(len(group)), key=lambda i: group_scores[i])
        if group_scores[best] > INVALID_SCORE:
            kept.append((prompt, group[best].text))

    def collate(rows: list) -> dict:
        return encode_completions(tokenizer, [r[0] for r in rows], [r[1] for r in rows])

    loop = ctx.loop_config(cfg, warmup_ratio=0.1)
    report = ctx.train_loop(model, kept, collate, sft_loss, loop, desc="filter sft", resumable=True)
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    return {
        "reward_model": cfg.reward_model.label,
        "rm_train": rm_metrics,
        "kept": len(kept),
        **report.summary(),
    }
