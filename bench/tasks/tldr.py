"""Reddit TL;DR summarisation, the paper's real-scale task (PAPER.md, "Protocol of the real-scale
experiments"), from the Hub or from local files of the same schema.

Data. Prompts and human reference summaries come from the SFT dataset
`cleanrl/summarize_from_feedback_tldr_3_filtered_oai_preprocessing_1704563162` (splits train,
validation, test: 116,722 / 6,447 / 6,553 posts), of which this task reads the columns
`subreddit`, `title`, `post` and `summary`. Labelled pairs come from
`cleanrl/summarize_from_feedback_oai_preprocessing_1705009345` (splits train, validation,
validation_cnndm: 92,858 / 83,802 / 2,284 comparisons), of which it reads `info` (a struct with
`subreddit`, `title`, `post`), `summaries` (a list of two structs with `text`) and `choice` (the
index of the preferred summary). Both datasets also hold cleanrl's Pythia-tokenised columns
(`query_token`, `query`, `reference_response`, `response0`, ...); those are not read, because the
truncation below is redone with the base model's own tokenizer. Local files (jsonl or parquet,
one per split) in the same schema load without the Hub.

Splits. Task split -> dataset split: `train` -> SFT train, `eval` -> SFT validation (the paper
judges validation prompts), `valid` -> SFT test (the paper never uses it, so tuning on it leaves
the evaluation prompts untouched). The pair pool is the pairs' train split; held-out pairs
(`preference_pool(..., split="valid")`) are its validation split. Comparisons without a post (the
CNN/DM articles mixed into OpenAI's original validation split) are skipped.

Truncation: OpenAI's preprocessing as cleanrl reimplements it, with the base model's tokenizer.
The prompt is QUERY_FORMAT filled with the post; while it has more than `max_query_tokens` (512)
tokens, the post is cut at its last newline, or by one character once it has none. A completion
is " " + its text (a BPE model emits the space itself after "TL;DR:"), cut at a token boundary to
`max_response_tokens - 1` tokens for references (with the EOS the trainer appends: the paper's
53) and `max_pair_response_tokens - 1` for the summaries of a pair (cleanrl's 169: the paper's
DPO trains on the pairs at full length, the longest being 169 Pythia tokens).

Pool. The pairs of the train split in dataset order, shuffled by the cell's seed; a budget is a
prefix, so every method at a budget sees the same pairs. Labels are the humans' choices (or
ROUGE-L's, below): the SFT policy is never sampled and there is no gold reward.

ROUGE-L reward variant (`labels: rouge`; PAPER.md, H6: verifying is as hard as generating when
the reward is ROUGE-L against a hidden reference). The humans' choices are not used: of the two
summaries of a pair, the one with the higher ROUGE-L F1 (`bench.evaluate.rouge.rouge_l`, the `rouge`
judge's function) against the human reference summary of the same post is preferred, in the pool
and in the held-out pairs alike. The reference is found by joining the pair's post (subreddit,
title, post) to the SFT rows: the pool's to SFT train only, so that no evaluation reference (SFT
validation) shapes a training label; the held-out pairs' to SFT validation, then test, where
their posts lie. It is cut like every reference (`max_response_tokens`), and each summary like
the pair's (`max_pair_response_tokens`), so a label ranks exactly the strings the method sees by
the reward the `rouge` judge computes against the task's evaluation references. Pairs whose post
has no reference and pairs whose two summaries tie are dropped; `label_counts` holds, and a log
line reports (a warning when a reference is missing), how many of each and how many labels the
relabelling turned against the human choice.

Two-word variant (PAPER.md, H6: a bandit-like task where the generation-verification gap should
vanish). The paper reports it but its preprocessing was not available to us; this task cuts every
training reference and both summaries of every pair to their first two words, and drops the pairs
whose two cut summaries are identical (they no longer say which is preferred). Evaluation
references stay whole by default (`two_word_eval_reference`): the paper's low two-word winrates
against "the human reference" (SFT 6.3%) suggest the full human summary was the opponent.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bench.config import StrictParams
from bench.evaluate.rouge import rouge_l
from bench.registry import register_task
from bench.tasks.base import Example, PreferencePair, Sample, SampleFn, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SFT_HUB_ID = "cleanrl/summarize_from_feedback_tldr_3_filtered_oai_preprocessing_1704563162"
PAIRS_HUB_ID = "cleanrl/summarize_from_feedback_oai_preprocessing_1705009345"

QUERY_FORMAT = "SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"
"""OpenAI's TL;DR prompt (summarize-from-feedback tasks.py), as in cleanrl's `query` column."""

SFT_SPLITS = {"train": "train", "valid": "test", "eval": "validation"}
"""Task split -> split of the SFT dataset."""
PAIR_SPLITS = {"train": "train", "valid": "validation"}
"""`preference_pool` split -> split of the pairs dataset."""
REFERENCE_SPLITS = {"train": ("train",), "validation": ("validation", "test")}
"""With `labels: rouge`: split of the pairs dataset -> the SFT splits whose references label it
(a post's first row there, in this order). The pool's posts are SFT train posts, and its labels
must not read an evaluation reference; the held-out pairs' posts are SFT validation and test
posts."""

SFT_COLUMNS = ("subreddit", "title", "post", "summary")
PAIR_COLUMNS = ("info", "summaries", "choice")
POST_FIELDS = ("subreddit", "title", "post")

HUB_SPLIT_ROWS = {(PAIRS_HUB_ID, "train"): 92_858, (PAIRS_HUB_ID, "validation"): 83_802}
"""Rows of the pinned pairs dataset (its dataset card), so that a suite's budgets resolve
without downloading it. Its train split holds no CNN/DM comparison, so every row is a pair."""

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
"""Local files: JSON lines (`.jsonl`, or `.json` holding JSON lines) or parquet."""

_HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Source = str | dict[str, str]

log = logging.getLogger(__name__)


class TldrParams(StrictParams):
    sft_source: Source = SFT_HUB_ID
    """Posts with their human summaries: a Hub dataset id, a local directory holding one
    `<split>.jsonl` or `<split>.parquet` per split (train, validation, test), or a mapping of
    split to local file. Relative paths are relative to the working directory."""
    sft_revision: str | None = None
    """Hub revision (a commit pins the data) of `sft_source`; ignored for local files."""
    pairs_source: Source = PAIRS_HUB_ID
    """Labelled comparisons, in the same three forms; splits train (the pool) and validation
    (held-out pairs)."""
    pairs_revision: str | None = None
    """Hub revision of `pairs_source`; ignored for local files."""
    tokenizer: str | None = None
    """Tokenizer (Hub id or local directory) that counts tokens for the truncation; null: the
    suite's pretrained base model's (the runner passes it through `Task.with_base_model`)."""
    tokenizer_revision: str | None = None
    """Hub revision of `tokenizer`."""
    max_query_tokens: int = Field(512, ge=1)
    """Longest prompt in tokens: longer posts are cut (the paper's 512)."""
    max_response_tokens: int = Field(53, ge=2)
    """A reference summary and its EOS fit in this many tokens (the paper's 53); it is also the
    task's generation length."""
    max_pair_response_tokens: int = Field(169, ge=2)
    """A summary of a pair and its EOS fit in this many tokens (cleanrl's 169, which cuts none of
    the dataset's summaries with Pythia's tokenizer)."""
    pool_size: int | None = Field(None, ge=1)
    """Pairs in the pool: this prefix of the seed's shuffled order; null: every pair."""
    two_word: bool = False
    """The two-word variant: training references and pair summaries cut to their first two
    words, pairs left identical by the cut dropped."""
    two_word_eval_reference: Literal["full", "two_word"] = "full"
    """With `two_word`: judge against the whole human summary (`full`) or its first two words."""
    labels: Literal["human", "rouge"] = "human"
    """Which summary of a pair is preferred: the human's choice (`human`), or the one with the
    higher ROUGE-L F1 against the post's human reference summary (`rouge`: the paper's ROUGE-L
    reward variant; pairs without a reference or with tied scores are dropped)."""

    @field_validator("sft_source", "pairs_source")
    @classmethod
    def _known_splits(cls, source: Source, info: ValidationInfo) -> Source:
        if isinstance(source, dict):
            allowed = (
                SFT_SPLITS.values() if info.field_name == "sft_source" else PAIR_SPLITS.values()
            )
            unknown = sorted(set(source) - set(allowed))
            if unknown:
                raise ValueError(
                    f"unknown split(s) {', '.join(unknown)}; splits: {', '.join(sorted(allowed))}"
                )
            if any(not path for path in source.values()):
                raise ValueError("expected a file path for every split")
        elif not source:
            raise ValueError("expected a Hub dataset id or a local path")
        return source

    @model_validator(mode="after")
    def _two_word_reference_needs_two_word(self) -> TldrParams:
        if self.two_word_eval_reference == "two_word" and not self.two_word:
            raise ValueError("two_word_eval_reference: two_word applies only with two_word: true")
        return self

    @model_validator(mode="after")
    def _rouge_labels_need_whole_summaries(self) -> TldrParams:
        if self.labels == "rouge" and self.two_word:
            raise ValueError(
                "labels: rouge labels whole summaries; it does not combine with two_word"
            )
        return self


@dataclass(frozen=True)
class Post:
    """What a prompt is made of."""

    subreddit: str
    title: str
    post: str


@dataclass(frozen=True)
class Comparison:
    """One labelled comparison as read from the data, before tokenisation."""

    post: Post
    chosen: str
    rejected: str


@dataclass(frozen=True)
class LabelCounts:
    """What `labels: rouge` did to one split of the pairs."""

    n_comparisons: int
    """Comparisons read (CNN/DM ones already skipped)."""
    n_no_reference: int
    """Dropped: their post is in none of the SFT splits searched."""
    n_ties: int
    """Dropped: both summaries have the same ROUGE-L F1 (identical summaries among them)."""
    n_flipped: int
    """Kept, with the summary the human rejected now the chosen one."""

    @property
    def n_kept(self) -> int:
        return self.n_comparisons - self.n_no_reference - self.n_ties

    def __str__(self) -> str:
        flipped = self.n_flipped / self.n_kept if self.n_kept else 0.0
        return (
            f"{self.n_kept:,} of {self.n_comparisons:,} comparisons kept with ROUGE-L labels, "
            f"{self.n_flipped:,} ({flipped:.1%}) against the human choice; dropped "
            f"{self.n_no_reference:,} without a reference and {self.n_ties:,} ties"
        )


class TldrTask(Task):
    name = "tldr"
    has_gold = False

    def __init__(self, params: TldrParams) -> None:
        self.params = params
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._sft_rows: dict[str, list[tuple[Post, str]]] = {}
        self._comparisons: dict[str, list[Comparison]] = {}
        self._label_counts: dict[str, LabelCounts] = {}
        self._examples: dict[str, list[Example]] = {}
        self._prompts: dict[Post, str] = {}

    def with_base_model(self, path: str, revision: str | None) -> TldrTask:
        if self.params.tokenizer is not None:
            return self
        update = {"tokenizer": path, "tokenizer_revision": revision}
        return TldrTask(self.params.model_copy(update=update))

    # -- prompts and references -------------------------------------------------------------
    def validity(self, outputs: Sequence[Sample]) -> list[bool]:
        """Any non-empty summary can be judged: the paper judges summaries cut at 53 tokens too."""
        return [bool(sample.text.strip()) for sample in outputs]

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        if split not in SFT_SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SFT_SPLITS)}")
        rows = self._sft(SFT_SPLITS[split])
        if n is None:
            n = len(rows)
        elif n > len(rows):
            raise ValueError(
                f"asked for {n} {split} examples; {self._where('sft', SFT_SPLITS[split])} "
                f"has {len(rows)}"
            )
        done = self._examples.setdefault(split, [])
        if len(done) < n:
            todo = rows[len(done) : n]
            prompts = self.prompts([post for post, _ in todo])
            summaries = [summary for _, summary in todo]
            if self.params.two_word and (
                split == "train" or self.params.two_word_eval_reference == "two_word"
            ):
                summaries = [first_two_words(s) for s in summaries]
            references = self._completions(summaries, self.params.max_response_tokens)
            done += [Example(p, r) for p, r in zip(prompts, references, strict=True)]
        return done[:n]

    def prompts(self, posts: Sequence[Post]) -> list[str]:
        """The truncated prompt of each post (memoised: many comparisons share a post)."""
        new = list(dict.fromkeys(p for p in posts if p not in self._prompts))
        if new:
            tokenizer = self.tokenizer()
            limit = self.params.max_query_tokens
            counts = token_counts(tokenizer, [format_query(p) for p in new])
            for post, count in zip(new, counts, strict=True):
                self._prompts[post] = (
                    format_query(post)
                    if count <= limit
                    else truncate_query(
                        post, limit, lambda text: token_counts(tokenizer, [text])[0]
                    )
                )
        return [self._prompts[p] for p in posts]

    def _completions(self, texts: Sequence[str], max_tokens_with_eos: int) -> list[str]:
        return truncate_completions(self.tokenizer(), texts, max_tokens_with_eos - 1)

    def max_new_tokens(self) -> int:
        return self.params.max_response_tokens

    def min_new_tokens(self) -> int:
        return 0  # the paper sets no minimum length

    # -- the pair pool ----------------------------------------------------------------------
    def pool_size(self) -> int:
        available = self._n_comparisons(PAIR_SPLITS["train"])
        wanted = self.params.pool_size
        if wanted is None:
            return available
        if wanted > available:
            raise ValueError(
                f"pool_size {wanted} exceeds the {available} pairs of "
                f"{self._where('pairs', 'train')}"
            )
        return wanted

    def pool_size_limit(self) -> int | None:
        """`pool_size` when set: the data may hold fewer pairs, never more are drawn."""
        return self.params.pool_size

    def heldout_size(self) -> int:
        return self._n_comparisons(PAIR_SPLITS["valid"])

    def preference_pool(
        self, size: int, seed: int, sample: SampleFn, split: str = "train"
    ) -> list[PreferencePair]:
        """The first `size` comparisons of `split` in the seed's shuffled order (`sample` is
        unused: the labels are the humans' or ROUGE-L's)."""
        if split not in PAIR_SPLITS:
            raise ValueError(f"unknown pair split {split!r}; known: {', '.join(PAIR_SPLITS)}")
        comparisons = self._pairs(PAIR_SPLITS[split])
        limit = min(len(comparisons), self.pool_size()) if split == "train" else len(comparisons)
        if size > limit:
            raise ValueError(f"a pool of {size} {split} pairs asked; the task has {limit}")
        chosen = [comparisons[i] for i in shuffled_order(len(comparisons), seed, split)[:size]]
        prompts = self.prompts([c.post for c in chosen])
        limit_tokens = self.params.max_pair_response_tokens
        chosen_texts = self._completions([c.chosen for c in chosen], limit_tokens)
        rejected_texts = self._completions([c.rejected for c in chosen], limit_tokens)
        return [
            PreferencePair(prompt=p, chosen=c, rejected=r)
            for p, c, r in zip(prompts, chosen_texts, rejected_texts, strict=True)
        ]

    def _n_comparisons(self, split: str) -> int:
        source = self.params.pairs_source
        known = HUB_SPLIT_ROWS.get((source, split)) if isinstance(source, str) else None
        as_published = not self.params.two_word and self.params.labels == "human"
        if known is not None and self.params.pairs_revision is None and as_published:
            return known
        return len(self._pairs(split))

    def label_counts(self, split: str = "train") -> LabelCounts | None:
        """With `labels: rouge`, what the relabelling kept and dropped of the pairs of `split`
        (`train`: the pool, `valid`: the held-out pairs); None with the humans' labels."""
        if split not in PAIR_SPLITS:
            raise ValueError(f"unknown pair split {split!r}; known: {', '.join(PAIR_SPLITS)}")
        if self.params.labels == "human":
            return None
        self._pairs(PAIR_SPLITS[split])
        return self._label_counts[PAIR_SPLITS[split]]

    def pool_metrics(self, split: str = "train") -> dict[str, Any]:
        counts = self.label_counts(split)
        if counts is None:
            return {}
        return {"rouge_labels": {**dataclasses.asdict(counts), "n_kept": counts.n_kept}}

    # -- data -------------------------------------------------------------------------------
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer that counts the truncation's tokens (loaded once)."""
        if self._tokenizer is None:
            if self.params.tokenizer is None:
                raise ValueError(
                    "task tldr has no tokenizer to count its 512/53 tokens: set "
                    "task.params.tokenizer, or use a pretrained base model (the runner passes "
                    "its path)"
                )
            from transformers import AutoTokenizer

            from bench.train.modeling import quiet_transformers

            quiet_transformers()
            self._tokenizer = AutoTokenizer.from_pretrained(
                self.params.tokenizer, revision=self.params.tokenizer_revision
            )
        return self._tokenizer

    def _sft(self, split: str) -> list[tuple[Post, str]]:
        if split not in self._sft_rows:
            where, rows = load_rows(
                self.params.sft_source, self.params.sft_revision, split, SFT_COLUMNS
            )
            self._sft_rows[split] = [
                (
                    Post(*(_text(row, key, where, i) for key in POST_FIELDS)),
                    _text(row, "summary", where, i),
                )
                for i, row in enumerate(rows)
            ]
        return self._sft_rows[split]

    def _pairs(self, split: str) -> list[Comparison]:
        if split not in self._comparisons:
            source, revision = self.params.pairs_source, self.params.pairs_revision
            where, rows = load_rows(source, revision, split, PAIR_COLUMNS)
            comparisons = [
                c for i, row in enumerate(rows) if (c := parse_comparison(row, where, i))
            ]
            if self.params.two_word:
                cut = [
                    Comparison(c.post, first_two_words(c.chosen), first_two_words(c.rejected))
                    for c in comparisons
                ]
                comparisons = [c for c in cut if c.chosen != c.rejected]
            if self.params.labels == "rouge":
                comparisons = self._rouge_labelled(comparisons, split)
            self._comparisons[split] = comparisons
        return self._comparisons[split]

    def _rouge_labelled(self, comparisons: list[Comparison], split: str) -> list[Comparison]:
        """The comparisons relabelled by ROUGE-L F1 against their post's reference, cut as the
        task cuts them (see the module docstring); the counts go to `_label_counts[split]`."""
        summaries: dict[Post, str] = {}
        for sft_split in REFERENCE_SPLITS[split]:
            for post, summary in self._sft(sft_split):
                summaries.setdefault(post, summary)
        with_reference = [c for c in comparisons if c.post in summaries]
        posts = list(dict.fromkeys(c.post for c in with_reference))
        cut_references = self._completions(
            [summaries[p] for p in posts], self.params.max_response_tokens
        )
        references = dict(zip(posts, cut_references, strict=True))
        texts = list(dict.fromkeys(t for c in with_reference for t in (c.chosen, c.rejected)))
        cut_texts = self._completions(texts, self.params.max_pair_response_tokens)
        completions = dict(zip(texts, cut_texts, strict=True))
        score = functools.cache(rouge_l)  # a post's summaries recur across its comparisons

        labelled, n_ties, n_flipped = [], 0, 0
        for c in with_reference:
            chosen = score(completions[c.chosen], references[c.post])
            rejected = score(completions[c.rejected], references[c.post])
            # F1 is a ratio of small integers: equal scores may differ in their last bit.
            if math.isclose(chosen, rejected, rel_tol=1e-9, abs_tol=1e-12):
                n_ties += 1
            elif chosen > rejected:
                labelled.append(c)
            else:
                n_flipped += 1
                labelled.append(Comparison(c.post, chosen=c.rejected, rejected=c.chosen))
        counts = LabelCounts(
            n_comparisons=len(comparisons),
            n_no_reference=len(comparisons) - len(with_reference),
            n_ties=n_ties,
            n_flipped=n_flipped,
        )
        self._label_counts[split] = counts
        where = self._where("pairs", split)
        searched = ", ".join(self._where("sft", s) for s in REFERENCE_SPLITS[split])
        if comparisons and not labelled:
            raise ValueError(
                f"{where}: no comparison keeps a ROUGE-L label ({counts}): are its posts those "
                f"of {searched}?"
            )
        level = logging.WARNING if counts.n_no_reference else logging.INFO
        log.log(level, "%s: %s (references from %s)", where, counts, searched)
        return labelled

    def _where(self, which: str, split: str) -> str:
        source = self.params.sft_source if which == "sft" else self.params.pairs_source
        return describe_source(source, split)

    def data_fingerprint(self) -> str | None:
        files = sorted(
            {*local_files(self.params.sft_source), *local_files(self.params.pairs_source)}
        )
        if not files:
            return None
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\0".encode())
        return digest.hexdigest()


