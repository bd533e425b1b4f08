"""The lab's views beyond winrates: what a verifier learnt, reward against KL, and the 2x2.

Each view is a table built from result lines alone (no rerun) and its markdown; the leaderboard
page (`bench.report.leaderboard.render`) and `benchmarks/lab_summary.py` print them.

- `verifier_table`: each verifier's held-out accuracy and mean Bradley-Terry likelihood on the
  `valid` pairs (`metrics.reward_model`) per budget, the mean over seeds with a t interval over
  seeds: the paper's RM comparison (global vs local vs DPO-implicit).
- `reward_kl_table`: each cell's mean gold reward (pooled, crossed interval) against its
  KL(policy || SFT) (`metrics.kl`, the mean over seeds with its standard error), so that "online
  beats offline at every KL budget" (Tang et al. 2024) can be read off: the points of a method
  are its budgets and any of its entries (a beta sweep).
- `quadrant_table`: Tajwar et al. 2024's 2x2 on the same pairs, each method placed by what it
  declared where it registered (`family`, `negative_gradient`): off-policy without a negative
  gradient (SFT on the chosen: `sft` with epochs > 0), off-policy with one (`dpo`), on-policy
  without (`filter`) and on-policy with (`online_dpo`), the on-policy pair sharing one verifier.
- `compute_table`: each cell's winrate and mean reward beside what it cost
  (`metrics.counters`: samples generated, verifier queries, tokens trained by the policy and
  by the verifier, wall seconds per stage; and the samples it decodes per evaluation prompt),
  so that "online wins" can be read at equal compute as well as at equal pairs.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

import pandas as pd

from bench.method_api import COUNTERS
from bench.registry import METHODS
from bench.report.leaderboard import (
    MISSING,
    ONLINE_FAMILY,
    ORACLE_MARK,
    cell_lines,
    cost_mark,
    family_of,
    interval_text,
    is_oracle,
    markdown_table,
    samples_per_prompt,
)
from bench.report.results import ResultLine
from bench.report.stats import student_t_quantile
from bench.report.summary import pool

VERIFIER_COLUMNS = [
    "suite",
    "suite_version",
    "verifier",
    "oracle",
    "budget",
    "n_pairs",
    "seeds",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "bt_likelihood",
    "bt_low",
    "bt_high",
    "n",
    "methods",
]

CELL_COLUMNS = [
    "suite",
    "suite_version",
    "method",
    "method_id",
    "oracle",
    "budget",
    "n_pairs",
    "seeds",
]
"""The columns naming a method's cell in a view (`_method_cell`)."""

REWARD_KL_COLUMNS = [
    *CELL_COLUMNS,
    "kl",
    "kl_stderr",
    "reward",
    "reward_low",
    "reward_high",
]

COMPUTE_COUNTERS = tuple(name for name in COUNTERS if name != "pairs_used")
"""The counters the compute view shows (the pairs are the budget's, in its own column)."""

STAGE_SECONDS = ("verifier_fit_s", "sample_s", "score_s", "train_s")
"""The counters that are wall seconds of a stage of training."""

COMPUTE_COLUMNS = [
    *CELL_COLUMNS,
    "winrate",
    "winrate_low",
    "winrate_high",
    "reward",
    "reward_low",
    "reward_high",
    "eval_samples_per_prompt",
    *COMPUTE_COUNTERS,
]

QUADRANTS = {
    ("off-policy", "no negative gradient"): "sft on the chosen",
    ("off-policy", "negative gradient"): "dpo",
    ("on-policy", "no negative gradient"): "filter",
    ("on-policy", "negative gradient"): "online_dpo",
}
"""Tajwar et al. 2024's two axes and the method that fills each cell here."""

QUADRANT_COLUMNS = [
    "suite",
    "suite_version",
    "budget",
    "n_pairs",
    "verifier",
    "oracle",
    "sampling",
    "gradient",
    "method",
    "reward",
    "reward_low",
    "reward_high",
    "winrate",
    "winrate_low",
    "winrate_high",
]


# -- the verifiers ------------------------------------------------------------------------------
def verifier_label(line: ResultLine) -> str | None:
    """The verifier a line's metrics describe: the label the method trained it under
    (`metrics.train.reward_model`), `dpo` for an offline DPO policy's own implicit reward (the
    label of a `kind: dpo` verifier), None when the line reports no verifier."""
    if not line.metrics.get("reward_model"):
        return None
    train = line.metrics.get("train")
    label = train.get("reward_model") if isinstance(train, dict) else None
    if isinstance(label, str):
        return label
    return "dpo" if line.method_id == "dpo" else line.method


