"""The static leaderboard page: its content, then the page itself in headless Chromium."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from result_factory import synthetic_line

from bench.cli import main
from bench.evaluate.verdicts import outcomes_from_string
from bench.report.leaderboard import cell_table, family_of, gap_table, markdown_gap
from bench.report.pages import MARKERS, PALETTE, render_html, series_styles, write_html
from bench.report.results import append_result, load_results
from bench.report.stats import crossed_difference, verdict_scores

REPO_ROOT = Path(__file__).resolve().parents[1]

METHODS = [("sft", "sft", 0.62), ("dpo", "dpo", 0.6), ("online_dpo", "online_dpo", 0.7)]
METHODS += [("best_of_n", "best_of_n", 0.66)]


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two budgets x two seeds of an offline, two online methods and SFT; one more suite."""
    folder = tmp_path / "results"
    for n_pairs in (250, 1000):
        for seed in (0, 1):
            for method, method_id, p_win in METHODS:
                line = synthetic_line(method, method_id, n_pairs, seed, p_win + n_pairs / 20000)
                append_result(folder, line)
    append_result(folder, synthetic_line("sft", "sft", 100, 0, 0.5, suite="other-suite"))
    return folder


class Page(HTMLParser):
    """The parts of the page the tests read: table rows, gap rows, ids, SVGs, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.gap_rows: list[dict[str, str]] = []
        self.texts: dict[str, str] = {}
        self.attributes: dict[str, dict[str, str]] = {}
        self.counts: dict[str, int] = {}
        self._row: dict | None = None
        self._text_of: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = {name: value or "" for name, value in attrs}
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if "id" in attributes:
            self.attributes[attributes["id"]] = attributes
            self._text_of = attributes["id"]
            self.texts[self._text_of] = ""
        if tag == "html":
            self.attributes["html"] = attributes
        if tag == "tr" and attributes.get("class") in ("cell-row", "gap-row"):
            self._row = {**attributes, "cells": []}
            (self.rows if attributes["class"] == "cell-row" else self.gap_rows).append(self._row)
        elif tag == "td" and self._row is not None:
            self._row["cells"].append("")
        elif tag == "span" and self._row is not None and attributes.get("class") == "seeds":
            self._row["seeds-title"] = attributes.get("title", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag in ("pre", "p") and self._text_of is not None:
            self._text_of = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._row["cells"]:
            self._row["cells"][-1] += data
        if self._text_of is not None:
            self.texts[self._text_of] += data


def expected_rows(results: Path) -> list[dict]:
    return cell_table(load_results(results), length_controlled=True).to_dict("records")


def assert_rows_equal_results(page: Page, results: Path) -> None:
    """The table rows are the leaderboard's cells (in any order), each showing exactly the
    numbers the leaderboard computes."""
    records = {
        (r["suite"], str(r["suite_version"]), r["method"], r["budget"]): r
        for r in expected_rows(results)
    }
    rows = {
        (r["data-suite"], r["data-suite-version"], r["data-method"], r["data-budget"]): r
        for r in page.rows
    }
    assert len(rows) == len(page.rows) and rows.keys() == records.keys()
    for key, row in rows.items():
        record = records[key]
        cells = [cell.strip() for cell in row["cells"]]
        assert cells[1].split()[0] == record["method"] and cells[2] == record["budget"]
        assert int(row["data-n-pairs"]) == record["n_pairs"] == int(cells[3])
        assert row["data-seeds"] == ",".join(map(str, record["seeds"]))
        assert cells[4] == str(len(record["seeds"]))  # a count; the ids are in its title
        assert float(row["data-winrate"]) == record["winrate"]
        assert cells[5] == f"{record['winrate']:.3f}"
        flag = "" if record["decidable"] else " undecidable"
        assert cells[6] == f"[{record['ci_low']:.3f}, {record['ci_high']:.3f}]{flag}"
        if math.isnan(record["lc_winrate"]):
            assert cells[7] == cells[8] == "-"
        else:
            assert cells[7] == f"{record['lc_winrate']:.3f}"
            assert cells[8] == f"[{record['lc_ci_low']:.3f}, {record['lc_ci_high']:.3f}]"
        assert int(cells[9]) == record["n"] and int(cells[10]) == record["n_invalid"]
        assert int(cells[11]) == record["n_failed"]
        assert cells[12].startswith(f"{record['valid_winrate']:.3f} [")
        if math.isnan(record["mean_reward"] or math.nan):
            assert cells[13] == "-"
        else:
            assert cells[13].startswith(f"{record['mean_reward']:.3f} [")


# -- the page's content -----------------------------------------------------------------------


def test_table_rows_equal_the_results(results):
    text = render_html(load_results(results))
    page = Page(text)
    assert_rows_equal_results(page, results)
    assert page.rows[0]["data-seeds"] == "0,1"
    assert all(row["cells"][7].strip() != "-" for row in page.rows)  # lengths were recorded


def test_seeds_show_as_a_count_with_the_ids_on_hover(results):
    page = Page(render_html(load_results(results)))
    two_seeds = next(row for row in page.rows if row["data-suite"] != "other-suite")
    one_seed = next(row for row in page.rows if row["data-suite"] == "other-suite")
    assert (two_seeds["cells"][4], one_seed["cells"][4]) == ("2", "1")
    assert (two_seeds["seeds-title"], one_seed["seeds-title"]) == ("seeds 0, 1", "seed 0")
    assert {row["cells"][5] for row in page.gap_rows} == {"2"}
    assert {row["seeds-title"] for row in page.gap_rows} == {"seeds 0, 1"}


def test_the_gap_is_the_paired_difference_against_dpo_pooled_over_seeds(results):
    lines = load_results(results)
    gaps = gap_table(lines)
    assert sorted(set(gaps["method"])) == ["best_of_n", "online_dpo"]
    assert set(gaps["baseline"]) == {"dpo"} and set(gaps["task"]) == {"keywords"}
    row = gaps[(gaps.method == "online_dpo") & (gaps.budget == "n=1000")].iloc[0]

    def scores(method: str) -> list[np.ndarray]:
        return [
            verdict_scores(outcomes_from_string(line.outcomes))
            for line in lines
            if line.method == method and line.budget == "n=1000" and line.suite != "other-suite"
        ]

    # Seed s of online_dpo against seed s of dpo, on the same prompts: the crossed difference.
    expected = crossed_difference(scores("online_dpo"), scores("dpo"), bounds=(-1.0, 1.0))
    assert (row.gap, row.ci_low, row.ci_high, row.n, row.decidable) == (
        expected.value,
        expected.low,
        expected.high,
        expected.n,
        expected.decidable,
    )
    page = Page(render_html(lines))
    assert [(r["data-method"], r["data-budget"]) for r in page.gap_rows] == list(
        zip(gaps.method, gaps.budget, strict=True)
    )
    # These lines record no family (as lines written before it was recorded): the registry's.
    assert all(line.method_family is None for line in lines)
    assert {line.method_id: family_of(line) for line in lines} == {
        "sft": "offline",
        "dpo": "offline",
        "online_dpo": "online",
        "best_of_n": "online",
    }
    assert "Online methods: online_dpo, best_of_n." in markdown_gap(gaps)
    assert "(method ids online_dpo, best_of_n)" in render_html(lines)


def test_the_gap_reads_the_family_a_line_records(results):
    """A method the registry does not know (a plugin installed elsewhere) is online when its
    lines say so, and offline when they say nothing; a recorded family beats the registry's."""
    lines = load_results(results)
    plugin = [
        line.model_copy(update={"method": "plugin", "method_id": "plugin_method"})
        for line in lines
        if line.method == "online_dpo"
    ]
    assert gap_table(lines + plugin).query("method == 'plugin'").empty  # unknown: offline
    declared = [line.model_copy(update={"method_family": "online"}) for line in plugin]
    gaps = gap_table(lines + declared)
    assert sorted(set(gaps["method"])) == ["best_of_n", "online_dpo", "plugin"]
    assert "Online methods: online_dpo, best_of_n, plugin_method." in markdown_gap(gaps)
    relabelled = [
        line.model_copy(update={"method_family": "offline"})
        if line.method_id == "online_dpo"
        else line
        for line in lines
    ]
    assert set(gap_table(relabelled)["method"]) == {"best_of_n"}


