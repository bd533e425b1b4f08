"""Leaderboard tables: result lines pooled over seeds, as a DataFrame, markdown and terminal text.

Numbers are recomputed from the per-prompt `outcomes` and `rewards` stored in the result lines,
not averaged from their summary fields, so that several seeds are pooled as the crossed seeds x
prompts design they are (`bench.report.summary`). With one seed the recomputation gives back exactly
the numbers of the stored line. Each suite also states its minimum detectable effect (`mde_table`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.registry import METHODS
from bench.report.power import POWER, minimum_detectable_effect
from bench.report.results import ResultLine, load_results
from bench.report.stats import CrossedEstimate, Estimate, length_controlled_winrate
from bench.report.summary import CellNumbers, difference, pool, reward_difference, scores
from bench.run.cache import atomic_write_text

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
    "n_failed",
    "decidable",
    "note",
    "valid_winrate",
    "valid_ci_low",
    "valid_ci_high",
    "mean_reward",
    "reward_ci_low",
    "reward_ci_high",
    "lc_winrate",
    "lc_ci_low",
    "lc_ci_high",
    "provenance",
    "oracle",
    "samples_per_prompt",
]

ONLINE_FAMILY = "online"
"""The method family (`bench.registry.MethodFamily`) on the online side of the
online-minus-offline gap: methods that learn from, or search over, samples of their own policy.
Each method declares its family where it registers; the result line records it (`family_of`)."""

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
    "decidable",
    "oracle",
    "reward_gap",
    "reward_ci_low",
    "reward_ci_high",
]

MDE_COLUMNS = ["suite", "suite_version", "tier", "judge", "mde", "mde_low", "mde_high", "pairs"]

MISSING = "-"
"""What an empty table cell shows (a method not run at that budget)."""

EXPLANATION = (
    "Each cell is the winrate of a method's outputs against the reference outputs, judged on "
    "the suite's evaluation prompts: winrate = (wins + ties/2) / n. An invalid output "
    "(inv=K: unfinished or malformed, the policy's fault) counts as a loss and is in n; a "
    "failed judgment (failed=K: the judge's fault) is left out of n. The valid-only winrate, "
    "which leaves invalid outputs out too, is the secondary table. The brackets give a 95% "
    "confidence interval. With several training seeds (seeds=S) every seed is judged on the "
    "same prompts, so the interval comes from the variance components of that crossed seeds "
    "x prompts design, a t quantile for each (bench.report.stats.crossed_mean); it covers "
    "the winrate of a fresh seed on fresh prompts. An interval marked (undecidable) cannot "
    "support a claim: it rests on two seeds (one contrast for the seed variance), or is too "
    "wide or has no scale (bench.report.stats.crossed_mean says which). With one seed the "
    "interval covers that seed's winrate over fresh prompts only: seed-to-seed variation is "
    "not in it. The mean reward counts an invalid output at the judge's worst score. Columns "
    "are preference-pair budgets, in increasing number of pairs."
)

MDE_EXPLANATION = (
    "MDE is the suite's minimum detectable effect: the paired winrate difference between two "
    f"of its methods that its seeds and prompts detect with {POWER:.0%} power, from the "
    "observed variances (bench.report.power); the median over every pair of methods at every "
    "budget, with the range. A difference smaller than it is one this suite cannot be "
    "expected to see."
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
    "LC is the length-controlled winrate: a logistic fit of each verdict on the "
    "output-minus-reference length difference, read at equal lengths, with a bootstrap CI "
    "over prompts (bench.report.stats.length_controlled_winrate). A raw winrate well above "
    "its LC means the method wins partly by being longer. It needs per-prompt lengths, which "
    "lines written before they were recorded lack (shown as -)."
)


def cell_table(lines: Sequence[ResultLine], *, length_controlled: bool = False) -> pd.DataFrame:
    """One row per (suite, suite_version, method, budget), its seeds pooled; columns CELL_COLUMNS.

    With `length_controlled`, the lc_* columns hold the length-controlled winrate
    (`bench.report.stats.length_controlled_winrate`) where every seed's line records its output and
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
    numbers = _pooled(seed_lines)
    winrate, valid, reward = numbers.winrate, numbers.valid_winrate, numbers.mean_reward
    lc = (
        _length_controlled(seed_lines, [scores(line) for line in seed_lines])
        if length_controlled
        else None
    )
    return {
        "suite": suite,
        "suite_version": suite_version,
        "tier": tier,
        "judge": judge,
        "method": method,
        "budget": budget,
        "n_pairs": n_pairs.pop(),
        "seeds": numbers.seeds,
        "winrate": winrate.value if winrate else math.nan,
        "ci_low": winrate.low if winrate else math.nan,
        "ci_high": winrate.high if winrate else math.nan,
        "n": winrate.n if winrate else 0,
        "n_invalid": numbers.n_invalid,
        "n_failed": numbers.n_failed,
        "decidable": winrate.decidable if winrate else True,
        "note": winrate.note if winrate else "",
        "valid_winrate": valid.value if valid else math.nan,
        "valid_ci_low": valid.low if valid else math.nan,
        "valid_ci_high": valid.high if valid else math.nan,
        "mean_reward": reward.value if reward else None,
        "reward_ci_low": reward.low if reward else None,
        "reward_ci_high": reward.high if reward else None,
        "lc_winrate": lc.value if lc else math.nan,
        "lc_ci_low": lc.low if lc else math.nan,
        "lc_ci_high": lc.high if lc else math.nan,
        "provenance": provenance_marks(seed_lines),
        "oracle": any(is_oracle(line) for line in seed_lines),
        "samples_per_prompt": max(samples_per_prompt(line) for line in seed_lines),
    }


