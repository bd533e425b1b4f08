"""Unit tests of the judges: the verdict grammar, the order logic, the backoff, the SQLite answer
cache, ROUGE-L against numbers worked out by hand, and the reward-model judge on a tiny saved
classifier. Tests that need a real server are in test_judges_server.py; the failures that need
none (a dead endpoint, endless 429s, a missing key) are here, over real HTTP on loopback.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
from judge_server import FaultProxy, free_port, tiny_tokenizer
from pydantic import ValidationError

from bench.evaluate.judge_cache import CachedAnswer, JudgeCache, answer_key, default_path
from bench.evaluate.judging import JudgeError, build_judge, judge_stats
from bench.evaluate.rouge import lcs_length, rouge_l, rouge_tokens
from bench.evaluate.verdicts import Verdict
from bench.registry import JUDGES
from bench.tasks.base import Sample, Task
from judges.llm_pairwise import (
    JudgeRequestError,
    LlmPairwiseJudge,
    LlmPairwiseParams,
    MissingApiKeyError,
    Order,
    Pricing,
    answers_verdict,
    backoff_delay,
    combine_orders,
    known_prompts,
    letter_from_logprobs,
    load_template,
    order_verdict,
    parse_answer,
    render,
    single_order,
)
from judges.reward_model import RewardModelJudge, RewardModelParams, rm_verdict
from judges.rouge import RougeJudge, RougeParams

W, L, T, INV, FAIL = Verdict.WIN, Verdict.LOSS, Verdict.TIE, Verdict.INVALID, Verdict.FAILED


class StubTask(Task):
    """A task of strings only: an output is judgeable when it finished (the base rule)."""

    name = "stub"

    def examples(self, split: str, n: int | None = None) -> list:
        return []

    def pool_size(self) -> int:
        return 1

    def preference_pool(self, size: int, seed: int, sample) -> list:
        return []


def sample(text: str, finished: bool = True) -> Sample:
    return Sample(text=text, n_tokens=len(text.split()), finished=finished)


# --- the verdict grammar --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("A", "A"),
        (" B\n", "B"),
        ("Comparison: A is shorter and keeps the point.\nPreferred: A", "A"),
        ('Comparison: B covers more.\nPreferred: "B"', "B"),
        ("Comparison: fine.\n\nPreferred:   B  \n\n", "B"),
        ("Comparison: x\r\nPreferred: A\r\n", "A"),
    ],
)
def test_answers_in_the_grammar_give_their_letter(answer: str, letter: str) -> None:
    parsed = parse_answer(answer)
    assert parsed is not None and parsed.letter == letter
    assert answer[parsed.offset] == letter  # the offset points at the letter itself


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "a",  # case matters
        "AB",
        "C",
        "Preferred: C",
        "Preferred: A.",  # nothing else on the line
        "Preferred: A or B",
        "Preferred: 'A'",
        "preferred: A",
        "Preferred: A\nComparison: changed my mind",  # the verdict line must come last
        "Preferred: B\nPreferred: A",  # two verdicts
        "Summary A is better.",
        "I cannot decide; both summaries have merits.",
        "Comparison: A is better\nPreferred:",
    ],
)
def test_answers_outside_the_grammar_are_invalid(answer: str) -> None:
    assert parse_answer(answer) is None


def test_logprobs_pick_the_likelier_letter_at_the_verdict_token() -> None:
    answer = "Comparison: close.\nPreferred: B"
    tokens = [
        ["Comparison: close.\n", [["Comparison: close.\n", -0.1]]],
        ["Preferred:", [["Preferred:", -0.01]]],
        [" B", [[" B", -0.6], [" A", -0.8], ['"', -3.0]]],
    ]
    offset = parse_answer(answer).offset
    assert letter_from_logprobs(tokens, offset) == "B"
    tokens[2][1] = [[" B", -0.9], ['"A', -0.5]]  # the sampled token need not be the likeliest
    assert letter_from_logprobs(tokens, offset) == "A"
    assert letter_from_logprobs([["x", [["x", 0.0]]]] * 40, offset) is None  # no letter there
    assert letter_from_logprobs([["Pre", []]], offset) is None  # tokens do not reach the letter
    assert letter_from_logprobs(None, offset) is None


# --- orders ---------------------------------------------------------------------------------------


def test_a_letter_is_a_win_for_the_policy_only_on_its_side() -> None:
    assert order_verdict("A", Order.POLICY_FIRST) is W
    assert order_verdict("B", Order.POLICY_FIRST) is L
    assert order_verdict("B", Order.REFERENCE_FIRST) is W
    assert order_verdict("A", Order.REFERENCE_FIRST) is L
    assert order_verdict(None, Order.POLICY_FIRST) is FAIL


@pytest.mark.parametrize(
    ("verdicts", "on_disagreement", "expected"),
    [
        ([W, W], "tie", W),
        ([L, L], "invalid", L),
        ([W, L], "tie", T),
        ([L, W], "tie", T),
        ([W, L], "invalid", FAIL),
        ([W, FAIL], "tie", FAIL),
        ([FAIL, FAIL], "tie", FAIL),
        ([W], "tie", W),
        ([], "tie", FAIL),
    ],
)
def test_two_orders_combine_as_documented(verdicts, on_disagreement, expected) -> None:
    assert combine_orders(verdicts, on_disagreement) is expected


def test_a_single_order_is_drawn_per_item_and_reproducibly() -> None:
    orders = [single_order(f"post {i}", "output", "reference") for i in range(200)]
    assert orders == [single_order(f"post {i}", "output", "reference") for i in range(200)]
    assert 60 < orders.count(Order.POLICY_FIRST) < 140  # both sides, about half each


def test_backoff_grows_with_jitter_and_respects_the_cap() -> None:
    rng = random.Random(0)
    for attempt in range(6):
        ceiling = min(10.0, 0.5 * 2**attempt)
        delays = [backoff_delay(attempt, 0.5, 10.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not a constant
    # Below the cap, retry k+1's smallest delay is retry k's largest.
    assert (
        backoff_delay(3, 1.0, 100.0, random.Random(1)) >= 4.0 >= backoff_delay(2, 1.0, 100.0, rng)
    )


# --- templates and params -------------------------------------------------------------------------


def test_the_dpo_tldr_prompt_ships_first_and_fills_once() -> None:
    assert {"tldr_dpo.txt", "tldr_accuracy_coverage_coherence.txt"} <= set(known_prompts())
    assert LlmPairwiseParams().prompt == "tldr_dpo.txt"
    template = load_template("tldr_dpo.txt")
    assert template.startswith("Which of the following summaries does a better job")
    assert template.endswith('Preferred: <"A" or "B">')
    text = render(template, "POST {output_b}", "short {prompt}", "long")
    # Braces inside the texts are never filled in.
    assert "Post:\nPOST {output_b}\n\nSummary A:\nshort {prompt}\n\nSummary B:\nlong\n" in text


def test_params_name_the_unknown_prompt_file_and_reject_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="unknown prompt template 'nope.txt'.*tldr_dpo.txt"):
        LlmPairwiseParams(prompt="nope.txt")
    with pytest.raises(ValidationError, match="max_inflight"):
        LlmPairwiseParams(max_inflight=3)
    with pytest.raises(ValidationError, match="on_disagreement"):
        LlmPairwiseParams(on_disagreement="coin")


def test_id_pins_model_and_prompt_and_the_cache_hash_ignores_plumbing(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "a.sqlite")
    judge = LlmPairwiseJudge(LlmPairwiseParams(model="m1"), StubTask(), cache)
    assert (
        judge.id.startswith("llm_pairwise:m1:tldr_dpo.txt@") and len(judge.id.split("@")[1]) == 12
    )
    plumbing = LlmPairwiseParams(
        model="m1", api_key_env="OTHER", max_in_flight=3, max_retries=0, timeout_s=5
    )
    assert LlmPairwiseJudge(plumbing, StubTask(), cache).judge_hash == judge.judge_hash
    for changed in (
        LlmPairwiseParams(model="m2"),
        LlmPairwiseParams(model="m1", prompt="tldr_accuracy_coverage_coherence.txt"),
        LlmPairwiseParams(model="m1", temperature=0.7),
        LlmPairwiseParams(model="m1", base_url="http://127.0.0.1:1/v1"),
        LlmPairwiseParams(model="m1", extra_body={"structured_outputs": {"choice": ["A", "B"]}}),
    ):
        assert LlmPairwiseJudge(changed, StubTask(), cache).judge_hash != judge.judge_hash
    assert not (tmp_path / "a.sqlite").exists()  # building a judge touches no file


def test_pricing_turns_tokens_into_cost() -> None:
    assert Pricing(input_per_1m=2.5, output_per_1m=10).cost(1_000_000, 200_000) == pytest.approx(
        4.5
    )


def test_every_judge_registers_with_the_runner_signature(tmp_path: Path) -> None:
    assert {"gold", "llm_pairwise", "rouge", "reward_model"} <= set(JUDGES.names())
    judge = JUDGES.get("llm_pairwise").fn(LlmPairwiseParams(), StubTask())
    assert judge.version == 1 and judge_stats(judge)["n_sent"] == 0
    assert judge_stats(RougeJudge(RougeParams(), StubTask())) == {}
    # build_judge hands the run's cache root to the factories that keep a cache of their own.
    built = build_judge(
        JUDGES.get("llm_pairwise"), LlmPairwiseParams(), StubTask(), cache_root=tmp_path
    )
    assert built.cache.path == tmp_path / "sqlite" / "judge_answers.sqlite"
    rouge = build_judge(JUDGES.get("rouge"), RougeParams(), StubTask(), cache_root=tmp_path)
    assert isinstance(rouge, RougeJudge)
    assert issubclass(JudgeRequestError, JudgeError) and issubclass(MissingApiKeyError, JudgeError)


# --- the SQLite answer cache ----------------------------------------------------------------------


def test_answers_persist_across_connections_and_keys_separate_orders(tmp_path: Path) -> None:
    path = default_path(tmp_path)
    assert path == tmp_path / "sqlite" / "judge_answers.sqlite"
    key_1 = answer_key("j", "post", "x", "y", "policy_first")
    key_2 = answer_key("j", "post", "y", "x", "reference_first")
    assert key_1 != key_2 != answer_key("k", "post", "x", "y", "policy_first")
    cache = JudgeCache(path)
    cache.put(key_1, "j", CachedAnswer("Preferred: A", [["A", [["A", -0.1]]]], 120, 9))
    cache.close()
    reopened = JudgeCache(path)
    assert reopened.get_many([key_1, key_2]) == {
        key_1: CachedAnswer("Preferred: A", [["A", [["A", -0.1]]]], 120, 9)
    }
    assert reopened.count() == reopened.count("j") == 1 and reopened.count("other") == 0


def test_the_judge_records_the_answer_of_each_order(tmp_path: Path) -> None:
    # Cached answers only (no server): item 0 is answered A then B (the policy both times),
    # item 1 A then "?" (an ungrammatical second answer); item 2's output is unfinished.
    judge = make_judge(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    answers = {0: ("Preferred: A", "Preferred: B"), 1: ("A", "no idea")}
    for index, (first, second) in answers.items():
        for order, a, b, text in (
            ("policy_first", OUTPUTS[index].text, REFERENCES[index], first),
            ("reference_first", REFERENCES[index], OUTPUTS[index].text, second),
        ):
            key = answer_key(judge.judge_hash, PROMPTS[index], a, b, order)
            judge.cache.put(key, judge.judge_hash, CachedAnswer(text, None, 1, 1))
    outputs = [*OUTPUTS, sample("unfinished", finished=False)]
    judgments = judge.judge([*PROMPTS, "POST: x. TL;DR:"], outputs, [*REFERENCES, "y"])
    assert [j.order_answers for j in judgments] == ["AB", "A?", None]
    assert [j.verdict for j in judgments] == [W, FAIL, INV]
    assert judgments[0].verdict is answers_verdict("AB", "tie")


# --- failures that need no model server -----------------------------------------------------------

PROMPTS = ["POST: my landlord kept the deposit. TL;DR:", "POST: I failed the exam. TL;DR:"]
OUTPUTS = [sample("landlord kept deposit"), sample("failed exam")]
REFERENCES = ["Landlord kept my deposit, what now?", "Failed my exam twice."]


def make_judge(tmp_path: Path, base_url: str, **params) -> LlmPairwiseJudge:
    settings = {"model": "m", "api_key_env": None, "backoff_s": 0.01, "max_retries": 2}
    return LlmPairwiseJudge(
        LlmPairwiseParams(base_url=base_url, **settings | params),
        StubTask(),
        JudgeCache(tmp_path / "answers.sqlite"),
        rng=random.Random(0),
    )


def test_a_missing_key_is_named_before_anything_is_sent(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PFTBENCH_TEST_JUDGE_KEY", raising=False)
    with FaultProxy(upstream_port=free_port()).running() as proxy:
        judge = make_judge(tmp_path, proxy.base_url, api_key_env="PFTBENCH_TEST_JUDGE_KEY")
        with pytest.raises(MissingApiKeyError, match="PFTBENCH_TEST_JUDGE_KEY is not set"):
            judge.judge(PROMPTS, OUTPUTS, REFERENCES)
        assert proxy.n_chat == 0


def test_unfinished_outputs_are_invalid_without_a_request(tmp_path: Path) -> None:
    # No server at all: a request would fail, so none may be sent.
    judge = make_judge(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    outputs = [sample("landlord kept", finished=False), sample("failed", finished=False)]
    assert [j.verdict for j in judge.judge(PROMPTS, outputs, REFERENCES)] == [INV, INV]
    assert judge.stats()["n_skipped_invalid_outputs"] == 2 and judge.stats()["n_sent"] == 0


def test_a_dead_endpoint_is_a_clear_error_after_the_retries(tmp_path: Path, caplog) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    judge = make_judge(tmp_path, url, max_in_flight=1)
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(JudgeRequestError, match=rf"APIConnectionError talking to {url} after 3"),
    ):
        judge.judge(PROMPTS, OUTPUTS, REFERENCES)
    stats = judge.stats()
    assert stats["n_retries"] >= 2 and stats["n_failed_requests"] >= 1
    assert "retry 1 in" in caplog.text


def test_endless_429s_give_up_after_max_retries_with_growing_delays(tmp_path: Path) -> None:
    with FaultProxy(upstream_port=free_port()).running() as proxy:
        proxy.fail_next(100, status=429)
        judge = make_judge(tmp_path, proxy.base_url, max_in_flight=1, max_retries=3, backoff_s=0.02)
        with pytest.raises(
            JudgeRequestError, match=r"answered 429 \(RateLimitError: .*\) after 4 attempts"
        ):
            judge.judge(PROMPTS[:1], OUTPUTS[:1], REFERENCES[:1])
        stats = judge.stats()
        # The first order failed for good and stopped the run: the second was never sent.
        assert proxy.n_chat == 4 and stats["n_failed_requests"] == 1
        delays = stats["retry_delays_s"][:3]
        assert delays == sorted(delays) and 0.01 <= delays[0] <= 0.02 and 0.04 <= delays[2] <= 0.08
        assert JudgeCache(tmp_path / "answers.sqlite").count() == 0


def test_a_client_error_is_not_retried(tmp_path: Path) -> None:
    with FaultProxy(upstream_port=free_port()).running() as proxy:
        proxy.fail_next(100, status=400)
        judge = make_judge(tmp_path, proxy.base_url, max_in_flight=1, both_orders=False)
        with pytest.raises(
            JudgeRequestError, match=r"answered 400 \(BadRequestError: .*injected.*\) -- 0 new"
        ):
            judge.judge(PROMPTS[:1], OUTPUTS[:1], REFERENCES[:1])
        assert proxy.n_chat == 1 and judge.stats()["n_retries"] == 0


# --- ROUGE-L --------------------------------------------------------------------------------------


def test_rouge_tokens_follow_rouge_score() -> None:
    assert rouge_tokens("The cat's HAT, 2nd-best!  café") == [
        "the",
        "cat",
        "s",
        "hat",
        "2nd",
        "best",
        "caf",
    ]
    assert rouge_tokens("  ...  ") == []


def test_rouge_l_by_hand() -> None:
    assert lcs_length(["a", "b", "c", "d", "e"], ["a", "x", "c", "e"]) == 3  # a c e
    assert lcs_length([], ["a"]) == 0
    # output "the cat sat on the mat" (6) vs reference "the cat lay on a mat" (6): LCS "the cat
    # on mat" = 4, P = R = 4/6, F1 = 2/3.
    assert rouge_l("The cat sat on the mat.", "the cat lay on a mat") == pytest.approx(2 / 3)
    # output "police arrested two men" (4) vs reference "two men were arrested by police" (6):
    # LCS = 2 ("two men"), P = 2/4, R = 2/6, F1 = 2 * (1/2)(1/3) / (1/2 + 1/3) = 0.4.
    assert rouge_l("Police arrested two men", "two men were arrested by police") == pytest.approx(
        0.4
    )
    assert rouge_l("same words", "Same, words!") == 1.0
    assert rouge_l("", "anything") == rouge_l("!!", "anything") == rouge_l("x", "y") == 0.0


def test_the_rouge_judge_scores_every_valid_output_and_wins_at_the_threshold() -> None:
    judge = RougeJudge(RougeParams(threshold=0.4), StubTask())
    judgments = judge.judge(
        ["p1", "p2", "p3"],
        [
            sample("Police arrested two men"),
            sample("nothing alike"),
            sample("two men", finished=False),
        ],
        ["two men were arrested by police", "two men were arrested by police", "two men"],
    )
    assert [j.verdict for j in judgments] == [W, L, INV]
    assert [j.output_score for j in judgments] == [pytest.approx(0.4), 0.0, None]
    assert judge.id == "rouge_l:rouge-score-tokens-nostem"


# --- the reward-model judge -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory) -> Path:
    """A GPT-2 classifier with one output, built from a config (random weights) and saved."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    out = tmp_path_factory.mktemp("rm")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=1, n_head=2, num_labels=1
    )
    GPT2ForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_rm_verdicts_follow_the_score_difference_and_tolerance() -> None:
    assert rm_verdict(1.0, 0.5, 0.1) is W
    assert rm_verdict(0.5, 1.0, 0.1) is L
    assert rm_verdict(1.0, 0.95, 0.1) is T
    assert rm_verdict(1.0, 1.0, 0.0) is T