def test_plots_are_inline_svg_with_ci_error_bars(results):
    text = render_html(load_results(results))
    page = Page(text)
    assert page.counts["svg"] == 3  # one per suite, one panel for the gap of demo-keywords
    # An error bar per estimate: 4 methods x 2 budgets, 1 in other-suite, 2 online x 2 budgets.
    assert text.count('class="ci"') == len(METHODS) * 2 + 1 + 2 * 2
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text and '<link rel="stylesheet"' not in text


def test_series_styles_are_distinct_within_a_plot_and_the_same_across_plots():
    plots = [["sft", "dpo", "online"], ["dpo", "online", "filter", "bon"], ["x", "y"]]
    plots.append([f"m{i}" for i in range(len(PALETTE))])  # as many series as colours
    styles = series_styles(plots)
    assert set(styles) == {name for names in plots for name in names}
    for names in plots:
        assert len({styles[name].colour for name in names}) == len(names)
        assert {styles[name].marker for name in names} <= set(MARKERS)
    # Greedy colouring: a name takes the lowest style no plot-mate holds, so names that never
    # share a plot may share a style, and the palette's last colours wait for crowded plots.
    assert [styles[name].colour for name in ["sft", "dpo", "online", "filter", "bon"]] == [
        PALETTE[0],
        PALETTE[1],
        PALETTE[2],
        PALETTE[0],
        PALETTE[3],
    ]
    assert styles["x"] == styles["sft"] and styles["filter"] == styles["sft"]
    assert styles["m7"].colour == PALETTE[7]


