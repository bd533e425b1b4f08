"""Which suites and cells a command means, shared by the CLI and the pytest plugin.

Both faces take suite paths and repeatable --method/--budget/--seed filters, both skip a suite
whose resources are missing with the same reason, and both check expectations on the same
groups: each cell on its own in a one-seed suite, each (method, budget) over all its seeds
(seeds x prompts) in a multi-seed suite.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.config import Cell, Suite, budget_filter, is_suite_file, load_suite
from bench.registry import JUDGES


class UsageError(ValueError):
    """A command-line mistake: the message says what is wrong and what is allowed."""


def suite_paths(paths: Iterable[str | Path]) -> list[Path]:
    """The suite files named, directories searched recursively for `*.yaml` (bases skipped)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.y*ml") if is_suite_file(p))
        elif path.exists():
            found.append(path)
        else:
            raise UsageError(f"{raw}: no such file or directory")
    return found


def check_filters(
    suites: Sequence[Suite],
    methods: Sequence[str] | None = None,
    budgets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> None:
    """A --method, --budget or --seed that no selected suite has is a usage error.

    A value is valid when at least one suite has it (runnable here or not); the message lists
    what the suites have. With no suite selected there is nothing to filter, and no error.
    """
    if not suites:
        return
    known_methods = sorted(
        {entry.name for suite in suites for entry in suite.methods}
        | {entry.method for suite in suites for entry in suite.methods}
    )
    unknown = [method for method in methods or [] if method not in known_methods]
    if unknown:
        raise UsageError(
            f"no suite has method {', '.join(map(repr, unknown))}; "
            f"methods: {', '.join(known_methods)}"
        )
    known_budgets = list(dict.fromkeys(b.label for suite in suites for b in suite.budgets))
    unknown = []
    for text in budgets or []:
        try:
            if budget_filter(text).label not in known_budgets:
                unknown.append(text)
        except ValueError as error:
            raise UsageError(f"malformed budget {text!r}; {error}") from None
    if unknown:
        raise UsageError(
            f"no suite has budget {', '.join(map(repr, unknown))}; "
            f"budgets: {', '.join(known_budgets)}"
        )
    known_seeds = sorted({seed for suite in suites for seed in suite.seeds})
    unknown_seeds = [seed for seed in seeds or [] if seed not in known_seeds]
    if unknown_seeds:
        raise UsageError(
            f"no suite has seed {', '.join(map(str, unknown_seeds))}; "
            f"seeds: {', '.join(map(str, known_seeds))}"
        )


def missing_resources(suite: Suite, run_slow: bool = False) -> list[str]:
    """Why the suite cannot run here (empty when it can)."""
    reasons = []
    if "gpu" in suite.requires:
        import torch

        if not torch.cuda.is_available():
            reasons.append("needs a CUDA GPU and none is available")
    if "api" in suite.requires:
        entry = JUDGES.get(suite.judge.kind)
        key_env = getattr(entry.config(**suite.judge.params), "api_key_env", None)
        if key_env and not os.environ.get(key_env):
            reasons.append(f"needs an API key in ${key_env}, which is not set")
    if "slow" in suite.requires and not run_slow:
        reasons.append("is marked slow; run it with --run-slow")
    return reasons


@dataclass(frozen=True)
class CheckGroup:
    """Cells checked together: one cell, or one (method, budget) over all its seeds."""

    cell: Cell
    seeds: tuple[int, ...]

    @property
    def id(self) -> str:
        if len(self.seeds) == 1:
            return self.cell.id
        seeds = "+".join(map(str, self.seeds))
        return f"{self.cell.method.name}[{self.cell.budget.label},seeds={seeds}]"


def check_groups(cells: Sequence[Cell]) -> list[CheckGroup]:
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.suite.name, cell.method.name, cell.budget.label), []).append(cell)
    out = []
    for members in groups.values():
        if len(members[0].suite.seeds) == 1:
            out += [CheckGroup(cell, (cell.seed,)) for cell in members]
        else:
            out.append(CheckGroup(members[0], tuple(c.seed for c in members)))
    return out


def load_all(paths: Iterable[str | Path]) -> list[Suite]:
    return [load_suite(path) for path in suite_paths(paths)]
