"""The compute view (bench/report/views.py `compute_table`, `markdown_compute`; the page's compute
section): each cell's winrate and mean reward beside the means over its seeds of what its lines
count, from hand-made result lines whose counters are known; lines that predate a counter show
MISSING, never a number."""

from __future__ import annotations

import math
import re

import pytest
from result_factory import lab_line

from bench.method_api import COUNTERS
from bench.report.leaderboard import MISSING
from bench.report.pages import XYPoint, render_html, scatter_plot, series_styles
from bench.report.results import ResultLine
from bench.report.summary import pool
from bench.report.views import compute_table, count_text, markdown_compute, seconds_text

N = 40


def counted_line(
    method: str,
    seed: int,
    counters: dict[str, float] | None,
    *,
    method_id: str | None = None,
    budget: int = 250,
    reward_shift: float = 0.0,
    metrics: dict | None = None,
) -> ResultLine:
    """A consistent gold-judged line whose `metrics.counters` is `counters` (None: a line written
    before any counter but pairs_used)."""
    counted = {"pairs_used": budget} if counters is None else counters
    return lab_line(
        method,
        method_id or method,
        seed,
        budget=budget,
        p_win=0.6,
        reward_shift=reward_shift,
        metrics={"counters": counted, **(metrics or {})},
    )


def counters(**counted: float) -> dict[str, float]:
    """Every counter, 0 unless given: what the runner records since every counter exists."""
    return {**dict.fromkeys(COUNTERS, 0), "pairs_used": 250, **counted}


DPO = [
    counters(tokens_trained=1000, train_s=2.0),
    counters(tokens_trained=1200, train_s=4.0),
]
ONLINE = [
    counters(
        samples_generated=2000,
        rm_queries=2000,
        tokens_trained=3000,
        verifier_tokens_trained=500,
        verifier_fit_s=1.0,
        sample_s=10.0,
        score_s=0.5,
        train_s=6.0,
    ),
    counters(
        samples_generated=2000,
        rm_queries=2000,
        tokens_trained=3100,
        verifier_tokens_trained=500,
        verifier_fit_s=3.0,
        sample_s=12.0,
        score_s=0.7,
        train_s=8.0,
    ),
]


def lab_lines() -> list[ResultLine]:
    lines = [counted_line("sft", s, counters()) for s in (0, 1)]
    lines += [counted_line("dpo", s, c, reward_shift=0.2) for s, c in enumerate(DPO)]
    lines += [counted_line("online_dpo", s, c, reward_shift=0.4) for s, c in enumerate(ONLINE)]
    lines += [
        counted_line(
            "best_of_n",
            s,
            counters(verifier_fit_s=0.1),
            reward_shift=0.5,
            metrics={"eval_samples_per_prompt": 16.0, "oracles": ["oracle_features"]},
        )
        for s in (0, 1)
    ]
    return lines


def test_a_row_pools_the_numbers_and_averages_each_counter_over_seeds() -> None:
    lines = lab_lines()
    table = compute_table(lines)
    assert list(table["method"]) == ["sft", "dpo", "online_dpo", "best_of_n"]
    row = table.set_index("method").loc["online_dpo"]
    assert row["seeds"] == [0, 1]
    assert row["samples_generated"] == 2000 and row["rm_queries"] == 2000
    assert row["tokens_trained"] == 3050 and row["verifier_tokens_trained"] == 500
    assert (row["verifier_fit_s"], row["sample_s"], row["score_s"], row["train_s"]) == (
        pytest.approx((2.0, 11.0, 0.6, 7.0))
    )
    # The winrate and the mean reward are the pooled cell's (crossed seeds x prompts).
    numbers = pool([line for line in lines if line.method == "online_dpo"])
    assert (row["winrate"], row["winrate_low"], row["winrate_high"]) == (
        numbers.winrate.value,
        numbers.winrate.low,
        numbers.winrate.high,
    )
    assert (row["reward"], row["reward_low"], row["reward_high"]) == (
        numbers.mean_reward.value,
        numbers.mean_reward.low,
        numbers.mean_reward.high,
    )
    best = table.set_index("method").loc["best_of_n"]
    assert best["oracle"] and best["eval_samples_per_prompt"] == 16
    assert not table.set_index("method").loc["dpo"]["oracle"]


