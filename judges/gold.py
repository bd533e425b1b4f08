"""The gold judge: the task's exact reward decides.

The policy's output wins when its gold reward is higher than the reference's, loses when lower,
ties when equal. An output the task cannot score (unfinished, malformed) is INVALID.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bench.judging import Judgment
from bench.registry import register_judge
from bench.tasks.base import Sample, Task
from bench.verdicts import Verdict


class GoldParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GoldJudge:
    id = "gold"
    version = 1

    def __init__(self, task: Task) -> None:
        if not task.has_gold:
            raise ValueError(
                f"the gold judge needs a task with a gold reward; {task.name!r} has none"
            )
        self.task = task

    def judge(
        self, prompts: list[str], outputs: list[Sample], references: list[str]
    ) -> list[Judgment]:
        valid = self.task.validity(outputs)
        judgments = []
        for prompt, output, reference, is_valid in zip(
            prompts, outputs, references, valid, strict=True
        ):
            reference_score = self.task.gold_reward(prompt, reference)
            output_score = self.task.gold_reward(prompt, output.text) if is_valid else None
            judgments.append(
                Judgment(gold_verdict(output_score, reference_score), output_score, reference_score)
            )
        return judgments


def gold_verdict(output_score: float | None, reference_score: float | None) -> Verdict:
    if output_score is None or reference_score is None:
        return Verdict.INVALID
    if abs(output_score - reference_score) < 1e-9:
        return Verdict.TIE
    return Verdict.WIN if output_score > reference_score else Verdict.LOSS


@register_judge("gold", config=GoldParams)
def make_gold_judge(params: GoldParams, task: Task) -> GoldJudge:
    return GoldJudge(task)
