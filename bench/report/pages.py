"""The static leaderboard page: `leaderboard/index.html`, one self-contained file.

It opens from disk with no server and fetches nothing: the CSS, the script and the plots (SVG
drawn here, no plotting library) are inline. Per suite it shows a winrate-against-budget plot
with 95% CIs, by method, and a sortable table whose rows expand into their provenance; then the
online-minus-offline gap per task (`bench.report.leaderboard.gap_table`), one plot panel per suite;
reward against KL; and compute (`bench.report.views.compute_table`): mean reward against the
tokens trained and the samples generated, with every counter in a table.
Every number comes from `bench.report.leaderboard`, so the page and `leaderboard/README.md` agree.

Everything taken from a result line is HTML-escaped: the page renders submitted files and must
never run anything written in them. The only script is the one below (sorting, expanding, and
recording console errors into the page so that a headless browser test can read them).
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.leaderboard import (
    EXPLANATION,
    LC_EXPLANATION,
    MDE_EXPLANATION,
    OFFLINE_BASELINE_ID,
    ORACLE_EXPLANATION,
    ORACLE_MARK,
    cell_lines,
    cell_table,
    cost_mark,
    gap_table,
    interval_text,
    is_oracle,
    mde_sentence,
    mde_table,
    online_method_ids,
    task_of,
)
from bench.report.results import ResultLine, load_results
from bench.report.views import (
    STAGE_SECONDS,
    compute_table,
    count_text,
    reward_kl_table,
    seconds_text,
    tokens_trained,
)
from bench.run.cache import atomic_write_text

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
"""Okabe-Ito colours, distinguishable with the common colour-vision deficiencies."""

_ORACLE_BADGE = f' <span class="muted" title="{html.escape(ORACLE_EXPLANATION)}">(oracle)</span>'
"""After the method of a row whose verifier read the gold reward's features."""

TABLE_COLUMNS = (
    # (header, numeric?) in display order; the first column is the expand button.
    ("", False),
    ("method", False),
    ("budget", False),
    ("pairs", True),
    ("seeds", True),
    ("winrate", True),
    ("95% CI", False),
    ("LC winrate", True),
    ("LC 95% CI", False),
    ("n", True),
    ("invalid", True),
    ("failed", True),
    ("valid only [95% CI]", True),
    ("reward [95% CI]", True),
)


def write_html(results_dir: Path, out: Path) -> str:
    """Write the page for every result line in `results_dir` to `out` (atomically); return it."""
    results_dir, out = Path(results_dir), Path(out)
    lines = load_results(results_dir)
    text = render_html(lines, source=os.path.relpath(results_dir, out.parent))
    atomic_write_text(out, text)
    return text


def write_plots(results_dir: Path, out_dir: Path) -> list[Path]:
    """One standalone SVG per suite section, `<out_dir>/<suite>-v<version>.svg`: the page's
    winrate-against-budget plot with its CIs, in the page's colours, styled for use outside it."""
    lines = load_results(Path(results_dir))
    sections = _sections(lines)
    styles = _page_styles(sections, _gap_panels(gap_table(lines)))
    written = []
    for key, rows in sections.items():
        svg = _suite_plot(key, rows, styles)
        svg = svg.replace("</title>", f"</title><style>{_SVG_STYLE}</style>", 1)
        path = Path(out_dir) / f"{key[0]}-v{key[1]}.svg"
        atomic_write_text(path, svg + "\n")
        written.append(path)
    return written


def _sections(
    lines: Sequence[ResultLine],
) -> dict[tuple, list[tuple[dict[str, Any], list[ResultLine]]]]:
    """Table records grouped by (suite, version, tier, judge), each with its per-seed lines."""
    table = cell_table(lines, length_controlled=True)
    records = table.to_dict("records")
    cells = list(cell_lines(lines).values())
    sections: dict[tuple, list[tuple[dict[str, Any], list[ResultLine]]]] = {}
    for record, by_seed in zip(records, cells, strict=True):
        key = (record["suite"], record["suite_version"], record["tier"], record["judge"])
        sections.setdefault(key, []).append((record, [by_seed[s] for s in sorted(by_seed)]))
    return sections


def render_html(lines: Sequence[ResultLine], *, source: str = "results") -> str:
    """The whole page for `lines` as one HTML string (see the module docstring)."""
    sections = _sections(lines)
    gaps = gap_table(lines)
    gap_panels = _gap_panels(gaps)
    styles = _page_styles(sections, gap_panels)
    mdes = {
        (r["suite"], r["suite_version"], r["tier"], r["judge"]): mde_sentence(r)
        for r in mde_table(lines).to_dict("records")
    }

    body = [
        "<header><h1>pftbench leaderboard</h1>",
        f"<p>{_e(EXPLANATION)}</p><p>{_e(MDE_EXPLANATION)}</p><p>{_e(LC_EXPLANATION)}</p>",
        f"<p>{_e(ORACLE_EXPLANATION)}</p>" if any(map(is_oracle, lines)) else "",
        "<p>Click a column header to sort; click &#9656; to show a row's provenance.</p>",
    ]
    if sections:
        links = "".join(
            f'<li><a href="#{_anchor(key)}">{_e(_section_title(key))}</a></li>' for key in sections
        )
        body.append(
            f'<nav><ul>{links}<li><a href="#gap">online minus offline</a></li>'
            '<li><a href="#reward-kl">reward against KL</a></li>'
            '<li><a href="#compute">compute</a></li></ul></nav>'
        )
    body.append("</header><main>")
    if not sections:
        body.append("<p id='empty'>No results yet.</p>")
    for key, rows in sections.items():
        body.append(_suite_section(key, rows, styles, mdes.get(key, "")))
    body.append(_gap_section(gap_panels, styles, online_method_ids(gaps)))
    body.append(_reward_kl_section(reward_kl_table(lines), styles))
    body.append(_compute_section(compute_table(lines), styles))
    body.append(
        f"</main><footer><p>Generated from the {len(lines)} result lines in "
        f"<code>{_e(source)}/*.jsonl</code> by <code>pftbench leaderboard</code>. Each line "
        "keeps the per-prompt verdicts these numbers are recomputed from. This file is "
        "generated: edit the results, not this file.</p></footer>"
        '<pre id="console-errors" data-count="0"></pre>'
    )
    return _PAGE.format(
        style=_STYLE + _SVG_STYLE, capture=_CAPTURE_SCRIPT, body="\n".join(body), script=_SCRIPT
    )


# -- sections ---------------------------------------------------------------------------------


