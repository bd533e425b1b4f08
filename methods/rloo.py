"""RLOO: REINFORCE with the leave-one-out baseline (Ahmadian et al. 2024, "Back to Basics").

K samples per prompt; each sample's baseline is the mean reward of the prompt's other K - 1.
The KL to the SFT policy is a **reward penalty** on the whole sequence, as in that paper and in
RLHF generally, not a loss term. RLOO treats a whole completion as one action: with r_i the
standardised verifier reward of sample i (`bench.train.rl`) and log-probs summed over its tokens,

    r'_i = r_i - beta * (log pi_old(y_i|x) - log pi_ref(y_i|x))     (k1 estimate of the KL)
    A_i  = r'_i - 1/(K-1) sum_{j != i} r'_j                           (eq. 6)
    l_i  = -min(rho_i A_i, clip(rho_i, 1 - eps, 1 + eps) A_i),   rho_i = pi(y_i|x) / pi_old(y_i|x)
    loss = mean_i l_i

On-policy (rho = 1) the gradient is REINFORCE's, -A_i grad log pi(y_i|x) / B: a long completion's
tokens are not averaged away. The one sequence-level ratio corrects for minibatches after the
first and for `update_epochs` > 1. This is TRL 1.16's RLOOTrainer loss, checked against it on the
same tensors (benchmarks/trl_reference.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


def rloo_rewards(
    rewards: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
) -> torch.Tensor:
    """[P, K] verifier rewards and [P, K] sequence log-probs (summed over tokens) of the
    sampling policy and the SFT policy -> [P, K] r - beta * (log pi_old - log pi_ref)."""
    return rewards - beta * (logps - ref_logps)


def rloo_per_sequence_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T] log-probs now and when sampled, [B] advantages, [B, T] mask -> ([B] l_i, [B] 1.0
    where the clip was active, [B] rho_i)."""
    from bench.train.policy_gradient import clipped_surrogate

    sequence_logps, old_sequence_logps = (logps * mask).sum(-1), (old_logps * mask).sum(-1)
    loss, clipped = clipped_surrogate(sequence_logps, old_sequence_logps, advantages, clip_eps)
    return loss, clipped, (sequence_logps - old_sequence_logps).detach().exp()


def rloo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
) -> torch.Tensor:
    """The RLOO loss of a whole batch: the mean of `rloo_per_sequence_loss` over its rows."""
    return rloo_per_sequence_loss(logps, old_logps, advantages, mask, clip_eps)[0].mean()


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
        logps = policy_logps(module, batch)
        per_row, clipped, ratio = rloo_per_sequence_loss(
            logps, batch["old_logps"], batch["advantages"], batch["mask"], cfg.clip_eps
        )
        return per_row.mean(), {
            "clipfrac": clipped.mean().item(),
            "ratio": ratio.mean().item(),
        }

    return RLMethod(prepare=prepare, loss=loss, aggregation=None)


@register_method("rloo", config=RLOOConfig, family="online", negative_gradient=True)
def train(ctx: MethodContext, cfg: RLOOConfig) -> dict:
    return train_policy(ctx, cfg, rloo(cfg))
