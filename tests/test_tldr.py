"""The TL;DR task on the fixture files (tests/fixtures/tldr, the cleanrl datasets' schema), and the
small tier end to end: a tiny GPT-2 loaded by path, the task on those files, SFT and DPO.

Nothing here reaches the Hub: Hub loading is exercised through a stand-in `load_dataset`.
Token counts are easy to check by hand because the tokenizer is word level (one token per
whitespace-separated word).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.config import load_suite
from bench.errors import ConfigError
from bench.evaluate.judging import Judgment
from bench.evaluate.rouge import rouge_l
from bench.evaluate.verdicts import Verdict
from bench.registry import register_judge
from bench.tasks.base import Sample, Task
from bench.tasks.keywords import SPECIAL_TOKENS, write_word_tokenizer
from bench.tasks.tldr import (
    PAIRS_HUB_ID,
    SFT_HUB_ID,
    LabelCounts,
    Post,
    TldrParams,
    TldrTask,
    format_query,
    truncate_query,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "tldr"
SFT_DIR, PAIRS_DIR = FIXTURES / "sft", FIXTURES / "pairs"
TINY_MODEL = REPO / "suites" / "small" / "data" / "tiny-gpt2-tldr"
"""A tiny GPT-2 SFT'd on the fixtures (suites/small/data/build_tiny_tldr_model.py)."""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def no_sampling(*args: object) -> list:
    raise AssertionError("the TL;DR pool must not sample the policy")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer over the fixtures' words (others map to <unk>)."""
    words = set()
    for path in FIXTURES.rglob("*.jsonl"):
        words.update(path.read_text().replace("\\n", " ").split())
    out = tmp_path_factory.mktemp("tokenizer")
    write_word_tokenizer(SPECIAL_TOKENS + sorted(words - set(SPECIAL_TOKENS)), out)
    return out


def make_task(tokenizer_dir: Path, **params: object) -> TldrTask:
    defaults = {"sft_source": str(SFT_DIR), "pairs_source": str(PAIRS_DIR)}
    return TldrTask(TldrParams(**{**defaults, "tokenizer": str(tokenizer_dir), **params}))


def n_words(text: str) -> int:
    return len(text.split())


# --- loading ---------------------------------------------------------------------------------


def test_prompts_references_and_pairs_follow_the_dataset(tokenizer_dir: Path) -> None:
    task = make_task(tokenizer_dir)
    rows = read_jsonl(SFT_DIR / "validation.jsonl")
    examples = task.examples("eval")
    # The prompt is cleanrl's `query` (these posts need no cut), the reference " " + summary.
    assert [e.prompt for e in examples] == [row["query"] for row in rows]
    assert [e.reference for e in examples] == [" " + row["summary"] for row in rows]
    assert examples[0].prompt.endswith("\n\nTL;DR:")

    pairs_rows = read_jsonl(PAIRS_DIR / "train.jsonl")
    by_prompt = {}
    for row in pairs_rows:
        texts = [s["text"] for s in row["summaries"]]
        by_prompt.setdefault(row["query"], []).append(
            (texts[row["choice"]], texts[1 - row["choice"]])
        )
    pool = task.preference_pool(task.pool_size(), seed=0, sample=no_sampling)
    assert len(pool) == task.pool_size() == len(pairs_rows) == 48
    for pair in pool:  # the human's choice is the chosen side
        assert (pair.chosen, pair.rejected) in by_prompt[pair.prompt]


