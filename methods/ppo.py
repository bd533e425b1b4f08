"""PPO for RLHF (Ouyang et al. 2022; Schulman et al. 2017), as "The N+ implementation details of
RLHF with PPO" (Huang et al. 2024) lays it out.

A separate value model (the SFT model's transformer with a scalar head, initialised at 0) learns
the return of every token. With s the standardised verifier reward of a sample (`bench.train.rl`),
the **per-token KL penalty** to the SFT policy goes into the reward:

    r_t = -kl_coef * (log pi_old(y_t|...) - log pi_ref(y_t|...))  (+ s at the last token)
    A_t = GAE(r, V_old; gamma, lam)   (Schulman et al. 2016, eq. 16), whitened over the batch
    R_t = A_t + V_old,t   (before whitening)
    policy: l_t = -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t),  rho_t = pi / pi_old
    value:  v_t = 1/2 max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -c, c) - R_t)^2)
    loss  = mean_t l_t + vf_coef * mean_t v_t

Before the first update the policy is the one that sampled, so the first minibatch must show
ratio 1, approx-KL 0 and clip fraction 0 (the N+ details' golden check; `first_step` in the
result line's metrics, tests/test_rl_methods.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bench.method_api import MethodContext
from bench.registry import register_method
from bench.train.rl import RLMethod, Rollout, RolloutConfig, completion_logps, train_policy

if TYPE_CHECKING:
    import torch


class PPOConfig(RolloutConfig):
    kl_coef: float = Field(0.05, ge=0)
    """Per-token KL penalty to the SFT policy in the reward."""
    gamma: float = Field(1.0, ge=0, le=1)
    """Discount of GAE (1: none, the N+ details' choice)."""
    lam: float = Field(0.95, ge=0, le=1)
    """lambda of GAE."""
    vf_coef: float = Field(0.1, ge=0)
    """Weight of the value loss."""
    value_clip: float = Field(0.2, gt=0)
    """c: how far a value may move from its old estimate before its loss is clipped."""
    whiten_advantages: bool = True
    """Whiten the advantages over the rollout's completion tokens."""
    aggregation: Literal["sequence", "token"] = "token"
    """`token`: mean over all tokens of the minibatch (the N+ details' masked mean);
    `sequence`: per output, then over outputs."""


def ppo_token_rewards(
    scores: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """[B] sequence rewards, [B, T] log-probs when sampled and under the SFT policy, [B, T]
    mask -> [B, T] per-token rewards: -kl_coef * (old - ref) on every completion token, plus the
    sequence's reward on its last one."""
    rewards = -kl_coef * (old_logps - ref_logps) * mask
    last = (mask * mask.new_ones(mask.shape).cumsum(dim=-1)).argmax(dim=-1)
    rewards[range(mask.shape[0]), last] += scores
    return rewards


def ppo_losses(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip_eps: float,
    value_clip: float,
) -> dict[str, torch.Tensor]:
    """[B, T] tensors -> per-token `policy` and `value` losses, and per-token `clipped`
    (policy clip active), `value_clipped`, `ratio` and `approx_kl` = (log rho)^2 / 2."""
    from bench.train.policy_gradient import clipped_surrogate

    policy, clipped = clipped_surrogate(logps, old_logps, advantages, clip_eps)
    values_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (values_clipped - returns) ** 2
    log_ratio = logps - old_logps
    return {
        "policy": policy,
        "value": 0.5 * unclipped_error.maximum(clipped_error),
        "clipped": clipped,
        "value_clipped": (clipped_error > unclipped_error).float(),
        "ratio": log_ratio.exp(),
        "approx_kl": 0.5 * log_ratio**2,
    }


def value_model(policy: Any, ctx: MethodContext) -> Any:
    """The module PPO trains: the policy and a value model (the SFT transformer, a scalar head at
    0); called, it returns ([B, L, V] policy logits, [B, L] values)."""
    import torch
    from transformers import AutoModel

    from bench.train.modeling import disable_dropout

    class PolicyAndValue(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.policy = policy
            self.value_backbone = AutoModel.from_pretrained(ctx.base_model_dir).to(policy.device)
            disable_dropout(self.value_backbone)
            self.value_head = torch.nn.Linear(policy.config.hidden_size, 1).to(policy.device)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)

        def forward(self, input_ids: Any, attention_mask: Any) -> tuple[Any, Any]:
            logits = self.policy(input_ids=input_ids, attention_mask=attention_mask).logits
            hidden = self.value_backbone(input_ids=input_ids, attention_mask=attention_mask)
            return logits, self.value_head(hidden.last_hidden_state).squeeze(-1)

    return PolicyAndValue()


def logps_and_values(module: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """[B, T] masked log-probs and [B, T] values (V of the state before token t, masked)."""
    logits, values = module(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    mask = batch["mask"]
    logps = completion_logps(logits, batch["input_ids"], mask, batch["temperature"])
    return logps, values[:, :-1] * mask


def ppo(cfg: PPOConfig) -> RLMethod:
    """PPO's hooks for `bench.train.rl.train_policy`."""

    def prepare(module: Any, rollout: Rollout) -> dict[str, float]:
        import torch

        from bench.train.policy_gradient import gae, whiten

        rows = {"input_ids": rollout.input_ids, "attention_mask": rollout.attention_mask}
        old_values = []
        with torch.inference_mode():
            for start in range(0, rollout.n_rows, cfg.minibatch_size):
                part = {k: v[start : start + cfg.minibatch_size] for k, v in rows.items()}
                part["mask"] = rollout.mask[start : start + cfg.minibatch_size]
                part["temperature"] = rollout.temperature
                old_values.append(logps_and_values(module, part)[1])
        values = torch.cat(old_values)
        rewards = ppo_token_rewards(
            rollout.rewards.flatten(),
            rollout.old_logps,
            rollout.ref_logps,
            rollout.mask,
            cfg.kl_coef,
        )
        advantages, returns = gae(rewards, values, rollout.mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, rollout.mask) * rollout.mask
        rollout.extras.update(advantages=advantages, returns=returns, old_values=values)
        n = rollout.mask.sum()
        return {"value_mean": float((values * rollout.mask).sum() / n)}

    def loss(module: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, float]]:
        from bench.train.policy_gradient import weighted_mean

        logps, values = logps_and_values(module, batch)
        terms = ppo_losses(
            logps,
            batch["old_logps"],
            values,
            batch["old_values"],
            batch["advantages"],
            batch["returns"],
            cfg.clip_eps,
            cfg.value_clip,
        )
        mask, weights = batch["mask"], batch["weights"]
        means = {name: weighted_mean(term, mask, weights) for name, term in terms.items()}
        total = means["policy"] + cfg.vf_coef * means["value"]
        return total, {
            "policy_loss": means["policy"].item(),
            "value_loss": means["value"].item(),
            "clipfrac": means["clipped"].item(),
            "value_clipfrac": means["value_clipped"].item(),
            "ratio": means["ratio"].item(),
            "approx_kl": means["approx_kl"].item(),
        }

    return RLMethod(prepare=prepare, loss=loss, aggregation=cfg.aggregation, trainable=value_model)


@register_method("ppo", config=PPOConfig, family="online", negative_gradient=True)
def train(ctx: MethodContext, cfg: PPOConfig) -> dict:
    return train_policy(ctx, cfg, ppo(cfg))
