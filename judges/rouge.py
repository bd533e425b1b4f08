"""The ROUGE-L judge: the paper's hidden-reference variant, where the reward is ROUGE-L F1 of the
output against the reference summary (Swamy et al. 2025, the ROUGE-L rows; Lin 2004).

The score is `bench.rouge.rouge_l`: the `rouge-score` package's English defaults (what the paper's
numbers use), no stemming. The TL;DR task's `labels: rouge` labels its pairs with the same function.

`output_score` is that F1, so a result line's `mean_reward` (with its CI) is the paper's mean
ROUGE-L. A verdict still has to be a win, loss or tie: the output WINS when its ROUGE-L reaches
`threshold` and LOSES otherwise, so the winrate is the share of outputs at or above the
threshold. An output the task cannot judge (`task.validity`) is INVALID and gets no score. The
reference's own score (1 by definition) is not reported.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bench.judging import Judgment
from bench.registry import register_judge
from bench.rouge import rouge_l
from bench.tasks.base import Sample, Task
from bench.verdicts import Verdict


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