_POOLED: dict[tuple, CellNumbers] = {}
"""Pooled numbers by the lines they pool: the README, the page and the plots each pool the
same cells."""


def _pooled(seed_lines: list[ResultLine]) -> CellNumbers:
    key = tuple(_identity(line) for line in seed_lines)
    if key not in _POOLED:
        _POOLED[key] = pool(seed_lines)
    return _POOLED[key]


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


def family_of(line: ResultLine) -> str:
    """The family a line's method declared: recorded in the line, else (a line written before it
    was recorded) the registry's, else `offline` (a method not installed here)."""
    if line.method_family is not None:
        return line.method_family
    if line.method_id in METHODS:
        return METHODS.get(line.method_id).family or "offline"
    return "offline"


ORACLE_MARK = " (oracle)"
"""Appended to the method of a row whose cells reached an oracle (`is_oracle`)."""

ORACLE_EXPLANATION = (
    "(oracle): the row's verifier read the gold reward's own features "
    "(`reward_model: {kind: oracle_features}`, formerly `capacity: linear`): a ceiling to read "
    "the learned verifiers against, not a method that learns only from its pairs."
)

COST_EXPLANATION = (
    "(N samples/prompt): the method decodes N samples per evaluation prompt and returns one "
    "(best-of-N), N times the inference cost of the others' single greedy decode."
)

OLD_ORACLE_LABELS = frozenset({"global-linear"})
"""Verifier labels of lines written before oracles were recorded that read the features."""


def samples_per_prompt(line: ResultLine) -> float:
    """Samples the line's method decoded per evaluation prompt, its inference cost against one
    greedy decode: recorded (`metrics.eval_samples_per_prompt`), else for older lines the
    largest N of its best-of-N variants (`n=N`), else 1."""
    recorded = line.metrics.get("eval_samples_per_prompt")
    if isinstance(recorded, (int, float)):
        return float(recorded)
    ns = [
        int(name.split("=", 1)[1])
        for name in (line.metrics.get("variants") or {})
        if name.startswith("n=") and name.split("=", 1)[1].isdigit()
    ]
    return float(max(ns)) if ns else 1.0