def _gap_panels(gaps: pd.DataFrame) -> dict[str, dict[tuple, list[dict[str, Any]]]]:
    """The rows of `bench.report.leaderboard.gap_table` by task, then by suite section (suite,
    version, tier, judge): one panel of the task's small multiples per section."""
    panels: dict[str, dict[tuple, list[dict[str, Any]]]] = {}
    for record in gaps.to_dict("records"):
        key = (record["suite"], record["suite_version"], record["tier"], record["judge"])
        panels.setdefault(record["task"], {}).setdefault(key, []).append(record)
    return panels


def _page_styles(
    sections: dict[tuple, list[tuple[dict[str, Any], list[ResultLine]]]],
    gap_panels: dict[str, dict[tuple, list[dict[str, Any]]]],
) -> dict[str, SeriesStyle]:
    """One style per method name for the whole page: a method looks the same in every plot."""
    plots = [[record["method"] for record, _ in rows] for rows in sections.values()]
    plots += [
        [record["method"] for record in records]
        for panels in gap_panels.values()
        for records in panels.values()
    ]
    return series_styles(plots)


def _suite_plot(
    key: tuple,
    rows: list[tuple[dict[str, Any], list[ResultLine]]],
    styles: dict[str, SeriesStyle],
) -> str:
    suite = key[0]
    series: dict[str, list[Point]] = {}
    for record, _ in rows:
        if record["n"] > 0:
            series.setdefault(record["method"], []).append(
                Point(
                    record["n_pairs"],
                    record["winrate"],
                    record["ci_low"],
                    record["ci_high"],
                    f"{record['method']} at {record['budget']}: {_estimate_text(record)}",
                )
            )
    return line_plot(
        series,
        styles=styles,
        title=f"{suite}: winrate against budget",
        y_label="winrate against the references",
        reference_y=0.5,
        y_bounds=(0.0, 1.0),
    )


def _suite_section(
    key: tuple,
    rows: list[tuple[dict[str, Any], list[ResultLine]]],
    styles: dict[str, SeriesStyle],
    mde: str = "",
) -> str:
    suite, version, tier, judge = key
    task = task_of(rows[0][1][0])
    plot = _suite_plot(key, rows, styles)
    header = "".join(
        f'<th scope="col" class="{"num" if numeric else "text"}"'
        f"{' aria-sort=none' if label else ''}>"
        + (f'<button type="button" class="sort">{_e(label)}</button>' if label else "")
        + "</th>"
        for label, numeric in TABLE_COLUMNS
    )
    body = "".join(_table_row(record, seed_lines) for record, seed_lines in rows)
    return (
        f'<section class="suite" id="{_anchor(key)}"><h2>{_e(_section_title(key))}</h2>'
        f"<p class='meta'>task <code>{_e(task)}</code>, suite version {_e(version)}, tier "
        f"{_e(tier)}, judge <code>{_e(judge)}</code>; {len(rows)} rows."
        + (f' <span class="mde">{_e(mde)}</span>' if mde else "")
        + "</p>"
        f'<figure class="plot">{plot}</figure>'
        f'<div class="scroll"><table class="cells" data-suite="{_e(suite)}"><thead><tr>{header}'
        f"</tr></thead><tbody>{body}</tbody></table></div></section>"
    )


def _table_row(record: dict[str, Any], seed_lines: list[ResultLine]) -> str:
    method_id = seed_lines[0].method_id
    has_winrate = record["n"] > 0
    has_lc = not _missing(record["lc_winrate"])
    has_reward = not _missing(record["mean_reward"])
    has_valid = not _missing(record["valid_winrate"])
    undecidable = (
        ' <span class="flag" title="{}">undecidable</span>'.format(_e(record["note"]))
        if not record["decidable"]
        else ""
    )
    cells = [
        (
            '<button type="button" class="expand" aria-expanded="false" '
            'aria-label="show provenance">&#9656;</button>',
            "",
        ),
        (
            _e(record["method"])
            + (
                f' <span class="muted">{_e(method_id)}</span>'
                if method_id != record["method"]
                else ""
            )
            + (_ORACLE_BADGE if record.get("oracle") else ""),
            record["method"],
        ),
        (_e(record["budget"]), record["budget"]),
        (str(record["n_pairs"]), record["n_pairs"]),
        (_seeds_cell(record["seeds"]), len(record["seeds"])),
        (_num(record["winrate"]) if has_winrate else "-", record["winrate"] if has_winrate else ""),
        (_ci(record["ci_low"], record["ci_high"]) + undecidable if has_winrate else "-", ""),
        (_num(record["lc_winrate"]) if has_lc else "-", record["lc_winrate"] if has_lc else ""),
        (_ci(record["lc_ci_low"], record["lc_ci_high"]) if has_lc else "-", ""),
        (str(record["n"]), record["n"]),
        (str(record["n_invalid"]), record["n_invalid"]),
        (str(record["n_failed"]), record["n_failed"]),
        _with_ci(record, "valid_winrate", "valid_ci_low", "valid_ci_high", has_valid),
        _with_ci(record, "mean_reward", "reward_ci_low", "reward_ci_high", has_reward),
    ]
    tds = "".join(
        f'<td class="{"num" if numeric else "text"}" data-sort="{_e(sort)}">{shown}</td>'
        for (shown, sort), (_, numeric) in zip(cells, TABLE_COLUMNS, strict=True)
    )
    data = {
        "suite": record["suite"],
        "suite-version": record["suite_version"],
        "method": record["method"],
        "method-id": method_id,
        "budget": record["budget"],
        "n-pairs": record["n_pairs"],
        "seeds": ",".join(str(seed) for seed in record["seeds"]),
        "winrate": repr(float(record["winrate"])),
        "lc-winrate": repr(float(record["lc_winrate"])),
        "n": record["n"],
    }
    attributes = " ".join(f'data-{name}="{_e(value)}"' for name, value in data.items())
    return (
        f'<tr class="cell-row" {attributes}>{tds}</tr>'
        f'<tr class="provenance" hidden><td colspan="{len(TABLE_COLUMNS)}">'
        + "".join(_provenance(line) for line in seed_lines)
        + "</td></tr>"
    )


def _with_ci(
    record: dict[str, Any], value: str, low: str, high: str, present: bool
) -> tuple[str, Any]:
    """A table cell "value [low, high]" and its sort key; "-" where the number is missing."""
    if not present:
        return "-", ""
    return _num(record[value]) + " " + _ci(record[low], record[high]), record[value]