def test_provenance_of_every_seed_is_in_the_row(results):
    text = render_html(load_results(results))
    line = load_results(results)[0]
    for shown in (line.config_hash, line.git_commit, line.created_at, "cpu_count=2"):
        assert shown in text
    assert text.count('<dl class="prov"') == len(load_results(results))


def test_text_from_result_lines_is_escaped(tmp_path):
    line = synthetic_line("<script>alert(1)</script>", "sft", 100, 0, 0.5)
    text = render_html([line])
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_an_empty_leaderboard_renders(tmp_path):
    (tmp_path / "results").mkdir()
    page = Page(write_html(tmp_path / "results", tmp_path / "index.html"))
    assert "empty" in page.attributes and page.rows == []


def test_the_leaderboard_command_writes_both_pages(results, tmp_path, capsys):
    out = tmp_path / "board" / "README.md"
    out.parent.mkdir()
    assert main(["leaderboard", "--results-dir", str(results), "--out", str(out)]) == 0
    assert (tmp_path / "board" / "index.html").is_file()
    readme = out.read_text()
    assert "Length-controlled winrate [95% CI]" in readme
    assert "## Online minus offline" in readme and "| online_dpo - dpo" in readme


def test_the_leaderboard_of_another_results_folder_is_written_inside_it(
    results, tmp_path, monkeypatch, capsys
):
    # Run from a checkout: the committed pages under ./leaderboard must not be touched.
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # the second time, the folder also holds the pages: only *.jsonl count
        assert main(["leaderboard", "--results-dir", "results"]) == 0
        assert f"written to {Path('results', 'README.md')}, " in capsys.readouterr().out
    assert "| online_dpo " in (results / "README.md").read_text()
    assert (results / "index.html").is_file()
    assert sorted(p.name for p in (results / "plots").iterdir()) == [
        "demo-keywords-v1.svg",
        "other-suite-v1.svg",
    ]
    assert not (tmp_path / "leaderboard").exists()


# -- in a browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")


def browse(chromium: str, page: Path, profile: Path, *args: str, query: str = "") -> str:
    """Run headless Chromium on the page from disk; return its stdout (e.g. the DOM).

    Headless Chromium now and then hangs before it loads anything (once in about ten runs of
    the whole suite here, the page's own test passing on the rerun): a run that times out is
    tried once more, with a fresh profile."""
    try:
        return _browse_once(chromium, page, profile, *args, query=query)
    except subprocess.TimeoutExpired:
        return _browse_once(
            chromium, page, profile.with_name(profile.name + "-retry"), *args, query=query
        )


