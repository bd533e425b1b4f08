"""The micro task `keywords`: gold reward, documents, references, labels, pool and tokenizer.

Pure Python except the tokenizer tests (transformers, no model). Rewards are computed by hand on
one crafted document with the default weights: salient bonus 1, absent penalty 1, repeat
penalty 0.5, length penalty 0.1.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bench.tasks.base import Sample
from bench.tasks.keywords import (
    EOS,
    PAD,
    SEP,
    UNK,
    KeywordsParams,
    KeywordsTask,
    bradley_terry_probability,
    format_prompt,
    parse_prompt,
    word,
)

DEFAULTS = KeywordsParams()
TASK = KeywordsTask(DEFAULTS)

# Salient words w01, w02, w03 three times each, fillers w10..w24 once each: 9 + 15 = 24 words.
SALIENT = ["w01", "w02", "w03"]
FILLERS = [word(i) for i in range(10, 25)]
DOC = SALIENT * 3 + FILLERS
PROMPT = format_prompt(DOC)


# --- gold reward --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "features", "reward"),
    [
        # The optimum: 3 salient, nothing else. 3 * 1 - 0.1 * 3 = 2.7.
        ("w01 w02 w03", [3, 0, 0, 3], 2.7),
        # Order does not matter.
        ("w03 w01 w02", [3, 0, 0, 3], 2.7),
        # One salient, one filler: 1 - 0.1 * 2 = 0.8.
        ("w01 w10", [1, 0, 0, 2], 0.8),
        # Fillers only: -0.1 * 2 = -0.2.
        ("w10 w11", [0, 0, 0, 2], -0.2),
        # A salient word twice counts once and is a repeat; w50 is absent from the document:
        # 1 - 1 * 1 - 0.5 * 1 - 0.1 * 3 = -0.8.
        ("w01 w01 w50", [1, 1, 1, 3], -0.8),
        # Absent words count per occurrence; the second is also a repeat:
        # -1 * 2 - 0.5 * 1 - 0.1 * 2 = -2.7.
        ("w50 w50", [0, 2, 1, 2], -2.7),
        # All three salient plus three fillers (6 words, the longest valid): 3 - 0.6 = 2.4.
        ("w01 w02 w03 w10 w11 w12", [3, 0, 0, 6], 2.4),
        # Extra whitespace is not a word.
        ("  w02\tw03  ", [2, 0, 0, 2], 1.8),
    ],
)
def test_gold_reward_by_hand(output: str, features: list[float], reward: float) -> None:
    assert TASK.features(PROMPT, output) == features
    assert TASK.gold_reward(PROMPT, output) == pytest.approx(reward, abs=1e-12)


def test_optimum_is_naming_each_salient_word_once() -> None:
    # n_salient * (salient_bonus - length_penalty) = 3 * (1 - 0.1) = 2.7
    assert TASK.optimal_reward() == pytest.approx(2.7)
    assert TASK.gold_reward(PROMPT, " ".join(SALIENT)) == pytest.approx(TASK.optimal_reward())


def test_weights_come_from_params() -> None:
    task = KeywordsTask(
        KeywordsParams(
            salient_bonus=2.0, absent_penalty=3.0, repeat_penalty=0.25, length_penalty=0.5
        )
    )
    # features [1, 1, 1, 3]: 2 * 1 - 3 * 1 - 0.25 * 1 - 0.5 * 3 = -2.75
    assert task.gold_reward(PROMPT, "w01 w01 w50") == pytest.approx(-2.75)
    # 3 * (2 - 0.5) = 4.5
    assert task.optimal_reward() == pytest.approx(4.5)


@pytest.mark.parametrize(
    "output",
    [
        "",  # empty
        "w01",  # shorter than min_words = 2
        "w01 w02 w03 w10 w11 w12 w13",  # 7 words, longer than max_words = 6
        "w01 hello",  # not a word of the vocabulary
        "w01 w64",  # one past the vocabulary (w00..w63)
        f"w01 {SEP}",  # special tokens are not words
        f"w01 w02 {EOS}",
    ],
)
def test_invalid_outputs_have_no_reward(output: str) -> None:
    assert TASK.summary_words(output) is None
    assert TASK.features(PROMPT, output) is None
    assert TASK.gold_reward(PROMPT, output) is None


def test_validity_needs_a_finished_well_formed_summary() -> None:
    outputs = [
        Sample("w01 w02", 3, True),
        Sample("w01 w02", 6, False),  # cut at the token limit
        Sample("w01", 2, True),  # too short
    ]
    assert TASK.validity(outputs) == [True, False, False]


def test_prompt_round_trip() -> None:
    assert PROMPT.endswith(" " + SEP)
    assert parse_prompt(PROMPT) == DOC


# --- documents ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [DEFAULTS, KeywordsParams(vocab_size=30, doc_len=12, n_salient=2, salient_repeats=4)],
    ids=["defaults", "2x4-in-12"],
)
def test_documents_have_salient_words_and_distinct_fillers(params: KeywordsParams) -> None:
    task = KeywordsTask(params)
    n_fillers = params.doc_len - params.n_salient * params.salient_repeats
    for example in task.examples("eval", 50):
        doc = parse_prompt(example.prompt)
        assert len(doc) == params.doc_len
        assert set(doc) <= set(task.words)
        counts = Counter(doc)
        assert (
            sorted(counts.values()) == [1] * n_fillers + [params.salient_repeats] * params.n_salient
        )


def test_same_seed_same_examples_other_seed_other_examples() -> None:
    first = KeywordsTask(KeywordsParams(seed=3)).examples("train", 20)
    again = KeywordsTask(KeywordsParams(seed=3)).examples("train", 20)
    other = KeywordsTask(KeywordsParams(seed=4)).examples("train", 20)
    assert first == again
    assert all(a.prompt != b.prompt for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("split", ["train", "valid", "eval", "pretrain"])
def test_a_shorter_list_is_a_prefix(split: str) -> None:
    assert TASK.examples(split, 10) == TASK.examples(split, 40)[:10]


def test_splits_differ() -> None:
    prompts = {
        split: [ex.prompt for ex in TASK.examples(split, 200)]
        for split in ("train", "valid", "eval")
    }
    assert not set(prompts["train"]) & set(prompts["valid"])
    assert not set(prompts["train"]) & set(prompts["eval"])
    assert not set(prompts["valid"]) & set(prompts["eval"])


def test_split_sizes_and_unknown_split() -> None:
    task = KeywordsTask(KeywordsParams(n_train=30, n_valid=7, n_eval=9, pool_size=10))
    assert len(task.examples("valid")) == 7
    assert len(task.examples("eval")) == 9
    with pytest.raises(ValueError, match="asked for 10 eval examples; the task has 9"):
        task.examples("eval", 10)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        task.examples("test", 1)
    with pytest.raises(ValueError, match="unbounded"):
        task.examples("pretrain")


def test_pretrain_documents_have_low_diversity() -> None:
    # 24 draws from a pool of 4..8 words: at most 8 distinct (an eval document has 18).
    distinct = [len(set(parse_prompt(ex.prompt))) for ex in TASK.examples("pretrain", 50)]
    assert all(2 <= d <= DEFAULTS.pretrain_distinct[1] for d in distinct)


# --- references ---------------------------------------------------------------------------------


def test_references_are_mediocre() -> None:
    examples = TASK.examples("eval", 500)
    rewards = [TASK.gold_reward(ex.prompt, ex.reference) for ex in examples]
    assert None not in rewards  # 2..4 vocabulary words: always valid
    lengths = Counter(len(ex.reference.split()) for ex in examples)
    assert set(lengths) == {2, 3, 4}
    mean = statistics.mean(rewards)
    # Measured 0.170 for seed 0. A reference draws ~3 words from 24 positions, 9 of them salient:
    # roughly 3 * 9/24 * 0.9 = 1.0 salient bonus, minus 0.3 length, 0.3 absent (10% rate), and
    # repeats; far below the optimum of 2.7.
    assert 0.1 <= mean <= 0.35
    assert mean < TASK.optimal_reward() / 5


# --- Bradley-Terry labels -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reward_a", "reward_b", "temperature", "probability"),
    [
        (1.0, 0.0, 1.0, 0.7310585786),  # 1 / (1 + e^-1)
        (0.0, 1.0, 1.0, 0.2689414214),  # 1 - 0.7311
        (2.7, 0.7, 2.0, 0.7310585786),  # diff 2, T 2: 1 / (1 + e^-1)
        (0.8, 0.3, 1.0, 0.6224593312),  # diff 0.5: 1 / (1 + e^-0.5)
        (0.5, 0.5, 1.0, 0.5),  # a tie is a coin
        (1.0, 0.0, 0.0, 1.0),  # T = 0: hard labels
        (0.0, 0.1, 0.0, 0.0),
        (0.5, 0.5, 0.0, 0.5),  # T = 0 tie: a coin
    ],
)
def test_bradley_terry_probability_by_hand(
    reward_a: float, reward_b: float, temperature: float, probability: float
) -> None:
    assert bradley_terry_probability(reward_a, reward_b, temperature) == pytest.approx(
        probability, abs=1e-9
    )


def test_bradley_terry_probability_does_not_overflow_at_low_temperature() -> None:
    # sigmoid(-1000) = 5e-435, rounds to 0.0; sigmoid(+1000) = 1.0
    assert bradley_terry_probability(0.0, 10.0, 0.01) == pytest.approx(0.0, abs=1e-300)
    assert bradley_terry_probability(10.0, 0.0, 0.01) == 1.0


def test_label_is_deterministic_per_seed_and_index() -> None:
    labels = [TASK.bradley_terry_label(0.3, 0.1, 5, i) for i in range(200)]
    assert labels == [TASK.bradley_terry_label(0.3, 0.1, 5, i) for i in range(200)]
    # Another pool seed draws other coins: sigmoid(0.2) = 0.55, so 200 labels agreeing by
    # chance has probability ~0.505^200.
    assert labels != [TASK.bradley_terry_label(0.3, 0.1, 6, i) for i in range(200)]
    # ... and so does another task seed.
    other_task = KeywordsTask(KeywordsParams(seed=1))
    assert labels != [other_task.bradley_terry_label(0.3, 0.1, 5, i) for i in range(200)]


@pytest.mark.parametrize(
    ("reward_a", "reward_b", "params"),
    [
        (1.0, 0.0, DEFAULTS),  # p = 0.7311
        (0.0, 0.5, DEFAULTS),  # p = 1 / (1 + e^0.5) = 0.3775
        (1.0, 0.0, KeywordsParams(label_temperature=2.0)),  # p = 1 / (1 + e^-0.5) = 0.6225
        (0.4, 0.4, KeywordsParams(label_temperature=0.0)),  # tie at T = 0: p = 0.5
    ],
)
def test_label_rate_matches_the_probability(
    reward_a: float, reward_b: float, params: KeywordsParams
) -> None:
    task = KeywordsTask(params)
    n = 4000
    rate = sum(task.bradley_terry_label(reward_a, reward_b, 0, i) for i in range(n)) / n
    p = bradley_terry_probability(reward_a, reward_b, params.label_temperature)
    # 4 standard errors: sqrt(p (1 - p) / n) <= sqrt(0.25 / 4000) = 0.0079, so at most 0.032.
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / n)


def test_hard_labels_follow_the_larger_reward() -> None:
    task = KeywordsTask(KeywordsParams(label_temperature=0.0))
    assert all(task.bradley_terry_label(0.2, 0.1, 0, i) for i in range(100))
    assert not any(task.bradley_terry_label(0.1, 0.2, 0, i) for i in range(100))


def test_an_invalid_output_always_loses() -> None:
    # Even a very bad valid output beats an invalid one, at any temperature.
    assert all(TASK.bradley_terry_label(-9.0, None, 0, i) for i in range(200))
    assert not any(TASK.bradley_terry_label(None, -9.0, 0, i) for i in range(200))
    both_invalid = [TASK.bradley_terry_label(None, None, 0, i) for i in range(200)]
    assert 60 < sum(both_invalid) < 140  # a fair coin: 100 +- 4 * 7


# --- the preference pool ------------------------------------------------------------------------

POOL_PARAMS = KeywordsParams(n_train=100, pool_size=40, label_temperature=0.0)


class FakeSampler:
    """Two outputs per prompt, drawn from the prompt's own words by an RNG of (prompt, seed), so
    that each prompt's samples do not depend on which other prompts are asked."""

    def __init__(self, unfinished_every: int = 0) -> None:
        self.calls: list[tuple[list[str], int, float, int]] = []
        self.unfinished_every = unfinished_every

    def __call__(
        self, prompts: list[str], n: int, temperature: float, seed: int
    ) -> list[list[Sample]]:
        self.calls.append((prompts, n, temperature, seed))
        out = []
        for index, prompt in enumerate(prompts):
            rng = random.Random(f"{prompt}/{seed}")
            words = parse_prompt(prompt) + ["w00", "w63"]
            samples = []
            for k in range(n):
                text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 4)))
                finished = not (
                    self.unfinished_every and index % self.unfinished_every == 0 and k == 0
                )
                samples.append(Sample(text, len(text.split()) + 1, finished))
            out.append(samples)
        return out