def _provenance(line: ResultLine) -> str:
    """One seed's provenance: what produced the line, as a definition list."""
    git = line.git_commit or "unknown"
    if line.git_dirty:
        git += " (uncommitted changes)"
    judge = line.judge
    judge_text = f"{judge.get('kind')} / id {judge.get('id')} / version {judge.get('version')}"
    if judge.get("params"):
        judge_text += " / params " + json.dumps(judge["params"], sort_keys=True)
    fields = [
        ("seed", str(line.seed)),
        ("method", f"{line.method} (method id {line.method_id})"),
        ("config hash", line.config_hash),
        ("data hash", line.data_hash or "not recorded"),
        ("git commit", git),
        ("created at", line.created_at),
        ("judge", judge_text),
        ("suite file", f"{line.suite_file} (suite version {line.suite_version})"),
        ("pairs", str(line.n_pairs)),
        ("timings (s)", _pairs_text(line.timings)),
        ("packages", _pairs_text(line.packages)),
        ("hardware", _pairs_text(line.hardware)),
        ("method config", json.dumps(line.config.get("method", {}), sort_keys=True)),
    ]
    items = "".join(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in fields)
    return f'<dl class="prov" data-seed="{line.seed}">{items}</dl>'


def _gap_section(
    gap_panels: dict[str, dict[tuple, list[dict[str, Any]]]],
    styles: dict[str, SeriesStyle],
    online_ids: list[str],
) -> str:
    which = f"method ids {', '.join(online_ids)}" if online_ids else "registered as online"
    intro = (
        "<h2>Online minus offline</h2><p>The paired winrate difference of each online method "
        f"({_e(which)}) against offline "
        f"<code>{_e(OFFLINE_BASELINE_ID)}</code> at the same budget, on the same prompts and "
        "seeds: positive means the online method wins more often; a 95% CI that excludes 0 is "
        "a difference. One panel per suite, on the same axes.</p>"
    )
    if not gap_panels:
        return (
            f'<section id="gap">{intro}<p class="none">No suite has results of both an online '
            f"method and <code>{_e(OFFLINE_BASELINE_ID)}</code> yet.</p></section>"
        )
    parts = [f'<section id="gap">{intro}']
    for task, panels in gap_panels.items():
        series_of = {key: _gap_series(records) for key, records in panels.items()}
        # Shared axes, so that the panels compare at a glance (small multiples).
        axes = plot_axes(
            [point for series in series_of.values() for ps in series.values() for point in ps],
            reference_y=0.0,
            y_bounds=(-1.0, 1.0),
        )
        figures = "".join(
            '<figure class="plot panel">'
            + line_plot(
                series,
                styles=styles,
                title=_section_title(key),
                y_label=f"winrate difference vs {panels[key][0]['baseline']}",
                reference_y=0.0,
                axes=axes,
                width=_PANEL_WIDTH,
            )
            + "</figure>"
            for key, series in series_of.items()
        )
        rows = "".join(_gap_row(record) for records in panels.values() for record in records)
        parts.append(
            f'<h3>task <code>{_e(task)}</code></h3><div class="panels">{figures}</div>'
            '<div class="scroll"><table class="gap"><thead><tr><th>suite</th><th>online</th>'
            '<th>offline</th><th>budget</th><th class="num">pairs</th><th class="num">seeds</th>'
            '<th class="num">difference</th><th class="num">95% CI</th><th class="num">n</th>'
            '<th class="num">mean reward difference [95% CI]</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></div>"
        )
    parts.append("</section>")
    return "".join(parts)


def _reward_kl_section(table: pd.DataFrame, styles: dict[str, SeriesStyle]) -> str:
    """Per suite, each method's mean reward against its KL(policy || SFT): one point per budget
    (or entry), the reward's 95% CI up and down, KL's standard error across."""
    intro = (
        '<section id="reward-kl"><h2>Reward against KL</h2><p>Each cell\'s mean reward (the '
        "gold reward on the micro tier) with its 95% CI, against KL(policy || SFT) on the "
        "evaluation prompts with its standard error. A method's points are its budgets; a "
        "method above another at equal KL gets more reward for the same drift from the SFT "
        "policy (Tang et al. 2024 compare online and offline methods this way). Best-of-N "
        "has no policy of its own, so no KL, and is not shown.</p>"
    )
    if table.empty:
        return intro + '<p class="none">No cell records KL yet.</p></section>'
    parts = [intro]
    for (suite, version), section in table.groupby(["suite", "suite_version"], sort=False):
        series: dict[str, list[XYPoint]] = {}
        seen: set[tuple] = set()
        for record in section.to_dict("records"):
            # One policy at several budgets (the SFT policy trains on no pairs) is one point.
            same = (record["method"], record["kl"], record["reward"])
            if same in seen:
                continue
            seen.add(same)
            series.setdefault(record["method"], []).append(
                XYPoint(
                    record["kl"],
                    record["kl_stderr"],
                    record["reward"],
                    record["reward_low"],
                    record["reward_high"],
                    f"{record['method']} at {record['budget']}: reward {record['reward']:.3f} "
                    f"[{record['reward_low']:.3f}, {record['reward_high']:.3f}], KL "
                    f"{record['kl']:.3f} +- {record['kl_stderr']:.3f}",
                )
            )
        parts.append(
            '<figure class="plot">'
            + scatter_plot(
                series,
                styles=styles,
                title=f"{suite} v{version}: mean reward against KL",
                x_label="KL(policy || SFT), nats per output",
                y_label="mean reward",
            )
            + "</figure>"
        )
    parts.append("</section>")
    return "".join(parts)


