"""The pairwise LLM judge: a chat model behind any OpenAI-compatible endpoint compares the policy's
output with the reference, as the DPO paper's GPT-4 evaluation does (Rafailov et al. 2023, App. C).

For each eval prompt the judge renders a prompt template (a file in `judges/prompts/`) with the
task's prompt and the two outputs as "A" and "B", and asks the endpoint for an answer.

- **Both orders** (default): the policy's output is A in one request and B in the other, so the
  judge's position bias cancels. Two orders that agree give that verdict; two that disagree give
  a tie, or a failed judgment with `on_disagreement: invalid`. With `both_orders: false` one
  order is drawn per item from the hash of its texts (the paper's randomised order, reproducible).
- **Strict verdicts** (`parse_answer`): the answer is exactly `A` or `B`, or its last non-empty
  line is `Preferred: A` or `Preferred: B` (the letter may be in double quotes) and no other line
  starts with `Preferred:`. Anything else is FAILED (the judge's failure: counted, left out of
  every winrate, never a side). With `use_logprobs`, the letter is read from the top log-probs
  at the verdict's position when the endpoint returns them.
- An item whose output the task cannot judge (`task.validity`: unfinished, malformed) is INVALID
  without a request (a loss in the headline winrate). An item with a failed order is FAILED.
- **Cache** (`bench.evaluate.judge_cache`): every answer is written to SQLite as it arrives, keyed
  by the judge's configuration hash, the rendered texts and the order; a rerun sends only what is
  missing, and a run that dies keeps what it got.
- **Requests**: at most `max_in_flight` at once; 429, 408, 409, 5xx, timeouts and connection
  errors are retried up to `max_retries` times with exponential backoff and jitter
  (`backoff_delay`), by this module's own loop (the client's retries are off), and counted.
- **Cost**: the endpoint's token counts, summed per run, priced with `pricing` (`stats()`).
- **The key**: read from the environment variable *named* by `api_key_env` when the first request
  is about to go out (a fully cached rerun needs none); never logged, stored, hashed or shown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from bench.config import StrictParams
from bench.evaluate.judge_cache import CachedAnswer, JudgeCache, answer_key, default_path
from bench.evaluate.judging import JudgeError, Judgment, Replay
from bench.evaluate.verdicts import Verdict
from bench.registry import register_judge
from bench.report.results import ResultLine
from bench.run.cache import Cache
from bench.run.hashing import content_hash, short
from bench.tasks.base import Sample, Task

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
PLACEHOLDERS = ("prompt", "output_a", "output_b")
TOP_LOGPROBS = 5
"""Candidates asked per answer token when `use_logprobs` is on."""

MAX_RECORDED_DELAYS = 100
"""Retry delays kept one by one in `stats()`, so that a storm of 429s cannot bloat a result."""
RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Retried besides every 5xx: timeout, conflict (lock contention at some providers), rate limit."""


def known_prompts() -> list[str]:
    return sorted(p.name for p in PROMPTS_DIR.glob("*.txt"))


class Pricing(StrictParams):
    """Price of the endpoint's tokens, in any currency unit (USD for the hosted APIs)."""

    input_per_1m: float = Field(ge=0)
    """Price of 1M prompt (input) tokens."""
    output_per_1m: float = Field(ge=0)
    """Price of 1M completion (output) tokens."""

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_1m + output_tokens * self.output_per_1m) / 1e6


