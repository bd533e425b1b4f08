"""The ROUGE-L judge: the paper's hidden-reference variant, where the reward is ROUGE-L F1 of the
output against the reference summary (Swamy et al. 2025, the ROUGE-L rows; Lin 2004).

The score is `bench.evaluate.rouge.rouge_l`: the `rouge-score` package's English defaults (what the
paper's numbers use), no stemming. The TL;DR task's `labels: rouge` labels its pairs with the same
function.

`output_score` is that F1, so a result line's `mean_reward` (with its CI) is the paper's mean
ROUGE-L. A verdict still has to be a win, loss or tie: the output WINS when its ROUGE-L reaches
`threshold` and LOSES otherwise, so the winrate is the share of outputs at or above the
threshold. An output the task cannot judge (`task.validity`) is INVALID and gets no score. The
reference's own score (1 by definition) is not reported.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import Field

from bench.config import StrictParams
from bench.evaluate.judging import Judgment, Replay, score_text
from bench.evaluate.rouge import rouge_l
from bench.evaluate.verdicts import Verdict
from bench.registry import register_judge
from bench.report.results import ResultLine
from bench.tasks.base import Sample, Task


class RougeParams(StrictParams):
    threshold: float = Field(0.5, ge=0, le=1)
    """An output wins when its ROUGE-L F1 is at least this, loses below it."""


class RougeJudge:
    id = "rouge_l:rouge-score-tokens-nostem"
    version = 1
    worst_score = 0.0
    """ROUGE-L F1 of an output sharing no token with the reference."""

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
            judgments.append(Judgment(rouge_verdict(score, self.params.threshold), score))
        return judgments


def rouge_verdict(score: float | None, threshold: float) -> Verdict:
    """WIN when the ROUGE-L F1 reaches `threshold`, LOSS below it, INVALID when unscored."""
    if score is None:
        return Verdict.INVALID
    return Verdict.WIN if score >= threshold else Verdict.LOSS


def replay_rouge(params: RougeParams, line: ResultLine, task: Callable[[], Task]) -> Replay:
    """The verdicts `line`'s ROUGE-L scores (its rewards) give at the judge's threshold."""
    if line.rewards is None:
        return Replay(missing="it records no rewards, the ROUGE-L scores its verdicts follow from")
    return Replay(
        [
            (
                rouge_verdict(score, params.threshold),
                f"its ROUGE-L {score_text(score)} against the threshold {params.threshold:g}",
            )
            for score in line.rewards
        ]
    )


@register_judge("rouge", config=RougeParams, replay=replay_rouge)
def make_rouge_judge(params: RougeParams, task: Task) -> RougeJudge:
    return RougeJudge(params, task)