def _compute_section(table: pd.DataFrame, styles: dict[str, SeriesStyle]) -> str:
    """Per suite, each cell's mean reward against what its training spent: the tokens through
    training passes (policy and verifier, log scale) and the samples generated; one point per
    method and budget, a method's budgets joined; then the table of every counter."""
    intro = (
        '<section id="compute"><h2>Compute</h2><p>What each cell spent beside what it got, so '
        "that methods can be compared at equal compute as well as at equal pairs: its mean "
        "reward (95% CI) against the non-padding tokens through training passes of the policy "
        "and the verifier together, and against the samples it generated from its policy in "
        "training; the mean over seeds of what its lines count (<code>metrics.counters</code>). "
        "Inference is not in them: a method that decodes N samples per evaluation prompt "
        "(best-of-N) says so after its name. A cell that trained no tokens (the SFT policy) "
        "has no place on a log axis, and a cell whose lines predate a counter none on its plot: "
        "each plot names those it leaves out. - in the table: not recorded.</p>"
    )
    if table.empty:
        return intro + '<p class="none">No results yet.</p></section>'
    parts = [intro]
    for (suite, version), section in table.groupby(["suite", "suite_version"], sort=False):
        order = {method: i for i, method in enumerate(dict.fromkeys(section["method"]))}
        records = sorted(
            section.to_dict("records"), key=lambda r: (order[r["method"]], r["n_pairs"])
        )
        names = {
            r["method"]: r["method"]
            + (ORACLE_MARK if r["oracle"] else "")
            + cost_mark(r["eval_samples_per_prompt"])
            for r in records
        }
        named_styles = {names[method]: styles[method] for method in names}
        for x_of, x_label, title, log_x in (
            (tokens_trained, "tokens trained, policy + verifier (log scale)", "tokens", True),
            (_samples_generated, "samples generated in training", "samples", False),
        ):
            series, left_out = _compute_series(records, names, x_of, log_x)
            parts.append(
                '<figure class="plot">'
                + scatter_plot(
                    series,
                    styles=named_styles,
                    title=f"{suite} v{version}: mean reward against training {title}",
                    x_label=x_label,
                    y_label="mean reward",
                    log_x=log_x,
                )
                + (
                    f'<figcaption class="muted">Not drawn: {_e("; ".join(left_out))}.</figcaption>'
                    if left_out
                    else ""
                )
                + "</figure>"
            )
        parts.append(_compute_table_html(suite, version, records))
    parts.append("</section>")
    return "".join(parts)


def _samples_generated(record: dict[str, Any]) -> float:
    return record["samples_generated"]


def _compute_series(
    records: list[dict[str, Any]],
    names: dict[str, str],
    x_of: Callable[[dict[str, Any]], float],
    log_x: bool,
) -> tuple[dict[str, list[XYPoint]], list[str]]:
    """One compute plot's series (by the method's shown name), one point per budget (one for a
    policy the same at every budget), and the cells it leaves out, with why."""
    series: dict[str, list[XYPoint]] = {}
    left_out: dict[str, dict[str, list[str]]] = {}
    seen: set[tuple] = set()
    for record in records:
        x, name = x_of(record), names[record["method"]]
        if _missing(record["reward"]):
            continue  # no rewards recorded: nothing to draw, as in the tables
        if _missing(x) or (log_x and x <= 0):
            why = "not recorded" if _missing(x) else "none trained"
            left_out.setdefault(why, {}).setdefault(record["method"], []).append(record["budget"])
            continue
        same = (name, x, record["reward"])
        if same in seen:
            continue
        seen.add(same)
        series.setdefault(name, []).append(
            XYPoint(
                x,
                0.0,
                record["reward"],
                record["reward_low"],
                record["reward_high"],
                f"{record['method']} at {record['budget']}: reward "
                f"{interval_text(record['reward'], record['reward_low'], record['reward_high'])}, "
                f"{count_text(record['tokens_trained'])} policy and "
                f"{count_text(record['verifier_tokens_trained'])} verifier tokens trained, "
                f"{count_text(record['samples_generated'])} samples generated",
            )
        )
    return series, [
        f"{why}: "
        + ", ".join(f"{method} ({', '.join(budgets)})" for method, budgets in methods.items())
        for why, methods in left_out.items()
    ]


