"""The judge's verdict on one output against its reference, and its score in a winrate.

Two kinds of "no verdict" are kept apart, because they are different parties' fault:

- INVALID (``I``): the *policy's* output cannot be judged (unfinished, malformed). It counts
  as a loss in the headline winrate, so that a policy cannot gain by failing on hard prompts,
  and it is left out of the secondary valid-only winrate.
- FAILED (``F``): the *judge* could not reach a verdict on a valid output (an unreadable
  answer, orders that disagree under ``on_disagreement: invalid``). The policy is not to blame:
  the prompt is left out of every winrate and counted apart.
"""

from __future__ import annotations

from enum import Enum


class Verdict(str, Enum):
    """Outcome of the policy's output against the reference, from the policy's side."""

    WIN = "W"
    LOSS = "L"
    TIE = "T"
    INVALID = "I"
    """The policy's output could not be judged (unfinished, malformed): a loss in the headline
    winrate, left out of the valid-only one."""
    FAILED = "F"
    """The judge failed on a valid output: left out of every winrate, counted apart."""

    @property
    def score(self) -> float | None:
        """Headline score: 1 for a win, 0.5 for a tie, 0 for a loss or an invalid output, None
        for a failed judgment (left out)."""
        return _SCORES[self]

    @property
    def valid_score(self) -> float | None:
        """Score in the valid-only winrate: as `score`, but None for an invalid output too."""
        return None if self is Verdict.INVALID else _SCORES[self]


_SCORES = {
    Verdict.WIN: 1.0,
    Verdict.TIE: 0.5,
    Verdict.LOSS: 0.0,
    Verdict.INVALID: 0.0,
    Verdict.FAILED: None,
}


def outcomes_to_string(verdicts: list[Verdict]) -> str:
    """Compact per-prompt record stored in result lines: one letter per prompt, in order."""
    return "".join(v.value for v in verdicts)


def outcomes_from_string(text: str) -> list[Verdict]:
    return [Verdict(letter) for letter in text]
