"""Micro task `keywords`: summarise a synthetic document by its salient words.

A document is `doc_len` words over a vocabulary of `vocab_size` made-up words. `n_salient` words
repeat (each `salient_repeats` times); every other slot holds a distinct filler word. A summary
is a few words, then EOS. The exact gold reward of a summary y of document x is

    r(x, y) = salient_bonus  * |distinct salient words of x in y|
            - absent_penalty * |words of y not in x|
            - repeat_penalty * |repeated words in y|          (occurrences beyond the first)
            - length_penalty * |y|

so the optimum names each salient word once: n_salient * (salient_bonus - length_penalty), 2.7
with the defaults. Two controls replace what the reward counts:

- `reward: hidden` counts instead the document words a hash of (prompt, word) selects (about
  half of them). Only the bonus is hidden: the penalties for absent words, repeats and length
  stay simple features of the summary, so a verifier still learns part of the reward.
- `reward: hidden_reference` scores the summary against a hidden reference, as ROUGE scores a
  summary against a human one (the paper's ROUGE variant): the reference is the n_salient
  document words with the smallest hash of (prompt, word), and the reward is ROUGE-1 F1 against
  it, scaled to the same optimum as the salient reward's bonus,

      r(x, y) = n_salient * salient_bonus * 2 |distinct words of y in T| / (|y| + |T|),

  so every term (hits, length, repeats, absent words: each a non-hit) depends on the hidden
  target T, and no verifier simpler than the generator exists.

Summaries shorter than `min_words` or unfinished at `max_words` are invalid (an empty summary
would otherwise score 0 and beat most real ones, and preference training collapses onto it).

The reference summary is deliberately mediocre: `reference_words` words drawn uniformly from the
document's positions, so mostly filler, a few replaced by words absent from the document. A
reference any better leaves the SFT policy nothing to improve on (found in earlier experiments,
see issue 2).

The preference pool: for pool prompt i, two samples of the SFT policy at `pool_temperature`,
labelled by Bradley-Terry on the gold reward:
P(a preferred) = sigmoid((r_a - r_b) / label_temperature).
Every example and label is drawn from an RNG seeded by (task seed, split, index), so splits are
fixed per seed and every budget is a prefix of the same pool.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from bench.config import StrictParams
from bench.registry import register_task
from bench.tasks.base import Example, PreferencePair, Sample, SampleFn, Task

SEP = "<sep>"
EOS = "<eos>"
PAD = "<pad>"
UNK = "<unk>"
SPECIAL_TOKENS = [PAD, UNK, SEP, EOS]


class KeywordsParams(StrictParams):
    seed: int = 0
    """Data seed: documents, references and pair labels are fixed by it."""
    vocab_size: int = Field(64, ge=8)
    """Number of distinct words."""
    doc_len: int = Field(24, ge=4)
    """Words per document."""
    n_salient: int = Field(3, ge=1)
    """Salient words per document."""
    salient_repeats: int = Field(3, ge=2)
    """How often each salient word occurs in its document."""
    min_words: int = Field(2, ge=1)
    """Shortest valid summary."""
    max_words: int = Field(6, ge=1)
    """Longest valid summary (EOS must follow)."""
    reference_words: tuple[int, int] = Field((2, 4), strict=False)
    """Length range (inclusive) of the mediocre reference summaries."""
    reference_absent_rate: float = Field(0.1, ge=0, le=1)
    """Chance that a reference word is replaced by a word absent from the document."""
    salient_bonus: float = 1.0
    """Gold reward per distinct rewarded (salient) word of the document in the summary."""
    absent_penalty: float = 1.0
    """Gold reward lost per summary word absent from the document."""
    repeat_penalty: float = 0.5
    """Gold reward lost per repeated word (each occurrence beyond the first)."""
    length_penalty: float = 0.1
    """Gold reward lost per summary word."""
    n_train: int = Field(20000, ge=1)
    """Prompts with references for SFT; the pool's prompts are their prefix."""
    n_valid: int = Field(500, ge=1)
    """Held-out prompts for tuning; never the evaluation prompts."""
    n_eval: int = Field(1000, ge=1)
    """Evaluation prompts available; the suite's generation.n_eval_prompts takes a prefix."""
    pretrain_distinct: tuple[int, int] = Field((4, 8), strict=False)
    """Distinct words per document in the low-diversity warm-up documents of the base build."""
    pool_size: int = Field(4000, ge=1)
    """Labelled pairs in the pool; budgets are prefixes (counts) or fractions of it."""
    pool_temperature: float = Field(0.7, gt=0)
    """Sampling temperature of the SFT policy when drawing the two outputs of a pair."""
    label_temperature: float = Field(1.0, ge=0)
    """Bradley-Terry label noise; 0 labels by the larger gold reward (ties by a coin)."""
    reward: Literal["salient", "hidden", "hidden_reference"] = "salient"
    """What the gold reward counts: the salient (repeated) words; `hidden`: the document words a
    hash of (prompt, word) selects, the penalties unchanged; `hidden_reference`: ROUGE-1 F1
    against a hidden per-prompt reference, every term hidden (see the module docstring)."""

    @field_validator("pool_size")
    @classmethod
    def _pool_within_train(cls, pool_size: int, info: ValidationInfo) -> int:
        # At validate, not at run time: the pool's prompts are a prefix of the training prompts.
        n_train = info.data.get("n_train")
        if n_train is not None and pool_size > n_train:
            raise ValueError(
                f"expected at most n_train ({n_train}): the pool's prompts are training prompts"
            )
        return pool_size