def verifier_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """One row per (suite, version, verifier, budget): held-out accuracy and BT likelihood.

    Methods that fit the same verifier on the same pairs (online DPO, best-of-N and filter with
    one spec) report the same figures; the row takes the first such method's seeds and names
    them all. The interval is a t interval over the seeds' values (what a fresh seed's verifier
    gets on these 500 held-out pairs; the pairs' own sampling error is not in it), NaN from one
    seed."""
    rows: dict[tuple, dict[str, Any]] = {}
    for (suite, version, _, _, method, budget), by_seed in cell_lines(lines).items():
        first = next(iter(by_seed.values()))
        label = verifier_label(first)
        if label is None:
            continue
        key = (suite, version, label, budget)
        if key in rows:
            rows[key]["methods"].append(method)
            continue
        seed_lines = [by_seed[seed] for seed in sorted(by_seed)]
        figures = [line.metrics["reward_model"] for line in seed_lines]
        accuracy = _seed_interval([f["accuracy"] for f in figures])
        likelihood = _seed_interval([f["bt_likelihood"] for f in figures])
        rows[key] = {
            "suite": suite,
            "suite_version": version,
            "verifier": label,
            "oracle": any(is_oracle(line) for line in seed_lines),
            "budget": budget,
            "n_pairs": first.n_pairs,
            "seeds": sorted(by_seed),
            "accuracy": accuracy[0],
            "accuracy_low": accuracy[1],
            "accuracy_high": accuracy[2],
            "bt_likelihood": likelihood[0],
            "bt_low": likelihood[1],
            "bt_high": likelihood[2],
            "n": figures[0].get("n"),
            "methods": [method],
        }
    return pd.DataFrame(list(rows.values()), columns=VERIFIER_COLUMNS)


def markdown_verifiers(table: pd.DataFrame) -> str:
    """Per suite: verifier x budget, held-out accuracy and BT likelihood with seed intervals."""
    if table.empty:
        return ""
    parts = [
        "## Verifiers on held-out pairs",
        "Each verifier's accuracy (a tie counts half) and mean Bradley-Terry likelihood on the "
        "labelled pairs of the `valid` prompts, which no method trains on: the mean over seeds "
        "with a 95% t interval over seeds (one seed: no interval). `dpo` is an offline DPO "
        "policy's implicit reward, `global-full` the paper's global RM, `local` its local RM. "
        "Chance is 0.5.",
    ]
    for (suite, version), section in table.groupby(["suite", "suite_version"], sort=False):
        budgets = list(dict.fromkeys(section.sort_values("n_pairs")["budget"]))
        by_key = {(r["verifier"], r["budget"]): r for r in section.to_dict("records")}
        rows = []
        for label in dict.fromkeys(section["verifier"]):
            oracle = any(r["oracle"] for (v, _), r in by_key.items() if v == label)
            cells = []
            for budget in budgets:
                record = by_key.get((label, budget))
                if record is None:
                    cells.append(MISSING)
                    continue
                accuracy = (record["accuracy"], record["accuracy_low"], record["accuracy_high"])
                likelihood = (record["bt_likelihood"], record["bt_low"], record["bt_high"])
                cells.append(f"{interval_text(*accuracy)} / {interval_text(*likelihood)}")
            rows.append([label + (ORACLE_MARK if oracle else ""), *cells])
        parts.append(f"### {suite} v{version}: accuracy / BT likelihood")
        parts.append(markdown_table(["verifier", *budgets], rows))
    return "\n\n".join(parts) + "\n"


# -- reward against KL --------------------------------------------------------------------------


def _interval_fields(name: str, interval: Any) -> dict[str, float]:
    """`name`, `name_low` and `name_high` of a pooled number with its 95% CI (an object with
    value, low and high), NaN where the cell has none."""
    if interval is None:
        return {name: math.nan, f"{name}_low": math.nan, f"{name}_high": math.nan}
    return {name: interval.value, f"{name}_low": interval.low, f"{name}_high": interval.high}


