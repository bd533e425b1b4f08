"""Online DPO: fit a verifier on the pairs, then improve the policy against it (Guo et al. 2024;
the paper's two-stage "online" route).

Each of R rounds samples K completions per training prompt from the current policy at
temperature T, ranks them by the verifier, and makes the best and the worst a new pair; the
same DPO loss as offline DPO (reference: the SFT policy) trains on those pairs. The paper's
variant is R = 1, K = 25, T = 0.1, starting from the SFT policy (`init: sft`) or from offline
DPO (`init: dpo`). The verifier's class is the dial of the generation-verification gap:
`reward_model.kind/capacity` (see bench.train.reward_models).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.registry import register_method
from bench.tasks.base import PreferencePair
from bench.train.preference import DPOConfig, fit_verifier, train_dpo_policy, unique_prompts
from bench.train.reward_models import LEARNED_VERIFIER, RewardModelSpec


class OnlineDPOConfig(StrictParams):
    init: Literal["sft", "dpo"] = "sft"
    """Start from the SFT policy, or from offline DPO on the same pairs (`init_dpo`)."""
    init_dpo: DPOConfig = DPOConfig()
    """Offline DPO used when init is dpo."""
    reward_model: RewardModelSpec = LEARNED_VERIFIER
    """The verifier, trained on the budget's pairs."""
    rounds: int = Field(1, ge=1)
    """R: sample-rank-train rounds."""
    samples: int = Field(8, ge=2)
    """K: completions per prompt each round; the verifier's best and worst become a pair."""
    temperature: float = Field(0.7, gt=0)
    """T: sampling temperature of the rounds."""
    beta: float = Field(0.5, gt=0)
    """DPO's beta in the rounds: the strength of the pull toward the reference (SFT) policy."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """The rounds' loss: `sigmoid` is DPO's Bradley-Terry loss, `ipo` the squared loss of IPO."""
    lr: float = Field(3e-4, gt=0)
    """Peak AdamW learning rate of each round's training."""
    epochs: float = Field(4.0, gt=0)
    """Passes over each round's new pairs."""
    batch_size: int = Field(32, ge=1)
    """Pairs per optimiser step."""


@register_method("online_dpo", config=OnlineDPOConfig, family="online", negative_gradient=True)
def train(ctx: MethodContext, cfg: OnlineDPOConfig) -> dict:
    from bench.train.modeling import load_causal_lm, load_tokenizer

    verifier, rm_metrics = fit_verifier(ctx, cfg.reward_model)
    metrics: dict = {"reward_model": cfg.reward_model.label, "rm_train": rm_metrics}
    tokenizer = load_tokenizer(ctx.base_model_dir)
    model = load_causal_lm(ctx.base_model_dir)
    if cfg.init == "dpo":
        metrics["init_dpo"] = train_dpo_policy(
            ctx, cfg.init_dpo, ctx.pairs, None, model=model, desc="dpo init"
        )
    prompts = unique_prompts(ctx.pairs)
    round_cfg = DPOConfig(
        beta=cfg.beta, loss=cfg.loss, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size
    )
    rounds = []
    for round_index in range(cfg.rounds):
        decoding = ctx.decoding(cfg.samples, cfg.temperature, seed=ctx.seed * 1000 + round_index)
        samples = ctx.sample(model, tokenizer, prompts, decoding)
        scores = ctx.score(verifier, prompts, samples)
        new_pairs = []
        for prompt, group, group_scores in zip(prompts, samples, scores, strict=True):
            best = max(range(len(group)), key=lambda i: group_scores[i])
            worst = min(range(len(group)), key=lambda i: group_scores[i])
            if group_scores[best] > group_scores[worst] and group[best].text != group[worst].text:
                new_pairs.append(PreferencePair(prompt, group[best].text, group[worst].text))
        train_report = (
            train_dpo_policy(
                ctx,
                round_cfg,
                new_pairs,
                None,
                model=model,
                cache_reference=False,
                desc=f"online round {round_index}",
            )
            if new_pairs
            else {}
        )
        rounds.append(
            {
                "pairs_built": len(new_pairs),
                "train_tokens": train_report.get("train_tokens", 0),
                "final_loss": train_report.get("final_loss"),
            }
        )
    metrics["rounds"] = rounds
    model.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    return metrics
