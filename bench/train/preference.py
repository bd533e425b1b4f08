"""What methods reuse to learn from preference pairs: the DPO loss and its policy trainer, pair
batches with their reference log-probs, and fitting the verifier an online method optimises.

Offline DPO (`methods/dpo.py`) is `train_dpo_policy` on the budget's pairs; online DPO trains
each round's pairs with it; the `dpo` verifier is the implicit reward of a policy it trains. A
method imports these from here, never from another method.

DPO (Rafailov et al. 2023), with the IPO loss (Azar et al. 2023) as an option:

    h = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
    sigmoid (DPO, eq. 7):  L = -log sigmoid(h)
    ipo     (IPO, eq. 17): L = (h / beta - 1 / (2 beta))^2

Reference log-probs are computed once per set of pairs and cached; chosen and rejected go
through the policy together in one forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.tasks.base import PreferencePair
from bench.train import distributed
from bench.train.reward_models import (
    RewardModel,
    RewardModelSpec,
    load_reward_model,
    train_reward_model,
)

if TYPE_CHECKING:
    import torch


class DPOConfig(StrictParams):
    """DPO's hyperparameters: the `dpo` method's config, online DPO's `init_dpo`."""

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


def dpo_batch_loss(
    beta: float, loss: str
) -> Callable[[Any, dict], tuple[torch.Tensor, dict[str, float]]]:
    """The training loop's loss on a `collate_pairs` batch: one forward pass over the [2B, T]
    chosen-then-rejected rows, then `dpo_loss` averaged over the B pairs."""

    def loss_fn(policy: Any, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        from bench.train.modeling import sequence_logps

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


def collate_pairs(tokenizer: Any, rows: list) -> dict:
    """Rows of (pair, reference chosen logp, reference rejected logp) as one batch: the
    [2B, T] chosen-then-rejected rows (`bench.train.modeling.encode_pairs`) plus the reference
    log-probs, [B] each."""
    import torch

    from bench.train.modeling import encode_pairs

    batch = encode_pairs(tokenizer, [row[0] for row in rows])
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

        from bench.train.modeling import sequence_logps

        rows = [(p, 0.0, 0.0) for p in pairs_batch]
        batch = {k: v.to(model.device) for k, v in collate_pairs(tokenizer, rows).items()}
        with torch.inference_mode():
            logps = sequence_logps(model, batch).tolist()
        return list(zip(logps[: len(rows)], logps[len(rows) :], strict=True))

    def logps_of(share: list[PreferencePair]) -> list[tuple[float, float]]:
        from bench.train.modeling import map_batches

        return map_batches(share, batch_size, batch_logps)

    def compute() -> dict:
        # Under accelerate launch each process scores its share of the pairs.
        logps = distributed.map_shards(pairs, logps_of)
        return {"chosen": [c for c, _ in logps], "rejected": [r for _, r in logps]}

    if not cached:
        return compute()
    key = {"base": ctx.base_key, "pairs": [(p.prompt, p.chosen, p.rejected) for p in pairs]}
    return ctx.cached_json("reference_logps", key, compute)


def train_dpo_policy(
    ctx: MethodContext,
    cfg: DPOConfig,
    pairs: list[PreferencePair],
    out_dir: Path | None,
    model: Any = None,
    *,
    cache_reference: bool = True,
    desc: str = "dpo",
    trains: Literal["policy", "verifier"] = "policy",
) -> dict[str, float]:
    """DPO on `pairs`, starting from `model` (default: the base policy, loaded here) with the
    base policy as the reference; saves to `out_dir` when given. The online methods call this
    on the pairs they build each round (reference log-probs not cached then: they are new).

    Counted (`MethodContext.train_loop`): the loop's tokens as the policy's, or as the
    verifier's when it `trains` the `dpo` verifier; a policy's whole training, reference
    log-probs included, in `train_s`."""
    from bench.train.modeling import disable_dropout, load_causal_lm, load_tokenizer

    with ctx.timed("train") if trains == "policy" else contextlib.nullcontext():
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
        report = ctx.train_loop(
            model,
            examples,
            lambda rows: collate_pairs(tokenizer, rows),
            dpo_batch_loss(cfg.beta, cfg.loss),
            ctx.loop_config(cfg),
            desc=desc,
            trains=trains,
            resumable=out_dir == ctx.output_dir,
        )
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return report.summary()


def fit_verifier(ctx: MethodContext, spec: RewardModelSpec) -> tuple[RewardModel, dict]:
    """Train the verifier `spec` describes on the budget's pairs and hand it back through
    `ctx` (`save_verifier`); returns it with its training figures.

    `global` and `local` verifiers are trained by `bench.train.reward_models`; a `dpo` one is the
    implicit reward of an offline DPO policy trained here on the same pairs, kept inside the
    verifier's folder. Counted: the wall seconds in `verifier_fit_s`, the tokens through the
    verifier's training passes in `verifier_tokens_trained` (none for the oracle, a Newton fit
    on features)."""
    with ctx.timed("verifier_fit"):
        if spec.kind == "dpo":
            return _fit_dpo_verifier(ctx, spec)
        model, metrics = train_reward_model(
            spec,
            ctx.task,
            ctx.pairs,
            ctx.base_model_dir,
            ctx.seed,
            progress=ctx.progress,
            micro_batch_size=ctx.micro_batch_size,
        )
        ctx.count("verifier_tokens_trained", metrics.get("train_tokens", 0))
        ctx.save_verifier(model)
        return model, metrics


def _fit_dpo_verifier(ctx: MethodContext, spec: RewardModelSpec) -> tuple[RewardModel, dict]:
    """The `dpo` verifier: an offline DPO policy on the budget's pairs, its implicit reward."""
    from bench.train.modeling import load_tokenizer

    policy_dir = ctx.verifier_dir / "policy"
    dpo_cfg = DPOConfig(beta=spec.beta, lr=spec.lr, epochs=spec.epochs, batch_size=spec.batch_size)
    metrics = train_dpo_policy(
        ctx, dpo_cfg, ctx.pairs, policy_dir, desc="rm dpo", trains="verifier"
    )
    load_tokenizer(ctx.base_model_dir).save_pretrained(policy_dir)
    ctx.save_implicit_verifier(policy_dir, beta=spec.beta)
    return load_reward_model(ctx.verifier_dir, ctx.task), metrics


def unique_prompts(pairs: list[PreferencePair]) -> list[str]:
    """The pairs' prompts, each once, in pool order: the prompts online methods sample on."""
    return list(dict.fromkeys(pair.prompt for pair in pairs))