def _method_cell(
    suite: str, version: int, method: str, budget: Any, seed_lines: list, seeds: list[int]
) -> dict[str, Any]:
    """The fields naming a method's cell in a view's row: suite, version, method, budget, its
    seeds, and whether any seed's line reached an oracle."""
    return {
        "suite": suite,
        "suite_version": version,
        "method": method,
        "method_id": seed_lines[0].method_id,
        "oracle": any(is_oracle(line) for line in seed_lines),
        "budget": budget,
        "n_pairs": seed_lines[0].n_pairs,
        "seeds": seeds,
    }


def reward_kl_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """One row per cell that measured KL: its KL(policy || SFT) and its mean reward.

    KL is the mean over seeds of each line's estimate (`metrics.kl.kl`: one sample per prompt on
    the evaluation prompts), its standard error sqrt(sum se^2) / k; the reward is the pooled
    cell's (crossed seeds x prompts interval). Best-of-N and other methods whose output is not
    a policy's sample record no KL and are left out."""
    rows = []
    for (suite, version, _, _, method, budget), by_seed in cell_lines(lines).items():
        seed_lines = [by_seed[seed] for seed in sorted(by_seed)]
        kls = [line.metrics.get("kl") for line in seed_lines]
        if not all(isinstance(kl, dict) and "kl" in kl for kl in kls):
            continue
        reward = pool(seed_lines).mean_reward
        if reward is None:
            continue
        k = len(kls)
        rows.append(
            {
                **_method_cell(suite, version, method, budget, seed_lines, sorted(by_seed)),
                "kl": statistics.fmean(kl["kl"] for kl in kls),
                "kl_stderr": math.sqrt(sum(kl.get("kl_stderr", 0.0) ** 2 for kl in kls)) / k,
                **_interval_fields("reward", reward),
            }
        )
    return pd.DataFrame(rows, columns=REWARD_KL_COLUMNS)


def markdown_reward_kl(table: pd.DataFrame) -> str:
    """Per suite: each method's cells in order of KL, mean reward [CI] at KL +- se."""
    if table.empty:
        return ""
    parts = [
        "## Reward against KL",
        "Each cell's mean reward (the gold reward on the micro tier; invalid outputs at the "
        "task's floor) with its 95% CI, against KL(policy || SFT) estimated on the evaluation "
        "prompts (mean over seeds +- its standard error). A method's points are its budgets "
        "(and its entries, for a sweep); a method whose points lie above another's at equal "
        "KL gets more reward for the same drift from the SFT policy.",
    ]
    for (suite, version), section in table.groupby(["suite", "suite_version"], sort=False):
        order = {method: i for i, method in enumerate(dict.fromkeys(section["method"]))}
        records = sorted(section.to_dict("records"), key=lambda r: (order[r["method"]], r["kl"]))
        rows = [
            [
                record["method"] + (ORACLE_MARK if record["oracle"] else ""),
                record["budget"],
                f"{record['kl']:.3f} +- {record['kl_stderr']:.3f}",
                interval_text(record["reward"], record["reward_low"], record["reward_high"]),
            ]
            for record in records
        ]
        parts.append(f"### {suite} v{version}")
        parts.append(markdown_table(["method", "budget", "KL", "mean reward [95% CI]"], rows))
    return "\n\n".join(parts) + "\n"


# -- Tajwar et al.'s 2x2 ------------------------------------------------------------------------
def quadrant_of(line: ResultLine) -> tuple[str, str] | None:
    """(sampling, gradient) of a line's method in the 2x2, from what the method declared where it
    registered: its family (offline: off-policy, online: on-policy; `family_of`) and whether its
    loss pushes the rejected side down (`negative_gradient`). None when it fills no cell: a
    method not installed here or that trains no policy (best-of-N), a cell that trained
    nothing (its `metrics.train` is empty: the SFT policy itself), and online DPO started from
    DPO (`metrics.train.init_dpo`), which does not start where the other three do."""
    if line.method_id not in METHODS:
        return None
    gradient = METHODS.get(line.method_id).negative_gradient
    train = line.metrics.get("train")
    if gradient is None or not train or (isinstance(train, dict) and "init_dpo" in train):
        return None
    sampling = "on-policy" if family_of(line) == ONLINE_FAMILY else "off-policy"
    return sampling, "negative gradient" if gradient else "no negative gradient"


