"""The ROUGE-L judge: the paper's hidden-reference variant, where the reward is ROUGE-L F1 of the
output against the reference summary (Swamy et al. 2025, the ROUGE-L rows; Lin 2004).

The score follows the `rouge-score` package's English defaults (what the paper's numbers use):
text lowercased, every run of characters other than [a-z0-9] replaced by a space, split on
whitespace, no stemming; then LCS-based precision P = LCS / |output|, recall R = LCS / |reference|
and F1 = 2PR / (P + R), 0 when either side has no token.

`output_score` is that F1, so a result line's `mean_reward` (with its CI) is the paper's mean
ROUGE-L. A verdict still has to be a win, loss or tie: the output WINS when its ROUGE-L reaches
`threshold` and LOSES otherwise, so the winrate is the share of outputs at or above the
threshold. An output the task cannot judge (`task.validity`) is INVALID and gets no score. The
reference's own score (1 by definition) is not reported.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from bench.judging import Judgment
from bench.registry import register_judge
from bench.tasks.base import Sample, Task
from bench.verdicts import Verdict

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """`rouge-score`'s tokenizer without stemming: lowercase, [^a-z0-9]+ -> space, split."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists, by dynamic programming
    (O(|a| |b|) time, O(|b|) memory)."""
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b):
            current.append(
                previous[j] + 1 if token_a == token_b else max(previous[j + 1], current[j])
            )
        previous = current
    return previous[-1]


def rouge_l(output: str, reference: str) -> float:
    """ROUGE-L F1 of `output` against `reference`, in [0, 1]."""
    output_tokens, reference_tokens = rouge_tokens(output), rouge_tokens(reference)
    if not output_tokens or not reference_tokens:
        return 0.0
    lcs = lcs_length(output_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(output_tokens)
    recall = lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


class RougeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    threshold: float = Field(0.5, ge=0, le=1)
    """An output wins when its ROUGE-L F1 is at least this, loses below it."""


class RougeJudge:
    id = "rouge_l:rouge-score-tokens-nostem"
    version = 1

    def __init__(self, params: RougeParams, task: Task) -> None:
        self.params = params
        self.task = task

    def judge(
        self, prompts: list[str], outputs: list[Sample], references: list[str]
    ) -> list[Judgment]:
        valid = self.task.validity(outputs)
        judgments = []
        for output, reference, is_valid in zip(outputs, references, valid, strict=True):
            if not is_valid:
                judgments.append(Judgment(Verdict.INVALID))
                continue
            score = rouge_l(output.text, reference)
            verdict = Verdict.WIN if score >= self.params.threshold else Verdict.LOSS
            judgments.append(Judgment(verdict, output_score=score))
        return judgments


@register_judge("rouge", config=RougeParams)
def make_rouge_judge(params: RougeParams, task: Task) -> RougeJudge:
    return RougeJudge(params, task)