def is_oracle(line: ResultLine) -> bool:
    """Whether the line's method reached an oracle: recorded in `metrics.oracles` (the runner,
    from `bench.tasks.base.oracle_task`); for older lines, a verifier label that read the gold
    reward's features."""
    if line.metrics.get("oracles"):
        return True
    train = line.metrics.get("train")
    return isinstance(train, dict) and train.get("reward_model") in OLD_ORACLE_LABELS


def task_of(line: ResultLine) -> str:
    """The task a line's suite runs (its config's task name; the suite name for older lines)."""
    task = line.config.get("task")
    return str(task["name"]) if isinstance(task, dict) and "name" in task else line.suite


def gap_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """The online-minus-offline gap: one row per (suite, online method entry, budget).

    For each method entry of the online family (`family_of`), at each budget where the suite
    also has the offline baseline (the entry named OFFLINE_BASELINE_ID, else the first entry with
    that id), `gap` is the paired winrate difference online - offline on the same prompts
    (`bench.report.summary.difference`), pooled over the seeds both ran; columns GAP_COLUMNS.
    """
    rows = []
    for (suite, version, tier, judge), cells in _sections_of(lines).items():
        entries, families = {}, {}
        for (method, _), by_seed in cells.items():
            first_line = next(iter(by_seed.values()))
            entries.setdefault(method, first_line.method_id)
            families.setdefault(method, family_of(first_line))
        baselines = [m for m, method_id in entries.items() if method_id == OFFLINE_BASELINE_ID]
        if not baselines:
            continue
        baseline = OFFLINE_BASELINE_ID if OFFLINE_BASELINE_ID in baselines else baselines[0]
        for (method, budget), by_seed in cells.items():
            if families[method] != ONLINE_FAMILY or (baseline, budget) not in cells:
                continue
            gap, seeds = _difference(by_seed, cells[baseline, budget])
            if gap is None:
                continue  # no common seed, or no prompt both judged: no difference to show
            reward_gap = _reward_difference(by_seed, cells[baseline, budget], seeds)
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
                    "oracle": any(is_oracle(line) for line in by_seed.values()),
                    "reward_gap": reward_gap.value if reward_gap else math.nan,
                    "reward_ci_low": reward_gap.low if reward_gap else math.nan,
                    "reward_ci_high": reward_gap.high if reward_gap else math.nan,
                    "baseline": baseline,
                    "budget": budget,
                    "n_pairs": first.n_pairs,
                    "seeds": seeds,
                    "gap": gap.value,
                    "ci_low": gap.low,
                    "ci_high": gap.high,
                    "n": gap.n,
                    "decidable": gap.decidable,
                }
            )
    return pd.DataFrame(rows, columns=GAP_COLUMNS)


def mde_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """Each suite's minimum detectable effect: one row per (suite, version, tier, judge).

    `mde` is the median, `mde_low` / `mde_high` the range, over every pair of its method entries
    at every budget (seeds both ran), of `bench.report.power.minimum_detectable_effect` of their
    paired winrate difference; `pairs` counts them. Columns MDE_COLUMNS; a suite with a single
    method has no row.
    """
    rows = []
    for (suite, version, tier, judge), cells in _sections_of(lines).items():
        methods = list(dict.fromkeys(method for method, _ in cells))
        budgets = list(dict.fromkeys(budget for _, budget in cells))
        effects = []
        for budget in budgets:
            for index, first in enumerate(methods):
                for second in methods[index + 1 :]:
                    if (first, budget) not in cells or (second, budget) not in cells:
                        continue
                    gap, _ = _difference(cells[first, budget], cells[second, budget])
                    effect = minimum_detectable_effect(gap) if gap is not None else math.nan
                    if not math.isnan(effect):
                        effects.append(effect)
        if effects:
            rows.append(
                {
                    "suite": suite,
                    "suite_version": version,
                    "tier": tier,
                    "judge": judge,
                    "mde": float(np.median(effects)),
                    "mde_low": min(effects),
                    "mde_high": max(effects),
                    "pairs": len(effects),
                }
            )
    return pd.DataFrame(rows, columns=MDE_COLUMNS)