class LlmPairwiseParams(StrictParams):
    """The YAML `judge.params` of `kind: llm_pairwise`."""

    base_url: str = "https://api.openai.com/v1"
    """The OpenAI-compatible endpoint, up to and including `/v1`."""
    model: str = "gpt-4o"
    """The model name the endpoint knows."""
    api_key_env: str | None = "OPENAI_API_KEY"
    """The NAME of the environment variable that holds the API key (never the key itself);
    null for an endpoint that needs none, such as a local vLLM server."""
    prompt: str = "tldr_dpo.txt"
    """The prompt template, a file name in judges/prompts/ with the placeholders {prompt},
    {output_a} and {output_b} once each."""
    both_orders: bool = True
    """Judge (policy, reference) as (A, B) and again as (B, A)."""
    on_disagreement: Literal["tie", "invalid"] = "tie"
    """What two orders that disagree count as."""
    max_in_flight: int = Field(8, ge=1, le=512)
    """Requests in flight at once."""
    max_retries: int = Field(6, ge=0)
    """Retries of one request after a 429, 408, 409, 5xx, timeout or connection error."""
    backoff_s: float = Field(1.0, gt=0)
    """Mean scale of the first retry's delay; it doubles with every retry."""
    max_backoff_s: float = Field(60.0, gt=0)
    """Cap on one delay (a Retry-After header is honoured up to it)."""
    timeout_s: float = Field(120.0, gt=0)
    """Timeout of one request."""
    temperature: float = Field(0.0, ge=0)
    """Sampling temperature of the judge; 0 makes its answers (nearly) deterministic."""
    max_tokens: int = Field(256, ge=1)
    """Answer length limit; an answer cut off before its verdict is FAILED."""
    use_logprobs: bool = False
    """Ask for the top log-probs and read the A/B verdict from them where the endpoint gives
    them."""
    extra_body: dict[str, Any] | None = None
    """Extra request fields for this endpoint, e.g. vLLM's
    {structured_outputs: {choice: [A, B]}} to force a one-letter answer."""
    pricing: Pricing | None = None
    """Token prices, for the run's cost; null: tokens are counted, cost is not."""

    @field_validator("prompt")
    @classmethod
    def _prompt_is_a_known_file(cls, name: str) -> str:
        known = known_prompts()
        if name not in known:
            raise ValueError(
                f"unknown prompt template {name!r}; files in judges/prompts/: {', '.join(known)}"
            )
        return name


# --- prompts and answers (pure) -------------------------------------------------------------------


def load_template(name: str) -> str:
    """The template's text (its final newline dropped), checked to hold each placeholder once."""
    text = (PROMPTS_DIR / name).read_text(encoding="utf-8").removesuffix("\n")
    for placeholder in PLACEHOLDERS:
        count = text.count("{" + placeholder + "}")
        if count != 1:
            raise ValueError(
                f"prompt template judges/prompts/{name} must hold {{{placeholder}}} exactly once, "
                f"found {count}"
            )
    return text


_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def render(template: str, prompt: str, output_a: str, output_b: str) -> str:
    """Fill the placeholders in one pass, so that braces inside the texts are never filled."""
    values = {"prompt": prompt, "output_a": output_a, "output_b": output_b}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


_LETTER_ONLY = re.compile(r"\s*([AB])\s*")
_PREFERRED_LINE = re.compile(r'[ \t]*Preferred:[ \t]*("?)([AB])\1[ \t]*')


@dataclass(frozen=True)
class ParsedAnswer:
    letter: Literal["A", "B"]
    offset: int
    """Index of the letter in the answer text (to find its token among the log-probs)."""


def parse_answer(answer: str) -> ParsedAnswer | None:
    """The preferred letter of a judge's answer, or None when the answer breaks the grammar.

    The grammar: the whole answer is `A` or `B` (surrounding whitespace allowed); or its last
    non-empty line is `Preferred: X` with X one of A, B, optionally in double quotes, with
    nothing else on that line, and no other line starts with `Preferred:`. Case matters.
    """
    whole = _LETTER_ONLY.fullmatch(answer)
    if whole:
        return ParsedAnswer(whole.group(1), whole.start(1))  # type: ignore[arg-type]
    lines = answer.split("\n")
    non_empty = [i for i, line in enumerate(lines) if line.strip()]
    if not non_empty:
        return None
    last = non_empty[-1]
    if any(lines[i].lstrip().startswith("Preferred:") for i in non_empty[:-1]):
        return None
    match = _PREFERRED_LINE.fullmatch(lines[last].rstrip("\r"))
    if not match:
        return None
    line_start = sum(len(line) + 1 for line in lines[:last])
    return ParsedAnswer(match.group(2), line_start + match.start(2))  # type: ignore[arg-type]


