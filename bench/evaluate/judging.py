"""The judge interface: one verdict per (prompt, output, reference), from the output's side.

Judges are built by `@register_judge(kind, config=Params, replay=...)` factories
`fn(params, task) -> Judge`. A verdict the judge could not reach is `Verdict.INVALID`, counted
apart, never a side.

A judge's `replay(params, line, task) -> Replay` recomputes every prompt's verdict from what a
result line records (its rewards and the reference's, or the answers of both orders) with the
same rule the judge applies, so that `pftbench submit` can refuse outcomes that do not follow
from the record (`bench.report.integrity.outcome_problems`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.evaluate.verdicts import Verdict
from bench.tasks.base import Sample, Task

if TYPE_CHECKING:
    from bench.registry import Entry


@dataclass(frozen=True)
class Judgment:
    verdict: Verdict
    output_score: float | None = None
    """The judge's score of the output, when it gives one (the gold reward, an RM score)."""
    reference_score: float | None = None
    order_answers: str | None = None
    """Pairwise judges: the answer in each order (see `ResultLine.order_answers`)."""


@dataclass(frozen=True)
class Replay:
    """A judge's verdicts recomputed from what a result line records per prompt."""

    verdicts: list[tuple[Verdict, str]] = field(default_factory=list)
    """Per prompt, in order: the verdict the judge's rule gives, and the recorded values it
    follows from in words ("its reward 0.4 is below the reference's 1.1")."""
    problems: list[str] = field(default_factory=list)
    """Recorded values that contradict what can be recomputed here (a reference's reward that
    is not the task's gold reward of it)."""
    missing: str | None = None
    """Why nothing could be recomputed (the line lacks a field the rule needs); verdicts empty."""


def score_text(score: float | None) -> str:
    """A recorded score as a message shows it: shortest form, or "none"."""
    return "none" if score is None else f"{score:g}"


def versus_reference(score: float | None, reference_score: float | None) -> str:
    """The recorded scores a score-based verdict follows from, in words."""
    if score is None:
        return "its output has no reward (an invalid output)"
    if reference_score is None:
        return f"its reward {score:g} has no reference reward to compare with"
    relation = (
        "above" if score > reference_score else "below" if score < reference_score else "equal to"
    )
    return f"its reward {score:g} is {relation} the reference's {reference_score:g}"


class Judge(Protocol):
    id: str
    """Names the judge and what pins it (the model, the prompt file): shown next to every number."""
    version: int
    """Bumped whenever the judge's verdicts could change for the same inputs."""
    worst_score: float | None
    """The lowest score the judge can give a valid output (the task's lowest gold reward, 0 for
    ROUGE-L), at which an invalid output counts in the mean reward; None when there is none (a
    reward model's scores are unbounded). Optional: a judge without it has None."""

    def judge(
        self, prompts: list[str], outputs: list[Sample], references: list[str]
    ) -> list[Judgment]: ...


def worst_score(judge: Judge) -> float | None:
    """The judge's `worst_score`, None for a judge that does not declare one."""
    value = getattr(judge, "worst_score", None)
    return None if value is None else float(value)


def judge_stats(judge: Judge) -> dict[str, Any]:
    """What a judge reports about its run (requests, retries, tokens, cost), or {} when it
    keeps no such record. Judges that call a paid endpoint (`llm_pairwise`) define `stats()`;
    the runner stores the result beside the verdicts."""
    stats = getattr(judge, "stats", None)
    return dict(stats()) if callable(stats) else {}


class JudgeError(RuntimeError):
    """A judge could not finish (its endpoint failed for good, its API key is not set); the
    message says why and what to do. What it had judged is kept in its own cache."""


def build_judge(entry: Entry, params: Any, task: Task, *, cache_root: Path | None = None) -> Judge:
    """Call a registered judge factory. Factories that keep a cache of their own (the LLM judge's
    SQLite answers) take a keyword `cache_root` and get the run's cache root; the others don't."""
    if cache_root is not None and "cache_root" in inspect.signature(entry.fn).parameters:
        return entry.fn(params, task, cache_root=cache_root)
    return entry.fn(params, task)