def _sections_of(
    lines: Sequence[ResultLine],
) -> dict[tuple, dict[tuple[str, str], dict[int, ResultLine]]]:
    """(suite, version, tier, judge) -> (method, budget) -> {seed: line}."""
    sections: dict[tuple, dict[tuple[str, str], dict[int, ResultLine]]] = {}
    for (suite, version, tier, judge, method, budget), by_seed in cell_lines(lines).items():
        sections.setdefault((suite, version, tier, judge), {})[method, budget] = by_seed
    return sections


def _identity(line: ResultLine) -> tuple:
    """What a pooled number depends on in a line (two lines alike in it pool alike)."""
    return (line.outcomes, line.reward_floor, tuple(line.rewards or ()), line.seed)


_DIFFERENCES: dict[tuple, CrossedEstimate | None] = {}
"""Paired differences by the lines they pair (the README, the page and the plots share them)."""


def _difference(
    a: dict[int, ResultLine], b: dict[int, ResultLine]
) -> tuple[CrossedEstimate | None, list[int]]:
    """A - B over the seeds both ran, and those seeds; None where there is no difference."""
    seeds = sorted(set(a) & set(b))
    a_lines, b_lines = [a[seed] for seed in seeds], [b[seed] for seed in seeds]
    key = tuple(_identity(line) for line in a_lines + b_lines)
    if key not in _DIFFERENCES:
        try:
            _DIFFERENCES[key] = difference(a_lines, b_lines) if seeds else None
        except ValueError:
            _DIFFERENCES[key] = None  # different prompts: not comparable
    return _DIFFERENCES[key], seeds


def _reward_difference(
    a: dict[int, ResultLine], b: dict[int, ResultLine], seeds: list[int]
) -> CrossedEstimate | None:
    """The paired mean-reward difference A - B over `seeds`; None where it cannot be taken."""
    try:
        return reward_difference([a[seed] for seed in seeds], [b[seed] for seed in seeds])
    except ValueError:
        return None


def markdown_tables(df: pd.DataFrame, mdes: pd.DataFrame | None = None) -> str:
    """Markdown sections, one per suite: a winrate table and, if any, a mean-reward table.

    Each section is headed `## <suite> (v<version>, <tier>, judge <judge id>)`; tables have
    one row per method (first-seen order) and one column per budget (by number of pairs).
    With `mdes` (`mde_table`), each section states its minimum detectable effect; where some
    output was invalid, a valid-only winrate table follows the headline one.
    """
    records = df.to_dict("records")
    sections: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        key = (record["suite"], record["suite_version"], record["tier"], record["judge"])
        sections.setdefault(key, []).append(record)
    mde_of = {
        (r["suite"], r["suite_version"], r["tier"], r["judge"]): r
        for r in (mdes.to_dict("records") if mdes is not None else [])
    }

    parts = []
    for key, section in sections.items():
        suite, suite_version, tier, judge = key
        parts.append(f"## {suite} (v{suite_version}, {tier}, judge {judge})")
        if key in mde_of:
            parts.append(mde_sentence(mde_of[key]))
        parts.append(_method_by_budget(section, _winrate_cell))
        if any(record.get("oracle") for record in section):
            parts.append(ORACLE_EXPLANATION)
        if any((record.get("samples_per_prompt") or 1) > 1 for record in section):
            parts.append(COST_EXPLANATION)
        if any(record["n_invalid"] > 0 for record in section):
            parts.append(
                "Valid-only winrate [95% CI] (secondary: invalid outputs left out, not lost):"
            )
            parts.append(_method_by_budget(section, _valid_cell))
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
    oracles = {record["method"] for record in section if record.get("oracle")}
    costs = {record["method"]: record.get("samples_per_prompt") or 1.0 for record in section}
    n_pairs_of = {}
    for record in section:
        n_pairs_of.setdefault(record["budget"], record["n_pairs"])
    # sorted() is stable, so budgets with equal n_pairs keep their first-seen order.
    budgets = sorted(n_pairs_of, key=lambda budget: n_pairs_of[budget])
    by_cell = {(record["method"], record["budget"]): record for record in section}
    header = ["method"] + [_budget_header(budget, n_pairs_of[budget]) for budget in budgets]
    rows = [
        [method + (ORACLE_MARK if method in oracles else "") + cost_mark(costs[method])]
        + [
            format_cell(by_cell[method, budget]) if (method, budget) in by_cell else MISSING
            for budget in budgets
        ]
        for method in methods
    ]
    return markdown_table(header, rows)


