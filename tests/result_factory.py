"""Result lines for tests, made the way the runner makes them, without running anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.config import Cell
from bench.report.results import ResultLine
from bench.report.summary import line_numbers
from bench.run.hashing import content_hash
from bench.tasks.base import build_task

LAB_PROMPTS = 40
"""Evaluation prompts of a `lab_line`."""

OUTCOMES = "WWLTWLWWLI" * 6
"""60 verdicts, one per evaluation prompt of the tiny suite."""


def cell_line(cell: Cell, outcomes: str = OUTCOMES) -> dict:
    """A consistent result line of `cell`, as JSON: what an honest run would submit.

    Its rewards follow from its outcomes and the task's gold rewards of the references: one
    above the reference's for a win, equal for a tie, one below for a loss, none if invalid.
    """
    config = cell.resolved_config()
    task = build_task(config["task"]["name"], config["task"]["params"], config["base_model"])
    examples = task.examples("eval", len(outcomes))
    reference_rewards = [task.gold_reward(e.prompt, e.reference) for e in examples]
    line = {
        "suite": cell.suite.name,
        "suite_version": cell.suite.version,
        "suite_file": cell.suite.source,
        "tier": cell.suite.tier,
        "method": cell.method.name,
        "method_id": cell.method.method,
        "budget": cell.budget.label,
        "n_pairs": 40,
        "seed": cell.seed,
        "output_lengths": [3] * len(outcomes),
        "reference_lengths": [2] * len(outcomes),
        "reference_rewards": reference_rewards,
        "reward_floor": task.worst_gold_reward(),
        "data_hash": "d" * 64,
        "judge": {"kind": "gold", "id": "gold", "version": 1, "params": {}},
        "config_hash": content_hash(config),
        "config": config,
        "git_commit": "a" * 40,
        "git_dirty": False,
        "packages": {"python": "3.11"},
        "hardware": {"cpu_count": 2},
        "timings": {"train": 1.0},
    }
    honest = ResultLine.model_validate(with_outcomes(line, outcomes))
    return json.loads(honest.model_dump_json())


def write_bundle(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def with_outcomes(line: dict, outcomes: str) -> dict:
    """A copy of a gold-judged result line (as JSON) with other outcomes, as an honest run would
    record them: the rewards they follow from (from its `reference_rewards`) and the numbers."""
    offsets = {"W": 1.0, "T": 0.0, "L": -1.0}
    rewards = [
        None if letter == "I" else reference + offsets[letter]
        for letter, reference in zip(outcomes, line["reference_rewards"], strict=True)
    ]
    return with_numbers({**line, "outcomes": outcomes, "rewards": rewards})


def forged_outcomes(line: dict, outcomes: str) -> dict:
    """A copy of a result line (as JSON) with other outcomes and every number and count they
    give, its rewards left alone: issue 13's forgery, which the numbers alone do not expose."""
    return with_numbers({**line, "outcomes": outcomes})


def with_numbers(line: dict) -> dict:
    """A copy of a result line (as JSON) whose numbers and counts are what its outcomes and
    rewards give, computed as the runner computes them."""
    return {**line, **line_numbers(line["outcomes"], line["rewards"], line.get("reward_floor"))}


def shared_cache_dir(tmp_path_factory) -> Path:
    """One pftbench cache for the whole test session: the tiny base model is built once."""
    path = tmp_path_factory.getbasetemp() / "pftbench-cache"
    path.mkdir(exist_ok=True)
    return path


def synthetic_line(
    method: str,
    method_id: str,
    n_pairs: int,
    seed: int,
    p_win: float,
    *,
    suite: str = "demo-keywords",
    n_prompts: int = 120,
) -> ResultLine:
    """A consistent line with random verdicts (wins with probability `p_win`, longer outputs
    winning more often) and per-prompt lengths, for pages that need many methods and seeds."""
    import numpy as np

    rng = np.random.default_rng([n_pairs, seed, len(method), int(p_win * 1000)])
    reference_lengths = rng.integers(2, 5, size=n_prompts)
    output_lengths = reference_lengths + rng.integers(-1, 3, size=n_prompts)
    win = rng.random(n_prompts) < p_win + 0.05 * (output_lengths - reference_lengths)
    letters = np.where(win, "W", "L")
    letters[rng.random(n_prompts) < 0.04] = "T"
    letters[rng.random(n_prompts) < 0.02] = "I"
    outcomes = "".join(letters)
    config = {
        "suite": suite,
        "suite_version": 1,
        "tier": "micro",
        "task": {"name": "keywords", "params": {"seed": 0}},
        "method": {"name": method, "method": method_id, "config": {"lr": 0.001}},
        "budget": f"n={n_pairs}",
        "seed": seed,
        "judge": {"kind": "gold", "params": {}},
    }
    return ResultLine(
        suite=suite,
        suite_version=1,
        suite_file=f"suites/micro/{suite}.yaml",
        tier="micro",
        method=method,
        method_id=method_id,
        budget=f"n={n_pairs}",
        n_pairs=n_pairs,
        seed=seed,
        **line_numbers(outcomes, None, None),
        outcomes=outcomes,
        rewards=None,
        output_lengths=[int(x) for x in output_lengths],
        reference_lengths=[int(x) for x in reference_lengths],
        data_hash="d" * 64,
        judge={"kind": "gold", "id": "gold", "version": 1, "params": {}},
        config_hash=content_hash(config),
        config=config,
        git_commit="c" * 40,
        git_dirty=True,
        packages={"pftbench": "0.1.0", "python": "3.11"},
        hardware={"cpu_count": 2, "machine": "x86_64"},
        timings={"train": 1.5, "judge": 0.1},
    )


def lab_line(
    method: str,
    method_id: str,
    seed: int,
    *,
    budget: int = 250,
    config: dict | None = None,
    p_win: float = 0.5,
    reward_shift: float = 0.0,
    metrics: dict | None = None,
) -> ResultLine:
    """A consistent gold-judged line of a suite `lab` on LAB_PROMPTS prompts: rewards around
    `reward_shift`, verdicts drawn with `p_win`, `metrics` as given (default: a final loss)."""
    rng = np.random.default_rng([seed, budget, len(method), int(p_win * 100)])
    outcomes = "".join("W" if rng.random() < p_win else "L" for _ in range(LAB_PROMPTS))
    rewards = [float(x) for x in rng.normal(reward_shift, 0.5, LAB_PROMPTS)]
    full_config = {
        "suite": "lab",
        "suite_version": 1,
        "method": {"name": method, "method": method_id, "config": config or {}},
        "budget": f"n={budget}",
        "seed": seed,
    }
    return ResultLine(
        suite="lab",
        suite_version=1,
        suite_file="suites/micro/lab.yaml",
        tier="micro",
        method=method,
        method_id=method_id,
        budget=f"n={budget}",
        n_pairs=budget,
        seed=seed,
        **line_numbers(outcomes, rewards, -9.1),
        outcomes=outcomes,
        rewards=rewards,
        data_hash="d" * 64,
        judge={"kind": "gold", "id": "gold", "version": 1, "params": {}},
        config_hash=content_hash(full_config),
        config=full_config,
        git_commit="c" * 40,
        git_dirty=False,
        packages={},
        hardware={},
        timings={},
        metrics=metrics or {"train": {"final_loss": 0.5}},
    )