def _compute_table_html(suite: str, version: int, records: list[dict[str, Any]]) -> str:
    """A suite's compute table: per cell, what it got and every counter (means over seeds)."""
    header = (
        "<th>method</th><th>budget</th><th class='num'>seeds</th>"
        "<th class='num'>winrate [95% CI]</th><th class='num'>mean reward [95% CI]</th>"
        "<th class='num'>eval samples/prompt</th><th class='num'>samples</th>"
        "<th class='num'>verifier queries</th><th class='num'>tokens: policy</th>"
        "<th class='num'>tokens: verifier</th><th class='num'>verifier fit s</th>"
        "<th class='num'>sample s</th><th class='num'>score s</th><th class='num'>train s</th>"
    )
    rows = []
    for record in records:
        numbers = [
            interval_text(record["winrate"], record["winrate_low"], record["winrate_high"]),
            interval_text(record["reward"], record["reward_low"], record["reward_high"]),
            f"{record['eval_samples_per_prompt']:g}",
            count_text(record["samples_generated"]),
            count_text(record["rm_queries"]),
            count_text(record["tokens_trained"]),
            count_text(record["verifier_tokens_trained"]),
            *(seconds_text(record[name]) for name in STAGE_SECONDS),
        ]
        rows.append(
            f'<tr class="compute-row" data-method="{_e(record["method"])}" '
            f'data-budget="{_e(record["budget"])}"><td>{_e(record["method"])}'
            + (_ORACLE_BADGE if record["oracle"] else "")
            + f"</td><td>{_e(record['budget'])}</td>"
            f'<td class="num">{_seeds_cell(record["seeds"])}</td>'
            + "".join(f'<td class="num">{_e(number)}</td>' for number in numbers)
            + "</tr>"
        )
    return (
        f'<div class="scroll"><table class="compute" data-suite="{_e(suite)}" '
        f'data-suite-version="{_e(version)}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _gap_series(records: list[dict[str, Any]]) -> dict[str, list[Point]]:
    """One panel's series: per online method, its difference from the baseline by budget."""
    series: dict[str, list[Point]] = {}
    for record in records:
        text = (
            f"{record['method']} - {record['baseline']} at {record['budget']}: "
            f"{record['gap']:+.3f} [{record['ci_low']:+.3f}, {record['ci_high']:+.3f}] "
            f"n={record['n']}"
        )
        series.setdefault(record["method"], []).append(
            Point(record["n_pairs"], record["gap"], record["ci_low"], record["ci_high"], text)
        )
    return series


def _gap_row(record: dict[str, Any]) -> str:
    return (
        f'<tr class="gap-row" data-method="{_e(record["method"])}" '
        f'data-budget="{_e(record["budget"])}" data-gap="{record["gap"]!r}">'
        f"<td>{_e(record['suite'])} v{_e(record['suite_version'])}</td>"
        f"<td>{_e(record['method'])}{_ORACLE_BADGE if record.get('oracle') else ''}</td>"
        f"<td>{_e(record['baseline'])}</td>"
        f'<td>{_e(record["budget"])}</td><td class="num">{record["n_pairs"]}</td>'
        f'<td class="num">{_seeds_cell(record["seeds"])}</td>'
        f'<td class="num" data-sort="{record["gap"]!r}">{record["gap"]:+.3f}</td>'
        f'<td class="num">[{record["ci_low"]:+.3f}, {record["ci_high"]:+.3f}]'
        + ("" if record["decidable"] else ' <span class="flag">undecidable</span>')
        + "</td>"
        + f'<td class="num">{record["n"]}</td>'
        + '<td class="num">'
        + _e(
            interval_text(
                record["reward_gap"], record["reward_ci_low"], record["reward_ci_high"], signed=True
            )
        )
        + "</td></tr>"
    )


# -- plots ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One plotted estimate: at `x` pairs, `value` with its CI [`low`, `high`]."""

    x: float
    value: float
    low: float
    high: float
    label: str
    """Tooltip text."""


@dataclass(frozen=True)
class SeriesStyle:
    """How a series is drawn: a colour, and a marker shape for readers who cannot tell the
    colours apart."""

    colour: str
    marker: str
    """One of MARKERS."""


MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down", "plus")
"""Marker shapes, cycled alongside PALETTE."""

_POLYGON_MARKERS = {
    # shape: its outline around (0, 0), in px (y down)
    "square": ((-4.5, -4.5), (4.5, -4.5), (4.5, 4.5), (-4.5, 4.5)),
    "triangle": ((0, -6.5), (5.8, 4), (-5.8, 4)),
    "diamond": ((0, -6), (6, 0), (0, 6), (-6, 0)),
    "triangle-down": ((0, 6.5), (5.8, -4), (-5.8, -4)),
    "plus": (
        (-2, -6),
        (2, -6),
        (2, -2),
        (6, -2),
        (6, 2),
        (2, 2),
        (2, 6),
        (-2, 6),
        (-2, 2),
        (-6, 2),
        (-6, -2),
        (-2, -2),
    ),
}


def series_styles(plots: Sequence[Sequence[str]]) -> dict[str, SeriesStyle]:
    """A style per series name, the same in every plot: `plots` lists the names each plot shows.

    Names are taken in order of first appearance, each given the lowest style index that no
    name sharing a plot with it holds (greedy graph colouring); index i is colour
    PALETTE[i % 8] and marker MARKERS[i % 6]. So the series of a plot differ in colour while no
    name shares plots with 8 or more others, and in (colour, marker) below 24 indices. Two
    names that never share a plot may share a style: each plot has its own legend, and the
    palette's last, faint colours (black, yellow) are left for plots that need them.
    """
    neighbours: dict[str, set[str]] = {}
    for names in plots:
        for name in names:
            neighbours.setdefault(name, set()).update(other for other in names if other != name)
    index: dict[str, int] = {}
    for name, others in neighbours.items():
        taken = {index[other] for other in others if other in index}
        index[name] = next(i for i in range(len(index) + 1) if i not in taken)
    return {
        name: SeriesStyle(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
        for name, i in index.items()
    }


@dataclass(frozen=True)
class Axes:
    """A plot's scales, shared by the panels of a small multiple: the budgets (number of pairs)
    on x, logarithmic when they span a factor of 4 or more, and the y range with its tick step."""

    xs: tuple[float, ...]
    log_x: bool
    y_lo: float
    y_hi: float
    y_step: float


def plot_axes(
    points: Sequence[Point],
    *,
    reference_y: float | None = None,
    y_bounds: tuple[float, float] = (0.0, 1.0),
) -> Axes:
    """Axes over `points` (at least one): y covers their intervals and `reference_y` with a
    margin, within `y_bounds`, rounded out to whole ticks."""
    xs = tuple(sorted({point.x for point in points}))
    finite = [v for p in points for v in (p.low, p.high, p.value) if math.isfinite(v)]
    if reference_y is not None:
        finite.append(reference_y)
    y_lo, y_hi = min(finite), max(finite)
    margin = max(0.02, 0.08 * (y_hi - y_lo))
    y_lo, y_hi = max(y_bounds[0], y_lo - margin), min(y_bounds[1], y_hi + margin)
    step = _tick_step(y_hi - y_lo)
    return Axes(
        xs=xs,
        log_x=xs[0] > 0 and xs[-1] / xs[0] >= 4,
        y_lo=math.floor(y_lo / step) * step,
        y_hi=math.ceil(y_hi / step) * step,
        y_step=step,
    )


_PAGE_WIDTH = 1200
"""The content column of the page (max-width 1240 px less its padding): a suite's plot spans it
at one SVG unit per pixel; on a narrower screen it scales down."""
_PANEL_WIDTH = 600
"""A panel of the online-minus-offline small multiples: two side by side on a wide screen."""
_HEIGHT = 340
_LEFT, _TOP, _BOTTOM = 60, 28, 44
_LEGEND_CHAR = 7.5
"""A generous width of one character of a 12 px legend label, in px: the legend's width is
made from it, so that no label runs out of the SVG (the browser test measures this)."""
_LEGEND_ROW, _LEGEND_SWATCH = 22, 28
_DODGE = 9
"""Horizontal offset in px between neighbouring series at one budget, so that their
intervals sit side by side instead of on top of each other."""


def line_plot(
    series: dict[str, list[Point]],
    *,
    styles: dict[str, SeriesStyle],
    title: str,
    y_label: str,
    reference_y: float | None = None,
    y_bounds: tuple[float, float] = (0.0, 1.0),
    axes: Axes | None = None,
    width: int = _PAGE_WIDTH,
) -> str:
    """An inline SVG of one series per name against the number of pairs: each estimate a marker
    with its 95% CI as an error bar, the estimates of a series joined by a line.

    At one budget the series are dodged a few pixels apart, in the order of `series`, so that
    overlapping intervals stay readable. `axes` defaults to `plot_axes` over the points (with
    `reference_y`, drawn dashed, and `y_bounds`). The legend sits right of the plot, as wide as
    its longest name needs; the SVG scales to its container's width on the page.
    """
    points = [point for values in series.values() for point in values]
    if not points:
        return f'<p class="none">{_e(title)}: nothing to plot.</p>'
    axes = axes or plot_axes(points, reference_y=reference_y, y_bounds=y_bounds)
    legend_x = width - 12 - _LEGEND_SWATCH - 8 - _LEGEND_CHAR * max(map(len, series))
    plot_right = legend_x - 24
    height = max(_HEIGHT, _TOP + 8 + _LEGEND_ROW * len(series) + 8)
    spread = _DODGE * (len(series) - 1)
    pad = 16 + spread / 2

    def x_position(x: float) -> float:
        if len(axes.xs) == 1:
            return (_LEFT + plot_right) / 2
        lo, hi = axes.xs[0], axes.xs[-1]
        if axes.log_x:
            lo, hi = math.log(lo), math.log(hi)
        value = math.log(x) if axes.log_x else x
        return _LEFT + pad + (value - lo) / (hi - lo) * (plot_right - _LEFT - 2 * pad)

    def y_position(y: float) -> float:
        return _TOP + (axes.y_hi - y) / (axes.y_hi - axes.y_lo) * (height - _TOP - _BOTTOM)

    parts = [_svg_head(width, height, title)]
    for index in range(round((axes.y_hi - axes.y_lo) / axes.y_step) + 1):
        y = axes.y_lo + index * axes.y_step
        py = y_position(y)
        parts.append(
            f'<line x1="{_LEFT}" x2="{plot_right:.1f}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{py + 4:.1f}" class="tick" text-anchor="end">'
            f"{_tick_text(y, axes.y_step)}</text>"
        )
    for x in axes.xs:
        px = x_position(x)
        parts.append(
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{_TOP}" y2="{height - _BOTTOM}" '
            f'class="grid"/><text x="{px:.1f}" y="{height - _BOTTOM + 16}" class="tick" '
            f'text-anchor="middle">{_e(_count_text(x))}</text>'
        )
    if reference_y is not None and axes.y_lo <= reference_y <= axes.y_hi:
        py = y_position(reference_y)
        parts.append(
            f'<line x1="{_LEFT}" x2="{plot_right:.1f}" y1="{py:.1f}" y2="{py:.1f}" class="ref"/>'
        )
    x_label = "preference pairs" + (" (log scale)" if axes.log_x else "")
    parts.append(_axis_titles(plot_right, height, x_label, y_label))
    for index, (name, values) in enumerate(series.items()):
        style = styles[name]
        offset = (index - (len(series) - 1) / 2) * _DODGE
        ordered = sorted(values, key=lambda point: point.x)
        parts.append(
            _series_open(
                name, style, [(x_position(p.x) + offset, y_position(p.value)) for p in ordered]
            )
        )
        for point in ordered:
            px, low, high = (
                x_position(point.x) + offset,
                y_position(point.low),
                y_position(point.high),
            )
            parts.append(
                f'<path d="M{px - 3:.1f},{high:.1f}h6M{px:.1f},{high:.1f}V{low:.1f}'
                f'M{px - 3:.1f},{low:.1f}h6" stroke="{style.colour}" stroke-width="1.5" '
                'fill="none" class="ci"/>'
                + _marker(style, px, y_position(point.value), "marker", point.label)
            )
        parts.append(_legend_entry(style, name, legend_x, _TOP + 8 + _LEGEND_ROW * index) + "</g>")
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class XYPoint:
    """One plotted estimate with error bars on both axes: `y` with its CI [`low`, `high`] at
    `x` +- `x_err`."""

    x: float
    x_err: float
    y: float
    low: float
    high: float
    label: str
    """Tooltip text."""


def scatter_plot(
    series: dict[str, list[XYPoint]],
    *,
    styles: dict[str, SeriesStyle],
    title: str,
    x_label: str,
    y_label: str,
    width: int = _PAGE_WIDTH,
    log_x: bool = False,
) -> str:
    """An inline SVG of one series per name on two continuous axes: each point a marker with
    its y CI and its x error as bars, a series' points joined in order of x. For reward
    against KL: a series above another at equal x does better at the same cost. `log_x`: a
    logarithmic x axis (every x > 0), ticked at powers of ten, for counts that span decades."""
    points = [point for values in series.values() for point in values]
    if not points:
        return f'<p class="none">{_e(title)}: nothing to plot.</p>'
    if log_x:
        x_lo, x_hi, x_ticks = _log_axis([p.x for p in points])
    else:
        x_lo, x_hi = _span([v for p in points for v in (p.x - p.x_err, p.x + p.x_err)])
        if min(p.x for p in points) >= 0:
            x_lo = max(x_lo, 0.0)  # a KL, a count: nothing below 0 to show
        x_step = _nice_step(x_hi - x_lo)
        x_lo, x_hi = math.floor(x_lo / x_step) * x_step, math.ceil(x_hi / x_step) * x_step
        x_ticks = [
            (x_lo + index * x_step, _step_text(x_lo + index * x_step, x_step))
            for index in range(round((x_hi - x_lo) / x_step) + 1)
        ]
    y_lo, y_hi = _span([v for p in points for v in (p.low, p.high, p.y)])
    y_step = _nice_step(y_hi - y_lo)
    y_lo, y_hi = math.floor(y_lo / y_step) * y_step, math.ceil(y_hi / y_step) * y_step
    legend_x = width - 12 - _LEGEND_SWATCH - 8 - _LEGEND_CHAR * max(map(len, series))
    plot_right = legend_x - 24
    height = max(_HEIGHT, _TOP + 8 + _LEGEND_ROW * len(series) + 8)

    def axis_x(u: float) -> float:
        """The px of `u` in axis units (log10 of x on a log axis)."""
        return _LEFT + 16 + (u - x_lo) / (x_hi - x_lo) * (plot_right - _LEFT - 32)

    def px(x: float) -> float:
        if not log_x:
            return axis_x(x)
        return axis_x(math.log10(x)) if x > 0 else axis_x(x_lo)

    def py(y: float) -> float:
        return _TOP + (y_hi - y) / (y_hi - y_lo) * (height - _TOP - _BOTTOM)

    parts = [_svg_head(width, height, title, css_class="scatter")]
    for index in range(round((y_hi - y_lo) / y_step) + 1):
        y = y_lo + index * y_step
        parts.append(
            f'<line x1="{_LEFT}" x2="{plot_right:.1f}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            f'class="grid"/><text x="{_LEFT - 6}" y="{py(y) + 4:.1f}" class="tick" '
            f'text-anchor="end">{_step_text(y, y_step)}</text>'
        )
    for u, text in x_ticks:
        parts.append(
            f'<line x1="{axis_x(u):.1f}" x2="{axis_x(u):.1f}" y1="{_TOP}" y2="{height - _BOTTOM}" '
            f'class="grid"/><text x="{axis_x(u):.1f}" y="{height - _BOTTOM + 16}" class="tick" '
            f'text-anchor="middle">{_e(text)}</text>'
        )
    parts.append(_axis_titles(plot_right, height, x_label, y_label))
    for index, (name, values) in enumerate(series.items()):
        style = styles[name]
        ordered = sorted(values, key=lambda point: point.x)
        parts.append(_series_open(name, style, [(px(p.x), py(p.y)) for p in ordered]))
        for p in ordered:
            x, y, low, high = px(p.x), py(p.y), py(p.low), py(p.high)
            left, right = px(p.x - p.x_err), px(p.x + p.x_err)
            parts.append(
                f'<path d="M{x - 3:.1f},{high:.1f}h6M{x:.1f},{high:.1f}V{low:.1f}'
                f'M{x - 3:.1f},{low:.1f}h6M{left:.1f},{y:.1f}H{right:.1f}" '
                f'stroke="{style.colour}" stroke-width="1.5" fill="none" class="ci"/>'
                + _marker(style, x, y, "marker", p.label)
            )
        parts.append(_legend_entry(style, name, legend_x, _TOP + 8 + _LEGEND_ROW * index) + "</g>")
    parts.append("</svg>")
    return "".join(parts)


def _log_axis(xs: list[float]) -> tuple[float, float, list[tuple[float, str]]]:
    """A log axis over positive `xs`: its ends in log10 units, with a margin, and its ticks
    (log10 of the value, the value's text): every power of ten inside, and 2 and 5 times them
    too when the axis spans less than two decades."""
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    margin = 0.08 * (hi - lo) if hi > lo else 0.5
    lo, hi = lo - margin, hi + margin
    factors = (1, 2, 5) if hi - lo < 2 else (1,)
    ticks = [
        (math.log10(factor * 10.0**power), count_text(factor * 10.0**power))
        for power in range(math.floor(lo), math.ceil(hi) + 1)
        for factor in factors
        if lo <= math.log10(factor * 10.0**power) <= hi
    ]
    return lo, hi, ticks


def _svg_head(width: int, height: int, title: str, css_class: str | None = None) -> str:
    """A plot's opening `<svg>` tag (scaled by the page's CSS), its title for screen readers and
    its visible title."""
    class_attribute = f'class="{css_class}" ' if css_class else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" {class_attribute}'
        f'aria-label="{_e(title)}"><title>{_e(title)}</title>'
        f'<text x="{_LEFT}" y="16" class="plot-title">{_e(title)}</text>'
    )


def _axis_titles(plot_right: float, height: int, x_label: str, y_label: str) -> str:
    """The x axis's title under the plot and the y axis's, turned, left of it."""
    return (
        f'<text x="{(_LEFT + plot_right) / 2:.1f}" y="{height - 8}" class="axis" '
        f'text-anchor="middle">{_e(x_label)}</text>'
        f'<text transform="translate(14 {(_TOP + height - _BOTTOM) / 2:.1f}) rotate(-90)" '
        f'class="axis" text-anchor="middle">{_e(y_label)}</text>'
    )


def _series_open(name: str, style: SeriesStyle, line: list[tuple[float, float]]) -> str:
    """A series' group, opened, with the line joining its points (in px) when it has several."""
    head = f'<g class="series" data-series="{_e(name)}" data-marker="{style.marker}">'
    if len(line) < 2:
        return head
    return head + (
        f'<polyline points="{_svg_points(line)}" fill="none" stroke="{style.colour}" '
        'stroke-width="1.75" class="trend"/>'
    )


def _legend_entry(style: SeriesStyle, name: str, x: float, y: float) -> str:
    """A legend row at (x, y): the series' line and marker, then its full name."""
    return (
        f'<line x1="{x:.1f}" x2="{x + _LEGEND_SWATCH:.1f}" y1="{y}" y2="{y}" '
        f'stroke="{style.colour}" stroke-width="1.75"/>'
        + _marker(style, x + _LEGEND_SWATCH / 2, y, "legend-marker")
        + f'<text x="{x + _LEGEND_SWATCH + 8:.1f}" y="{y + 4}" class="legend">{_e(name)}</text>'
    )


def _span(values: list[float]) -> tuple[float, float]:
    """The range of `values` with a margin; a single value gets a unit-wide range."""
    finite = [v for v in values if math.isfinite(v)]
    lo, hi = min(finite), max(finite)
    margin = 0.08 * (hi - lo) if hi > lo else 0.5
    return lo - margin, hi + margin


def _nice_step(span: float) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten giving at most 8 ticks over `span`."""
    magnitude = 10.0 ** math.floor(math.log10(span / 8)) if span > 0 else 1.0
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if span / (factor * magnitude) <= 8:
            return factor * magnitude
    return 10 * magnitude


def _step_text(value: float, step: float) -> str:
    """A tick's text with as many decimals as the step has (0.25: 2; 0.5: 1; 2: 0)."""
    step_text = f"{step:g}"
    decimals = len(step_text.split(".")[1]) if "." in step_text else 0
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _marker(style: SeriesStyle, x: float, y: float, css_class: str, tooltip: str = "") -> str:
    """The series' marker centred on (x, y), with its tooltip."""
    title = f"<title>{_e(tooltip)}</title>" if tooltip else ""
    if style.marker == "circle":
        shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5"'
        return f'{shape} fill="{style.colour}" class="{css_class}">{title}</circle>'
    outline = [(x + dx, y + dy) for dx, dy in _POLYGON_MARKERS[style.marker]]
    return (
        f'<polygon points="{_svg_points(outline)}" fill="{style.colour}" '
        f'class="{css_class}">{title}</polygon>'
    )


def _tick_step(span: float) -> float:
    """A round step giving 4 to 10 ticks over `span`."""
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5):
        if span / step <= 10:
            return step
    return 1.0


