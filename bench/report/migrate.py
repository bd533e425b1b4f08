"""`pftbench migrate FOLDER`: rewrite result lines of an older schema in the current one.

Schema 1 -> 2 (issue 10): an invalid output now counts as a loss in the winrate and at the
judge's worst score in the mean reward, a failed judgment has its own letter (F), and the
valid-only winrate is kept as a secondary number. Nothing is retrained or rejudged: every number
is recomputed from the per-prompt records the line already holds
(`bench.report.summary.line_numbers`).

- An ``I`` of an LLM-pairwise line whose `order_answers` record answers was the judge's failure
  on a valid output: it becomes ``F``. (Its ``None`` answers mark an output never sent, an
  invalid output, which stays ``I``.) Other judges' ``I`` were always invalid outputs.
- `reward_floor` is the judge's worst score: the task's lowest gold reward for the gold judge
  (the task rebuilt from the line's config), 0 for ROUGE-L, none for others.

Each file is rewritten atomically, its old text kept beside it as ``<name>.jsonl.v1``; a file
already current is left alone. Lines keep their order, provenance and creation time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.evaluate.verdicts import Verdict
from bench.report.results import SCHEMA_VERSION, ResultLine
from bench.report.summary import line_numbers
from bench.run.cache import atomic_write_text
from bench.run.hashing import content_hash
from bench.tasks.base import Task, build_task


def migrate_folder(folder: Path) -> list[tuple[Path, int]]:
    """Migrate every ``*.jsonl`` of `folder`; return (file, lines rewritten) for each changed.

    Raises:
        FileNotFoundError: `folder` does not exist.
        ValueError: a line that is not JSON or of an unknown schema, naming `file:line`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist")
    tasks: dict[str, Task] = {}
    changed = []
    for path in sorted(folder.glob("*.jsonl")):
        text = path.read_text(encoding="utf-8")
        out, rewritten = [], 0
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not JSON: {error}") from None
            version = data.get("schema_version", 1)
            if version == 1:
                data = migrate_v1(data, tasks)
                rewritten += 1
                out.append(ResultLine.model_validate(data).model_dump_json())
            elif version == SCHEMA_VERSION:
                out.append(raw)
            else:
                raise ValueError(
                    f"{path}:{number}: schema_version {version} is not known to this pftbench"
                )
        if rewritten:
            atomic_write_text(path.with_name(path.name + ".v1"), text)
            atomic_write_text(path, "\n".join(out) + "\n")
            changed.append((path, rewritten))
    return changed


def migrate_v1(data: dict[str, Any], tasks: dict[str, Task] | None = None) -> dict[str, Any]:
    """A schema-1 line's fields as schema 2 (module docstring); `tasks` memoises rebuilt tasks."""
    data = dict(data)
    outcomes = data["outcomes"]
    answers = data.get("order_answers")
    if data["judge"]["kind"] == "llm_pairwise" and answers is not None:
        outcomes = "".join(
            Verdict.FAILED.value
            if letter == Verdict.INVALID.value and answer is not None
            else letter
            for letter, answer in zip(outcomes, answers, strict=True)
        )
    floor = _reward_floor(data, {} if tasks is None else tasks)
    data.update(line_numbers(outcomes, data.get("rewards"), floor))
    data["outcomes"] = outcomes
    data["schema_version"] = SCHEMA_VERSION
    return data


def _reward_floor(data: dict[str, Any], tasks: dict[str, Task]) -> float | None:
    kind = data["judge"]["kind"]
    if data.get("rewards") is None:
        return None
    if kind == "rouge":
        return 0.0
    if kind != "gold":
        return None
    task, base_model = data["config"]["task"], data["config"].get("base_model", {})
    key = content_hash({"task": task, "base_model": base_model})
    if key not in tasks:
        tasks[key] = build_task(task["name"], task.get("params", {}), base_model)
    return tasks[key].worst_gold_reward()
