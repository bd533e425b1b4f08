"""Leaderboard tables: result lines pooled over seeds, as a DataFrame, markdown and terminal text.

Numbers are recomputed from the per-prompt `outcomes` and `rewards` stored in the result lines,
not averaged from their summary fields, so that several seeds are pooled with the hierarchical
bootstrap of `bench.stats` (resample seeds, then prompts). With one seed the recomputation gives
back exactly the numbers of the stored line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.cache import atomic_write_text
from bench.results import ResultLine, load_results
from bench.stats import (
    Estimate,
    length_controlled_winrate,
    paired_difference,
    pooled_bootstrap_mean,
    verdict_scores,
)
from bench.verdicts import outcomes_from_string

CELL_COLUMNS = [
    "suite",
    "suite_version",
    "tier",
    "judge",
    "method",
    "budget",
    "n_pairs",
    "seeds",
    "winrate",
    "ci_low",
    "ci_high",
    "n",
    "n_invalid",
    "mean_reward",
    "reward_ci_low",
    "reward_ci_high",
    "lc_winrate",
    "lc_ci_low",
    "lc_ci_high",
    "provenance",
]

ONLINE_METHOD_IDS = ("online_dpo", "best_of_n", "filter")
"""Registered method ids that learn from samples of their own policy: the online side of the
online-minus-offline gap. The one place that says which methods are online."""

OFFLINE_BASELINE_ID = "dpo"
"""The offline method every online method is compared with, on the same pairs and budget."""

GAP_COLUMNS = [
    "task",
    "suite",
    "suite_version",
    "tier",
    "judge",
    "method",
    "method_id",
    "baseline",
    "budget",
    "n_pairs",
    "seeds",
    "gap",
    "ci_low",
    "ci_high",
    "n",
]

MISSING = "-"
"""What an empty table cell shows (a method not run at that budget)."""

EXPLANATION = (
    "Each cell is the winrate of a method's outputs against the reference outputs, judged on "
    "the suite's evaluation prompts: winrate = (wins + ties/2) / n, where n counts the valid "
    "judgments only. The brackets give a 95% percentile bootstrap confidence interval over "
    "prompts. When several training seeds were run (seeds=S), the winrate is the mean of the "
    "per-seed winrates and the interval comes from a hierarchical bootstrap that resamples "
    "seeds, then prompts within each seed, so it includes run-to-run variation. Invalid outputs "
    "or judgments (inv=K) are counted apart: they are neither wins nor losses and are not in n. "
    "Columns are preference-pair budgets, in increasing number of pairs."
)


PROVENANCE_EXPLANATION = (
    "A cell marked †dirty pools a seed whose run came from a working tree with uncommitted "
    "changes (its line's git_dirty), and †no-commit one that records no git commit: the code "
    "that produced it cannot be checked out again, so its numbers are harder to reproduce."
)


def provenance_marks(lines: Iterable[ResultLine]) -> str:
    """The provenance caveats of a cell's seed lines: "†dirty", "†no-commit", both, or ""."""
    lines = list(lines)
    marks = []
    if any(line.git_dirty for line in lines):
        marks.append("†dirty")
    if any(line.git_commit is None for line in lines):
        marks.append("†no-commit")
    return " ".join(marks)


LC_EXPLANATION = (
    "LC is the length-controlled winrate: a logistic fit of each verdict on the output-minus-"
    "reference length difference, read at equal lengths, with a bootstrap CI over prompts "
    "(bench.stats.length_controlled_winrate). A raw winrate well above its LC means the method "
    "wins partly by being longer. It needs per-prompt lengths, which lines written before "
    "they were recorded lack (shown as -)."
)


