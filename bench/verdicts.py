"""The judge's verdict on one output against its reference, and its score in a winrate."""

from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """Outcome of the policy's output against the reference, from the policy's side."""

    WIN = "W"
    LOSS = "L"
    TIE = "T"
    INVALID = "I"
    """The output (or the judge's answer) could not be judged; counted apart, never a side."""

    @property
    def score(self) -> float | None:
        """1 for a win, 0.5 for a tie, 0 for a loss, None for invalid (excluded from winrates)."""
        return _SCORES[self]


_SCORES = {Verdict.WIN: 1.0, Verdict.TIE: 0.5, Verdict.LOSS: 0.0, Verdict.INVALID: None}


def outcomes_to_string(verdicts: list[Verdict]) -> str:
    """Compact per-prompt record stored in result lines: one letter per prompt, in order."""
    return "".join(v.value for v in verdicts)


def outcomes_from_string(text: str) -> list[Verdict]:
    return [Verdict(letter) for letter in text]