def quadrant_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """Rows of every complete 2x2: per (suite, version, budget, verifier of the on-policy
    pair), the four cells' mean reward and winrate over the seeds all four ran. The first
    method entry filling an off-policy cell is taken; the on-policy cells come in pairs that
    fitted the same verifier (filter and online DPO with one `reward_model`)."""
    sections: dict[tuple, dict[tuple[str, str], list[tuple[str, dict[int, ResultLine]]]]] = {}
    for (suite, version, _, _, method, budget), by_seed in cell_lines(lines).items():
        first = next(iter(by_seed.values()))
        quadrant = quadrant_of(first)
        if quadrant is not None:
            sections.setdefault((suite, version, budget), {}).setdefault(quadrant, []).append(
                (method, by_seed)
            )
    rows = []
    for (suite, version, budget), cells in sections.items():
        if len(cells) < 4:
            continue
        off = {q: cells[q][0] for q in cells if q[0] == "off-policy"}
        by_verifier: dict[str, dict[tuple[str, str], tuple[str, dict[int, ResultLine]]]] = {}
        for quadrant in (q for q in cells if q[0] == "on-policy"):
            for method, by_seed in cells[quadrant]:
                label = verifier_label(next(iter(by_seed.values()))) or "-"
                by_verifier.setdefault(label, {}).setdefault(quadrant, (method, by_seed))
        for label, on in by_verifier.items():
            if len(on) < 2:
                continue
            four = {**off, **on}
            seeds = sorted(set.intersection(*(set(by_seed) for _, by_seed in four.values())))
            if not seeds:
                continue
            oracle = any(is_oracle(by_seed[seed]) for _, by_seed in four.values() for seed in seeds)
            for (sampling, gradient), (method, by_seed) in four.items():
                numbers = pool([by_seed[seed] for seed in seeds])
                reward, winrate = numbers.mean_reward, numbers.winrate
                rows.append(
                    {
                        "suite": suite,
                        "suite_version": version,
                        "budget": budget,
                        "n_pairs": by_seed[seeds[0]].n_pairs,
                        "verifier": label,
                        "oracle": oracle,
                        "sampling": sampling,
                        "gradient": gradient,
                        "method": method,
                        **_interval_fields("reward", reward),
                        **_interval_fields("winrate", winrate),
                    }
                )
    return pd.DataFrame(rows, columns=QUADRANT_COLUMNS)


def markdown_quadrants(table: pd.DataFrame) -> str:
    """Each complete 2x2 as a small table: sampling x gradient, mean reward [CI]."""
    if table.empty:
        return ""
    parts = [
        "## On-policy sampling and negative gradients (Tajwar et al. 2024)",
        "The same pairs through the four combinations: off-policy without a negative gradient "
        "(SFT on the chosen), with one (DPO), on-policy without (filter: SFT on the verifier's "
        "best samples) and with one (online DPO), the on-policy pair sharing one verifier. "
        "Mean reward [95% CI] over the seeds all four ran.",
    ]
    keys = ["suite", "suite_version", "budget", "verifier"]
    for (suite, version, budget, label), section in table.groupby(keys, sort=False):
        cell = {(r["sampling"], r["gradient"]): r for r in section.to_dict("records")}

        oracle = ORACLE_MARK if section["oracle"].any() else ""
        parts.append(f"### {suite} v{version}, {budget}, verifier {label}{oracle}")
        parts.append(
            markdown_table(
                ["", "no negative gradient", "negative gradient"],
                [
                    [sampling]
                    + [
                        _quadrant_text(cell[sampling, gradient])
                        for gradient in ("no negative gradient", "negative gradient")
                    ]
                    for sampling in ("off-policy", "on-policy")
                ],
            )
        )
    return "\n\n".join(parts) + "\n"


def _quadrant_text(record: dict[str, Any]) -> str:
    reward = interval_text(record["reward"], record["reward_low"], record["reward_high"])
    return f"{record['method']}: {reward}"


# -- compute ------------------------------------------------------------------------------------
def compute_table(lines: Sequence[ResultLine]) -> pd.DataFrame:
    """One row per cell: its pooled winrate and mean reward (crossed seeds x prompts intervals)
    and, per counter of COMPUTE_COUNTERS, the mean over its seeds of `metrics.counters`; NaN
    where a seed's line does not record that counter (lines written before it was counted).
    `eval_samples_per_prompt` is the inference cost (`leaderboard.samples_per_prompt`:
    best-of-N decodes N per evaluation prompt, the others 1), the largest over seeds."""
    rows = []
    for (suite, version, _, _, method, budget), by_seed in cell_lines(lines).items():
        seed_lines = [by_seed[seed] for seed in sorted(by_seed)]
        numbers = pool(seed_lines)
        winrate, reward = numbers.winrate, numbers.mean_reward
        counters = [line.metrics.get("counters") or {} for line in seed_lines]
        rows.append(
            {
                **_method_cell(suite, version, method, budget, seed_lines, sorted(by_seed)),
                **_interval_fields("winrate", winrate),
                **_interval_fields("reward", reward),
                "eval_samples_per_prompt": max(samples_per_prompt(line) for line in seed_lines),
                **{name: _seed_mean(counters, name) for name in COMPUTE_COUNTERS},
            }
        )
    return pd.DataFrame(rows, columns=COMPUTE_COLUMNS)