def cell_table(lines: Sequence[ResultLine], *, length_controlled: bool = False) -> pd.DataFrame:
    """One row per (suite, suite_version, method, budget), its seeds pooled; columns CELL_COLUMNS.

    With `length_controlled`, the lc_* columns hold the length-controlled winrate
    (`bench.stats.length_controlled_winrate`) where every seed's line records its output and
    reference lengths; otherwise, and where a line lacks them, they are NaN. It is off by
    default because each cell costs a bootstrap of model fits (about 0.1 s for 500 prompts).

    Per seed the last line wins: this is `latest_per_cell` (the last line per config_hash),
    and also lets a seed rerun under a changed config supersede the old one rather than be
    pooled with it. Rows are split further by tier and judge id, since numbers from different
    judges are not comparable. Rows come in order of first appearance, seeds sorted.

    Raises ValueError if the seeds of one cell disagree on n_pairs (the data changed without
    a new suite version, so pooling them would be meaningless).
    """
    rows = [
        _pool_cell(key, by_seed, length_controlled) for key, by_seed in cell_lines(lines).items()
    ]
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def cell_key(line: ResultLine) -> tuple[str, int, str, str, str, str]:
    """(suite, suite_version, tier, judge id, method, budget): the lines pooled into one row."""
    return (line.suite, line.suite_version, line.tier, _judge_id(line), line.method, line.budget)


def cell_lines(lines: Iterable[ResultLine]) -> dict[tuple, dict[int, ResultLine]]:
    """cell_key -> {seed: the last line of that seed}, cells in order of first appearance."""
    cells: dict[tuple, dict[int, ResultLine]] = {}
    for line in lines:
        cells.setdefault(cell_key(line), {})[line.seed] = line
    return cells


def _judge_id(line: ResultLine) -> str:
    return str(line.judge["id"])


def _pool_cell(
    key: tuple, by_seed: dict[int, ResultLine], length_controlled: bool = False
) -> dict[str, Any]:
    suite, suite_version, tier, judge, method, budget = key
    seed_lines = [by_seed[seed] for seed in sorted(by_seed)]
    n_pairs = {line.n_pairs for line in seed_lines}
    if len(n_pairs) > 1:
        raise ValueError(
            f"{suite} v{suite_version} {method} {budget}: seeds disagree on n_pairs "
            f"{sorted(n_pairs)}; bump the suite version when the pair pool changes"
        )

    score_groups = [verdict_scores(outcomes_from_string(line.outcomes)) for line in seed_lines]
    winrate = _pooled(score_groups)
    reward_groups = [
        np.array([np.nan if reward is None else reward for reward in line.rewards], dtype=float)
        for line in seed_lines
        if line.rewards is not None
    ]
    reward = _pooled(reward_groups)
    lc = _length_controlled(seed_lines, score_groups) if length_controlled else None
    return {
        "suite": suite,
        "suite_version": suite_version,
        "tier": tier,
        "judge": judge,
        "method": method,
        "budget": budget,
        "n_pairs": n_pairs.pop(),
        "seeds": [line.seed for line in seed_lines],
        "winrate": winrate.value if winrate else math.nan,
        "ci_low": winrate.low if winrate else math.nan,
        "ci_high": winrate.high if winrate else math.nan,
        "n": winrate.n if winrate else 0,
        "n_invalid": sum(line.n_invalid for line in seed_lines),
        "mean_reward": reward.value if reward else None,
        "reward_ci_low": reward.low if reward else None,
        "reward_ci_high": reward.high if reward else None,
        "lc_winrate": lc.value if lc else math.nan,
        "lc_ci_low": lc.low if lc else math.nan,
        "lc_ci_high": lc.high if lc else math.nan,
        "provenance": provenance_marks(seed_lines),
    }


_LENGTH_CONTROLLED: dict[tuple, Estimate | None] = {}
"""Length-controlled estimates by the lines they pool (config hash and creation time name a
line): the README, the page and the plots each pool the same cells, and each estimate is a
bootstrap of model fits, the bulk of rendering."""


