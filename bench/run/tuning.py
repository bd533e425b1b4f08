"""Tuning on the `valid` split: a grid of a method entry's settings, scored where no result is.

    pftbench tune SUITE --method ENTRY --grid lr=3e-4,1e-3 --grid epochs=1,4 [--budget B]

Every grid point is the suite's entry with those overrides (dotted keys reach into a nested
block: `reward_model.lr=1e-4,1e-3`), trained as its cell would be (the same cache: a point equal
to the suite's own setting is the suite's cell) at each budget and seed asked, then scored on the
task's `valid` prompts, which no method trains on and no result line reports:

- `reward`: the mean score the suite's judge gives the policy's outputs (the gold reward on the
  micro tier; an invalid output at the judge's worst score), with its crossed seeds x prompts
  interval;
- `winrate`: the winrate of those outputs against the valid references, with its interval;
- `verifier`: the held-out accuracy of the verifier the method saved, on the labelled pairs of
  the valid prompts (`Runner.heldout_pairs`; the leaderboard's diagnostics report the same pairs,
  so a verifier tuned on them reports an optimistic accuracy there: say so beside it).

Each (point, budget) gets the same search budget: the grid. The best point by the objective is
marked per budget; nothing is written back to the suite: the YAML's comment (or a committed
table: `--out`) records the grid, the scores and the choice.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.config import Cell, MethodEntry, Suite, method_entry
from bench.registry import METHODS
from bench.report.stats import WINRATE_BOUNDS, CrossedEstimate, crossed_mean, verdict_scores
from bench.run.hashing import content_hash
from bench.run.runner import Runner

VALID_EVALUATION_VERSION = 1
"""Bumped when the valid-split evaluation changes what it computes (a cache key part)."""


@dataclass(frozen=True)
class TunedPoint:
    """One grid point at one budget, over the seeds asked."""

    setting: dict[str, Any]
    """The grid's keys and this point's values."""
    budget: str
    n_pairs: int
    seeds: list[int]
    reward: CrossedEstimate | None
    winrate: CrossedEstimate | None
    verifier: float | None
    """Mean over seeds of the saved verifier's held-out accuracy; None without a verifier."""
    train_s: float
    """Training seconds summed over seeds (from the cache when it was built earlier)."""

    def score(self, objective: str) -> float:
        value = {
            "reward": self.reward.value if self.reward else None,
            "winrate": self.winrate.value if self.winrate else None,
            "verifier": self.verifier,
        }[objective]
        return float("-inf") if value is None else value


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """`["lr=3e-4,1e-3", "epochs=1,4"]` -> {"lr": [0.0003, 0.001], "epochs": [1, 4]}: numbers
    as Python reads them, anything else as YAML (booleans, strings). Raises ValueError naming a
    malformed item."""
    import yaml

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"--grid {item!r}: expected KEY=VALUE[,VALUE...]")
        if key in grid:
            raise ValueError(f"--grid {item!r}: {key!r} is given twice")
        grid[key] = [_value(value, yaml) for value in values.split(",")]
    return grid


def _value(text: str, yaml: Any) -> Any:
    """A grid value: a number where Python reads one (`3e-4` too, which YAML 1.1 leaves a
    string), else YAML (booleans, strings, null)."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def with_setting(overrides: dict[str, Any], setting: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with each (dotted) key of `setting` set, nested blocks merged."""
    merged = _deep_copy(overrides)
    for dotted, value in setting.items():
        *parents, leaf = dotted.split(".")
        block = merged
        for part in parents:
            nested = block.get(part)
            block[part] = dict(nested) if isinstance(nested, dict) else {}
            block = block[part]
        block[leaf] = value
    return merged


def tuned_entry(entry: MethodEntry, setting: dict[str, Any]) -> MethodEntry:
    """The suite's entry with `setting` applied, validated as a suite file's would be; its name
    is the entry's, so that a point equal to the suite's setting is the suite's own cell. A
    dotted key into a block the entry leaves at its default (`reward_model.lr` where the entry
    sets no `reward_model`) changes that default block, not an empty one."""
    overrides = _deep_copy(entry.overrides)
    for dotted in setting:
        block = dotted.split(".", 1)[0]
        if "." in dotted and block not in overrides and isinstance(entry.config.get(block), dict):
            overrides[block] = _deep_copy(entry.config[block])
    return method_entry(entry.method, entry.name, with_setting(overrides, setting))


def tune(
    runner: Runner,
    suite: Suite,
    entry_name: str,
    grid: dict[str, list[Any]],
    *,
    budgets: list[str] | None = None,
    seeds: list[int] | None = None,
    n_prompts: int | None = None,
) -> list[TunedPoint]:
    """Train and score every grid point of `entry_name` at each budget (all, or those matching
    `budgets`) and seed; `n_prompts` valid prompts (default: the suite's n_eval_prompts, at most
    the split's size). Raises ValueError for an unknown entry or a setting its method refuses."""
    entries = [entry for entry in suite.methods if entry.name == entry_name] or [
        entry for entry in suite.methods if entry.method == entry_name
    ]
    if len(entries) != 1:
        names = ", ".join(entry.name for entry in suite.methods)
        found = "no" if not entries else "more than one"
        raise ValueError(f"{suite.source}: {found} method entry {entry_name!r}; entries: {names}")
    points = [(setting, tuned_entry(entries[0], setting)) for setting in grid_points(grid)]
    cells = [
        cell
        for cell in suite.cells([entries[0].name], budgets, seeds)
        if cell.method.name == entries[0].name
    ]
    if not cells:
        raise ValueError(f"{suite.source}: no budget or seed of {entry_name!r} matches")
    from bench.evaluate.judging import worst_score

    floor = worst_score(runner.components.judge(suite))
    out = []
    for setting, entry in points:
        for budget in dict.fromkeys(cell.budget for cell in cells):
            seed_cells = [replace(cell, method=entry) for cell in cells if cell.budget == budget]
            evaluations = [valid_evaluation(runner, cell, n_prompts) for cell in seed_cells]
            n_pairs = len(runner.pairs(seed_cells[0]))
            out.append(_point(setting, seed_cells, n_pairs, evaluations, floor))
    return out