def letter_from_logprobs(logprobs: list[Any] | None, offset: int) -> Literal["A", "B"] | None:
    """The likelier of A and B among the top log-probs of the token holding character `offset`.

    `logprobs` is `[[token, [[candidate, logprob], ...]], ...]` over the answer's tokens, whose
    texts concatenate to the answer. Candidates count as a letter when they are one after
    stripping whitespace and double quotes (" A", "A", "\\"A"). None when the tokens do not line up
    with the answer or neither letter is among the candidates.
    """
    if not logprobs:
        return None
    position = 0
    for token, candidates in logprobs:
        if position <= offset < position + len(token):
            best: dict[str, float] = {}
            for candidate, logprob in candidates:
                letter = candidate.strip().strip('"')
                if letter in ("A", "B") and logprob > best.get(letter, float("-inf")):
                    best[letter] = logprob
            if not best:
                return None
            return max(best, key=best.__getitem__)  # type: ignore[return-value]
        position += len(token)
    return None


# --- orders (pure) ------------------------------------------------------------------------------


class Order(str, Enum):
    """Which side of the comparison the policy's output takes."""

    POLICY_FIRST = "policy_first"
    """The policy's output is A, the reference B."""
    REFERENCE_FIRST = "reference_first"


def order_verdict(letter: str | None, order: Order) -> Verdict:
    """One request's verdict from the policy's side: WIN when the judge preferred its letter."""
    if letter is None:
        return Verdict.FAILED
    policy_letter = "A" if order is Order.POLICY_FIRST else "B"
    return Verdict.WIN if letter == policy_letter else Verdict.LOSS


def combine_orders(verdicts: list[Verdict], on_disagreement: Literal["tie", "invalid"]) -> Verdict:
    """One item's verdict from its orders' verdicts.

    Any order without a verdict makes the item FAILED (the judge's failure, not the policy's);
    orders that agree give their verdict; orders that disagree (the judge followed the position,
    not the content) give TIE or, with `on_disagreement: invalid`, FAILED.
    """
    if not verdicts or Verdict.FAILED in verdicts:
        return Verdict.FAILED
    if len(set(verdicts)) == 1:
        return verdicts[0]
    return Verdict.TIE if on_disagreement == "tie" else Verdict.FAILED


ANSWER_ORDERS = (Order.POLICY_FIRST, Order.REFERENCE_FIRST)
"""The orders of the two characters of an item's answers (`ResultLine.order_answers`)."""
NO_VERDICT = "?"
"""An answer's character when the answer held no verdict (malformed, ungrammatical)."""
NOT_ASKED = "-"
"""An order's character when it was not asked (one order per item with `both_orders: false`)."""


def order_answers(letters: dict[Order, str | None]) -> str:
    """The two-character record of an item's answers: (policy first, reference first)."""
    return "".join(
        NOT_ASKED if order not in letters else letters[order] or NO_VERDICT
        for order in ANSWER_ORDERS
    )


def answer_verdicts(answers: str) -> list[Verdict]:
    """The verdict of each asked order of an item, from its two-character answers."""
    return [
        order_verdict(None if letter == NO_VERDICT else letter, order)
        for letter, order in zip(answers, ANSWER_ORDERS, strict=True)
        if letter != NOT_ASKED
    ]


def answers_verdict(answers: str, on_disagreement: Literal["tie", "invalid"]) -> Verdict:
    """An item's verdict from its answers: `combine_orders` of `answer_verdicts`.

    The one rule from the judge's answers to an outcome: the judge applies it, and
    `pftbench submit` applies it to a result line's `order_answers`.
    """
    return combine_orders(answer_verdicts(answers), on_disagreement)