def _length_controlled(
    seed_lines: list[ResultLine], score_groups: list[np.ndarray]
) -> Estimate | None:
    """The cell's length-controlled winrate; None where a seed lacks lengths or valid verdicts."""
    key = tuple((line.config_hash, line.created_at) for line in seed_lines)
    if key not in _LENGTH_CONTROLLED:
        _LENGTH_CONTROLLED[key] = _compute_length_controlled(seed_lines, score_groups)
    return _LENGTH_CONTROLLED[key]


def _compute_length_controlled(
    seed_lines: list[ResultLine], score_groups: list[np.ndarray]
) -> Estimate | None:
    if any(line.output_lengths is None or line.reference_lengths is None for line in seed_lines):
        return None
    differences = [
        np.array(line.output_lengths, dtype=float) - np.array(line.reference_lengths, dtype=float)
        for line in seed_lines
    ]
    if any(np.all(np.isnan(scores)) for scores in score_groups):
        return None
    return length_controlled_winrate(score_groups, differences)


def task_of(line: ResultLine) -> str:
    """The task a line's suite runs (its config's task name; the suite name for older lines)."""
    task = line.config.get("task")
    return str(task["name"]) if isinstance(task, dict) and "name" in task else line.suite


def gap_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """The online-minus-offline gap: one row per (suite, online method entry, budget).

    For each method entry whose id is in ONLINE_METHOD_IDS, at each budget where the suite also
    has the offline baseline (the entry named OFFLINE_BASELINE_ID, else the first entry with that
    id), `gap` is the paired winrate difference online - offline on the same prompts
    (`bench.stats.paired_difference`), pooled over the seeds both ran; columns GAP_COLUMNS.
    """
    sections: dict[tuple, dict[tuple[str, str], dict[int, ResultLine]]] = {}
    for (suite, version, tier, judge, method, budget), by_seed in cell_lines(lines).items():
        sections.setdefault((suite, version, tier, judge), {})[method, budget] = by_seed
    rows = []
    for (suite, version, tier, judge), cells in sections.items():
        entries = {}
        for (method, _), by_seed in cells.items():
            entries.setdefault(method, next(iter(by_seed.values())).method_id)
        baselines = [m for m, method_id in entries.items() if method_id == OFFLINE_BASELINE_ID]
        if not baselines:
            continue
        baseline = OFFLINE_BASELINE_ID if OFFLINE_BASELINE_ID in baselines else baselines[0]
        for (method, budget), by_seed in cells.items():
            if entries[method] not in ONLINE_METHOD_IDS or (baseline, budget) not in cells:
                continue
            offline = cells[baseline, budget]
            seeds = sorted(set(by_seed) & set(offline))
            if not seeds:
                continue
            online_scores = [_scores(by_seed[seed]) for seed in seeds]
            offline_scores = [_scores(offline[seed]) for seed in seeds]
            if any(
                a.shape != b.shape or np.all(np.isnan(a - b))
                for a, b in zip(online_scores, offline_scores, strict=True)
            ):
                continue  # no prompt both judged validly: no difference to show
            gap = paired_difference(online_scores, offline_scores)
            first = by_seed[seeds[0]]
            rows.append(
                {
                    "task": task_of(first),
                    "suite": suite,
                    "suite_version": version,
                    "tier": tier,
                    "judge": judge,
                    "method": method,
                    "method_id": entries[method],
                    "baseline": baseline,
                    "budget": budget,
                    "n_pairs": first.n_pairs,
                    "seeds": seeds,
                    "gap": gap.value,
                    "ci_low": gap.low,
                    "ci_high": gap.high,
                    "n": gap.n,
                }
            )
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def _scores(line: ResultLine) -> np.ndarray:
    return verdict_scores(outcomes_from_string(line.outcomes))