def test_pool_pairs_are_the_samples_labelled_by_gold_reward() -> None:
    task = KeywordsTask(POOL_PARAMS)
    sampler = FakeSampler()
    pairs = task.preference_pool(30, seed=2, sample=sampler)
    assert len(pairs) == 30
    prompts = [ex.prompt for ex in task.examples("train", 30)]
    assert sampler.calls == [(prompts, 2, POOL_PARAMS.pool_temperature, 2)]
    samples = sampler(prompts, 2, POOL_PARAMS.pool_temperature, 2)
    n_strict = 0
    for pair, prompt, (a, b) in zip(pairs, prompts, samples, strict=True):
        assert pair.prompt == prompt
        assert {pair.chosen, pair.rejected} == {a.text, b.text}
        chosen_reward = task.gold_reward(prompt, pair.chosen)
        rejected_reward = task.gold_reward(prompt, pair.rejected)
        # label_temperature 0: the larger gold reward is chosen (ties by a coin).
        assert chosen_reward >= rejected_reward
        n_strict += chosen_reward > rejected_reward
    assert n_strict >= 20  # the check above is not vacuous: most pairs are not ties


def test_pool_rejects_unfinished_samples() -> None:
    # Every third prompt's first sample is unfinished: it loses even where its text scores higher.
    task = KeywordsTask(POOL_PARAMS)
    pairs = task.preference_pool(30, seed=0, sample=FakeSampler(unfinished_every=3))
    samples = FakeSampler(unfinished_every=3)([p.prompt for p in pairs], 2, 0.7, 0)
    n_overruled = 0
    for index in range(0, 30, 3):
        a, b = samples[index]
        assert not a.finished and b.finished
        assert (pairs[index].chosen, pairs[index].rejected) == (b.text, a.text)
        n_overruled += task.gold_reward(pairs[index].prompt, a.text) > task.gold_reward(
            pairs[index].prompt, b.text
        )
    assert n_overruled >= 1


