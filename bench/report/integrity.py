"""Is a result line self-consistent? Its numbers and verdicts recomputed from its own records.

A result line states numbers (winrate, its CI, mean reward, its CI) and the per-prompt data they
come from (`outcomes`, `rewards`). Both `pftbench submit` (a bundle line) and `pftbench check`
(a committed line, before a fresh rerun is compared with it) ask this module whether the numbers
are what the data gives, with the very function the runner wrote them with
(`bench.report.summary.line_numbers`), so a recomputation of an honest line gives back exactly its
numbers. The counts (wins, losses, ties, n, n_invalid, n_failed) are checked against `outcomes`
when a line is loaded (`ResultLine`'s validator): a line whose counts disagree never loads.
A line's `reward_floor` (what an invalid output counts as in its mean reward) is checked against
the judge's worst score where that needs no model: the gold judge's task, ROUGE-L's 0.

`outcome_problems` goes one step further back, for `pftbench submit`: each prompt's verdict must
follow from what the line records the judge saw, by the judge's own rule (its registered
`replay`, see `bench.evaluate.judging.Replay`): the policy's reward against the reference's for the
gold and RM judges (the gold reward of a reference recomputed from the task), the ROUGE-L score
against the threshold, the answers of both orders for a pairwise LLM judge. What it cannot check:
that the rewards (or answers) are what the policy's outputs get, since a line does not record its
outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import ValidationError

from bench.evaluate.judging import Replay
from bench.registry import JUDGES, UnknownNameError
from bench.report.results import ResultLine
from bench.report.summary import NUMBER_FIELDS, line_numbers
from bench.run.hashing import content_hash
from bench.tasks.base import Task, build_task

NUMBER_TOLERANCE = 1e-6
"""How far a stated number may be from its recomputation (JSON round trips, rounding)."""

MAX_SHOWN = 5
"""Prompts named one by one in a line's problems; the rest are counted in one more problem."""


@dataclass(frozen=True)
class Discrepancy:
    """One stated number of a line that its per-prompt data does not give."""

    field: str
    """The result-line field, e.g. "winrate"."""
    stated: float | None
    recomputed: float | None
    source: str
    """What it was recomputed from: "its outcomes" or "its rewards"."""

    def __str__(self) -> str:
        return (
            f"{self.field} is {_number(self.stated)}, but {self.source} give "
            f"{_number(self.recomputed)}"
        )


def number_discrepancies(line: ResultLine) -> list[Discrepancy]:
    """The summary numbers of `line` that its outcomes and rewards do not give (empty: all do).

    winrate, valid_winrate and their CIs are recomputed from `outcomes` (NaN when no prompt
    counts); mean_reward and its CI from `rewards` and `reward_floor` (None when there is no
    reward), all by `bench.report.summary.line_numbers`.
    """
    recomputed = line_numbers(line.outcomes, line.rewards, line.reward_floor)
    return [
        Discrepancy(name, getattr(line, name), recomputed[name], _SOURCE.get(name, "its outcomes"))
        for name in NUMBER_FIELDS
        if not _same(getattr(line, name), recomputed[name])
    ]


_SOURCE = {
    "mean_reward": "its rewards",
    "reward_ci_low": "its rewards",
    "reward_ci_high": "its rewards",
}


def floor_problems(line: ResultLine, tasks: dict[str, Task] | None = None) -> list[str]:
    """Why `line`'s reward_floor is not its judge's worst score (empty: it is, or it cannot be
    checked without loading a model). A higher floor would lift the mean reward of a policy
    that fails."""
    kind = line.judge["kind"]
    if line.rewards is None or kind not in ("gold", "rouge"):
        return []
    if kind == "rouge":
        expected: float | None = 0.0
    else:
        expected = _task(line, {} if tasks is None else tasks).worst_gold_reward()
    if _same(line.reward_floor, expected):
        return []
    return [
        f"its reward_floor is {_number(line.reward_floor)}, but the {kind} judge's worst score "
        f"is {_number(expected)}"
    ]


def outcome_problems(line: ResultLine, tasks: dict[str, Task] | None = None) -> list[str]:
    """Why `line`'s outcomes do not follow from its per-prompt record (empty: they all do).

    One sentence per problem: a record the line lacks (its outcomes then cannot be verified,
    which is a problem too), a recorded reference reward that is not the task's, and each
    prompt whose outcome is not the verdict the judge's rule gives, e.g. "outcome of prompt 17
    is W, but its reward 0.4 is below the reference's 1.1: the gold judge gives L". At most
    MAX_SHOWN prompts are named per kind; the rest are counted.

    `tasks` memoises the tasks built for the gold judge's references, by task config, across
    calls (a bundle's lines share a few tasks).
    """
    kind = line.judge["kind"]
    try:
        entry = JUDGES.get(kind)
    except UnknownNameError:
        return [f"judge kind {kind!r} is not registered here, so its outcomes cannot be verified"]
    if entry.replay is None:
        return [f"judge {kind} has no replay of its verdicts, so its outcomes cannot be verified"]
    try:
        params = entry.config(**(line.judge.get("params") or {}))
    except (ValidationError, TypeError) as error:
        return [f"judge params {line.judge.get('params')} are not valid {kind} params: {error}"]
    replay: Replay = entry.replay(params, line, lambda: _task(line, {} if tasks is None else tasks))
    if replay.missing is not None:
        return [f"its outcomes cannot be verified: {replay.missing}"]
    wrong = [
        f"outcome of prompt {index} is {recorded}, but {because}: the {kind} judge gives "
        f"{verdict.value}"
        for index, (recorded, (verdict, because)) in enumerate(
            zip(line.outcomes, replay.verdicts, strict=True)
        )
        if recorded != verdict.value
    ]
    return (
        floor_problems(line, tasks)
        + _shown(replay.problems, "recorded values")
        + _shown(wrong, "prompts whose outcome does not follow from the record")
    )


def _task(line: ResultLine, tasks: dict[str, Task]) -> Task:
    task, base_model = line.config["task"], line.config.get("base_model", {})
    key = content_hash({"task": task, "base_model": base_model})
    if key not in tasks:
        tasks[key] = build_task(task["name"], task.get("params", {}), base_model)
    return tasks[key]


def _shown(problems: list[str], what: str) -> list[str]:
    if len(problems) <= MAX_SHOWN:
        return problems
    return [*problems[:MAX_SHOWN], f"and {len(problems) - MAX_SHOWN} more {what} like these"]


def _same(stated: float | None, recomputed: float | None) -> bool:
    if stated is None or recomputed is None:
        return stated is None and recomputed is None
    if math.isnan(stated) or math.isnan(recomputed):
        return math.isnan(stated) and math.isnan(recomputed)
    return abs(stated - recomputed) <= NUMBER_TOLERANCE


def _number(value: float | None) -> str:
    return "absent" if value is None else f"{value:.4f}"