def word(i: int) -> str:
    return f"w{i:02d}"


class KeywordsTask(Task):
    name = "keywords"
    has_gold = True
    has_features = True
    builds_tokenizer = True

    def __init__(self, params: KeywordsParams) -> None:
        if params.n_salient * params.salient_repeats > params.doc_len:
            raise ValueError(
                f"n_salient * salient_repeats = {params.n_salient * params.salient_repeats} "
                f"does not fit in doc_len = {params.doc_len}"
            )
        distinct_per_doc = (
            params.n_salient + params.doc_len - params.n_salient * params.salient_repeats
        )
        if params.vocab_size <= distinct_per_doc:
            raise ValueError(
                f"vocab_size = {params.vocab_size} must exceed the {distinct_per_doc} distinct "
                f"words of a document, so that references can hold words absent from it"
            )
        self.params = params
        self.words = [word(i) for i in range(params.vocab_size)]

    # -- data -------------------------------------------------------------------------------
    def _rng(self, split: str, index: int) -> random.Random:
        return random.Random(f"{self.name}/{self.params.seed}/{split}/{index}")

    def document(self, split: str, index: int) -> list[str]:
        """Document `index` of `split`. Split `pretrain` gives low-diversity warm-up documents."""
        p = self.params
        rng = self._rng(split, index)
        if split == "pretrain":
            lo, hi = p.pretrain_distinct
            pool = rng.sample(self.words, rng.randint(lo, hi))
            return [rng.choice(pool) for _ in range(p.doc_len)]
        chosen = rng.sample(self.words, p.n_salient + p.doc_len - p.n_salient * p.salient_repeats)
        salient, fillers = chosen[: p.n_salient], chosen[p.n_salient :]
        doc = salient * p.salient_repeats + fillers
        rng.shuffle(doc)
        return doc

    def reference_for(self, split: str, index: int, doc: list[str]) -> list[str]:
        rng = self._rng(split + "/reference", index)
        lo, hi = self.params.reference_words
        absent = [w for w in self.words if w not in doc]
        return [
            rng.choice(absent)
            if rng.random() < self.params.reference_absent_rate
            else rng.choice(doc)
            for _ in range(rng.randint(lo, hi))
        ]

    def split_size(self, split: str) -> int | None:
        sizes = {"train": self.params.n_train, "valid": self.params.n_valid}
        sizes["eval"] = self.params.n_eval
        return sizes.get(split)

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        if split not in ("train", "valid", "eval", "pretrain"):
            raise ValueError(f"unknown split {split!r}; known: train, valid, eval, pretrain")
        size = self.split_size(split)
        if n is None:
            if size is None:
                raise ValueError("the pretrain split is unbounded: give n")
            n = size
        elif size is not None and n > size:
            raise ValueError(f"asked for {n} {split} examples; the task has {size}")
        out = []
        for i in range(n):
            doc = self.document(split, i)
            out.append(
                Example(
                    prompt=format_prompt(doc), reference=" ".join(self.reference_for(split, i, doc))
                )
            )
        return out

    # -- reward -----------------------------------------------------------------------------
    def summary_words(self, output: str) -> list[str] | None:
        """The summary's words, or None if it is not a valid summary."""
        words = output.split()
        p = self.params
        if not p.min_words <= len(words) <= p.max_words:
            return None
        if any(w not in self._word_set for w in words):
            return None
        return words

    @property
    def _word_set(self) -> frozenset[str]:
        return frozenset(self.words)

    def features(self, prompt: str, output: str) -> list[float] | None:
        """The terms the gold reward is linear in, so an ORACLE (only `kind: oracle_features`
        reads them): [distinct salient words, absent words, repeats, length]; for
        `hidden_reference`, [its ROUGE-1 F1 against the hidden target]. None when the output is
        invalid."""
        words = self.summary_words(output)
        if words is None:
            return None
        if self.params.reward == "hidden_reference":
            return [self._hidden_reference_f1(prompt, words)]
        counts = Counter(parse_prompt(prompt))
        salient = {w for w, c in counts.items() if c >= self.params.salient_repeats}
        distinct_salient = len(salient & set(words))
        absent = sum(1 for w in words if w not in counts)
        repeats = len(words) - len(set(words))
        return [float(distinct_salient), float(absent), float(repeats), float(len(words))]

    def rewarded_words(self, prompt: str) -> set[str]:
        """The document words whose presence the gold reward counts."""
        counts = Counter(parse_prompt(prompt))
        if self.params.reward == "salient":
            return {w for w, c in counts.items() if c >= self.params.salient_repeats}
        if self.params.reward == "hidden_reference":
            return set(hidden_reference(prompt, self.params.n_salient))
        return {w for w in counts if hidden_selects(prompt, w)}

    def _hidden_reference_f1(self, prompt: str, words: list[str]) -> float:
        target = self.rewarded_words(prompt)
        hits = len(target & set(words))
        return 2.0 * hits / (len(words) + len(target))

    @property
    def _f1_scale(self) -> float:
        """`hidden_reference`'s reward per unit of F1: the salient reward's total bonus."""
        return self.params.n_salient * self.params.salient_bonus

    def gold_reward(self, prompt: str, output: str) -> float | None:
        f = self.features(prompt, output)
        if f is None:
            return None
        if self.params.reward == "hidden_reference":
            return self._f1_scale * f[0]
        words = output.split()
        distinct_rewarded = len(self.rewarded_words(prompt) & set(words))
        _, absent, repeats, length = f
        p = self.params
        return (
            p.salient_bonus * distinct_rewarded
            - p.absent_penalty * absent
            - p.repeat_penalty * repeats
            - p.length_penalty * length
        )

    def optimal_reward(self, prompt: str | None = None) -> float:
        """The best gold reward for `prompt` (default: the first eval document).

        Name k = min(|rewarded words|, max_words) rewarded words once each (each is worth
        salient_bonus - length_penalty > 0), then pad to min_words: with other document words
        while there are any (length_penalty each), then with the cheaper of a repeat or an
        absent word.
        """
        p = self.params
        prompt = prompt if prompt is not None else self.examples("eval", 1)[0].prompt
        rewarded = self.rewarded_words(prompt)
        if p.reward == "hidden_reference":  # F1 of the best summary of each allowed length
            return self._f1_scale * max(
                2.0 * min(length, len(rewarded)) / (length + len(rewarded))
                for length in range(p.min_words, p.max_words + 1)
            )
        others = set(parse_prompt(prompt)) - rewarded
        k = min(len(rewarded), p.max_words)
        length = max(p.min_words, k)
        extra = max(0, length - k - len(others))
        return (
            k * p.salient_bonus
            - length * p.length_penalty
            - extra * min(p.repeat_penalty, p.absent_penalty)
        )

    def worst_gold_reward(self) -> float:
        """The lowest gold reward of a valid output: over every length from min to max words,
        the worst of no rewarded word (or all of them, were the bonus negative) and of every word
        the same absent word (absent each time, repeated all but once), or no penalty where a
        penalty is negative. A bound, reached when the vocabulary allows. For `hidden_reference`,
        an F1 of 0 (no word of the hidden reference)."""
        p = self.params
        if p.reward == "hidden_reference":
            return min(0.0, self._f1_scale)
        worst = float("inf")
        for length in range(p.min_words, p.max_words + 1):
            bonus = min(0.0, p.salient_bonus) * length
            penalties = (
                max(0.0, p.absent_penalty) * length
                + max(0.0, p.repeat_penalty) * (length - 1)
                + p.length_penalty * length
            )
            worst = min(worst, bonus - penalties)
        return worst

    def validity(self, outputs: list[Sample]) -> list[bool]:
        return [s.finished and self.summary_words(s.text) is not None for s in outputs]

    def max_new_tokens(self) -> int:
        return self.params.max_words + 1  # the words, then EOS

    def min_new_tokens(self) -> int:
        return self.params.min_words

    # -- pool -------------------------------------------------------------------------------
    def pool_size(self) -> int:
        return self.params.pool_size

    def pool_size_limit(self) -> int:
        return self.params.pool_size

    def preference_pool(
        self, size: int, seed: int, sample: SampleFn, split: str = "train"
    ) -> list[PreferencePair]:
        if split == "train" and size > self.params.pool_size:
            raise ValueError(
                f"pool of {size} pairs asked; the task's pool_size is {self.params.pool_size}"
            )
        prompts = [ex.prompt for ex in self.examples(split, size)]
        samples = sample(prompts, 2, self.params.pool_temperature, seed)
        label_seed = seed if split == "train" else f"{split}/{seed}"
        pairs = []
        for i, (prompt, (a, b)) in enumerate(zip(prompts, samples, strict=True)):
            prefer_a = self.bradley_terry_label(
                self._score(prompt, a), self._score(prompt, b), label_seed, i
            )
            chosen, rejected = (a, b) if prefer_a else (b, a)
            pairs.append(PreferencePair(prompt=prompt, chosen=chosen.text, rejected=rejected.text))
        return pairs

    def _score(self, prompt: str, sample: Sample) -> float | None:
        return self.gold_reward(prompt, sample.text) if sample.finished else None

    def bradley_terry_label(
        self, reward_a: float | None, reward_b: float | None, seed: int | str, index: int
    ) -> bool:
        """True when output a is preferred. An invalid output (None) loses to any valid one."""
        rng = self._rng(f"label/{seed}", index)
        if reward_a is None or reward_b is None:
            if reward_a is None and reward_b is None:
                return rng.random() < 0.5
            return reward_b is None
        return rng.random() < bradley_terry_probability(
            reward_a, reward_b, self.params.label_temperature
        )

    # -- tokenizer --------------------------------------------------------------------------
    def write_tokenizer(self, out_dir: Path) -> None:
        write_word_tokenizer(SPECIAL_TOKENS + self.words, out_dir)