def replay_llm_pairwise(
    params: LlmPairwiseParams, line: ResultLine, task: Callable[[], Task]
) -> Replay:
    """The verdicts `line`'s recorded answers give (`answers_verdict`); an item without answers
    (an output not judged) is INVALID. With `both_orders`, an item must answer both orders."""
    if line.order_answers is None:
        return Replay(
            missing="it records no order_answers, the judge's answers in both orders its "
            "verdicts follow from"
        )
    verdicts, problems = [], []
    for index, answers in enumerate(line.order_answers):
        if answers is None:
            verdicts.append((Verdict.INVALID, "its output was not judged (an invalid output)"))
            continue
        if len(answers) != 2 or any(c not in f"AB{NO_VERDICT}{NOT_ASKED}" for c in answers):
            problems.append(
                f"the answers of prompt {index} are {answers!r}, not two of A, B, "
                f"{NO_VERDICT}, {NOT_ASKED}"
            )
            verdicts.append((Verdict.FAILED, f"its answers {answers!r} are unreadable"))
            continue
        if params.both_orders and NOT_ASKED in answers:
            problems.append(
                f"the answers of prompt {index} are {answers!r}, but the judge asks both orders"
            )
        verdicts.append(
            (
                answers_verdict(answers, params.on_disagreement),
                f"the judge answered {answers!r} (policy first, reference first)",
            )
        )
    return Replay(verdicts, problems)