def _browse_once(chromium: str, page: Path, profile: Path, *args: str, query: str) -> str:
    completed = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            "--run-all-compositor-stages-before-draw",  # else a screenshot may be half painted
            *args,
            page.resolve().as_uri() + query,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("source", ["synthetic", "repository"])
def test_the_page_loads_without_errors_in_chromium(source, chromium, results, tmp_path):
    if source == "repository":
        results = REPO_ROOT / "leaderboard" / "results"
    page_path = tmp_path / "index.html"
    write_html(results, page_path)
    screenshot = tmp_path / f"leaderboard-{source}.png"

    # ?selftest: the page sorts its first table by winrate and opens the first row's
    # provenance, then records what it shows; the screenshot is taken in that state.
    dom = browse(
        chromium,
        page_path,
        tmp_path / "profile",
        "--dump-dom",
        f"--screenshot={screenshot}",
        "--window-size=1280,2200",
        "--hide-scrollbars",
        query="?selftest",
    )
    page = Page(dom)
    assert page.attributes["html"].get("data-ready") == "1", "the page's script did not finish"
    assert page.attributes["console-errors"]["data-count"] == "0", page.texts["console-errors"]
    assert_rows_equal_results(page, results)

    report = json.loads(page.texts["selftest"])
    first = expected_rows(results)[0]
    in_table = [
        r
        for r in expected_rows(results)
        if (r["suite"], r["suite_version"]) == (first["suite"], first["suite_version"])
    ]
    by_winrate = sorted(in_table, key=lambda r: -r["winrate"])
    assert report["sorted"] == [f"{r['method']} {r['budget']}" for r in by_winrate]
    assert report["expanded"] is True

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000
    print(f"screenshot of the {source} leaderboard page: {screenshot}")


@pytest.mark.e2e
def test_the_browser_check_sees_a_script_error(chromium, results, tmp_path):
    page_path = tmp_path / "index.html"
    text = write_html(results, page_path)
    page_path.write_text(text.replace("</body>", "<script>notDefined();</script></body>"))
    page = Page(browse(chromium, page_path, tmp_path / "profile", "--dump-dom"))
    assert int(page.attributes["console-errors"]["data-count"]) >= 1
    assert "notDefined" in page.texts["console-errors"]


# Measures the plots as laid out, for the test below: each plot's width, its legend labels
# (their text, whether their box lies inside the SVG's, whether two overlap), each series'
# colour (its first coloured stroke) and the x of its markers.
_MEASURE_PLOTS = """<script>
(function () {
  function inside(inner, outer) {
    return inner.left >= outer.left - 0.5 && inner.right <= outer.right + 0.5
      && inner.top >= outer.top - 0.5 && inner.bottom <= outer.bottom + 0.5;
  }
  function overlap(a, b) {
    return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  }
  var report = {window: window.innerWidth, plots: []};
  document.querySelectorAll("figure.plot svg").forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var plot = {
      title: svg.getAttribute("aria-label"), width: box.width,
      panel: svg.closest(".panels") !== null, series: [], clipped: [], overlapping: [],
      scatter: svg.classList.contains("scatter"),
      marker_xs: [],
    };
    var labels = [];
    svg.querySelectorAll("g.series").forEach(function (group) {
      var label = group.querySelector("text.legend");
      var rect = label.getBoundingClientRect();
      if (!inside(rect, box)) plot.clipped.push(label.textContent);
      labels.forEach(function (other) {
        if (overlap(rect, other.rect)) plot.overlapping.push([other.text, label.textContent]);
      });
      labels.push({text: label.textContent, rect: rect});
      var coloured = Array.prototype.find.call(group.querySelectorAll("[stroke]"), function (e) {
        return e.getAttribute("stroke") !== "none";
      });
      plot.series.push({
        name: group.dataset.series, label: label.textContent,
        colour: coloured ? coloured.getAttribute("stroke").toLowerCase() : null,
        shape: group.dataset.marker || null,
      });
      group.querySelectorAll(".marker").forEach(function (marker) {
        var r = marker.getBoundingClientRect();
        plot.marker_xs.push(Math.round((r.left + r.right) * 5) / 10);
      });
    });
    report.plots.push(plot);
  });
  var out = document.createElement("pre");
  out.id = "plot-geometry";
  out.textContent = JSON.stringify(report);
  document.body.appendChild(out);
})();
</script></body>"""