# -- pure helpers ---------------------------------------------------------------------------


def format_query(post: Post) -> str:
    return QUERY_FORMAT.format(subreddit=post.subreddit, title=post.title, post=post.post)


def truncate_query(post: Post, max_tokens: int, count: Callable[[str], int]) -> str:
    """The prompt of `post` in at most `max_tokens` tokens, as OpenAI's preprocessing makes it:
    cut the post at its last newline until the prompt fits; with no newline left, drop its last
    character. Raises ValueError when even an empty post does not fit."""
    text = post.post
    query = format_query(post)
    while count(query) > max_tokens:
        if not text:
            raise ValueError(
                f"the TL;DR prompt has more than {max_tokens} tokens even without its post "
                f"(title {post.title[:40]!r})"
            )
        newline = text.rfind("\n")
        text = text[:newline] if newline >= 0 else text[:-1]
        query = format_query(Post(post.subreddit, post.title, text))
    return query


def truncate_completions(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int
) -> list[str]:
    """Each text as a completion: " " + the text, cut at a token boundary to `max_tokens`
    tokens (the EOS the trainer appends comes on top)."""
    completions = [" " + text.strip() for text in texts]
    if not completions:
        return []
    ids = tokenizer(completions, add_special_tokens=False).input_ids
    return [
        completion if len(row) <= max_tokens else " " + tokenizer.decode(row[:max_tokens]).strip()
        for completion, row in zip(completions, ids, strict=True)
    ]