def _tick_text(value: float, step: float) -> str:
    decimals = 2 if step < 0.1 else 1
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def _count_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _svg_points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in points)


# -- small formatting helpers -----------------------------------------------------------------


def _e(value: Any) -> str:
    """HTML-escaped text of any value (quotes included, for attributes)."""
    return html.escape(str(value), quote=True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: float) -> str:
    return f"{value:.3f}"


def _ci(low: float, high: float) -> str:
    return f"[{low:.3f}, {high:.3f}]"


def _estimate_text(record: dict[str, Any]) -> str:
    return f"{_num(record['winrate'])} {_ci(record['ci_low'], record['ci_high'])} n={record['n']}"


def _seeds_cell(seeds: Sequence[int]) -> str:
    """The number of seeds pooled in a row, their ids on hover: "3" reads as a count, where
    the ids "0,1,2" (or "0" for one seed) would not."""
    ids = ", ".join(str(seed) for seed in seeds)
    return (
        f'<span class="seeds" title="seed{"s" if len(seeds) > 1 else ""} {ids}">{len(seeds)}</span>'
    )


def _pairs_text(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in mapping.items()) or "not recorded"


def _section_title(key: tuple) -> str:
    suite, version, tier, judge = key
    return f"{suite} (v{version}, {tier}, judge {judge})"