@pytest.mark.parametrize("source", ["synthetic", "repository"])
def test_plots_use_the_page_width_and_show_every_legend_label_whole(
    source, chromium, results, tmp_path
):
    """At 1280 px: a suite's plot spans the content column, a panel of the online-minus-offline
    small multiples at least 40% of the window; every legend label is its series' full name,
    inside its plot and clear of the other labels; the series of a plot have distinct styles
    (colours, while the page has no more methods than colours) and their markers at one budget
    are dodged apart rather than drawn on top of each other."""
    if source == "repository":
        results = REPO_ROOT / "leaderboard" / "results"
    page_path = tmp_path / "index.html"
    text = write_html(results, page_path)
    page_path.write_text(text.replace("</body>", _MEASURE_PLOTS, 1))
    screenshot = tmp_path / f"plots-{source}.png"
    dom = browse(
        chromium,
        page_path,
        tmp_path / "profile",
        "--dump-dom",
        f"--screenshot={screenshot}",
        "--window-size=1280,3000",
        "--hide-scrollbars",
    )
    report = json.loads(Page(dom).texts["plot-geometry"])
    assert report["window"] == 1280
    plots = report["plots"]
    names = {series["name"] for plot in plots for series in plot["series"]}
    assert any(plot["panel"] for plot in plots) and any(not plot["panel"] for plot in plots)
    for plot in plots:
        where = f"plot {plot['title']!r}"
        assert plot["width"] >= (0.4 if plot["panel"] else 0.9) * 1280, where
        assert plot["clipped"] == [] and plot["overlapping"] == [], where
        assert all(series["label"] == series["name"] for series in plot["series"]), where
        colours = [series["colour"] for series in plot["series"]]
        assert None not in colours, where
        # One style per method on the whole page (series_styles): distinct colours in a plot
        # while the page has no more methods than colours; with more (the lab's suites share
        # dpo and sft with 10-method plots), distinct (colour, marker) pairs.
        if len(names) <= len(PALETTE):
            assert len(set(colours)) == len(colours), where
        styles = [(series["colour"], series["shape"]) for series in plot["series"]]
        assert None not in (s for _, s in styles) and len(set(styles)) == len(styles), where
        # A line plot dodges the series at one budget; a scatter (reward against KL) draws each
        # point at its own x, so two methods may share one.
        if not plot["scatter"]:
            assert len(set(plot["marker_xs"])) == len(plot["marker_xs"]) > 0, where
    print(f"screenshot of the {source} plots: {screenshot}")


def test_reward_against_kl_is_one_scatter_per_suite_with_a_point_per_policy():
    lines = [
        line
        for line in load_results(REPO_ROOT / "leaderboard" / "results")
        if line.suite == "micro-lab-keywords" and line.suite_version == 1
    ]
    html = render_html(lines)
    section = html[html.index('<section id="reward-kl">') :]
    section = section[: section.index("</section>")]
    assert section.count("<svg") == 1 and "micro-lab-keywords v1: mean reward against KL" in section
    series = re.findall(r'<g class="series" data-series="([^"]+)"', section)
    assert series == ["sft", "dpo", "online_dpo_linear", "online_dpo_full", "filter"]
    assert "best_of_n" not in series  # no policy of its own: no KL
    # sft is one policy at every budget: one marker; the others one per budget (3).
    markers = re.findall(r'class="marker"[^>]*><title>([^<]+)</title>', section)
    assert sum(m.startswith("sft at") for m in markers) == 1
    assert sum(m.startswith("dpo at") for m in markers) == 3
    assert 'href="#reward-kl"' in html
