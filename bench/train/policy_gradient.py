"""The policy-gradient pieces the RL methods share (issue 12): advantages, KL and clipped losses.

Pure functions on tensors, each with its shapes and the equation it implements; the methods
(`rloo`, `grpo`, `ppo`, one file each in `methods/`) call them, never copy them. Notation:
P prompts, K samples per prompt, B = P * K sequences, T completion tokens; `mask` [B, T] is 1 on
a completion's real tokens (EOS included) and 0 on padding.

- `rloo_advantages`: REINFORCE with the leave-one-out baseline (Ahmadian et al. 2024, eq. 6):
  A_i = r_i - 1/(K-1) sum_{j != i} r_j.
- `group_normalized_advantages`: GRPO's outcome advantages (Shao et al. 2024, section 4.1.2):
  A_i = (r_i - mean_j r_j) / (std_j r_j + eps), the std with Bessel's correction, as TRL's
  GRPOTrainer computes it.
- `k3_kl`: the per-token estimator of KL(pi || pi_ref) GRPO adds to its loss (Schulman 2020,
  "Approximating KL divergence"): exp(ref - logp) - (ref - logp) - 1 >= 0, unbiased.
- `clipped_surrogate`: PPO's clipped objective as a per-token loss (Schulman et al. 2017, eq. 7):
  -min(rho A, clip(rho, 1 - eps, 1 + eps) A), rho = exp(logp - old_logp).
- `aggregate`: a per-token loss to a scalar, per sequence then over sequences ("sequence", the
  GRPO paper's 1/|o_i| normalisation) or over all tokens at once ("token", DAPO's); as
  `row_weights` and `weighted_mean`, the form the update loop splits over micro-batches.
- `whiten` and `gae`: PPO's advantage whitening and generalised advantage estimation
  (Schulman et al. 2016, eq. 16), as "The N+ implementation details of RLHF with PPO" does them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # tensor methods only at run time: importing this module does not import torch
    import torch

Aggregation = Literal["sequence", "token"]


def rloo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[P, K] sequence rewards -> [P, K] leave-one-out advantages (K >= 2).

    A_i = r_i - mean_{j != i} r_j = K / (K - 1) * (r_i - mean_j r_j)."""
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got {k}")
    others = (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)
    return rewards - others


def group_normalized_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """[P, K] sequence rewards -> [P, K] group-normalised advantages (K >= 2):
    (r_i - mean_j r_j) / (std_j r_j + eps), std unbiased (Bessel), a group of equal rewards
    giving 0."""
    if rewards.shape[-1] < 2:
        raise ValueError(f"group normalisation needs at least 2 samples, got {rewards.shape[-1]}")
    mean = rewards.mean(dim=-1, keepdim=True)
    std = rewards.std(dim=-1, keepdim=True)
    return (rewards - mean) / (std + eps)


def k3_kl(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """[B, T] token log-probs of the policy and of the reference -> [B, T] k3 estimates of
    KL(pi || pi_ref): exp(d) - d - 1 with d = ref_logp - logp (0 where the two agree)."""
    delta = ref_logps - logps
    return delta.exp() - delta - 1.0


def clipped_surrogate(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, clip_eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] log-probs now and when sampled, [B, T] (or [B, 1]) advantages -> ([B, T] per-token
    loss -min(rho A, clip(rho, 1 - eps, 1 + eps) A), [B, T] 1.0 where the clip was active)."""
    ratio = (logps - old_logps).exp()
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * advantages
    loss = -unclipped.minimum(clipped)
    return loss, (clipped < unclipped).float()


def row_weights(mask: torch.Tensor, how: Aggregation) -> torch.Tensor:
    """[B, T] mask -> [B] weights w such that mean_b(w_b * sum_t loss_bt * mask_bt) is the
    batch's `aggregate`: 1/|o_b| for `sequence`, B / (real tokens of the batch) for `token`.

    The update loop computes a minibatch's weights once, before splitting it into micro-batches
    and over processes, so the loss is the same however it is split."""
    lengths = mask.float().sum(dim=-1)
    if how == "sequence":
        return 1.0 / lengths.clamp(min=1.0)
    if how == "token":
        return lengths.new_full(lengths.shape, mask.shape[0] / max(float(lengths.sum()), 1.0))
    raise ValueError(f"unknown aggregation {how!r}; known: sequence, token")


def weighted_mean(
    per_token: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """[B, T] per-token values, mask and [B] `row_weights` -> mean_b(w_b sum_t x_bt mask_bt)."""
    return ((per_token * mask.to(per_token.dtype)).sum(dim=-1) * weights).mean()


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, how: Aggregation) -> torch.Tensor:
    """[B, T] per-token values and mask -> a scalar: `sequence` averages each sequence over its
    own tokens, then the sequences; `token` averages over every real token of the batch, so a
    long sequence weighs more."""
    return weighted_mean(per_token, mask, row_weights(mask, how))


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """[B, T] values -> whitened over the mask's tokens: (x - mean) / sqrt(var + 1e-8), var
    unbiased; `shift_mean=False` keeps the mean (PPO whitens rewards that way)."""
    mask = mask.to(values.dtype)
    n = mask.sum()
    mean = (values * mask).sum() / n
    var = (((values - mean) * mask) ** 2).sum() / (n - 1).clamp(min=1.0)
    whitened = (values - mean) * (var + 1e-8).rsqrt()
    return whitened if shift_mean else whitened + mean


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, T] per-token rewards and value estimates -> ([B, T] advantages, [B, T] returns).

    delta_t = r_t + gamma V_{t+1} - V_t, A_t = sum_l (gamma lam)^l delta_{t+l}, computed backwards
    (Schulman et al. 2016, eq. 16), V past a sequence's last real token taken as 0; returns =
    A + V. Padding positions get 0."""
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = values.new_zeros(values.shape)
    running = values.new_zeros(values.shape[:1])
    for t in reversed(range(values.shape[1])):
        next_value = (
            values[:, t + 1] if t + 1 < values.shape[1] else running.new_zeros(running.shape)
        )
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask
