"""The judge interface: one verdict per (prompt, output, reference), from the output's side.

Judges are built by `@register_judge(kind, config=Params)` factories `fn(params, task) -> Judge`.
A verdict the judge could not reach is `Verdict.INVALID`, counted apart, never a side.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.tasks.base import Sample, Task
from bench.verdicts import Verdict

if TYPE_CHECKING:
    from bench.registry import Entry


@dataclass(frozen=True)
class Judgment:
    verdict: Verdict
    output_score: float | None = None
    """The judge's score of the output, when it gives one (the gold reward, an RM score)."""
    reference_score: float | None = None


class Judge(Protocol):
    id: str
    """Names the judge and what pins it (the model, the prompt file): shown next to every number."""
    version: int
    """Bumped whenever the judge's verdicts could change for the same inputs."""

    def judge(
        self, prompts: list[str], outputs: list[Sample], references: list[str]
    ) -> list[Judgment]: ...


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