def cost_mark(samples: float) -> str:
    """` (16 samples/prompt)` after a method that decodes more than one sample per prompt at
    inference (best-of-N), against one greedy decode for the others."""
    if samples <= 1:
        return ""
    return f" ({samples:g} samples/prompt)"


def _budget_header(budget: str, n_pairs: int) -> str:
    """The budget label, with its number of pairs when the label does not already say it."""
    return budget if budget == f"n={n_pairs}" else f"{budget} ({n_pairs} pairs)"


def mde_sentence(record: dict[str, Any]) -> str:
    """One suite's MDE line: "MDE 0.052 (80% power; median of 21 method pairs, 0.031-0.074)"."""
    return (
        f"MDE {record['mde']:.3f} ({POWER:.0%} power; median of {record['pairs']} method "
        f"pair{'s' if record['pairs'] != 1 else ''}, {record['mde_low']:.3f}-"
        f"{record['mde_high']:.3f})"
    )


def _winrate_cell(record: dict[str, Any]) -> str:
    if record["n"] == 0:
        text = "no judged prompt"
    else:
        text = (
            f"{record['winrate']:.3f} [{record['ci_low']:.3f}, {record['ci_high']:.3f}] "
            f"n={record['n']}"
        )
    if record["n_invalid"] > 0:
        text += f" inv={record['n_invalid']}"
    if record.get("n_failed", 0) > 0:
        text += f" failed={record['n_failed']}"
    if len(record["seeds"]) > 1:
        text += f" seeds={len(record['seeds'])}"
    if not record.get("decidable", True):
        text += " (undecidable)"
    if record.get("provenance"):
        text += f" {record['provenance']}"
    return text


def _interval_cell(value: str, low: str, high: str, missing: str = MISSING) -> Callable:
    """A formatter of the record's `value [low, high]`, `missing` where there is no value."""

    def format_cell(record: dict[str, Any]) -> str:
        if _is_missing(record[value]):
            return missing
        return interval_text(record[value], record[low], record[high])

    return format_cell


_valid_cell = _interval_cell("valid_winrate", "valid_ci_low", "valid_ci_high", "no valid output")
_reward_cell = _interval_cell("mean_reward", "reward_ci_low", "reward_ci_high")
_lc_cell = _interval_cell("lc_winrate", "lc_ci_low", "lc_ci_high")


def online_method_ids(gaps: pd.DataFrame) -> list[str]:
    """The ids of the online methods a `gap_table` compares, in order of first appearance."""
    return list(dict.fromkeys(gaps["method_id"])) if not gaps.empty else []


def markdown_gap(gaps: pd.DataFrame) -> str:
    """A markdown section of the online-minus-offline gap per task; empty when there is none."""
    if gaps.empty:
        return ""
    rows = [
        [
            record["task"],
            f"{record['suite']} v{record['suite_version']}",
            f"{record['method']}{ORACLE_MARK if record.get('oracle') else ''} - "
            f"{record['baseline']}",
            _budget_header(record["budget"], record["n_pairs"]),
            f"{record['gap']:+.3f} [{record['ci_low']:+.3f}, {record['ci_high']:+.3f}] "
            f"n={record['n']}"
            + (f" seeds={len(record['seeds'])}" if len(record["seeds"]) > 1 else "")
            + ("" if record["decidable"] else " (undecidable)"),
            interval_text(
                record["reward_gap"], record["reward_ci_low"], record["reward_ci_high"], signed=True
            ),
        ]
        for record in gaps.to_dict("records")
    ]
    header = [
        "task",
        "suite",
        "online - offline",
        "budget",
        "winrate difference [95% CI]",
        "mean reward difference [95% CI]",
    ]
    return (
        "\n\n".join(
            [
                "## Online minus offline",
                "The paired winrate difference of each online method against offline "
                f"`{OFFLINE_BASELINE_ID}` on the same prompts and seeds at the same budget; a CI "
                "above 0 means the online method wins more often. Online methods: "
                f"{', '.join(online_method_ids(gaps))}."
                + (" " + ORACLE_EXPLANATION if gaps["oracle"].any() else ""),
                markdown_table(header, rows),
            ]
        )
        + "\n"
    )


