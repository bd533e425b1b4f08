"""The length-controlled winrate (bench.report.stats.length_controlled_winrate) on hand-checkable
cases."""

from __future__ import annotations

import numpy as np
import pytest

from bench.report.stats import bootstrap_mean, length_controlled_winrate, verdict_scores


def test_outcomes_independent_of_length_give_the_raw_winrate():
    # Every length difference has the same outcomes (3 wins, 1 loss): the maximum-likelihood
    # slope is exactly 0, so the fit at zero difference is the raw winrate 0.75.
    differences = np.repeat([-2.0, -1.0, 0.0, 1.0, 2.0], 4)
    scores = np.tile([1.0, 1.0, 1.0, 0.0], 5)
    lc = length_controlled_winrate([scores], [differences])
    assert bootstrap_mean(scores).value == 0.75
    assert lc.value == pytest.approx(0.75, abs=1e-3)
    assert lc.low <= lc.value <= lc.high
    assert lc.n == 20


def test_two_lengths_give_the_win_fraction_at_equal_length():
    # Two length differences and two parameters: the fit is saturated, so sigmoid(a) is the
    # observed win fraction at d = 0 (3 of 5), while the raw winrate also counts the longer
    # outputs' 9 wins of 10 at d = +2: raw (3 + 9) / 15 = 0.8, LC 0.6.
    differences = np.array([0.0] * 5 + [2.0] * 10)
    scores = np.array([1, 1, 1, 0, 0] + [1] * 9 + [0], dtype=float)
    lc = length_controlled_winrate([scores], [differences])
    assert bootstrap_mean(scores).value == pytest.approx(0.8)
    assert lc.value == pytest.approx(0.6, abs=2e-3)


def test_outcomes_decided_by_length_give_about_one_half():
    # A verbose policy: 80% of its outputs are longer than the reference and win, the shorter
    # ones lose, equal lengths tie. Raw winrate 0.85; at equal lengths the judge is even.
    differences = np.array([3.0] * 30 + [2.0] * 30 + [1.0] * 20 + [0.0] * 10 + [-1.0] * 10)
    scores = np.where(differences > 0, 1.0, np.where(differences < 0, 0.0, 0.5))
    lc = length_controlled_winrate([scores], [differences])
    assert bootstrap_mean(scores).value == pytest.approx(0.85)
    # Length separates wins from losses, so only the weak ridge keeps the slope finite; it
    # leaves the fit at equal lengths within 0.01 of the ties' one half.
    assert lc.value == pytest.approx(0.5, abs=0.01)
    assert lc.high - lc.low < 0.05


def test_a_strong_length_bias_is_removed_from_a_noisy_judge():
    # P(win) = sigmoid(1.5 d): the judge is even at equal lengths but the outputs are longer.
    rng = np.random.default_rng(0)
    differences = rng.choice([-1.0, 0.0, 1.0, 2.0, 3.0], size=2000, p=[0.1, 0.2, 0.3, 0.2, 0.2])
    scores = (rng.random(2000) < 1 / (1 + np.exp(-1.5 * differences))).astype(float)
    lc = length_controlled_winrate([scores], [differences], n_resamples=400)
    assert bootstrap_mean(scores).value > 0.75
    assert lc.value == pytest.approx(0.5, abs=0.05)
    assert lc.low < lc.value < lc.high


def test_invalid_verdicts_and_unknown_lengths_are_dropped():
    differences = np.repeat([-1.0, 1.0], 4)
    scores = np.tile([1.0, 0.0], 4)
    with_invalid = length_controlled_winrate(
        [np.append(verdict_scores(["W", "L"] * 4), np.nan)], [np.append(differences, 5.0)]
    )
    with_unknown_length = length_controlled_winrate(
        [np.append(scores, 1.0)], [np.append(differences, np.nan)]
    )
    plain = length_controlled_winrate([scores], [differences])
    assert with_invalid.n == with_unknown_length.n == plain.n == 8
    assert with_invalid.value == pytest.approx(plain.value)
    assert with_unknown_length.value == pytest.approx(plain.value)


def test_each_seed_weighs_the_same():
    # Each seed's prompts weigh 1 / n_s: repeating every prompt of seed 1 twice changes nothing.
    seed0 = (np.repeat([-1.0, 1.0], 2), np.array([1.0, 0.0, 1.0, 1.0]))
    seed1 = (np.repeat([-1.0, 1.0], 4), np.tile([1.0, 0.0], 4))
    pooled = length_controlled_winrate([seed0[1], seed1[1]], [seed0[0], seed1[0]])
    doubled = length_controlled_winrate(
        [seed0[1], np.tile(seed1[1], 2)], [seed0[0], np.tile(seed1[0], 2)]
    )
    assert pooled.n_seeds == 2
    assert pooled.value == pytest.approx(doubled.value, abs=1e-6)


def test_same_inputs_and_seed_give_the_same_interval():
    rng = np.random.default_rng(3)
    differences = rng.integers(-3, 4, size=300).astype(float)
    scores = rng.choice([0.0, 0.5, 1.0], size=300)
    first = length_controlled_winrate([scores], [differences], seed=7)
    second = length_controlled_winrate([scores], [differences], seed=7)
    assert first == second


def test_misaligned_inputs_are_rejected():
    with pytest.raises(ValueError, match="aligned prompts"):
        length_controlled_winrate([np.ones(3)], [np.ones(4)])
    with pytest.raises(ValueError, match="one length array per score array"):
        length_controlled_winrate([np.ones(3)], [])
    with pytest.raises(ValueError, match="no valid observations in seed 0"):
        length_controlled_winrate([np.full(3, np.nan)], [np.ones(3)])
