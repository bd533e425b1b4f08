"""RLOO: REINFORCE with the leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics").

K samples per prompt; each sample's baseline is the mean reward of the prompt's other K - 1.
The KL to the SFT policy is a **reward penalty** on the whole sequence, as in that paper and in
RLHF generally, not a loss term. With r_i the standardised verifier reward of sample i
(`bench.train.rl`) and log-probs summed over its tokens at sampling time:

    r'_i = r_i - beta * (log pi_old(y_i|x) - log pi_ref(y_i|x))     (k1 estimate of the KL)
    A_i  = r'_i - 1/(K-1) sum_{j != i} r'_j                           (eq. 6)
    l_t  = -min(rho_t A_i, clip(rho_t, 1 - eps, 1 + eps) A_i),   rho_t = pi / pi_old

With one pass over each rollout in one minibatch, rho = 1 and the gradient is plain REINFORCE,
-A_i grad log pi(y_i|x); the clipped ratio corrects for minibatches after the first and for
`update_epochs` > 1. The per-token terms are averaged per sequence (`aggregation: sequence`) or
over all tokens (`token`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench.method_api import MethodContext
from bench.registry import register_method
from bench.train.rl import RLMethod, Rollout, RolloutConfig, policy_logps, train_policy

if TYPE_CHECKING:
    import torch


class RLOOConfig(RolloutConfig):
    samples: int = Field(4, ge=2)
    """K: completions per prompt (the paper's k); each is the others' baseline."""
    beta: float = Field(0.05, ge=0)
    """Weight of the sequence KL penalty to the SFT policy in the reward."""
    aggregation: Literal["sequence", "token"] = "sequence"
    """`sequence`: mean over each output's tokens, then over outputs; `token`: mean over all
    tokens of the minibatch."""


def rloo_rewards(
    rewards: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
) -> torch.Tensor:
    """[P, K] verifier rewards and [P, K] sequence log-probs (summed over tokens) of the
    sampling policy and the SFT policy -> [P, K] r - beta * (log pi_old - log pi_ref)."""
    return rewards - beta * (logps - ref_logps)


def rloo_per_token_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] log-probs now and when sampled, [B] advantages -> ([B, T] clipped policy-gradient
    loss, [B, T] 1.0 where the clip was active)."""
    from bench.train.policy_gradient import clipped_surrogate

    return clipped_surrogate(logps, old_logps, advantages[:, None], clip_eps)


def rloo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
    aggregation: Literal["sequence", "token"],
) -> torch.Tensor:
    """The RLOO loss of a whole batch: `rloo_per_token_loss` averaged over `mask` [B, T] by
    `aggregation` (`bench.train.policy_gradient.aggregate`)."""
    from bench.train.policy_gradient import aggregate

    per_token, _ = rloo_per_token_loss(logps, old_logps, advantages, clip_eps)
    return aggregate(per_token, mask, aggregation)


def rloo(cfg: RLOOConfig) -> RLMethod:
    """RLOO's hooks for `bench.train.rl.train_policy`."""

    def prepare(module: Any, rollout: Rollout) -> dict[str, float]:
        from bench.train.policy_gradient import rloo_advantages

        shape = rollout.rewards.shape
        logps = rollout.old_logps.sum(dim=-1).reshape(shape)
        ref_logps = rollout.ref_logps.sum(dim=-1).reshape(shape)
        penalised = rloo_rewards(rollout.rewards, logps, ref_logps, cfg.beta)
        rollout.extras["advantages"] = rloo_advantages(penalised).flatten()
        return {"penalised_reward": float(penalised.mean())}

    def loss(module: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        from bench.train.policy_gradient import weighted_mean

        logps = policy_logps(module, batch)
        per_token, clipped = rloo_per_token_loss(
            logps, batch["old_logps"], batch["advantages"], cfg.clip_eps
        )
        mask, weights = batch["mask"], batch["weights"]
        ratio = (logps - batch["old_logps"]).exp()
        return weighted_mean(per_token, mask, weights), {
            "clipfrac": weighted_mean(clipped, mask, weights).item(),
            "ratio": weighted_mean(ratio, mask, weights).item(),
        }

    return RLMethod(prepare=prepare, loss=loss, aggregation=cfg.aggregation)


@register_method("rloo", config=RLOOConfig, family="online", negative_gradient=True)
def train(ctx: MethodContext, cfg: RLOOConfig) -> dict:
    return train_policy(ctx, cfg, rloo(cfg))