def _anchor(key: tuple) -> str:
    suite, version, _, judge = key
    raw = f"suite-{suite}-v{version}-{judge}"
    return "".join(char if char.isalnum() or char in "-_" else "-" for char in raw)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pftbench leaderboard</title>
<link rel="icon" href="data:,">
<script>{capture}</script>
<style>{style}</style>
</head>
<body>
{body}
<script>{script}</script>
</body>
</html>
"""

# Runs first, so that an error anywhere later (even in the main script) is recorded into
# #console-errors, where a headless browser's --dump-dom can read it.
_CAPTURE_SCRIPT = """
(function () {
  var errors = [];
  function show() {
    var box = document.getElementById("console-errors");
    if (box) { box.textContent = errors.join("\\n"); box.dataset.count = String(errors.length); }
  }
  function record(kind, text) { errors.push(kind + ": " + text); show(); }
  window.addEventListener("error", function (event) {
    var where = event.filename ? " (" + event.filename + ":" + event.lineno + ")" : "";
    var target = event.target || {};
    var what = event.message || ("failed to load " + (target.src || target.href));
    record("error", what + where);
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    record("unhandled rejection", String(event.reason));
  });
  ["error", "warn"].forEach(function (level) {
    var original = console[level];
    console[level] = function () {
      record("console." + level, Array.prototype.map.call(arguments, String).join(" "));
      return original.apply(console, arguments);
    };
  });
  document.addEventListener("DOMContentLoaded", show);
})();
"""

_SCRIPT = """
(function () {
  "use strict";
  function sortValue(row, column, numeric) {
    var raw = row.cells[column].getAttribute("data-sort");
    if (!numeric) return raw || "";
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }
  function sortTable(table, column, numeric, descending) {
    var body = table.tBodies[0];
    var pairs = [];
    for (var i = 0; i < body.rows.length; i += 2) pairs.push([body.rows[i], body.rows[i + 1]]);
    pairs.sort(function (a, b) {
      var x = sortValue(a[0], column, numeric), y = sortValue(b[0], column, numeric);
      if (x === y) return 0;
      if (x === null) return 1;   // rows without a value go last either way
      if (y === null) return -1;
      var order = x < y ? -1 : 1;
      return descending ? -order : order;
    });
    pairs.forEach(function (pair) { body.appendChild(pair[0]); body.appendChild(pair[1]); });
  }
  document.querySelectorAll("table.cells").forEach(function (table) {
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(headers, function (th, column) {
      var button = th.querySelector("button.sort");
      if (!button) return;
      var numeric = th.classList.contains("num");
      button.addEventListener("click", function () {
        var descending = th.getAttribute("aria-sort") !== "descending";
        Array.prototype.forEach.call(headers, function (other) {
          if (other.hasAttribute("aria-sort")) other.setAttribute("aria-sort", "none");
        });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        sortTable(table, column, numeric, descending);
      });
    });
    table.querySelectorAll("button.expand").forEach(function (button) {
      button.addEventListener("click", function () {
        var details = button.closest("tr").nextElementSibling;
        var open = details.hidden;
        details.hidden = !open;
        button.setAttribute("aria-expanded", String(open));
        button.innerHTML = open ? "&#9662;" : "&#9656;";
      });
    });
  });
  // ?selftest: sort the first table by winrate (descending) and open its first row, then
  // record what the page shows, for the headless browser test.
  if (/[?&]selftest\\b/.test(window.location.search)) {
    var table = document.querySelector("table.cells");
    var report = {sorted: [], expanded: false};
    if (table) {
      var winrate = Array.prototype.find.call(table.tHead.rows[0].cells, function (th) {
        return th.textContent === "winrate";
      });
      winrate.querySelector("button").click();
      table.querySelectorAll("tr.cell-row").forEach(function (row) {
        report.sorted.push(row.dataset.method + " " + row.dataset.budget);
      });
      table.querySelector("button.expand").click();
      report.expanded = !table.tBodies[0].rows[1].hidden;
    }
    var out = document.createElement("pre");
    out.id = "selftest";
    out.textContent = JSON.stringify(report);
    document.body.appendChild(out);
  }
  document.documentElement.dataset.ready = "1";
})();
"""

_SVG_STYLE = """
svg .grid { stroke: #eaeef2; } svg .ref { stroke: #8c959f; stroke-dasharray: 4 3; }
svg text { font: 11px system-ui, sans-serif; fill: var(--fg, #1f2328); }
svg .tick { fill: var(--muted, #57606a); } svg .axis { fill: var(--muted, #57606a); }
svg .plot-title { font-weight: 600; font-size: 12px; } svg .legend { font-size: 12px; }
svg .marker, svg .legend-marker { stroke: #fff; stroke-width: 1; }
"""
"""The plots' styles: part of the page's CSS, and embedded in each standalone SVG file."""

_STYLE = """
:root { color-scheme: light; --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --bg2: #f6f8fa; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  margin: 0 auto; max-width: 1240px; padding: 16px 20px 48px; }
h1 { margin: 8px 0 4px; } h2 { margin-top: 36px; border-bottom: 1px solid var(--line); }
header p { color: var(--muted); max-width: 920px; }
nav ul { display: flex; flex-wrap: wrap; gap: 8px 18px; padding: 0; list-style: none; }
code { background: var(--bg2); padding: 0 4px; border-radius: 4px; }
.meta { color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0 16px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: var(--bg2); text-align: left; } .num { text-align: right; }
th button.sort { font: inherit; font-weight: 600; border: 0; background: none; cursor: pointer;
  padding: 0; color: inherit; }
th[aria-sort=ascending] button.sort::after { content: " \\25B2"; }
th[aria-sort=descending] button.sort::after { content: " \\25BC"; }
button.expand { border: 1px solid var(--line); background: #fff; border-radius: 4px;
  cursor: pointer; width: 26px; }
tr.cell-row:hover { background: #f3f8ff; } .muted { color: var(--muted); font-size: 12px; }
.flag { color: #b35900; font-size: 12px; } .mde { font-weight: 600; }
tr.provenance td { background: var(--bg2); white-space: normal; }
dl.prov { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 6px 0;
  font-size: 12px; } dl.prov dt { color: var(--muted); } dl.prov dd { margin: 0;
  word-break: break-all; font-family: ui-monospace, monospace; }
dl.prov + dl.prov { border-top: 1px dashed var(--line); padding-top: 6px; }
figure.plot { margin: 8px 0; } figure.plot svg { display: block; width: 100%; height: auto; }
.panels { display: grid; gap: 8px 24px;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, 480px), 1fr)); }
#console-errors[data-count="0"] { display: none; }
#console-errors { color: #b00020; white-space: pre-wrap; }
#selftest { display: none; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""