def bradley_terry_probability(reward_a: float, reward_b: float, temperature: float) -> float:
    """P(a preferred to b) = sigmoid((r_a - r_b) / temperature); temperature 0 is a hard label
    (0.5 on a tie)."""
    diff = reward_a - reward_b
    if temperature == 0:
        return 0.5 if diff == 0 else float(diff > 0)
    z = diff / temperature
    if z >= 0:  # the two branches keep exp() from overflowing at low temperatures
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))


def hidden_selects(prompt: str, word: str) -> bool:
    """The hidden control's rule: a word counts when a hash of (prompt, word) is even, about half
    of a document's words, chosen anew for every prompt."""
    return hashlib.sha256(f"{prompt}|{word}".encode()).digest()[0] % 2 == 0


def hidden_reference(prompt: str, size: int) -> list[str]:
    """The `hidden_reference` control's target: the `size` distinct document words with the
    smallest hash of (prompt, word), chosen anew for every prompt, blind to how often a word
    occurs."""
    distinct = sorted(set(parse_prompt(prompt)))
    return sorted(distinct, key=lambda w: hashlib.sha256(f"{prompt}#{w}".encode()).digest())[:size]


def format_prompt(doc: list[str]) -> str:
    return " ".join(doc) + " " + SEP


def parse_prompt(prompt: str) -> list[str]:
    return [w for w in prompt.split() if w != SEP]


def write_word_tokenizer(vocab: list[str], out_dir: Path) -> None:
    """A word-level transformers tokenizer: one token per whitespace-separated word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token=PAD, unk_token=UNK, eos_token=EOS, sep_token=SEP
    )
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out_dir)


@register_task("keywords", config=KeywordsParams)
def make_keywords(params: KeywordsParams) -> KeywordsTask:
    return KeywordsTask(params)
