"""GRPO: group relative policy optimisation (Shao et al. 2024, "DeepSeekMath", section 4.1).

No value model: each prompt's K samples are their own baseline. With r_i the standardised
verifier reward of sample i among its prompt's K (`bench.train.rl`):

    A_i = (r_i - mean_j r_j) / (std_j r_j + eps)           (4.1.2, outcome supervision)
    l_t = -min(rho_t A_i, clip(rho_t, 1 - eps_c, 1 + eps_c) A_i) + beta * k3_t
    rho_t = pi(y_t|...) / pi_old(y_t|...),  k3_t = exp(d_t) - d_t - 1,  d_t = log pi_ref - log pi

so the KL to the SFT policy is a **loss term** (the k3 estimator, eq. 4), not a reward penalty.
The per-token losses are averaged per sequence then over sequences (`aggregation: sequence`,
the paper's 1/|o_i|), or over all tokens of the minibatch (`token`, DAPO's; long outputs weigh
more). `scale_rewards: false` drops the division by the group's std (Dr. GRPO). Rollouts, the
verifier and the update loop are `bench.train.rl`'s, shared with RLOO and PPO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench.method_api import MethodContext
from bench.registry import register_method
from bench.train.rl import RLMethod, Rollout, RolloutConfig, policy_logps, train_policy

if TYPE_CHECKING:
    import torch


class GRPOConfig(RolloutConfig):
    samples: int = Field(4, ge=2)
    """K: completions per prompt, the group each sample is compared with."""
    beta: float = Field(0.04, ge=0)
    """Weight of the k3 KL term to the SFT policy in the loss (the paper's 0.04)."""
    aggregation: Literal["sequence", "token"] = "sequence"
    """`sequence`: mean over each output's tokens, then over outputs (the paper); `token`: mean
    over all tokens of the minibatch (DAPO)."""
    scale_rewards: bool = True
    """Divide by the group's std (the paper); false keeps r_i - mean_j r_j (Dr. GRPO)."""


def grpo_advantages(rewards: torch.Tensor, scale: bool = True) -> torch.Tensor:
    """[P, K] rewards -> [P * K] advantages, prompt-major: group-normalised (std unbiased,
    eps 1e-4), or only centred when `scale` is false."""
    from bench.train.policy_gradient import group_normalized_advantages

    if scale:
        return group_normalized_advantages(rewards).flatten()
    return (rewards - rewards.mean(dim=-1, keepdim=True)).flatten()


def grpo_per_token_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, T] log-probs now, when sampled and under the SFT policy, [B] advantages ->
    ([B, T] l_t, [B, T] 1.0 where the clip was active, [B, T] k3_t)."""
    from bench.train.policy_gradient import clipped_surrogate, k3_kl

    surrogate, clipped = clipped_surrogate(logps, old_logps, advantages[:, None], clip_eps)
    kl = k3_kl(logps, ref_logps)
    return surrogate + beta * kl, clipped, kl


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_eps: float,
    beta: float,
    aggregation: Literal["sequence", "token"],
) -> torch.Tensor:
    """The GRPO loss of a whole batch: `grpo_per_token_loss` averaged over `mask` [B, T] by
    `aggregation` (`bench.train.policy_gradient.aggregate`)."""
    from bench.train.policy_gradient import aggregate

    per_token, _, _ = grpo_per_token_loss(logps, old_logps, ref_logps, advantages, clip_eps, beta)
    return aggregate(per_token, mask, aggregation)


def grpo(cfg: GRPOConfig) -> RLMethod:
    """GRPO's hooks for `bench.train.rl.train_policy`."""

    def prepare(module: Any, rollout: Rollout) -> dict[str, float]:
        advantages = grpo_advantages(rollout.rewards, cfg.scale_rewards)
        rollout.extras["advantages"] = advantages
        flat = (rollout.rewards.std(dim=-1) == 0).float()
        return {"groups_without_signal": float(flat.mean())}

    def loss(module: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        from bench.train.policy_gradient import weighted_mean

        logps = policy_logps(module, batch)
        per_token, clipped, kl = grpo_per_token_loss(
            logps,
            batch["old_logps"],
            batch["ref_logps"],
            batch["advantages"],
            cfg.clip_eps,
            cfg.beta,
        )
        mask, weights = batch["mask"], batch["weights"]
        ratio = (logps - batch["old_logps"]).exp()
        return weighted_mean(per_token, mask, weights), {
            "kl": weighted_mean(kl, mask, weights).item(),
            "clipfrac": weighted_mean(clipped, mask, weights).item(),
            "ratio": weighted_mean(ratio, mask, weights).item(),
        }

    return RLMethod(prepare=prepare, loss=loss, aggregation=cfg.aggregation)


@register_method("grpo", config=GRPOConfig, family="online", negative_gradient=True)
def train(ctx: MethodContext, cfg: GRPOConfig) -> dict:
    return train_policy(ctx, cfg, grpo(cfg))
