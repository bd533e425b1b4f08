"""The keywords task's controls. `reward: hidden`: the hash rule that picks the rewarded words, the
gold reward and its optimum by hand, that the simple verifier's features do not change, that a
linear verifier is lost on it, and the held-out (`valid`) preference pool. `reward:
hidden_reference`: its target, its ROUGE-1 F1 reward, its optimum and floor by brute force, and
that the salient reward's features say nothing of it. The one-word (bandit-like) variant's
optimum.

Pure Python (no model): pairs come from fake samplers. Rewards use the default weights: salient
bonus 1, absent penalty 1, repeat penalty 0.5, length penalty 0.1.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from bench.tasks.base import Sample
from bench.tasks.keywords import (
    KeywordsParams,
    KeywordsTask,
    format_prompt,
    hidden_selects,
    parse_prompt,
    word,
)
from bench.train.reward_models import OracleFeaturesRewardModel, pair_metrics

SALIENT_TASK = KeywordsTask(KeywordsParams())
HIDDEN_TASK = KeywordsTask(KeywordsParams(reward="hidden"))

# Salient words w01, w02, w03 three times each, fillers w10..w24 once each: 18 distinct words.
DOC = ["w01", "w02", "w03"] * 3 + [word(i) for i in range(10, 25)]
PROMPT = format_prompt(DOC)
# What sha256(f"{PROMPT}|{word}")[0] % 2 == 0 selects (pinned: a change of the rule changes every
# hidden-control result):
SELECTED = {"w01", "w02", "w10", "w12", "w15", "w16", "w20", "w21", "w23", "w24"}
NOT_SELECTED = {"w03", "w11", "w13", "w14", "w17", "w18", "w19", "w22"}


# --- the rule -----------------------------------------------------------------------------------


def test_the_rule_on_the_crafted_prompt() -> None:
    assert set(DOC) == SELECTED | NOT_SELECTED
    assert {w for w in set(DOC) if hidden_selects(PROMPT, w)} == SELECTED
    assert HIDDEN_TASK.rewarded_words(PROMPT) == SELECTED
    # The salient mode rewards the repeated words, as before.
    assert SALIENT_TASK.rewarded_words(PROMPT) == {"w01", "w02", "w03"}


def test_hidden_selects_is_deterministic_and_picks_about_half() -> None:
    prompts = [e.prompt for e in HIDDEN_TASK.examples("eval", 200)]
    pairs = [(p, w) for p in prompts for w in sorted(set(parse_prompt(p)))]
    assert len(pairs) == 200 * 18
    picks = [hidden_selects(p, w) for p, w in pairs]
    assert picks == [hidden_selects(p, w) for p, w in pairs]  # a pure function of its inputs
    # 3600 fair coins: standard deviation sqrt(0.25 / 3600) = 0.0083; 4 of them either side.
    assert abs(sum(picks) / len(picks) - 0.5) < 4 * 0.0083
    # Salient words are no more likely to count: 600 coins, sd 0.0204.
    salient = [
        hidden_selects(p, w) for p in prompts for w, c in Counter(parse_prompt(p)).items() if c == 3
    ]
    assert len(salient) == 600
    assert abs(sum(salient) / len(salient) - 0.5) < 4 * 0.0204


def test_the_selection_is_drawn_anew_for_every_prompt() -> None:
    """A word counts in some documents and not in others: no per-word rule a verifier could
    learn across prompts."""
    by_word: dict[str, set[bool]] = {}
    for example in HIDDEN_TASK.examples("eval", 200):
        for w in set(parse_prompt(example.prompt)):
            by_word.setdefault(w, set()).add(hidden_selects(example.prompt, w))
    # Every one of the 64 words occurs in some of the 200 documents, and counts in some of them
    # but not in others.
    assert len(by_word) == 64
    assert all(seen == {True, False} for seen in by_word.values())
    # The same words in another order are another prompt: here 12 of the 18 words flip.
    shuffled = format_prompt(list(reversed(DOC)))
    flips = sum(hidden_selects(PROMPT, w) != hidden_selects(shuffled, w) for w in set(DOC))
    assert flips == 12


# --- the gold reward ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "hidden", "salient"),
    [
        # w01, w02 selected, w03 not. hidden: 2 - 0.1 * 3 = 1.7; salient: 3 - 0.3 = 2.7
        ("w01 w02 w03", 1.7, 2.7),
        # Two selected fillers. hidden: 2 - 0.2 = 1.8; salient (fillers only): -0.2
        ("w10 w12", 1.8, -0.2),
        # The unselected salient word and an unselected filler. hidden: -0.2; salient: 1 - 0.2
        ("w03 w11", -0.2, 0.8),
        # A selected word twice counts once and is a repeat; w50 is absent:
        # hidden: 1 - 1 - 0.5 - 0.3 = -0.8; salient: 0 - 1 - 0.5 - 0.3 = -1.8
        ("w10 w10 w50", -0.8, -1.8),
        # w04 is absent from the document though its hash for this prompt is even: it never
        # counts. hidden: 1 (w01) - 1 (absent) - 0.2 = -0.2; salient the same.
        ("w01 w04", -0.2, -0.2),
        # Every selected word would be 10: the summary is capped at 6 words.
        # hidden: 6 - 0.6 = 5.4; salient: w01, w02 = 2 - 0.6 = 1.4
        ("w01 w02 w10 w12 w15 w16", 5.4, 1.4),
        # Invalid in both modes: too short, too long, not a word.
        ("w01", None, None),
        ("w01 w02 w10 w12 w15 w16 w20", None, None),
        ("w01 hello", None, None),
    ],
)
def test_gold_reward_by_hand(output: str, hidden: float | None, salient: float | None) -> None:
    assert hidden_selects(PROMPT, "w04")  # the premise of the absent-word case
    assert HIDDEN_TASK.gold_reward(PROMPT, output) == pytest.approx(hidden)
    assert SALIENT_TASK.gold_reward(PROMPT, output) == pytest.approx(salient)


def test_features_are_the_same_in_both_modes() -> None:
    """The simple verifier reads the same features whatever the reward counts: salient words,
    absent words, repeats, length."""
    rng = random.Random(0)
    for example in SALIENT_TASK.examples("eval", 50):
        doc = parse_prompt(example.prompt)
        for _ in range(10):
            output = " ".join(rng.choice(doc + ["w63", "w62"]) for _ in range(rng.randint(1, 7)))
            assert HIDDEN_TASK.features(example.prompt, output) == SALIENT_TASK.features(
                example.prompt, output
            )
    # And by hand: [distinct salient, absent, repeats, length]
    assert HIDDEN_TASK.features(PROMPT, "w01 w01 w50") == [1.0, 1.0, 1.0, 3.0]


# --- the optimum --------------------------------------------------------------------------------


def test_optimal_reward_by_hand() -> None:
    # 10 selected words, at most 6 in a summary: 6 * (1 - 0.1) = 5.4 (the 6-word case above).
    assert HIDDEN_TASK.optimal_reward(PROMPT) == pytest.approx(5.4)
    small = KeywordsTask(
        KeywordsParams(vocab_size=8, doc_len=4, n_salient=1, salient_repeats=2, reward="hidden")
    )
    # One selected word (w00); a valid summary has 2 words, so one unselected word is added:
    # 1 - 0.1 * 2 = 0.8, reached by "w00 w01".
    one = "w00 w01 w00 w02 <sep>"
    assert small.rewarded_words(one) == {"w00"}
    assert small.optimal_reward(one) == pytest.approx(0.8)
    assert small.gold_reward(one, "w00 w01") == pytest.approx(0.8)
    # No selected word: two unselected words, -0.2.
    none = "w00 w01 w00 w03 <sep>"
    assert small.rewarded_words(none) == set()
    assert small.optimal_reward(none) == pytest.approx(-0.2)
    # All three selected: 3 - 0.3 = 2.7.
    three = "w04 w05 w04 w06 <sep>"
    assert small.rewarded_words(three) == {"w04", "w05", "w06"}
    assert small.optimal_reward(three) == pytest.approx(2.7)
    # Without a prompt: the first evaluation document's optimum.
    assert SALIENT_TASK.optimal_reward() == pytest.approx(2.7)
    first = HIDDEN_TASK.examples("eval", 1)[0].prompt
    assert HIDDEN_TASK.optimal_reward() == HIDDEN_TASK.optimal_reward(first)


def brute_force_rewards(task: KeywordsTask, prompt: str) -> list[float]:
    """The gold reward of every valid summary built from the document's words and two absent
    words (every absent word enters the reward the same way, so two stand for all)."""
    doc_words = sorted(set(parse_prompt(prompt)))
    absent = [w for w in task.words if w not in doc_words][:2]
    p = task.params
    rewards = [
        task.gold_reward(prompt, " ".join(words))
        for k in range(p.min_words, p.max_words + 1)
        for words in itertools.product(doc_words + absent, repeat=k)
    ]
    return [r for r in rewards if r is not None]


SMALL = {"vocab_size": 8, "doc_len": 4, "max_words": 4, "n_eval": 24}


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({**SMALL, "n_salient": 1, "salient_repeats": 2, "reward": "hidden"}, id="h"),
        pytest.param(
            {**SMALL, "vocab_size": 12, "doc_len": 6, "n_salient": 2, "salient_repeats": 2},
            id="salient-2",
        ),
        pytest.param(
            {**SMALL, "n_salient": 1, "salient_repeats": 2},
            id="salient-1",
        ),
        pytest.param(
            {**SMALL, "n_salient": 1, "salient_repeats": 4, "reward": "hidden"},
            id="hidden-one-distinct-word",
        ),
        pytest.param(
            {
                **SMALL,
                "vocab_size": 12,
                "doc_len": 6,
                "n_salient": 2,
                "salient_repeats": 2,
                "reward": "hidden_reference",
            },
            id="hidden-reference",
        ),
        pytest.param(
            {
                **SMALL,
                "n_salient": 2,
                "salient_repeats": 2,
                "min_words": 1,
                "max_words": 3,
                "reward": "hidden_reference",
            },
            id="hidden-reference-short",
        ),
        pytest.param(
            {
                **SMALL,
                "n_salient": 1,
                "salient_repeats": 2,
                "min_words": 1,
                "max_words": 1,
                "reference_words": (1, 1),
            },
            id="bandit-one-word",
        ),
    ],
)
def test_optimal_reward_is_the_brute_force_optimum(params: dict) -> None:
    task = KeywordsTask(KeywordsParams(**params))
    prompts = [e.prompt for e in task.examples("eval")]
    for prompt in prompts:
        rewards = brute_force_rewards(task, prompt)
        expected = max(rewards)
        got = (
            task.optimal_reward(prompt)
            if task.params.reward != "salient"
            else task.optimal_reward()
        )
        assert got == pytest.approx(expected), prompt
        assert min(rewards) >= task.worst_gold_reward() - 1e-12, prompt
    if task.params.reward == "hidden" and task.params.salient_repeats < task.params.doc_len:
        # Not vacuous: the prompts cover the padded (0 or 1 selected) and the plain cases.
        # (A one-word document has 0 or 1 selected words only: it tests padding by repeats.)
        counts = {len(task.rewarded_words(p)) for p in prompts}
        assert counts & {0, 1} and counts - {0, 1}


# --- a linear verifier on the hidden control ----------------------------------------------------


def random_document_summaries(
    prompts: list[str], n: int, temperature: float, seed: int
) -> list[list[Sample]]:
    """A fake SFT sampler: 2 to 6 distinct document words drawn uniformly, always valid."""
    rng = random.Random(seed)
    out = []
    for prompt in prompts:
        words = sorted(set(parse_prompt(prompt)))
        group = []
        for _ in range(n):
            summary = rng.sample(words, rng.randint(2, 6))
            group.append(Sample(" ".join(summary), len(summary) + 1, True))
        out.append(group)
    return out


def linear_verifier(reward: str) -> tuple[OracleFeaturesRewardModel, float]:
    """A linear verifier fitted on 2000 pairs labelled by the larger gold reward, and its
    accuracy on 500 held-out pairs of the valid split."""
    task = KeywordsTask(
        KeywordsParams(
            n_train=2000, pool_size=2000, n_valid=500, label_temperature=0.0, reward=reward
        )
    )
    train = task.preference_pool(2000, 0, random_document_summaries)
    valid = task.preference_pool(500, 0, random_document_summaries, split="valid")
    model = OracleFeaturesRewardModel.fit(task, train, l2=1e-3)
    return model, pair_metrics(model, valid)["accuracy"]


def test_a_linear_verifier_is_lost_on_the_hidden_control() -> None:
    salient_model, salient_accuracy = linear_verifier("salient")
    hidden_model, hidden_accuracy = linear_verifier("hidden")
    # Observed: salient 0.964, hidden 0.574. In the salient mode the reward is linear in the
    # features (ties, labelled by a coin, cap the accuracy below 1); in the hidden one, only
    # length says anything (each extra word is selected half the time: +0.5 - 0.1).
    assert salient_accuracy > 0.9
    assert hidden_accuracy < 0.7
    assert salient_accuracy - hidden_accuracy > 0.25
    # The salient-word feature carries the salient reward and nothing of the hidden one
    # (observed weights 8.1 and -0.03).
    assert salient_model.weights[0] > 2
    assert abs(hidden_model.weights[0]) < 0.1 * salient_model.weights[0]


# --- the held-out pool --------------------------------------------------------------------------


def unreadable_pair(
    prompts: list[str], n: int, temperature: float, seed: int
) -> list[list[Sample]]:
    """Two unfinished outputs per prompt: neither has a reward, so each label is a coin flip
    drawn from the label RNG, and the chosen text shows the coin."""
    assert n == 2
    return [[Sample("w01 w02", 7, False), Sample("w03 w04", 7, False)] for _ in prompts]


def test_valid_pool_uses_the_valid_prompts() -> None:
    task = KeywordsTask(KeywordsParams(n_train=300, pool_size=100, n_valid=300))
    train = task.preference_pool(100, 0, random_document_summaries)
    # Larger than pool_size: the cap is the train pool's, not the held-out one's.
    valid = task.preference_pool(300, 0, random_document_summaries, split="valid")
    assert [p.prompt for p in valid] == [e.prompt for e in task.examples("valid")]
    assert [p.prompt for p in train] == [e.prompt for e in task.examples("train", 100)]
    assert not {p.prompt for p in valid} & {e.prompt for e in task.examples("train")}
    with pytest.raises(ValueError, match="pool_size is 100"):
        task.preference_pool(101, 0, random_document_summaries)


def test_valid_pool_labels_are_independent_of_the_train_pool() -> None:
    task = KeywordsTask(KeywordsParams(n_train=400, pool_size=400, n_valid=400))
    coins = {
        split: [p.chosen == "w01 w02" for p in task.preference_pool(400, 0, unreadable_pair, split)]
        for split in ("train", "valid")
    }
    # Each split's coins are fair (400 flips, sd 0.025) ...
    for flips in coins.values():
        assert abs(sum(flips) / 400 - 0.5) < 4 * 0.025
    # ... and the two splits' coins agree about half the time: a shared label seed would make
    # them agree on every pair (the samples are the same here, only the label RNG differs).
    agree = sum(a == b for a, b in zip(coins["train"], coins["valid"], strict=True)) / 400
    assert abs(agree - 0.5) < 4 * 0.025
    # The train pool's labels are what they were before the split argument existed: seeded by
    # the pool seed alone.
    assert coins["train"] == [task.bradley_terry_label(None, None, 0, i) for i in range(400)]
    # Another seed gives other held-out labels.
    other = [p.chosen == "w01 w02" for p in task.preference_pool(400, 1, unreadable_pair, "valid")]
    assert other != coins["valid"]


# --- the hidden-reference control ---------------------------------------------------------------
REFERENCE_TASK = KeywordsTask(KeywordsParams(reward="hidden_reference", n_eval=300))


def test_the_hidden_reference_is_blind_to_salience() -> None:
    prompts = [e.prompt for e in REFERENCE_TASK.examples("eval")]
    overlaps = []
    for prompt in prompts:
        target = REFERENCE_TASK.rewarded_words(prompt)
        assert len(target) == 3 and target <= set(parse_prompt(prompt))
        assert target == REFERENCE_TASK.rewarded_words(prompt)  # a pure function of the prompt
        overlaps.append(len(target & SALIENT_TASK.rewarded_words(prompt)))
    # 3 target words among 18 distinct, 3 of them salient: 0.5 salient words expected
    # (hypergeometric, sd 0.61 per prompt, 0.035 for the mean of 300).
    assert abs(sum(overlaps) / len(overlaps) - 0.5) < 4 * 0.035


def test_the_hidden_reference_reward_is_rouge_1_f1() -> None:
    prompt = REFERENCE_TASK.examples("eval", 1)[0].prompt
    target = sorted(REFERENCE_TASK.rewarded_words(prompt))
    others = sorted(set(parse_prompt(prompt)) - set(target))
    absent = next(w for w in REFERENCE_TASK.words if w not in parse_prompt(prompt))
    reward = REFERENCE_TASK.gold_reward
    assert reward(prompt, " ".join(target)) == pytest.approx(3.0)  # F1 1: the optimum
    assert REFERENCE_TASK.optimal_reward(prompt) == pytest.approx(3.0)
    assert reward(prompt, " ".join(reversed(target))) == pytest.approx(3.0)  # order is free
    assert reward(prompt, " ".join(others[:4])) == 0.0  # no hit
    assert REFERENCE_TASK.worst_gold_reward() == 0.0
    # One hit in two words: P 1/2, R 1/3, F1 0.4. A repeat or an absent word is a non-hit too.
    assert reward(prompt, f"{target[0]} {others[0]}") == pytest.approx(3 * 0.4)
    assert reward(prompt, f"{target[0]} {target[0]}") == pytest.approx(3 * 0.4)
    assert reward(prompt, f"{target[0]} {absent}") == pytest.approx(3 * 0.4)
    assert reward(prompt, target[0]) is None  # shorter than min_words: invalid
    assert REFERENCE_TASK.features(prompt, f"{target[0]} {others[0]}") == [pytest.approx(0.4)]


def test_no_simple_feature_explains_the_hidden_reference() -> None:
    """The salient reward's own features, fitted to the hidden reference's labels, say nothing
    (summaries of document words only, as here: an absent word, which never hits, is the one
    thing a verifier could still read without the target)."""
    task = KeywordsTask(
        KeywordsParams(
            n_train=2000, pool_size=2000, n_valid=500, label_temperature=0.0, reward="salient"
        )
    )
    hidden = KeywordsTask(task.params.model_copy(update={"reward": "hidden_reference"}))
    train = hidden.preference_pool(2000, 0, random_document_summaries)
    valid = hidden.preference_pool(500, 0, random_document_summaries, split="valid")
    simple = OracleFeaturesRewardModel.fit(task, train, l2=1e-3)  # salient-mode features
    oracle = OracleFeaturesRewardModel.fit(hidden, train, l2=1e-3)  # its own F1
    # A pair whose two summaries tie (both F1 0: 136 of 500 here) is labelled by a coin and
    # scored a tie, so the oracle's ceiling is 1 - ties / 2n (0.864); it reaches it. The simple
    # features are at chance (observed 0.536).
    ties = sum(
        hidden.gold_reward(p.prompt, p.chosen) == hidden.gold_reward(p.prompt, p.rejected)
        for p in valid
    )
    assert pair_metrics(oracle, valid)["accuracy"] == pytest.approx(1 - ties / 1000)
    assert pair_metrics(simple, valid)["accuracy"] < 0.6