def valid_evaluation(runner: Runner, cell: Cell, n_prompts: int | None) -> dict[str, Any]:
    """The cell's policy (trained if needed, as `run_cell` would) on the `valid` prompts: the
    judge's verdicts and scores of its outputs, and its verifier's held-out accuracy; cached."""
    task = runner.task(cell.suite)
    size = len(task.examples("valid"))
    n = min(n_prompts or cell.suite.generation.n_eval_prompts, size)
    keys = runner.keys(cell)
    policy = runner.policy(cell)
    key = content_hash(["valid", VALID_EVALUATION_VERSION, keys.policy, n])

    def build() -> dict[str, Any]:
        from bench.evaluate.verdicts import outcomes_to_string
        from bench.method_api import GenerationContext, load_saved_verifier
        from bench.tasks.base import MethodTask

        examples = task.examples("valid", n)
        prompts, references = [e.prompt for e in examples], [e.reference for e in examples]
        decoding = runner.components.eval_decoding(cell)
        backend = runner.components.backend(cell.suite)
        policy_dir = runner.cache.path("models", keys.policy)
        generate = METHODS.get(cell.method.method).generate
        if generate is not None:
            context = GenerationContext(policy_dir, MethodTask(task), prompts, decoding, backend)
            config = METHODS.get(cell.method.method).config(**cell.method.config)
            samples = generate(context, config)["main"]
        else:
            samples = [group[0] for group in backend.generate(policy_dir, prompts, decoding)]
        judge = runner.components.judge(cell.suite)
        judgments = judge.judge(prompts, samples, references)
        verifier = load_saved_verifier(policy_dir, task)
        accuracy = None
        if verifier is not None:
            from bench.train.reward_models import pair_metrics

            accuracy = pair_metrics(verifier, runner.heldout_pairs(cell))["accuracy"]
        return {
            "outcomes": outcomes_to_string([j.verdict for j in judgments]),
            "scores": [j.output_score for j in judgments],
            "verifier_accuracy": accuracy,
        }

    result = runner.store.json("tuning", key, build, f"valid {cell.id}")
    return {**result, "train_s": float(policy.get("wall_s", 0.0))}


def _point(
    setting: dict[str, Any],
    cells: list[Cell],
    n_pairs: int,
    evaluations: list[dict],
    floor: float | None,
) -> TunedPoint:
    """The point's numbers over its seeds: an invalid output's reward counts at the judge's
    `floor` (left out of every seed, listwise, when the judge has none), as in a result line."""
    from bench.evaluate.verdicts import outcomes_from_string

    winrates = [verdict_scores(outcomes_from_string(e["outcomes"])) for e in evaluations]
    missing = math.nan if floor is None else floor
    rewards = [[missing if s is None else s for s in e["scores"]] for e in evaluations]
    has_rewards = any(s is not None for e in evaluations for s in e["scores"])
    accuracies = [e["verifier_accuracy"] for e in evaluations if e["verifier_accuracy"] is not None]
    return TunedPoint(
        setting=setting,
        budget=cells[0].budget.label,
        n_pairs=n_pairs,
        seeds=[cell.seed for cell in cells],
        reward=_estimate(rewards, None) if has_rewards else None,
        winrate=_estimate(winrates, WINRATE_BOUNDS),
        verifier=statistics.fmean(accuracies) if accuracies else None,
        train_s=sum(e["train_s"] for e in evaluations),
    )


def _estimate(rows: list, bounds: tuple[float, float] | None) -> CrossedEstimate | None:
    try:
        return crossed_mean(rows, bounds=bounds)
    except ValueError:  # fewer than two prompts count on every seed
        return None


def _deep_copy(block: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in block.items()}


def markdown(
    points: Sequence[TunedPoint], objective: str, *, title: str, grid: dict[str, list[Any]]
) -> str:
    """The grid's scores as a markdown table per budget, the best point by `objective` marked
    `best`: what a suite's YAML comment or a committed tuning table records."""
    keys = list(grid)
    lines = [
        f"## {title}",
        "",
        f"Grid ({len(grid_points(grid))} points): "
        + "; ".join(f"{key} in {values}" for key, values in grid.items())
        + f". Chosen by {objective} on the valid split.",
    ]
    for budget in dict.fromkeys(point.budget for point in points):
        rows = [point for point in points if point.budget == budget]
        best = max(rows, key=lambda point: point.score(objective))
        lines += [
            "",
            f"### {budget} ({rows[0].n_pairs} pairs), seeds {rows[0].seeds}",
            "",
            "| "
            + " | ".join(
                [
                    *keys,
                    "valid reward [95% CI]",
                    "valid winrate [95% CI]",
                    "verifier accuracy",
                    "train s",
                    "",
                ]
            )
            + " |",
            "|" + "---|" * (len(keys) + 5),
        ]
        for point in rows:
            cells = [str(point.setting[key]) for key in keys]
            cells += [
                _estimate_text(point.reward),
                _estimate_text(point.winrate),
                "-" if point.verifier is None else f"{point.verifier:.3f}",
                f"{point.train_s:.1f}",
                "best" if point is best else "",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _estimate_text(estimate: CrossedEstimate | None) -> str:
    if estimate is None:
        return "-"
    return f"{estimate.value:.3f} [{estimate.low:.3f}, {estimate.high:.3f}]"