def test_pool_is_reproducible_per_seed_and_prefix_closed() -> None:
    task = KeywordsTask(POOL_PARAMS)
    pool = task.preference_pool(40, seed=1, sample=FakeSampler())
    assert pool == task.preference_pool(40, seed=1, sample=FakeSampler())
    assert task.preference_pool(15, seed=1, sample=FakeSampler()) == pool[:15]
    assert pool != task.preference_pool(40, seed=2, sample=FakeSampler())


def test_pool_labels_depend_on_the_seed() -> None:
    # The same samples under a seed-blind sampler: only the Bradley-Terry coins change.
    task = KeywordsTask(POOL_PARAMS.model_copy(update={"label_temperature": 1.0}))

    def sample(prompts: list[str], n: int, temperature: float, seed: int) -> list[list[Sample]]:
        return FakeSampler()(prompts, n, temperature, 0)

    first = task.preference_pool(40, seed=1, sample=sample)
    second = task.preference_pool(40, seed=2, sample=sample)
    flipped = [a.chosen != b.chosen for a, b in zip(first, second, strict=True)]
    assert any(flipped)
    for a, b in zip(first, second, strict=True):
        assert {a.chosen, a.rejected} == {b.chosen, b.rejected}


def test_pool_larger_than_configured_is_refused() -> None:
    with pytest.raises(ValueError, match="pool of 41 pairs asked; the task's pool_size is 40"):
        KeywordsTask(POOL_PARAMS).preference_pool(41, seed=0, sample=FakeSampler())