def _pooled(groups: list[np.ndarray]) -> Estimate | None:
    """Pooled bootstrap over the groups that hold a valid value; None when none does.

    A seed whose every judgment is invalid has no winrate to pool; its invalids still show in
    the row's n_invalid.
    """
    valid_groups = [group for group in groups if np.any(~np.isnan(group))]
    if not valid_groups:
        return None
    # The bootstrap is seeded, so the values name the estimate.
    key = tuple(group.tobytes() for group in valid_groups)
    if key not in _POOLED:
        _POOLED[key] = pooled_bootstrap_mean(valid_groups)
    return _POOLED[key]


_POOLED: dict[tuple, Estimate] = {}
"""Pooled estimates by the values they pool (rendering pools each cell three times)."""


def markdown_tables(df: pd.DataFrame) -> str:
    """Markdown sections, one per suite: a winrate table and, if any, a mean-reward table.

    Each section is headed `## <suite> (v<version>, <tier>, judge <judge id>)`; tables have
    one row per method (first-seen order) and one column per budget (by number of pairs).
    """
    records = df.to_dict("records")
    sections: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        key = (record["suite"], record["suite_version"], record["tier"], record["judge"])
        sections.setdefault(key, []).append(record)

    parts = []
    for (suite, suite_version, tier, judge), section in sections.items():
        parts.append(f"## {suite} (v{suite_version}, {tier}, judge {judge})")
        parts.append(_method_by_budget(section, _winrate_cell))
        if any(not _is_missing(record["mean_reward"]) for record in section):
            parts.append("Mean reward [95% CI]:")
            parts.append(_method_by_budget(section, _reward_cell))
        if any(not _is_missing(record.get("lc_winrate")) for record in section):
            parts.append("Length-controlled winrate [95% CI] (the winrate at equal lengths):")
            parts.append(_method_by_budget(section, _lc_cell))
    return "\n\n".join(parts) + "\n" if parts else ""


def _method_by_budget(
    section: list[dict[str, Any]], format_cell: Callable[[dict[str, Any]], str]
) -> str:
    methods = list(dict.fromkeys(record["method"] for record in section))
    n_pairs_of = {}
    for record in section:
        n_pairs_of.setdefault(record["budget"], record["n_pairs"])
    # sorted() is stable, so budgets with equal n_pairs keep their first-seen order.
    budgets = sorted(n_pairs_of, key=lambda budget: n_pairs_of[budget])
    by_cell = {(record["method"], record["budget"]): record for record in section}
    header = ["method"] + [_budget_header(budget, n_pairs_of[budget]) for budget in budgets]
    rows = [
        [method]
        + [
            format_cell(by_cell[method, budget]) if (method, budget) in by_cell else MISSING
            for budget in budgets
        ]
        for method in methods
    ]
    return markdown_table(header, rows)


def _budget_header(budget: str, n_pairs: int) -> str:
    """The budget label, with its number of pairs when the label does not already say it."""
    return budget if budget == f"n={n_pairs}" else f"{budget} ({n_pairs} pairs)"


def _winrate_cell(record: dict[str, Any]) -> str:
    if record["n"] == 0:
        text = "no valid judgment"
    else:
        text = (
            f"{record['winrate']:.3f} [{record['ci_low']:.3f}, {record['ci_high']:.3f}] "
            f"n={record['n']}"
        )
    if record["n_invalid"] > 0:
        text += f" inv={record['n_invalid']}"
    if len(record["seeds"]) > 1:
        text += f" seeds={len(record['seeds'])}"
    if record.get("provenance"):
        text += f" {record['provenance']}"
    return text


def _reward_cell(record: dict[str, Any]) -> str:
    if _is_missing(record["mean_reward"]):
        return MISSING
    return (
        f"{record['mean_reward']:.3f} "
        f"[{record['reward_ci_low']:.3f}, {record['reward_ci_high']:.3f}]"
    )


def _lc_cell(record: dict[str, Any]) -> str:
    if _is_missing(record["lc_winrate"]):
        return MISSING
    return f"{record['lc_winrate']:.3f} [{record['lc_ci_low']:.3f}, {record['lc_ci_high']:.3f}]"