def single_order(prompt: str, output: str, reference: str) -> Order:
    """The order of an item judged once: drawn from its texts' hash, so a rerun draws the same."""
    digest = hashlib.sha256("\x00".join((prompt, output, reference)).encode("utf-8")).digest()
    return Order.POLICY_FIRST if digest[0] % 2 == 0 else Order.REFERENCE_FIRST


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (0 for the first): exponential with "equal jitter".

    With d = min(cap, base * 2^attempt) the delay is uniform in [d/2, d]. The jitter spreads
    clients that failed together; below the cap, retry k+1's lowest delay (d) is retry k's
    highest, so the delays never shrink from one retry to the next.
    """
    ceiling = min(cap_s, base_s * 2.0**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


# --- the judge ----------------------------------------------------------------------------------


class JudgeRequestError(JudgeError):
    """A request failed for good (retries exhausted, or an error no retry can fix)."""


class _Stopped(Exception):
    """A request given up unanswered because the run stopped (another request failed)."""


class MissingApiKeyError(JudgeError):
    """The environment variable named by `api_key_env` is not set."""


@dataclass
class RunStats:
    """What one judge object did, summed over its `judge` calls."""

    n_items: int = 0
    n_skipped_invalid_outputs: int = 0
    """Items whose output the task could not judge: INVALID without a request."""
    n_answers_needed: int = 0
    n_cached: int = 0
    """Answers read from the SQLite cache instead of being asked for."""
    n_sent: int = 0
    """Answers received this run (each request that finally succeeded counts once)."""
    n_retries: int = 0
    backoff_total_s: float = 0.0
    """Seconds spent waiting between retries, summed over requests (they overlap in time)."""
    retry_delays_s: list[float] = field(default_factory=list)
    """The delays drawn, in order (the first MAX_RECORDED_DELAYS only)."""
    n_failed_requests: int = 0
    """Requests that failed for good (the run then stops with JudgeRequestError)."""
    n_malformed_responses: int = 0
    """Replies that were not a chat completion: FAILED, not cached (a rerun asks again)."""
    n_unparsed_answers: int = 0
    """Answers (fresh or cached) that broke the verdict grammar: FAILED."""
    n_logprob_verdicts: int = 0
    """Answers whose letter was read from the log-probs."""
    n_disagreements: int = 0
    """Items whose two orders disagreed (counted as `on_disagreement` says)."""
    input_tokens: int = 0
    output_tokens: int = 0
    """Tokens of the requests sent this run."""
    input_tokens_total: int = 0
    output_tokens_total: int = 0
    """Tokens of every answer used, cached ones included: what the judgments cost to make."""
    cost: float | None = None
    cost_total: float | None = None
    """Priced tokens (this run / all answers used), when `pricing` is set."""


@dataclass(frozen=True)
class _Request:
    key: str
    text: str


class LlmPairwiseJudge:
    """`judge()` over an OpenAI-compatible endpoint; see the module docstring."""

    version = 1
    worst_score = None
    """A pairwise judge scores no output."""

    def __init__(
        self,
        params: LlmPairwiseParams,
        task: Task,
        cache: JudgeCache,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.params = params
        self.task = task
        self.cache = cache
        self.template = load_template(params.prompt)
        self._rng = rng or random.Random()
        self._client: Any = None
        self._stats = RunStats()
        self._stats_lock = threading.Lock()

    @property
    def id(self) -> str:
        template_hash = hashlib.sha256(self.template.encode("utf-8")).hexdigest()
        return f"llm_pairwise:{self.params.model}:{self.params.prompt}@{short(template_hash)}"

    @property
    def judge_hash(self) -> str:
        """Hash of what decides an answer: endpoint, model, template text, decoding settings."""
        p = self.params
        return content_hash(
            {
                "v": self.version,
                "base_url": p.base_url,
                "model": p.model,
                "template": self.template,
                "temperature": p.temperature,
                "max_tokens": p.max_tokens,
                "logprobs": p.use_logprobs,
                "extra_body": p.extra_body,
            }
        )

    def stats(self) -> dict[str, Any]:
        """Counts, tokens and cost of this judge's requests so far (plain JSON types)."""
        with self._stats_lock:
            stats = asdict(self._stats)
        if self.params.pricing is not None:
            stats["cost"] = self.params.pricing.cost(stats["input_tokens"], stats["output_tokens"])
            stats["cost_total"] = self.params.pricing.cost(
                stats["input_tokens_total"], stats["output_tokens_total"]
            )
        return stats

    # -- judging ---------------------------------------------------------------------------------
    def judge(
        self, prompts: list[str], outputs: list[Sample], references: list[str]
    ) -> list[Judgment]:
        if not len(prompts) == len(outputs) == len(references):
            raise ValueError(
                f"judge: {len(prompts)} prompts, {len(outputs)} outputs, "
                f"{len(references)} references"
            )
        valid = self.task.validity(outputs)
        judge_hash = self.judge_hash
        plans: list[list[tuple[Order, str]] | None] = []
        requests: dict[str, _Request] = {}
        for prompt, output, reference, is_valid in zip(
            prompts, outputs, references, valid, strict=True
        ):
            if not is_valid:
                plans.append(None)
                continue
            orders = (
                [Order.POLICY_FIRST, Order.REFERENCE_FIRST]
                if self.params.both_orders
                else [single_order(prompt, output.text, reference)]
            )
            plan = []
            for order in orders:
                a, b = (
                    (output.text, reference)
                    if order is Order.POLICY_FIRST
                    else (reference, output.text)
                )
                key = answer_key(judge_hash, prompt, a, b, order.value)
                requests.setdefault(key, _Request(key, render(self.template, prompt, a, b)))
                plan.append((order, key))
            plans.append(plan)

        answers = self.cache.get_many(requests)
        with self._stats_lock:
            s = self._stats
            s.n_items += len(prompts)
            s.n_skipped_invalid_outputs += sum(plan is None for plan in plans)
            s.n_answers_needed += len(requests)
            s.n_cached += len(answers)
            for cached in answers.values():
                s.input_tokens_total += cached.input_tokens
                s.output_tokens_total += cached.output_tokens
        missing = [r for key, r in requests.items() if key not in answers]
        if missing:
            answers.update(self._ask(missing, judge_hash))

        judgments = []
        for plan in plans:
            if plan is None:
                judgments.append(Judgment(Verdict.INVALID))
                continue
            answered = order_answers({order: self._letter(answers.get(key)) for order, key in plan})
            verdicts = answer_verdicts(answered)
            if Verdict.FAILED not in verdicts and len(set(verdicts)) > 1:
                with self._stats_lock:
                    self._stats.n_disagreements += 1
            verdict = answers_verdict(answered, self.params.on_disagreement)
            judgments.append(Judgment(verdict, order_answers=answered))
        return judgments

    def _letter(self, answer: CachedAnswer | None) -> str | None:
        """The verdict letter of one answer (None: malformed reply or ungrammatical answer)."""
        if answer is None:
            return None
        parsed = parse_answer(answer.answer)
        if parsed is None:
            with self._stats_lock:
                self._stats.n_unparsed_answers += 1
            return None
        if self.params.use_logprobs:
            letter = letter_from_logprobs(answer.logprobs, parsed.offset)
            if letter is not None:
                with self._stats_lock:
                    self._stats.n_logprob_verdicts += 1
                return letter
        return parsed.letter

    # -- requests --------------------------------------------------------------------------------
    def _ask(self, missing: list[_Request], judge_hash: str) -> dict[str, CachedAnswer]:
        """Ask for every missing answer, `max_in_flight` at a time; store each as it arrives.

        Malformed replies are left out of the result (their items become FAILED) and out of the
        cache. The first request that fails for good stops the run: nothing new is sent, the
        requests in flight are waited for (their answers are stored too), then it raises.
        """
        client = self._get_client()
        received: dict[str, CachedAnswer] = {}
        failure: BaseException | None = None
        stop = threading.Event()  # set when the run stops: workers then send nothing new
        with ThreadPoolExecutor(
            max_workers=self.params.max_in_flight, thread_name_prefix="llm-judge"
        ) as pool:
            pending: set[Future] = {pool.submit(self._request, client, r, stop) for r in missing}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        if future.cancelled():
                            continue
                        error = future.exception()
                        if isinstance(error, _Stopped):
                            continue
                        if error is not None:
                            failure = failure or error
                            continue
                        request, answer = future.result()
                        if answer is not None:
                            self.cache.put(request.key, judge_hash, answer)
                            received[request.key] = answer
                    if failure is not None:
                        stop.set()
                        for future in pending:
                            future.cancel()
            except BaseException:
                # Ctrl-C: send nothing new; the answers already stored stay stored.
                stop.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        if failure is not None:
            n_left = len(missing) - len(received)
            raise JudgeRequestError(
                f"llm_pairwise judge: {failure} -- {len(received)} new answers were stored in "
                f"{self.cache.path} before the run stopped ({n_left} of {len(missing)} still "
                "missing); run again to ask only for those"
            ) from failure
        return received

    def _request(
        self, client: Any, request: _Request, stop: threading.Event
    ) -> tuple[_Request, CachedAnswer | None]:
        """One chat completion with this module's retry loop; runs in a worker thread.

        Raises JudgeRequestError when the request fails for good (and sets `stop`), _Stopped when
        the run stopped before this request could be answered.
        """
        import openai

        p = self.params
        options: dict[str, Any] = {
            "model": p.model,
            "messages": [{"role": "user", "content": request.text}],
            "temperature": p.temperature,
            "max_tokens": p.max_tokens,
        }
        if p.use_logprobs:
            options["logprobs"] = True
            options["top_logprobs"] = TOP_LOGPROBS
        if p.extra_body:
            options["extra_body"] = p.extra_body
        for attempt in range(p.max_retries + 1):
            if stop.is_set():
                raise _Stopped
            try:
                completion = client.chat.completions.create(**options)
            except (openai.APIResponseValidationError, json.JSONDecodeError):
                completion = None  # a 200 whose body is not a chat completion: malformed
            except (openai.APIConnectionError, openai.APIStatusError) as error:
                status = getattr(error, "status_code", None)
                retryable = status is None or status in RETRYABLE_STATUS or status >= 500
                what = _describe(error, p.base_url, client.api_key)
                if not retryable or attempt == p.max_retries:
                    with self._stats_lock:
                        self._stats.n_failed_requests += 1
                    tries = f" after {attempt + 1} attempts" if retryable else ""
                    stop.set()
                    raise JudgeRequestError(f"{what}{tries}") from None
                delay = backoff_delay(attempt, p.backoff_s, p.max_backoff_s, self._rng)
                retry_after = _retry_after_s(error)
                if retry_after is not None:
                    delay = min(p.max_backoff_s, max(delay, retry_after))
                with self._stats_lock:
                    self._stats.n_retries += 1
                    self._stats.backoff_total_s += delay
                    if len(self._stats.retry_delays_s) < MAX_RECORDED_DELAYS:
                        self._stats.retry_delays_s.append(round(delay, 4))
                log.warning("%s; retry %d in %.2f s", what, attempt + 1, delay)
                stop.wait(delay)  # sleeps, but wakes up when the run stops
                continue
            answer = _read_completion(completion, p.use_logprobs)
            with self._stats_lock:
                if answer is None:
                    self._stats.n_malformed_responses += 1
                else:
                    self._stats.n_sent += 1
                    self._stats.input_tokens += answer.input_tokens
                    self._stats.output_tokens += answer.output_tokens
                    self._stats.input_tokens_total += answer.input_tokens
                    self._stats.output_tokens_total += answer.output_tokens
            return request, answer
        raise AssertionError("unreachable: the loop returns or raises")

    def _get_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.params.base_url,
                api_key=self._api_key(),
                timeout=self.params.timeout_s,
                max_retries=0,  # retries are ours: counted, tested, with jitter
            )
        return self._client

    def _api_key(self) -> str:
        name = self.params.api_key_env
        if name is None:
            # The client insists on a string; an endpoint that needs no key ignores it.
            return "no-key"
        value = os.environ.get(name)
        if not value:
            raise MissingApiKeyError(
                f"llm_pairwise judge: the environment variable {name} is not set; it should hold "
                f"the API key for {self.params.base_url} (set it, or give `api_key_env: null` "
                "for an endpoint that needs no key)"
            )
        return value