# --- the word tokenizer -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    TASK.write_tokenizer(path)
    return AutoTokenizer.from_pretrained(path)


def test_tokenizer_has_one_id_per_word(tokenizer: Any) -> None:
    # Special tokens first (<pad> 0, <unk> 1, <sep> 2, <eos> 3), then w00 = 4 ... w63 = 67.
    assert len(tokenizer) == 4 + 64
    ids = tokenizer(PROMPT, add_special_tokens=False).input_ids
    assert ids == [4 + int(w[1:]) for w in DOC] + [2]
    assert tokenizer("w00 w63", add_special_tokens=False).input_ids == [4, 67]
    assert tokenizer("w01 nonsense", add_special_tokens=False).input_ids == [5, 1]


def test_tokenizer_decodes_words_joined_by_spaces(tokenizer: Any) -> None:
    assert tokenizer.decode([5, 6, 7]) == "w01 w02 w03"
    assert tokenizer.decode([5, 6, 3, 0, 0], skip_special_tokens=True) == "w01 w02"
    text = "w10 w01 w33"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text


def test_tokenizer_special_ids(tokenizer: Any) -> None:
    assert (tokenizer.pad_token, tokenizer.unk_token, tokenizer.sep_token, tokenizer.eos_token) == (
        PAD,
        UNK,
        SEP,
        EOS,
    )
    assert (
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
        tokenizer.sep_token_id,
        tokenizer.eos_token_id,
    ) == (
        0,
        1,
        2,
        3,
    )