def markdown_gap(gaps: pd.DataFrame) -> str:
    """A markdown section of the online-minus-offline gap per task; empty when there is none."""
    if gaps.empty:
        return ""
    rows = [
        [
            record["task"],
            f"{record['suite']} v{record['suite_version']}",
            f"{record['method']} - {record['baseline']}",
            _budget_header(record["budget"], record["n_pairs"]),
            f"{record['gap']:+.3f} [{record['ci_low']:+.3f}, {record['ci_high']:+.3f}] "
            f"n={record['n']}"
            + (f" seeds={len(record['seeds'])}" if len(record["seeds"]) > 1 else ""),
        ]
        for record in gaps.to_dict("records")
    ]
    header = ["task", "suite", "online - offline", "budget", "winrate difference [95% CI]"]
    return (
        "\n\n".join(
            [
                "## Online minus offline",
                "The paired winrate difference of each online method against offline "
                f"`{OFFLINE_BASELINE_ID}` on the same prompts and seeds at the same budget; a CI "
                "above 0 means the online method wins more often. Online methods: "
                f"{', '.join(ONLINE_METHOD_IDS)}.",
                markdown_table(header, rows),
            ]
        )
        + "\n"
    )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table with padded, aligned columns.

    Pipes inside cells are escaped so that they do not split the cell.
    """
    escaped = [[str(cell).replace("|", "\\|") for cell in row] for row in [header, *rows]]
    widths = [max(3, *(len(row[column]) for row in escaped)) for column in range(len(header))]

    def format_row(row: list[str]) -> str:
        return (
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
        )

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([format_row(escaped[0]), separator, *map(format_row, escaped[1:])])


def render(results_dir: Path, out: Path) -> str:
    """Write the leaderboard README for every result line in `results_dir` to `out`; return it.

    The file is written atomically, so a reader never sees half a leaderboard.
    """
    results_dir, out = Path(results_dir), Path(out)
    lines = load_results(results_dir)
    tables = markdown_tables(cell_table(lines, length_controlled=True)) or "No results yet.\n"
    gap = markdown_gap(gap_table(lines))
    if gap:
        tables += "\n" + gap
    source = os.path.relpath(results_dir, out.parent)
    text = "\n".join(
        [
            "# pftbench leaderboard",
            "",
            EXPLANATION,
            "",
            LC_EXPLANATION,
            "",
            PROVENANCE_EXPLANATION,
            "",
            tables,
            "---",
            "",
            f"Generated from the {len(lines)} result lines in `{source}/*.jsonl`, one line per "
            "run (suite, method, budget, seed). Each line keeps the per-prompt verdicts and "
            "rewards these numbers are recomputed from, the resolved config and its hash, the "
            "git commit, package versions, hardware and stage timings. This file is generated: "
            "edit the results, not this file.",
            "",
        ]
    )
    atomic_write_text(out, text)
    return text


def print_table(lines: Sequence[ResultLine]) -> str:
    """A compact aligned text table of the cells in `lines`, for a terminal; returns the text.

    One row per cell (seeds pooled), e.g. after a run: suite, method, budget, winrate with its
    interval and n, invalids, the number of seeds, mean reward.
    """
    df = cell_table(lines)
    if df.empty:
        return "(no results)"
    header = ["suite", "method", "budget", "winrate [95% CI]", "n", "inv", "seeds", "reward"]
    rows = []
    for record in df.to_dict("records"):
        winrate = (
            f"{record['winrate']:.3f} [{record['ci_low']:.3f}, {record['ci_high']:.3f}]"
            if record["n"] > 0
            else MISSING
        )
        reward = MISSING if _is_missing(record["mean_reward"]) else f"{record['mean_reward']:.3f}"
        rows.append(
            [
                f"{record['suite']} v{record['suite_version']}",
                record["method"],
                record["budget"],
                winrate,
                str(record["n"]),
                str(record["n_invalid"]),
                str(len(record["seeds"])),
                reward,
            ]
        )
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