def test_the_task_splits_map_to_the_dataset_splits(tokenizer_dir: Path) -> None:
    task = make_task(tokenizer_dir)
    sizes = {"train": 32, "eval": 12, "valid": 8}  # SFT train, validation, test
    assert {split: len(task.examples(split)) for split in sizes} == sizes
    assert task.examples("eval", 5) == task.examples("eval")[:5]
    assert task.examples("valid")[0].prompt == read_jsonl(SFT_DIR / "test.jsonl")[0]["query"]
    with pytest.raises(ValueError, match="asked for 13 eval examples; .*validation.jsonl has 12"):
        task.examples("eval", 13)
    with pytest.raises(ValueError, match="unknown split 'test'; known: train, valid, eval"):
        task.examples("test")
    # Held-out pairs come from the pairs' validation split, never the pool's posts.
    held_out = task.preference_pool(16, seed=0, sample=no_sampling, split="valid")
    pool = task.preference_pool(48, seed=0, sample=no_sampling)
    assert len(held_out) == task.heldout_size() == 16
    assert not {p.prompt for p in held_out} & {p.prompt for p in pool}


def test_jsonl_and_parquet_files_load_alike(tokenizer_dir: Path, tmp_path: Path) -> None:
    import pyarrow.json
    import pyarrow.parquet

    parquet = {}
    for kind, directory in (("sft", SFT_DIR), ("pairs", PAIRS_DIR)):
        parquet[kind] = {}
        for path in sorted(directory.glob("*.jsonl")):
            target = tmp_path / kind / f"{path.stem}.parquet"
            target.parent.mkdir(exist_ok=True)
            pyarrow.parquet.write_table(pyarrow.json.read_json(path), target)
            parquet[kind][path.stem] = str(target)
    from_jsonl = make_task(tokenizer_dir)
    from_dir = make_task(tokenizer_dir, sft_source=str(tmp_path / "sft"))
    from_files = make_task(tokenizer_dir, sft_source=parquet["sft"], pairs_source=parquet["pairs"])
    for task in (from_dir, from_files):
        assert task.examples("train") == from_jsonl.examples("train")
        assert task.examples("eval") == from_jsonl.examples("eval")
    pool = from_jsonl.preference_pool(48, seed=3, sample=no_sampling)
    assert from_files.preference_pool(48, seed=3, sample=no_sampling) == pool


