"""example_sft_chosen: supervised fine-tuning on the chosen side of the informative pairs.

A pair whose chosen and rejected completions are the same text carries no preference: SFT on
its "chosen" side only repeats the base policy's own sample. This variant of `methods/sft.py`
trains on the chosen completions of the other pairs (`skip_identical`), so that every step
follows a label.

It is written against pftbench's public method API only (`bench.method_api.MethodContext`, whose
`train_loop` runs `bench.train.training.run` and counts its tokens and seconds,
`bench.registry.register_method`, `bench.train.modeling`), and imports torch inside `train` only,
so that validating a suite that lists it stays fast.
"""

from __future__ import annotations

from pydantic import Field

from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.registry import register_method
from bench.tasks.base import PreferencePair


class ExampleSFTChosenConfig(StrictParams):
    epochs: float = Field(1.0, gt=0)
    """Passes over the chosen completions of the informative pairs."""
    lr: float = Field(1e-3, gt=0)
    """Peak AdamW learning rate."""
    batch_size: int = Field(64, ge=1)
    """Completions per optimiser step."""
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    """Fraction of the steps over which the learning rate rises from 0."""
    skip_identical: bool = True
    """Leave out pairs whose chosen and rejected completions are the same text."""


def informative_pairs(pairs: list[PreferencePair], skip_identical: bool) -> list[PreferencePair]:
    """The pairs whose label says something: chosen differs from rejected (when asked)."""
    if not skip_identical:
        return list(pairs)
    return [pair for pair in pairs if pair.chosen != pair.rejected]


@register_method("example_sft_chosen", config=ExampleSFTChosenConfig)
def train(ctx: MethodContext, cfg: ExampleSFTChosenConfig) -> dict[str, float]:
    from bench.train.modeling import encode_completions, load_causal_lm, load_tokenizer, sft_loss

    pairs = informative_pairs(ctx.pairs, cfg.skip_identical)
    tokenizer = load_tokenizer(ctx.base_model_dir)
    model = load_causal_lm(ctx.base_model_dir)

    def collate(batch: list[PreferencePair]) -> dict:
        return encode_completions(
            tokenizer, [pair.prompt for pair in batch], [pair.chosen for pair in batch]
        )

    loop = ctx.loop_config(cfg)
    report = ctx.train_loop(
        model, pairs, collate, sft_loss, loop, desc="example_sft_chosen", resumable=True
    )
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    return {**report.summary(), "informative_pairs": len(pairs)}