def token_counts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    return [len(row) for row in tokenizer(texts, add_special_tokens=False).input_ids]


def first_two_words(text: str) -> str:
    return " ".join(text.split()[:2])


def shuffled_order(n: int, seed: int, split: str) -> list[int]:
    """0..n-1 shuffled by (seed, split): the pool's order, whose prefixes are the budgets."""
    order = list(range(n))
    random.Random(f"tldr/pool/{split}/{seed}").shuffle(order)
    return order


def parse_comparison(row: dict[str, Any], where: str, index: int) -> Comparison | None:
    """A comparison row -> Comparison; None for a CNN/DM comparison (no post)."""
    info = row["info"]
    if not isinstance(info, dict):
        raise ValueError(f"{where}: row {index}: column 'info' is not a struct")
    if info.get("post") is None and info.get("article") is not None:
        return None
    post = Post(*(_text(info, key, where, index, prefix="info.") for key in POST_FIELDS))
    summaries, choice = row["summaries"], row["choice"]
    if not isinstance(summaries, list) or len(summaries) != 2:
        raise ValueError(f"{where}: row {index}: column 'summaries' must hold two summaries")
    if choice not in (0, 1) or isinstance(choice, bool):
        raise ValueError(f"{where}: row {index}: column 'choice' must be 0 or 1, not {choice!r}")
    texts = [
        _text(s, "text", where, index, prefix=f"summaries[{j}].") for j, s in enumerate(summaries)
    ]
    return Comparison(post, chosen=texts[choice], rejected=texts[1 - choice])