def tokens_trained(record: dict[str, Any]) -> float:
    """A compute row's tokens through training passes, the policy's and the verifier's: the
    x of the page's reward-against-tokens plot; NaN where either is not recorded."""
    return record["tokens_trained"] + record["verifier_tokens_trained"]


def markdown_compute(table: pd.DataFrame) -> str:
    """Per suite: each cell's winrate and mean reward [CI] beside its samples, verifier
    queries, tokens trained and stage seconds (means over seeds)."""
    if table.empty:
        return ""
    parts = [
        "## Compute",
        "What each cell spent beside what it got (the winrate and mean reward [95% CI] of the "
        "tables above), so that methods can be compared at equal compute as well as at equal "
        "pairs. Counted during training (`metrics.counters`), the mean over seeds: samples "
        "generated from the policy, verifier queries (samples scored), non-padding tokens "
        "through training passes of the policy and of the verifier, and wall seconds fitting "
        "the verifier, sampling, scoring and training the policy. Inference is not in them: "
        "a method that decodes N samples per evaluation prompt (best-of-N) says so after its "
        f"name. {MISSING}: not recorded (lines written before the counter existed).",
    ]
    for (suite, version), section in table.groupby(["suite", "suite_version"], sort=False):
        order = {method: i for i, method in enumerate(dict.fromkeys(section["method"]))}
        records = sorted(
            section.to_dict("records"), key=lambda r: (order[r["method"]], r["n_pairs"])
        )
        rows = [
            [
                record["method"]
                + (ORACLE_MARK if record["oracle"] else "")
                + cost_mark(record["eval_samples_per_prompt"]),
                record["budget"],
                interval_text(record["winrate"], record["winrate_low"], record["winrate_high"]),
                interval_text(record["reward"], record["reward_low"], record["reward_high"]),
                count_text(record["samples_generated"]),
                count_text(record["rm_queries"]),
                f"{count_text(record['tokens_trained'])} / "
                f"{count_text(record['verifier_tokens_trained'])}",
                " / ".join(seconds_text(record[name]) for name in STAGE_SECONDS),
            ]
            for record in records
        ]
        header = [
            "method",
            "budget",
            "winrate [95% CI]",
            "mean reward [95% CI]",
            "samples",
            "verifier queries",
            "tokens trained (policy / verifier)",
            "seconds (verifier fit / sample / score / train)",
        ]
        parts.append(f"### {suite} v{version}")
        parts.append(markdown_table(header, rows))
    return "\n\n".join(parts) + "\n"


def count_text(value: float) -> str:
    """A count to three significant figures: `320`, `2.53k`, `1.2M`; MISSING for NaN."""
    if _missing(value):
        return MISSING
    scales = ((1e9, "G"), (1e6, "M"), (1e3, "k"))
    scale, suffix = next(((s, x) for s, x in scales if abs(value) >= s), (1.0, ""))
    scaled = value / scale
    return (f"{scaled:.0f}" if abs(scaled) >= 100 else f"{scaled:.3g}") + suffix


def seconds_text(value: float) -> str:
    """Wall seconds to three significant figures (whole ones from 1000): `0.042`, `12.3`,
    `1520`; MISSING for NaN."""
    if _missing(value):
        return MISSING
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


# -- helpers ------------------------------------------------------------------------------------
def _seed_mean(counters: Sequence[dict[str, Any]], name: str) -> float:
    """The mean over seeds of a counter; NaN unless every seed records it."""
    values = [counter.get(name) for counter in counters]
    if not values or not all(isinstance(v, (int, float)) for v in values):
        return math.nan
    return statistics.fmean(values)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _seed_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-seed values with a 95% t interval over seeds; NaN bounds from one seed."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(student_t_quantile(0.975, len(values) - 1.0)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean, mean - half, mean + half