def test_the_rm_judge_scores_in_batches_as_the_model_does_one_by_one(tiny_rm: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    prompts = ["Summary A is short. ", "The post is long and talks about rent. ", "x "]
    outputs = [sample("short"), sample("rent is due, the landlord waits"), sample("y", False)]
    references = ["a short one", "rent", "z"]
    judge = RewardModelJudge(RewardModelParams(path=str(tiny_rm), batch_size=2), StubTask())
    judgments = judge.judge(prompts, outputs, references)

    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_rm)

    def score(text: str) -> float:
        with torch.inference_mode():
            return model(**tokenizer(text, return_tensors="pt")).logits[0, 0].item()

    for judgment, prompt, output, reference in zip(
        judgments[:2], prompts[:2], outputs[:2], references[:2], strict=True
    ):
        assert judgment.output_score == pytest.approx(score(prompt + output.text), abs=1e-5)
        assert judgment.reference_score == pytest.approx(score(prompt + reference), abs=1e-5)
        assert judgment.verdict is rm_verdict(judgment.output_score, judgment.reference_score, 0)
    assert judgments[2].verdict is INV and judgments[2].output_score is None
    assert judgments[2].reference_score == pytest.approx(score("x z"), abs=1e-5)

    loose = RewardModelJudge(RewardModelParams(path=str(tiny_rm), tolerance=1e9), StubTask())
    assert [j.verdict for j in loose.judge(prompts, outputs, references)] == [T, T, INV]