def test_the_markdown_shows_the_counts_the_cost_and_the_oracle() -> None:
    text = markdown_compute(compute_table(lab_lines()))
    rows = {
        cells[0]: cells
        for cells in (
            [cell.strip() for cell in row.strip("|").split("|")]
            for row in text.splitlines()
            if row.startswith("| ") and not row.startswith("| method")
        )
    }
    assert list(rows) == ["sft", "dpo", "online_dpo", "best_of_n (oracle) (16 samples/prompt)"]
    assert rows["dpo"][4:] == ["0", "0", "1.1k / 0", "0 / 0 / 0 / 3"]
    assert rows["online_dpo"][4:] == ["2k", "2k", "3.05k / 500", "2 / 11 / 0.6 / 7"]
    assert rows["sft"][4:] == ["0", "0", "0 / 0", "0 / 0 / 0 / 0"]


def test_lines_that_predate_a_counter_show_missing_never_a_number() -> None:
    lines = [counted_line("dpo", s, None) for s in (0, 1)]  # written before the counters
    # One seed counted tokens, the other did not: no mean of one seed passed off as the cell's.
    lines += [counted_line("online_dpo", 0, ONLINE[0])]
    lines += [
        counted_line(
            "online_dpo",
            1,
            {"pairs_used": 250, "samples_generated": 2000, "rm_queries": 2000},
        )
    ]
    table = compute_table(lines).set_index("method")
    assert all(math.isnan(table.loc["dpo"][name]) for name in COUNTERS if name != "pairs_used")
    assert table.loc["online_dpo"]["samples_generated"] == 2000
    assert math.isnan(table.loc["online_dpo"]["tokens_trained"])
    text = markdown_compute(table.reset_index())
    (dpo,) = [row for row in text.splitlines() if row.startswith("| dpo ")]
    cells = [cell.strip() for cell in dpo.strip("|").split("|")]
    assert cells[4:] == [MISSING, MISSING, f"{MISSING} / {MISSING}", " / ".join([MISSING] * 4)]
    assert cells[2] != MISSING and cells[3] != MISSING  # the numbers it did record
    (online,) = [row for row in text.splitlines() if row.startswith("| online_dpo ")]
    assert "| 2k " in online and f"{MISSING} / {MISSING}" in online
    assert "not recorded" in text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (2.5, "2.5"), (320, "320"), (2527, "2.53k"), (123456, "123k"), (1.2e6, "1.2M")],
)
def test_count_text(value: float, text: str) -> None:
    assert count_text(value) == text


def test_seconds_and_counts_of_nothing_recorded_are_missing() -> None:
    assert count_text(math.nan) == seconds_text(math.nan) == MISSING
    assert (seconds_text(0.0423), seconds_text(12.34), seconds_text(1520.4)) == (
        "0.0423",
        "12.3",
        "1520",
    )


def test_the_page_plots_mean_reward_against_tokens_and_samples() -> None:
    lines = lab_lines() + [counted_line("filter", s, None, reward_shift=0.1) for s in (0, 1)]
    html = render_html(lines)
    assert 'href="#compute"' in html
    section = html[html.index('<section id="compute">') :]
    section = section[: section.index("</section>")]
    plots = re.findall(r"<svg.*?</svg>", section)
    assert len(plots) == 2
    tokens, samples = plots
    assert "lab v1: mean reward against training tokens" in tokens
    assert "tokens trained, policy + verifier (log scale)" in tokens
    # SFT and best-of-N trained no token: no place on a log axis; filter's lines predate the
    # counters. The caption says so.
    assert re.findall(r'data-series="([^"]+)"', tokens) == ["dpo", "online_dpo"]
    assert "none trained: sft (n=250), best_of_n (n=250)" in section
    assert "not recorded: filter (n=250)" in section
    # Against samples: best-of-N at 0 training samples, its oracle and its inference cost in its
    # name, as in the table.
    assert re.findall(r'data-series="([^"]+)"', samples) == [
        "sft",
        "dpo",
        "online_dpo",
        "best_of_n (oracle) (16 samples/prompt)",
    ]
    # One row per cell in the table, the oracle marked.
    rows = re.findall(r'<tr class="compute-row" data-method="([^"]+)"', section)
    assert rows == ["sft", "dpo", "online_dpo", "best_of_n", "filter"]
    assert "best_of_n <span" in section and "(oracle)</span>" in section


def test_a_log_x_scatter_spaces_decades_equally_and_ticks_them() -> None:
    points = [
        XYPoint(x, 0.0, y, y - 0.1, y + 0.1, f"{x}")
        for x, y in ((1e2, 0.1), (1e3, 0.2), (1e4, 0.3))
    ]
    svg = scatter_plot(
        {"m": points},
        styles=series_styles([["m"]]),
        title="t",
        x_label="tokens",
        y_label="reward",
        log_x=True,
    )
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"[^>]*class="marker"', svg)]
    assert len(xs) == 3 and xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)
    ticks = re.findall(r'class="tick" text-anchor="middle">([^<]+)<', svg)
    assert ticks == ["100", "1k", "10k"]