def _read_completion(completion: Any, with_logprobs: bool) -> CachedAnswer | None:
    """The answer of a chat completion, or None when the reply is not a well-formed one."""
    try:
        choice = completion.choices[0]
        text = choice.message.content
        usage = completion.usage
        input_tokens = int(usage.prompt_tokens) if usage else 0
        output_tokens = int(usage.completion_tokens) if usage else 0
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    if not isinstance(text, str):
        return None
    logprobs = None
    if with_logprobs and getattr(choice, "logprobs", None) and choice.logprobs.content:
        logprobs = [
            [item.token, [[top.token, top.logprob] for top in item.top_logprobs or []]]
            for item in choice.logprobs.content
        ]
    return CachedAnswer(text, logprobs, input_tokens, output_tokens)


def _describe(error: Exception, base_url: str, secret: str | None) -> str:
    """One line naming what went wrong, with the server's own message where it is safe.

    Never the request headers; for 401/403 not even the body (some APIs echo a masked key
    there); and the key's value, should a server echo it, is blanked out.
    """
    status = getattr(error, "status_code", None)
    kind = type(error).__name__
    if status is None:
        return f"{kind} talking to {base_url}"
    if status in (401, 403):
        return f"{base_url} refused the API key ({status} {kind})"
    message = str(getattr(error, "message", "") or "")
    if secret:
        message = message.replace(secret, "***")
    message = " ".join(message.split())[:200]
    return (
        f"{base_url} answered {status} ({kind}: {message})"
        if message
        else (f"{base_url} answered {status} ({kind})")
    )


def _retry_after_s(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from these APIs; the backoff alone will do


@register_judge("llm_pairwise", config=LlmPairwiseParams, replay=replay_llm_pairwise)
def make_llm_pairwise_judge(
    params: LlmPairwiseParams, task: Task, *, cache_root: Path | None = None
) -> LlmPairwiseJudge:
    """The judge, with its answers cached under `cache_root` (the pftbench cache by default)."""
    root = cache_root if cache_root is not None else Cache.default().root
    return LlmPairwiseJudge(params, task, JudgeCache(default_path(root)))