def test_the_rm_id_pins_the_weights(tiny_rm: Path, tmp_path: Path) -> None:
    import shutil

    judge = RewardModelJudge(RewardModelParams(path=str(tiny_rm)), StubTask())
    assert judge.id.startswith(f"reward_model:{tiny_rm.name}@")
    copy = tmp_path / tiny_rm.name
    shutil.copytree(tiny_rm, copy)
    assert RewardModelJudge(RewardModelParams(path=str(copy)), StubTask()).id == judge.id
    config = json.loads((copy / "config.json").read_text())
    config["summary_type"] = "mean"
    (copy / "config.json").write_text(json.dumps(config))
    assert RewardModelJudge(RewardModelParams(path=str(copy)), StubTask()).id != judge.id


def test_the_rm_judge_needs_a_path_and_a_scalar_head(tiny_rm: Path, tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    with pytest.raises(ValueError, match="needs `path`"):
        RewardModelJudge(RewardModelParams(), StubTask())
    with pytest.raises(ValidationError, match=r"\{output\} exactly once"):
        RewardModelParams(path="x", template="{prompt}")
    two = tmp_path / "two"
    config = GPT2Config(vocab_size=600, n_positions=64, n_embd=16, n_layer=1, n_head=2)
    config.num_labels = 2
    GPT2ForSequenceClassification(config).save_pretrained(two)
    tiny_tokenizer().save_pretrained(two)
    judge = RewardModelJudge(RewardModelParams(path=str(two)), StubTask())
    with pytest.raises(ValueError, match="num_labels=2"):
        judge.judge(["p"], [sample("o")], ["r"])