def test_write_tokenizer_writes_files(tmp_path: Path) -> None:
    TASK.write_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert (tmp_path / "tokenizer_config.json").is_file()


# --- config errors ------------------------------------------------------------------------------


def test_params_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="vocab_sise"):
        KeywordsParams(vocab_sise=64)


def test_params_reject_out_of_range_values() -> None:
    with pytest.raises(ValidationError, match="salient_repeats"):
        KeywordsParams(salient_repeats=1)


def test_task_rejects_salient_words_that_do_not_fit() -> None:
    # 3 salient words x 3 repeats = 9 slots > doc_len 8
    with pytest.raises(
        ValueError, match="n_salient \\* salient_repeats = 9 does not fit in doc_len = 8"
    ):
        KeywordsTask(KeywordsParams(doc_len=8))
    KeywordsTask(KeywordsParams(doc_len=9))  # exactly full: no filler, allowed


def test_task_rejects_a_pool_larger_than_the_train_split() -> None:
    with pytest.raises(ValueError, match="expected at most n_train \\(100\\)"):
        KeywordsParams(n_train=100, pool_size=101)
    KeywordsParams(n_train=100, pool_size=100)


def test_a_pool_larger_than_the_training_prompts_is_one_line_at_validate(
    tiny_suite_text, tmp_path, capsys
) -> None:
    from bench.cli import main

    suite = tmp_path / "big_pool.yaml"
    suite.write_text(tiny_suite_text.replace("pool_size: 120", "pool_size: 401"))
    assert main(["validate", str(suite)]) == 2
    assert capsys.readouterr().err == (
        f"{suite}: task.params.pool_size: got 401 (int); expected at most n_train (400): the "
        "pool's prompts are training prompts\n"
    )


def test_task_rejects_a_vocabulary_too_small_for_a_document() -> None:
    # Defaults need 3 + 24 - 9 = 18 distinct words per document; 8 is the allowed minimum.
    with pytest.raises(ValueError, match="vocab_size"):
        KeywordsTask(KeywordsParams(vocab_size=8))
