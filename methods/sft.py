"""SFT: the supervised policy, optionally fine-tuned further on the chosen completions.

With `epochs: 0` (the default) the policy is the base SFT policy itself: the paper's "SFT" row,
the starting point of every other method. With `epochs > 0` it continues maximum-likelihood
training on the chosen side of the budget's pairs ("SFT on preferred"), a baseline that uses the
same labels as DPO but ignores the rejected side.
"""

from __future__ import annotations

from pydantic import Field

from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.registry import register_method


class SFTConfig(StrictParams):
    epochs: float = Field(0.0, ge=0)
    """Passes over the chosen completions; 0 keeps the base SFT policy unchanged."""
    lr: float = Field(1e-3, gt=0)
    """Peak AdamW learning rate."""
    batch_size: int = Field(64, ge=1)
    """Chosen completions per optimiser step."""
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    """Fraction of the steps over which the learning rate rises linearly from 0."""


@register_method("sft", config=SFTConfig, family="offline", negative_gradient=False)
def train(ctx: MethodContext, cfg: SFTConfig) -> dict[str, float]:
    if cfg.epochs == 0:
        ctx.save_base_as_policy()
        return {}
    from bench.train.modeling import encode_completions, load_causal_lm, load_tokenizer, sft_loss

    tokenizer = load_tokenizer(ctx.base_model_dir)
    model = load_causal_lm(ctx.base_model_dir)

    def collate(pairs: list) -> dict:
        return encode_completions(tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs])

    report = ctx.train_loop(
        model, ctx.pairs, collate, sft_loss, ctx.loop_config(cfg), desc="sft", resumable=True
    )
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    return report.summary()
