"""The judge interface: one verdict per (prompt, output, reference), from the output's side.

Judges are built by `@register_judge(kind, config=Params)` factories `fn(params, task) -> Judge`.
A verdict the judge could not reach is `Verdict.INVALID`, counted apart, never a side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bench.tasks.base import Sample
from bench.verdicts import Verdict


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
