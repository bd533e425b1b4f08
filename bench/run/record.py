"""A cell's result line, assembled from what its stages produced.

Every number comes from `bench.report.summary.line_numbers` (the one derivation of a line's
numbers); this module gathers the records, the judge's identity, the config and the diagnostics
around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import Cell
from bench.evaluate.judging import worst_score
from bench.evaluate.verdicts import outcomes_from_string
from bench.registry import METHODS
from bench.report.results import ResultLine, provenance
from bench.report.stats import mean_reward_estimate, winrate_estimate
from bench.report.summary import line_numbers
from bench.run.hashing import content_hash
from bench.tasks.base import PreferencePair, Sample, Task


def result_line(
    cell: Cell,
    task: Task,
    judge: Any,
    pairs: list[PreferencePair],
    stages: dict[str, dict[str, Any]],
    timings: dict[str, float],
) -> ResultLine:
    """The line of `cell`: `stages` holds the metadata of its base, pool, train, generate,
    judge and diagnostics stages (their `wall_s` already moved into `timings`)."""
    suite = cell.suite
    base, pool, policy = stages["base"], stages["pool"], stages["train"]
    generations, judged = stages["generate"], stages["judge"]
    floor = worst_score(judge)
    rewards = judged["output_scores"]
    samples = [Sample(**s) for s in generations["samples"]]
    eval_examples = task.examples("eval", suite.generation.n_eval_prompts)
    metrics = {
        "mean_length_tokens": sum(s.n_tokens for s in samples) / len(samples),
        "finished_rate": sum(s.finished for s in samples) / len(samples),
        "reference_mean_score": _mean(judged["reference_scores"]),
        "base": {k: v for k, v in base["metrics"].items() if not isinstance(v, list)},
        "pool": pool["metrics"],
        "train": policy["metrics"],
        "counters": policy["counters"],
        # The oracles the method reached (`bench.tasks.base.oracle_task`): an oracle row.
        "oracles": policy.get("oracles", []),
        "generate_tokens_per_s": generations["tokens_per_s"],
        "eval_samples_per_prompt": generations.get("samples_per_prompt"),
        "judge": judged.get("judge_stats", {}),
        **stages["diagnostics"],
        "variants": {
            name: _variant_summary(v, floor) for name, v in judged.get("variants", {}).items()
        },
    }
    config = cell.resolved_config()
    return ResultLine(
        suite=suite.name,
        suite_version=suite.version,
        suite_file=suite.source,
        tier=suite.tier,
        method=cell.method.name,
        method_id=cell.method.method,
        method_family=METHODS.get(cell.method.method).family,
        budget=cell.budget.label,
        n_pairs=pool["n_pairs_by_budget"][cell.budget.label],
        seed=cell.seed,
        **line_numbers(judged["outcomes"], rewards, floor),
        outcomes=judged["outcomes"],
        rewards=rewards,
        reference_rewards=_recorded(judged["reference_scores"]),
        order_answers=_recorded(judged["order_answers"]),
        output_lengths=[len(s.text.split()) for s in samples],
        reference_lengths=[len(e.reference.split()) for e in eval_examples],
        data_hash=content_hash(
            {
                "pairs": [[p.prompt, p.chosen, p.rejected] for p in pairs],
                "eval": [[e.prompt, e.reference] for e in eval_examples],
            }
        ),
        judge={
            "kind": suite.judge.kind,
            "id": judge.id,
            "version": judge.version,
            "params": dict(suite.judge.params),
        },
        config_hash=content_hash(config),
        config=config,
        timings=timings,
        metrics=metrics,
        **provenance(Path.cwd()),
    )


def _variant_summary(judged: dict[str, Any], floor: float | None) -> dict[str, Any]:
    """A method's extra output set (e.g. best-of-N at a smaller N), judged like the main one."""
    winrate = winrate_estimate(outcomes_from_string(judged["outcomes"]))
    reward = mean_reward_estimate(judged["output_scores"], floor)
    return {
        "winrate": winrate.to_dict(),
        "mean_reward": reward.value if reward else None,
        "outcomes": judged["outcomes"],
    }


def _recorded(per_prompt: list[Any]) -> list[Any] | None:
    """A per-prompt record for the result line; None when the judge gave no value at all."""
    return per_prompt if any(value is not None for value in per_prompt) else None


def _mean(values: list[float | None]) -> float | None:
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid) if valid else None
