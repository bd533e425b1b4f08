"""Offline DPO (Rafailov et al. 2023), with the IPO loss (Azar et al. 2023) as an option.

The policy is fit directly to the preference pairs, regularised toward the base SFT policy:

    h = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
    sigmoid (DPO, eq. 7):  L = -log sigmoid(h)
    ipo     (IPO, eq. 17): L = (h / beta - 1 / (2 beta))^2

Reference log-probs are computed once per set of pairs and cached; chosen and rejected go
through the policy together in one forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench import distributed
from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.registry import register_method
from bench.tasks.base import PreferencePair

if TYPE_CHECKING:
    import torch


class DPOConfig(StrictParams):
    beta: float = Field(0.1, gt=0)
    """Strength of the pull toward the reference (SFT) policy."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """`sigmoid` is DPO's Bradley-Terry loss; `ipo` the squared loss of IPO."""
    epochs: float = Field(1.0, gt=0)
    """Passes over the pairs (the paper's "DPO 2x" is 2)."""
    lr: float = Field(1e-3, gt=0)
    """Peak AdamW learning rate."""
    batch_size: int = Field(32, ge=1)
    """Pairs per optimiser step."""
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    """Fraction of the steps over which the learning rate rises linearly from 0."""


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
    loss: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and implicit rewards, all of shape [B].

    Inputs are summed sequence log-probs, [B] each. Returns (losses, chosen_rewards,
    rejected_rewards) where a reward is beta * (log pi - log pi_ref), the DPO-implicit reward.
    """
    import torch.nn.functional as F

    chosen_logratios = policy_chosen_logps - reference_chosen_logps
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    h = chosen_logratios - rejected_logratios
    if loss == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss!r}; known: sigmoid, ipo")
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


@register_method("dpo", config=DPOConfig, family="offline")
def train(ctx: MethodContext, cfg: DPOConfig) -> dict[str, float]:
    from bench.modeling import load_tokenizer

    report = train_policy(ctx, cfg, ctx.pairs, ctx.output_dir)
    load_tokenizer(ctx.base_model_dir).save_pretrained(ctx.output_dir)
    save_implicit_reward_spec(ctx, cfg.beta)
    ctx.counters["pairs_used"] = len(ctx.pairs)
    return report


def train_policy(
    ctx: MethodContext,
    cfg: DPOConfig,
    pairs: list[PreferencePair],
    out_dir: Path | None,
    model: Any = None,
    *,
    cache_reference: bool = True,
    desc: str = "dpo",
) -> dict[str, float]:
    """DPO on `pairs`, starting from `model` (default: the base policy, loaded here) with the
    base policy as the reference; saves to `out_dir` when given. The online methods call this
    on the pairs they build each round (reference log-probs not cached then: they are new)."""
    from bench import training
    from bench.modeling import disable_dropout, load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(ctx.base_model_dir)
    reference_model = load_causal_lm(ctx.base_model_dir).eval()
    reference = reference_logps(ctx, reference_model, tokenizer, pairs, cached=cache_reference)
    del reference_model
    if model is None:
        model = load_causal_lm(ctx.base_model_dir)
    disable_dropout(model)
    examples = [
        (pair, reference["chosen"][i], reference["rejected"][i]) for i, pair in enumerate(pairs)
    ]
    loop = training.LoopConfig(
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        micro_batch_size=ctx.micro_batch_size,
        warmup_ratio=cfg.warmup_ratio,
        seed=ctx.seed,
    )
    report = training.run(
        model,
        examples,
        lambda rows: collate_pairs(tokenizer, rows),
        batch_loss(cfg.beta, cfg.loss),
        loop,
        scratch_dir=ctx.scratch_dir if out_dir == ctx.output_dir else None,
        desc=desc,
        progress=ctx.progress,
    )
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return report.summary()


def save_implicit_reward_spec(ctx: MethodContext, beta: float) -> None:
    """Declare the policy's DPO-implicit reward, so the runner reports its held-out accuracy."""
    from bench.reward_models import save_implicit_reward

    save_implicit_reward(
        ctx.output_dir / "reward_model",
        policy=ctx.output_dir,
        reference=ctx.base_model_dir,
        beta=beta,
    )


def batch_loss(
    beta: float, loss: str
) -> Callable[[Any, dict], tuple[torch.Tensor, dict[str, float]]]:
    """The training loop's loss on a `collate_pairs` batch: one forward pass over the [2B, T]
    chosen-then-rejected rows, then `dpo_loss` averaged over the B pairs."""

    def loss_fn(policy: Any, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        from bench.modeling import sequence_logps

        logps = sequence_logps(policy, batch)
        n = batch["reference_chosen"].shape[0]
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            logps[:n], logps[n:], batch["reference_chosen"], batch["reference_rejected"], beta, loss
        )
        return losses.mean(), {
            "reward_accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
            "reward_margin": (chosen_rewards - rejected_rewards).mean().item(),
        }

    return loss_fn


def collate_pairs(tokenizer: object, rows: list) -> dict:
    """Chosen rows then rejected rows in one [2B, T] batch, plus the reference log-probs [B]."""
    import torch

    from bench.modeling import concat_batches, encode_completions

    pairs = [row[0] for row in rows]
    prompts = [p.prompt for p in pairs]
    batch = concat_batches(
        encode_completions(tokenizer, prompts, [p.chosen for p in pairs]),
        encode_completions(tokenizer, prompts, [p.rejected for p in pairs]),
        tokenizer.pad_token_id,
    )
    batch["reference_chosen"] = torch.tensor([row[1] for row in rows])
    batch["reference_rejected"] = torch.tensor([row[2] for row in rows])
    return batch


def reference_logps(
    ctx: MethodContext,
    model: Any,
    tokenizer: Any,
    pairs: list[PreferencePair],
    batch_size: int = 256,
    *,
    cached: bool = True,
) -> dict:
    """log pi_ref of each pair's chosen and rejected completion under the base policy; cached
    per (base model, pairs) unless `cached` is False."""

    def batch_logps(pairs_batch: list[PreferencePair]) -> list[tuple[float, float]]:
        import torch

        from bench.modeling import sequence_logps

        rows = [(p, 0.0, 0.0) for p in pairs_batch]
        batch = {k: v.to(model.device) for k, v in collate_pairs(tokenizer, rows).items()}
        with torch.inference_mode():
            logps = sequence_logps(model, batch).tolist()
        return list(zip(logps[: len(rows)], logps[len(rows) :], strict=True))

    def logps_of(share: list[PreferencePair]) -> list[tuple[float, float]]:
        from bench.modeling import map_batches

        return map_batches(share, batch_size, batch_logps)

    def compute() -> dict:
        # Under accelerate launch each process scores its share of the pairs.
        logps = distributed.map_shards(pairs, logps_of)
        return {"chosen": [c for c, _ in logps], "rejected": [r for _, r in logps]}

    if not cached:
        return compute()
    key = {"base": ctx.base_key, "pairs": [(p.prompt, p.chosen, p.rejected) for p in pairs]}
    return ctx.cached_json("reference_logps", key, compute)