def test_hub_ids_load_through_datasets(
    tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    calls = []

    def load_dataset(dataset_id: str, split: str, revision: str | None) -> datasets.Dataset:
        calls.append((dataset_id, split, revision))
        directory = SFT_DIR if dataset_id == SFT_HUB_ID else PAIRS_DIR
        return datasets.Dataset.from_list(read_jsonl(directory / f"{split}.jsonl"))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = TldrTask(TldrParams(tokenizer=str(tokenizer_dir), sft_revision="abc123"))
    assert task.examples("eval") == make_task(tokenizer_dir).examples("eval")
    assert calls == [(SFT_HUB_ID, "validation", "abc123")]
    # The pinned dataset's sizes are known: budgets resolve without a download ...
    assert task.pool_size() == 92_858 and task.heldout_size() == 83_802
    assert calls == [(SFT_HUB_ID, "validation", "abc123")]
    # ... and the pool reads the pairs' train split.
    with pytest.raises(ValueError, match="a pool of 49 train pairs asked; the task has 48"):
        TldrTask(TldrParams(tokenizer=str(tokenizer_dir), pool_size=49)).preference_pool(
            49, 0, no_sampling
        )
    assert calls[-1] == (PAIRS_HUB_ID, "train", None)


# --- truncation ------------------------------------------------------------------------------


def long_post(n_paragraphs: int, words_per_paragraph: int) -> str:
    return "\n".join(
        " ".join(f"p{i}w{j}" for j in range(words_per_paragraph)) for i in range(n_paragraphs)
    )


def test_long_posts_are_cut_at_their_last_newlines_to_512_tokens(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    row = dict(read_jsonl(SFT_DIR / "train.jsonl")[0])
    row["post"] = long_post(n_paragraphs=12, words_per_paragraph=50)  # 600 words
    rows = [row, {**row, "post": " ".join(f"w{j}" for j in range(700))}]  # no newline at all
    write_jsonl(tmp_path / "sft" / "train.jsonl", rows)
    task = make_task(tokenizer_dir, sft_source=str(tmp_path / "sft"))
    cut_at_newline, cut_by_characters = (e.prompt for e in task.examples("train"))

    overhead = n_words(format_query(Post(row["subreddit"], row["title"], "")))
    # Whole paragraphs are kept while they fit: (512 - overhead) // 50 of them.
    kept = (512 - overhead) // 50
    assert cut_at_newline == format_query(Post(row["subreddit"], row["title"], long_post(kept, 50)))
    assert n_words(cut_at_newline) <= 512 < n_words(cut_at_newline) + 50
    # Without newlines the post loses a character at a time until it fits: exactly full, the
    # space before the last word dropped still there.
    assert n_words(cut_by_characters) == 512
    assert cut_by_characters.endswith(f" w{512 - overhead - 1} \n\nTL;DR:")


def test_a_prompt_that_cannot_fit_is_an_error() -> None:
    post = Post("relationships", "a title of six words here", "some post")
    with pytest.raises(ValueError, match="more than 8 tokens even without its post"):
        truncate_query(post, 8, n_words)
    assert truncate_query(post, 100, n_words) == format_query(post)


def known_words(n: int) -> str:
    """n words of the fixtures' vocabulary (so that they decode as themselves)."""
    words = ["my", "sister", "plays", "loud", "music", "every", "night", "and"]
    return " ".join(words[i % len(words)] for i in range(n))


def test_references_and_pair_summaries_are_cut_to_their_token_limits(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    sft = read_jsonl(SFT_DIR / "train.jsonl")[:2]
    sft[0] = {**sft[0], "summary": known_words(80)}
    write_jsonl(tmp_path / "sft" / "train.jsonl", sft)
    pair = read_jsonl(PAIRS_DIR / "train.jsonl")[0]
    long_text = " " + known_words(200)
    pair["summaries"][pair["choice"]]["text"] = long_text
    write_jsonl(tmp_path / "pairs" / "train.jsonl", [pair])
    task = make_task(
        tokenizer_dir, sft_source=str(tmp_path / "sft"), pairs_source=str(tmp_path / "pairs")
    )
    long_reference, short_reference = (e.reference for e in task.examples("train"))
    # 52 tokens and the EOS: the paper's 53-token responses.
    assert long_reference == " " + known_words(52)
    assert short_reference == " " + sft[1]["summary"]
    assert task.max_new_tokens() == 53 and task.min_new_tokens() == 0
    (cut_pair,) = task.preference_pool(1, seed=0, sample=no_sampling)
    assert cut_pair.chosen == " " + known_words(168)  # cleanrl's 169


# --- the pool --------------------------------------------------------------------------------


def test_the_pool_order_is_fixed_by_the_seed_and_budgets_are_prefixes(tokenizer_dir: Path) -> None:
    task = make_task(tokenizer_dir)
    pool = task.preference_pool(48, seed=0, sample=no_sampling)
    assert make_task(tokenizer_dir).preference_pool(48, seed=0, sample=no_sampling) == pool
    for budget in (1, 10, 47):
        assert task.preference_pool(budget, seed=0, sample=no_sampling) == pool[:budget]
    other_seed = task.preference_pool(48, seed=1, sample=no_sampling)
    assert other_seed != pool and sorted(map(repr, other_seed)) == sorted(map(repr, pool))

    capped = make_task(tokenizer_dir, pool_size=20)
    assert capped.pool_size() == 20
    assert capped.preference_pool(20, seed=0, sample=no_sampling) == pool[:20]
    with pytest.raises(ValueError, match="a pool of 21 train pairs asked; the task has 20"):
        capped.preference_pool(21, seed=0, sample=no_sampling)
    with pytest.raises(ValueError, match="pool_size 49 exceeds the 48 pairs of .*train.jsonl"):
        make_task(tokenizer_dir, pool_size=49).pool_size()


def test_cnndm_comparisons_are_skipped(tokenizer_dir: Path, tmp_path: Path) -> None:
    rows = read_jsonl(PAIRS_DIR / "train.jsonl")[:3]
    article = {**rows[1]["info"], "post": None, "title": None, "article": "A news article."}
    rows[1] = {**rows[1], "info": article, "batch": "cnndm0"}
    write_jsonl(tmp_path / "pairs" / "train.jsonl", rows)
    task = make_task(tokenizer_dir, pairs_source=str(tmp_path / "pairs"))
    assert task.pool_size() == 2


# --- the two-word variant --------------------------------------------------------------------


def test_the_two_word_variant_cuts_summaries_and_drops_pairs_left_identical(
    tokenizer_dir: Path,
) -> None:
    full, two_word = make_task(tokenizer_dir), make_task(tokenizer_dir, two_word=True)
    assert all(n_words(e.reference) <= 2 for e in two_word.examples("train"))
    assert two_word.examples("eval") == full.examples("eval")  # judged against the whole summary

    expected = 0
    for row in read_jsonl(PAIRS_DIR / "train.jsonl"):
        first_two = {" ".join(s["text"].split()[:2]) for s in row["summaries"]}
        expected += len(first_two) == 2
    assert 0 < expected < 48  # the fixtures hold both kinds
    pool = two_word.preference_pool(two_word.pool_size(), seed=0, sample=no_sampling)
    assert len(pool) == two_word.pool_size() == expected
    assert all(n_words(p.chosen) <= 2 and n_words(p.rejected) <= 2 for p in pool)
    assert all(p.chosen != p.rejected for p in pool)

    cut_eval = make_task(tokenizer_dir, two_word=True, two_word_eval_reference="two_word")
    assert [e.reference for e in cut_eval.examples("eval")] == [
        " " + " ".join(e.reference.split()[:2]) for e in full.examples("eval")
    ]
    with pytest.raises(ValidationError, match="applies only with two_word: true"):
        TldrParams(two_word_eval_reference="two_word")


# --- the ROUGE-L reward variant --------------------------------------------------------------

ROUGE_SUITE = REPO / "suites" / "paper" / "tldr_rouge.yaml"


def sft_row(post: Post, summary: str) -> dict:
    return {"subreddit": post.subreddit, "title": post.title, "post": post.post, "summary": summary}


def pair_row(post: Post, texts: tuple[str, str], choice: int) -> dict:
    info = {"id": "t3_x", "subreddit": post.subreddit, "title": post.title, "post": post.post}
    return {"info": info, "summaries": [{"text": " " + t} for t in texts], "choice": choice}


def fixture_post(n: int) -> Post:
    return Post("relationships", f"my sister number {n}", f"my sister plays loud music {n}")


def write_rouge_fixtures(root: Path) -> tuple[str, str]:
    """SFT and pairs files (sources) whose pairs exercise every case of the ROUGE-L labels."""
    a, b, c, d, e, f = (fixture_post(n) for n in range(6))
    sft = {
        "train": [sft_row(a, "my sister plays loud music every night"), sft_row(b, "plays music")],
        "validation": [sft_row(c, "my sister plays"), sft_row(d, "loud music every night")],
        "test": [sft_row(e, "my sister plays loud music")],
    }
    better, worse = "my sister plays loud music every night and", "I have a problem with someone."
    pairs = {
        "train": [
            pair_row(a, (better, worse), choice=1),  # the human chose the worse: flipped
            pair_row(a, (worse, better), choice=1),  # the human agrees with ROUGE-L: kept
            pair_row(b, ("plays", "music"), choice=0),  # ROUGE-L 2/3 each: a tie
            pair_row(a, (better, better), choice=0),  # identical: a tie
            pair_row(c, (better, worse), choice=0),  # only SFT validation has c: no reference
        ],
        "validation": [
            pair_row(d, ("my sister plays", "loud music every night"), choice=0),  # flipped
            pair_row(e, ("my sister plays", "night"), choice=0),  # kept (reference in SFT test)
            pair_row(f, (better, worse), choice=0),  # no reference anywhere
        ],
    }
    for split, rows in sft.items():
        write_jsonl(root / "sft" / f"{split}.jsonl", rows)
    for split, rows in pairs.items():
        write_jsonl(root / "pairs" / f"{split}.jsonl", rows)
    return str(root / "sft"), str(root / "pairs")


def test_rouge_labels_prefer_the_summary_closer_to_the_reference(
    tokenizer_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sft, pairs = write_rouge_fixtures(tmp_path)
    task = make_task(tokenizer_dir, sft_source=sft, pairs_source=pairs, labels="rouge")
    with caplog.at_level(logging.INFO, logger="bench.tasks.tldr"):
        pool = task.preference_pool(task.pool_size(), seed=0, sample=no_sampling)
    better, worse = " my sister plays loud music every night and", " I have a problem with someone."
    # Both pairs on post a keep the higher-ROUGE summary chosen, whatever the human chose.
    assert [(p.chosen, p.rejected) for p in pool] == [(better, worse)] * 2
    reference = " my sister plays loud music every night"
    assert rouge_l(better, reference) > rouge_l(worse, reference)
    # The two ties and the pair whose post only SFT validation holds are dropped, and counted.
    counts = task.label_counts("train")
    assert counts == LabelCounts(n_comparisons=5, n_no_reference=1, n_ties=2, n_flipped=1)
    assert counts.n_kept == task.pool_size() == 2
    assert task.pool_metrics() == {
        "rouge_labels": {
            "n_comparisons": 5,
            "n_no_reference": 1,
            "n_ties": 2,
            "n_flipped": 1,
            "n_kept": 2,
        }
    }
    (record,) = caplog.records
    assert record.levelno == logging.WARNING  # a post without a reference is worth a look
    assert record.getMessage().endswith(
        "train.jsonl: 2 of 5 comparisons kept with ROUGE-L labels, 1 (50.0%) against the human "
        f"choice; dropped 1 without a reference and 2 ties (references from {sft}/train.jsonl)"
    )


def test_rouge_labels_relabel_the_held_out_pairs_from_the_other_sft_splits(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    sft, pairs = write_rouge_fixtures(tmp_path)
    task = make_task(tokenizer_dir, sft_source=sft, pairs_source=pairs, labels="rouge")
    held_out = task.preference_pool(task.heldout_size(), seed=0, sample=no_sampling, split="valid")
    # d's reference is in SFT validation, e's in SFT test; f has none.
    assert {(p.chosen, p.rejected) for p in held_out} == {
        (" loud music every night", " my sister plays"),
        (" my sister plays", " night"),
    }
    counts = task.label_counts("valid")
    assert counts == LabelCounts(n_comparisons=3, n_no_reference=1, n_ties=0, n_flipped=1)

    human = make_task(tokenizer_dir, sft_source=sft, pairs_source=pairs)
    assert human.heldout_size() == 3 and human.label_counts("valid") is None


def test_rouge_labels_use_the_reference_as_the_judge_sees_it(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    post = fixture_post(0)
    write_jsonl(tmp_path / "sft" / "train.jsonl", [sft_row(post, "my sister plays loud music")])
    head, tail = "my sister plays", "sister plays loud music"
    write_jsonl(tmp_path / "pairs" / "train.jsonl", [pair_row(post, (head, tail), choice=1)])
    sources = {"sft_source": str(tmp_path / "sft"), "pairs_source": str(tmp_path / "pairs")}
    # Against the whole reference the tail is closer (F1 8/9 against 3/4) ...
    assert rouge_l(tail, "my sister plays loud music") > rouge_l(head, "my sister plays loud music")
    # ... but the judge sees the reference cut to max_response_tokens - 1 = 3 tokens, where the
    # head is (1 against 4/7): the label follows the judge, against the human's choice.
    task = make_task(tokenizer_dir, labels="rouge", max_response_tokens=4, **sources)
    (reference,) = (e.reference for e in task.examples("train"))
    assert reference == " my sister plays"
    (pair,) = task.preference_pool(1, seed=0, sample=no_sampling)
    assert (pair.chosen, pair.rejected) == (" my sister plays", " sister plays loud music")


def test_labels_human_keeps_the_human_choices(tokenizer_dir: Path, tmp_path: Path) -> None:
    default, human = make_task(tokenizer_dir), make_task(tokenizer_dir, labels="human")
    pool = default.preference_pool(48, seed=0, sample=no_sampling)
    assert human.preference_pool(48, seed=0, sample=no_sampling) == pool
    assert human.label_counts() is None

    sft, pairs = write_rouge_fixtures(tmp_path)
    human = make_task(tokenizer_dir, sft_source=sft, pairs_source=pairs)
    texts = [(p.chosen, p.rejected) for p in human.preference_pool(5, 0, no_sampling)]
    assert len(texts) == human.pool_size() == 5  # nothing dropped, nothing flipped
    better, worse = " my sister plays loud music every night and", " I have a problem with someone."
    assert texts.count((worse, better)) == 1 and texts.count((better, worse)) == 2


def test_rouge_labels_without_any_reference_are_an_error(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    sft, _ = write_rouge_fixtures(tmp_path)
    task = make_task(tokenizer_dir, sft_source=sft, pairs_source=str(PAIRS_DIR), labels="rouge")
    with pytest.raises(
        ValueError, match=r"train.jsonl: no comparison keeps a ROUGE-L label \(0 of 48"
    ):
        task.pool_size()


def test_rouge_labels_load_from_the_hub_and_count_the_pool_for_real(
    tokenizer_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datasets

    sft, pairs = write_rouge_fixtures(tmp_path)
    calls = []

    def load_dataset(dataset_id: str, split: str, revision: str | None) -> datasets.Dataset:
        calls.append((dataset_id, split))
        directory = Path(sft if dataset_id == SFT_HUB_ID else pairs)
        return datasets.Dataset.from_list(read_jsonl(directory / f"{split}.jsonl"))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = TldrTask(TldrParams(tokenizer=str(tokenizer_dir), labels="rouge"))
    # Not the published 92,858: relabelling drops pairs, so the pool is counted from the data.
    assert task.pool_size() == 2
    assert calls == [(PAIRS_HUB_ID, "train"), (SFT_HUB_ID, "train")]
    assert task.heldout_size() == 2
    assert calls[2:] == [
        (PAIRS_HUB_ID, "validation"),
        (SFT_HUB_ID, "validation"),
        (SFT_HUB_ID, "test"),
    ]
    local = make_task(tokenizer_dir, sft_source=sft, pairs_source=pairs, labels="rouge")
    assert task.preference_pool(2, 0, no_sampling) == local.preference_pool(2, 0, no_sampling)


def test_the_labels_enter_every_cache_key(tmp_path: Path) -> None:
    from bench.run.cache import Cache
    from bench.run.runner import Runner

    human = tmp_path / "human.yaml"
    human.write_text(f"include: {ROUGE_SUITE}\ntask:\n  params:\n    labels: human\n")
    runner = Runner(Cache(tmp_path / "cache"), None, progress=False, log=lambda _: None)
    rouge_cells, human_cells = load_suite(ROUGE_SUITE).cells(), load_suite(human).cells()
    for rouge_cell, human_cell in zip(rouge_cells, human_cells, strict=True):
        rouge_keys, human_keys = runner.keys(rouge_cell), runner.keys(human_cell)
        assert rouge_cell.resolved_config()["task"]["params"]["labels"] == "rouge"
        # Every stage's key differs, the base model's too: the task's params enter it whole.
        pairs_of_keys = zip(astuple(rouge_keys), astuple(human_keys), strict=True)
        assert all(rouge_key != human_key for rouge_key, human_key in pairs_of_keys)


def test_a_bad_labels_value_is_a_one_line_config_error(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"include: {ROUGE_SUITE}\ntask:\n  params:\n    labels: gold\n")
    with pytest.raises(ConfigError) as caught:
        load_suite(suite)
    assert str(caught.value) == (
        f"{suite}: task.params.labels: got 'gold' (str); expected one of 'human' or 'rouge'"
    )
    with pytest.raises(ValidationError, match="labels: rouge labels whole summaries"):
        TldrParams(labels="rouge", two_word=True)


def test_the_rouge_suite_validates_and_needs_only_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bench.run.selection import missing_resources

    suite = load_suite(ROUGE_SUITE)
    assert suite.task.params["labels"] == "rouge" and suite.judge.kind == "rouge"
    assert {"dpo", "dpo_2x", "online_dpo_dpo"} <= {m.name for m in suite.methods}
    assert {e.method: e.min_mean_reward for e in suite.expectations} == {
        "dpo": 0.304,  # the paper's 0.354, 0.05 below
        "dpo_2x": 0.308,
        "online_dpo_dpo": 0.302,
    }
    assert suite.requires == ["gpu"]
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert missing_resources(suite) == ["needs a CUDA GPU and none is available"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert missing_resources(suite) == []  # the rouge judge needs no API key


# --- errors ----------------------------------------------------------------------------------


def test_a_missing_column_names_the_file_and_the_column(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    rows = [
        {k: v for k, v in row.items() if k != "summary"}
        for row in read_jsonl(SFT_DIR / "train.jsonl")
    ]
    path = write_jsonl(tmp_path / "sft" / "train.jsonl", rows)
    task = make_task(tokenizer_dir, sft_source=str(tmp_path / "sft"))
    with pytest.raises(ValueError, match=f"{path}: missing column 'summary'; columns: id, "):
        task.examples("train")

    pairs = read_jsonl(PAIRS_DIR / "train.jsonl")[:2]
    pairs[1] = {**pairs[1], "choice": 2}
    path = write_jsonl(tmp_path / "pairs" / "train.jsonl", pairs)
    task = make_task(tokenizer_dir, pairs_source=str(tmp_path / "pairs"))
    with pytest.raises(ValueError, match=f"{path}: row 1: column 'choice' must be 0 or 1, not 2"):
        task.pool_size()
    del pairs[1]["info"]["post"]
    write_jsonl(tmp_path / "pairs" / "train.jsonl", pairs)
    with pytest.raises(ValueError, match=f"{path}: row 1: info.post is missing"):
        make_task(tokenizer_dir, pairs_source=str(tmp_path / "pairs")).pool_size()


def test_missing_files_and_sources_are_clear_errors(tokenizer_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "train.parquet"
    task = make_task(tokenizer_dir, sft_source={"train": str(missing)})
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such file"):
        task.examples("train")
    with pytest.raises(FileNotFoundError, match="no file for split 'validation'; the source names"):
        task.examples("eval")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        make_task(tokenizer_dir, sft_source=str(tmp_path / "a" / "b")).examples("train")
    with pytest.raises(FileNotFoundError, match="no file for split 'test'"):
        make_task(tokenizer_dir, sft_source=str(tmp_path)).examples("valid")
    with pytest.raises(ValidationError, match="unknown split"):
        TldrParams(pairs_source={"test": "x.jsonl"})
    with pytest.raises(ValueError, match="no tokenizer .* set task.params.tokenizer"):
        make_task(tokenizer_dir, tokenizer=None).examples("train")


# --- the runner's hooks ----------------------------------------------------------------------


def test_the_base_models_tokenizer_is_used_unless_the_params_name_one(tokenizer_dir: Path) -> None:
    task = make_task(tokenizer_dir, tokenizer=None)
    bound = task.with_base_model(str(tokenizer_dir), None)
    assert bound.params.tokenizer == str(tokenizer_dir)
    assert bound.examples("eval") == make_task(tokenizer_dir).examples("eval")
    named = make_task(tokenizer_dir)
    assert named.with_base_model("some/other-model", "main") is named


def test_the_data_fingerprint_follows_the_file_contents(tmp_path: Path) -> None:
    assert TldrTask(TldrParams()).data_fingerprint() is None  # the Hub ids pin the data
    copy = tmp_path / "sft"
    copy.mkdir()
    for path in SFT_DIR.glob("*.jsonl"):
        (copy / path.name).write_bytes(path.read_bytes())
    task = TldrTask(TldrParams(sft_source=str(copy), pairs_source=str(PAIRS_DIR)))
    before = task.data_fingerprint()
    assert before == TldrTask(task.params).data_fingerprint()
    with (copy / "test.jsonl").open("a") as f:
        f.write(" \n")
    assert TldrTask(task.params).data_fingerprint() != before


def test_importing_the_task_loads_neither_torch_nor_datasets() -> None:
    code = (
        "import sys, bench.tasks.tldr; "
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'pyarrow') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stderr


# --- the small tier end to end ---------------------------------------------------------------


class OverlapParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PostOverlapJudge:
    """A stand-in judge for the end-to-end test (the real ones need an API or a reward model):
    the output wins when more of its words occur in the post than of the reference's."""

    id = "test-post-overlap"
    version = 1

    def judge(self, prompts: list[str], outputs: list[Sample], refs: list[str]) -> list[Judgment]:
        def overlap(prompt: str, text: str) -> float:
            words = set(prompt.split())
            return sum(w in words for w in text.split()) / max(1, len(text.split()))

        judgments = []
        for prompt, output, reference in zip(prompts, outputs, refs, strict=True):
            if not output.finished:
                judgments.append(Judgment(Verdict.INVALID))
                continue
            mine, theirs = overlap(prompt, output.text), overlap(prompt, reference)
            verdict = (
                Verdict.TIE if mine == theirs else Verdict.WIN if mine > theirs else Verdict.LOSS
            )
            judgments.append(Judgment(verdict, mine, theirs))
        return judgments


@register_judge("test_tldr_post_overlap", config=OverlapParams)
def make_overlap_judge(params: OverlapParams, task: Task) -> PostOverlapJudge:
    return PostOverlapJudge()


SMALL_SUITE = """\
name: tiny-tldr
version: 1
tier: small
task:
  name: tldr
  # `tokenizer` repeats the base model's path until the runner passes it (Task.with_base_model)
  params: {{sft_source: {sft}, pairs_source: {pairs}, tokenizer: {model}}}
base_model:
  kind: pretrained
  path: {model}
budgets: [1.0]
methods:
  - sft
  - method: dpo
    batch_size: 8
    lr: 0.001
generation:
  backend: hf
  n_eval_prompts: 8
  max_new_tokens: 53
judge:
  kind: test_tldr_post_overlap
seeds: [0]
"""


@pytest.mark.e2e
def test_the_small_tier_runs_sft_and_dpo_on_a_pretrained_model_by_path(tmp_path: Path) -> None:
    from bench.cli import main

    suite = tmp_path / "suites" / "tiny_tldr.yaml"
    suite.parent.mkdir()
    suite.write_text(SMALL_SUITE.format(sft=SFT_DIR, pairs=PAIRS_DIR, model=TINY_MODEL))
    results = tmp_path / "results"
    args = [
        "run",
        str(suite),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--results-dir",
        str(results),
    ]
    assert main([*args, "--no-progress"]) == 0

    lines = [json.loads(line) for line in (results / "tiny-tldr.jsonl").read_text().splitlines()]
    # The whole pool (a fraction 1.0) is every fixture pair.
    assert [(line["method"], line["n_pairs"]) for line in lines] == [("sft", 48), ("dpo", 48)]
    for line in lines:
        assert len(line["outcomes"]) == 8 and line["n"] + line["n_failed"] == 8
        assert line["n"] - line["n_invalid"] >= 4  # the tiny SFT model mostly ends its summaries
        assert line["config"]["task"]["params"]["max_query_tokens"] == 512
        assert line["config"]["base_model"]["path"] == str(TINY_MODEL)
    sft, dpo = lines
    assert sft["metrics"]["train"] == {}  # the SFT row is the base model itself
    assert dpo["metrics"]["train"]["train_steps"] == 6  # 48 pairs in batches of 8