def _text(row: Any, key: str, where: str, index: int, prefix: str = "") -> str:
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"is not text ({type(value).__name__})"
        raise ValueError(f"{where}: row {index}: {prefix}{key} {problem}")
    return value


# -- loading --------------------------------------------------------------------------------


def is_hub_id(source: str) -> bool:
    """A string source that is no existing local path but looks like `owner/name`."""
    return not Path(source).exists() and bool(_HUB_ID_PATTERN.match(source))


def split_file(source: Source, split: str) -> Path:
    """The local file that holds `split` of a local source."""
    if isinstance(source, dict):
        if split not in source:
            raise FileNotFoundError(
                f"no file for split {split!r}; the source names: {', '.join(sorted(source))}"
            )
        return Path(source[split])
    directory = Path(source)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{source}: no such directory (nor a Hub dataset id of the form owner/name)"
        )
    found = [directory / f"{split}{suffix}" for suffix in FILE_SUFFIXES]
    found = [path for path in found if path.is_file()]
    if len(found) != 1:
        names = ", ".join(f"{split}{suffix}" for suffix in FILE_SUFFIXES)
        problem = "no file" if not found else "more than one file"
        raise FileNotFoundError(f"{directory}: {problem} for split {split!r} (one of {names})")
    return found[0]


def local_files(source: Source) -> list[Path]:
    """Every local file a source may read (for the data fingerprint); [] for a Hub id."""
    if isinstance(source, dict):
        return [Path(path) for path in source.values()]
    if is_hub_id(source):
        return []
    directory = Path(source)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{source}: no such directory (nor a Hub dataset id of the form owner/name)"
        )
    return sorted(p for p in directory.iterdir() if p.suffix in FILE_SUFFIXES and p.is_file())