def interval_text(value: Any, low: Any, high: Any, *, signed: bool = False) -> str:
    """`0.123 [0.045, 0.201]` (`signed`: `+0.123 [+0.045, +0.201]`, for a difference); the value
    alone where it has no interval (one seed's t interval), MISSING where there is no value. The
    one formatter of a number with its interval in the tables, the run's table and the page."""
    if _is_missing(value):
        return MISSING
    form = "+.3f" if signed else ".3f"
    if _is_missing(low) or _is_missing(high):
        return f"{value:{form}}"
    return f"{value:{form}} [{low:{form}}, {high:{form}}]"


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
    tables = (
        markdown_tables(cell_table(lines, length_controlled=True), mde_table(lines))
        or "No results yet.\n"
    )
    from bench.report import views  # it builds on this module

    for view in (
        markdown_gap(gap_table(lines)),
        views.markdown_verifiers(views.verifier_table(lines)),
        views.markdown_reward_kl(views.reward_kl_table(lines)),
        views.markdown_quadrants(views.quadrant_table(lines)),
        views.markdown_compute(views.compute_table(lines)),
    ):
        if view:
            tables += "\n" + view
    source = os.path.relpath(results_dir, out.parent)
    text = "\n".join(
        [
            "# pftbench leaderboard",
            "",
            EXPLANATION,
            "",
            MDE_EXPLANATION,
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
    interval and n, invalid outputs, failed judgments, the number of seeds, mean reward; then
    each suite's minimum detectable effect (`mde_table`), and each online method's paired
    difference from offline DPO in winrate and mean reward (`gap_table`).
    """
    df = cell_table(lines)
    if df.empty:
        return "(no results)"
    header = [
        "suite",
        "method",
        "budget",
        "winrate [95% CI]",
        "n",
        "inv",
        "failed",
        "seeds",
        "reward",
    ]
    rows = []
    for record in df.to_dict("records"):
        winrate = (
            f"{record['winrate']:.3f} [{record['ci_low']:.3f}, {record['ci_high']:.3f}]"
            + ("" if record["decidable"] else " undecidable")
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
                str(record["n_failed"]),
                str(len(record["seeds"])),
                reward,
            ]
        )
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    table = "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )
    mdes = [
        f"{record['suite']} v{record['suite_version']}: {mde_sentence(record)}"
        for record in mde_table(lines).to_dict("records")
    ]
    gaps = [
        f"  {record['suite']} v{record['suite_version']} "
        f"{record['method']}{ORACLE_MARK if record['oracle'] else ''} - {record['baseline']} at "
        f"{record['budget']}: winrate "
        f"{interval_text(record['gap'], record['ci_low'], record['ci_high'], signed=True)}"
        + ("" if record["decidable"] else " (undecidable)")
        + ", mean reward "
        + interval_text(
            record["reward_gap"], record["reward_ci_low"], record["reward_ci_high"], signed=True
        )
        + f" (n={record['n']}, seeds={len(record['seeds'])})"
        for record in gap_table(lines).to_dict("records")
    ]
    if gaps:
        gaps.insert(
            0,
            f"online minus offline {OFFLINE_BASELINE_ID}, paired over the same prompts and seeds "
            "(95% CI):",
        )
    return "\n".join([table, *mdes, *gaps])
