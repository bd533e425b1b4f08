"""The shared policy-gradient pieces (bench/train/policy_gradient.py) against numbers computed
by hand (issue 12's groundwork: the RL methods will call these)."""

from __future__ import annotations

import math

import pytest
import torch

from bench.train.policy_gradient import (
    aggregate,
    clipped_surrogate,
    gae,
    group_normalized_advantages,
    k3_kl,
    rloo_advantages,
    whiten,
)


def test_rloo_subtracts_the_mean_of_the_other_samples() -> None:
    # r = 1, 2, 3: the others' means are 2.5, 2, 1.5.
    advantages = rloo_advantages(torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]))
    assert advantages.tolist() == [[-1.5, 0.0, 1.5], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="at least 2 samples"):
        rloo_advantages(torch.tensor([[1.0]]))


def test_group_normalisation_uses_the_unbiased_std() -> None:
    # mean 2, unbiased std 1 (the biased one would be sqrt(2/3)).
    advantages = group_normalized_advantages(torch.tensor([[1.0, 2.0, 3.0]]), eps=0.0)
    assert advantages[0].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    # A group of equal rewards teaches nothing: 0, not 0 / 0.
    assert group_normalized_advantages(torch.tensor([[5.0, 5.0]])).tolist() == [[0.0, 0.0]]


def test_k3_is_zero_where_the_policies_agree_and_positive_elsewhere() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.3]]))
    ref = torch.log(torch.tensor([[0.25, 0.3]]))
    kl = k3_kl(logps, ref)
    # d = log 0.25 - log 0.5 = -log 2: exp(d) - d - 1 = 0.5 + log 2 - 1.
    assert kl[0, 0].item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl[0, 1].item() == 0.0


def test_the_clipped_surrogate_by_hand() -> None:
    old = torch.zeros(1, 4)
    # ratios 1.5, 1.5, 1, 0.5 with advantages +1, -1, +2, -1 and eps 0.2
    logps = torch.log(torch.tensor([[1.5, 1.5, 1.0, 0.5]]))
    advantages = torch.tensor([[1.0, -1.0, 2.0, -1.0]])
    loss, clipped = clipped_surrogate(logps, old, advantages, clip_eps=0.2)
    # +1 at ratio 1.5: min(1.5, 1.2) = 1.2, clipped; -1 at 1.5: min(-1.5, -1.2) = -1.5, not;
    # ratio 1: -A, not clipped (PPO's first minibatch); -1 at 0.5: min(-0.5, -0.8) = -0.8, clipped.
    assert loss[0].tolist() == pytest.approx([-1.2, 1.5, -2.0, 0.8])
    assert clipped.tolist() == [[1.0, 0.0, 0.0, 1.0]]


def test_aggregation_per_sequence_or_per_token() -> None:
    per_token = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert aggregate(per_token, mask, "sequence").item() == pytest.approx((1.5 + 3.0) / 2)
    assert aggregate(per_token, mask, "token").item() == pytest.approx((1 + 2 + 3) / 3)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(per_token, mask, "batch")  # type: ignore[arg-type]


def test_whitening_over_the_masked_tokens() -> None:
    values = torch.tensor([[2.0, 4.0, 6.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 4, unbiased variance 4 over the three real tokens; the padded 100 is ignored.
    assert whiten(values, mask)[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6)
    kept = whiten(values, mask, shift_mean=False)[0, :3]
    assert kept.tolist() == pytest.approx([3.0, 4.0, 5.0], abs=1e-6)


def test_gae_by_hand_with_padding() -> None:
    rewards = torch.tensor([[0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 7.0]])  # the 7 is padding: it must not leak in
    mask = torch.tensor([[1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # t=1: delta = 1 - 0.2 = 0.8; t=0: delta = 0 + 0.2 - 0.5 = -0.3, A = -0.3 + 0.8 = 0.5.
    assert advantages[0].tolist() == pytest.approx([0.5, 0.8, 0.0])
    assert returns[0].tolist() == pytest.approx([1.0, 1.0, 0.0])
    advantages, _ = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # t=0: delta = 0.9 * 0.2 - 0.5 = -0.32, A = -0.32 + 0.45 * 0.8 = 0.04.
    assert advantages[0].tolist() == pytest.approx([0.04, 0.8, 0.0])