def describe_source(source: Source, split: str) -> str:
    if isinstance(source, str) and is_hub_id(source):
        return f"{source} (split {split})"
    try:
        return str(split_file(source, split))
    except FileNotFoundError:
        return f"{source} (split {split})"


def load_rows(
    source: Source, revision: str | None, split: str, columns: Sequence[str]
) -> tuple[str, list[dict[str, Any]]]:
    """(where, rows): the `columns` of every row of `split`, from the Hub or a local file; `where`
    names the file or dataset in error messages. A missing column is an error naming both."""
    if isinstance(source, str) and is_hub_id(source):
        where = f"{source} (split {split})"
        table = _load_hub(source, revision, split)
    else:
        path = split_file(source, split)
        where = str(path)
        table = _read_file(path)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{where}: missing column {', '.join(repr(c) for c in missing)}; "
            f"columns: {', '.join(table.column_names)}"
        )
    if hasattr(table, "select_columns"):  # a datasets.Dataset
        return where, table.select_columns(list(columns)).to_list()
    return where, table.select(list(columns)).to_pylist()


def _load_hub(dataset_id: str, revision: str | None, split: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(dataset_id, split=split, revision=revision)
    except Exception as error:  # the datasets library raises many kinds; say which source failed
        raise RuntimeError(
            f"cannot load split {split!r} of the Hub dataset {dataset_id!r} (no local path of "
            f"that name exists either): {error}"
        ) from error


def _read_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix not in FILE_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type; expected one of {FILE_SUFFIXES}")
    import pyarrow

    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet

            return pyarrow.parquet.read_table(path)
        import pyarrow.json

        return pyarrow.json.read_json(path)
    except pyarrow.ArrowException as error:
        raise ValueError(f"{path}: cannot read it as {path.suffix[1:]}: {error}") from error


@register_task("tldr", config=TldrParams)
def make_tldr(params: TldrParams) -> TldrTask:
    return TldrTask(params)
