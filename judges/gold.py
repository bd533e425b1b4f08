"""The gold judge: the task's exact reward decides.

The policy's output wins when its gold reward is higher than the reference's, loses when lower,
ties when equal. An output the task cannot score (unfinished, malformed) is INVALID.

`replay_gold` checks a result line against this rule: the reference's gold reward is recomputed
from the task (deterministic given the task config the line records; for `keywords`, 500
references take milliseconds), compared with the line's `reference_rewards` where it has them,
and each recorded reward is set against it with `gold_verdict`.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.config import StrictParams, TaskNeed
from bench.evaluate.judging import Judgment, Replay, score_text, versus_reference
from bench.evaluate.verdicts import Verdict
from bench.registry import register_judge
from bench.report.results import ResultLine
from bench.tasks.base import Sample, Task


class GoldParams(StrictParams):
    """The gold judge takes no parameters; it asks the task for its exact gold reward."""

    def task_needs(self) -> list[TaskNeed]:
        return [((), "has_gold")]


class GoldJudge:
    id = "gold"
    version = 1

    def __init__(self, task: Task) -> None:
        if not task.has_gold:
            raise ValueError(
                f"the gold judge needs a task with a gold reward; {task.name!r} has none"
            )
        self.task = task
        self.worst_score = task.worst_gold_reward()

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
    """WIN above the reference's gold reward, LOSS below, TIE within 1e-9; INVALID unscored."""
    if output_score is None or reference_score is None:
        return Verdict.INVALID
    if abs(output_score - reference_score) < 1e-9:
        return Verdict.TIE
    return Verdict.WIN if output_score > reference_score else Verdict.LOSS


def replay_gold(params: GoldParams, line: ResultLine, task: Callable[[], Task]) -> Replay:
    """The gold verdicts of `line`'s rewards against the task's gold rewards of the references."""
    if line.rewards is None:
        return Replay(missing="it records no rewards, the gold rewards its verdicts follow from")
    built = task()
    examples = built.examples("eval", len(line.outcomes))
    references = [built.gold_reward(e.prompt, e.reference) for e in examples]
    problems = [
        f"the reference reward of prompt {index} is {score_text(stated)}, but the task's gold "
        f"reward of that reference is {score_text(recomputed)}"
        for index, (stated, recomputed) in enumerate(
            zip(line.reference_rewards or [], references, strict=False)
        )
        if stated is None or recomputed is None or abs(stated - recomputed) > 1e-9
    ]
    verdicts = [
        (gold_verdict(reward, reference), versus_reference(reward, reference))
        for reward, reference in zip(line.rewards, references, strict=True)
    ]
    return Replay(verdicts, problems)


@register_judge("gold", config=GoldParams, replay=replay_gold)
def make_gold_judge(params: GoldParams, task: Task) -> GoldJudge:
    return GoldJudge(task)
