"""Claims the data can support (issue 10): power, `beats`, `equivalent_to`, and old lines.

bench.report.power (the minimum detectable effect and the replication a claim would need),
bench.report.expectations (the rules and their sentences) and bench.report.migrate (schema 1 -> 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from result_factory import cell_line

from bench.cli import main
from bench.config import Cell, Expectation, load_suite
from bench.report.expectations import beats_failure, check_expectation, equivalence_failure
from bench.report.migrate import migrate_v1
from bench.report.power import minimum_detectable_effect, replication_needed
from bench.report.results import ResultFileError, ResultLine, load_results
from bench.report.stats import crossed_difference
from bench.report.summary import line_numbers

REPO_ROOT = Path(__file__).resolve().parents[1]


def _grids(rng, k, n, p_a, p_b, seed_sd=0.0, prompt_sd=1.0):
    """Scores of two methods on the same prompts: ``[k, n]`` each, ties included."""
    prompts = rng.normal(0.0, prompt_sd, size=n)

    def method(p):
        eta = np.log(p / (1 - p)) + rng.normal(0.0, seed_sd, size=(k, 1)) + prompts
        latent = eta + rng.logistic(size=(k, n))
        return np.where(latent > 0.5, 1.0, np.where(latent < -0.5, 0.0, 0.5))

    return method(p_a), method(p_b)


# -- power ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "seed_sd"), [(1, 0.0), (5, 0.05)])
def test_a_true_difference_at_the_mde_is_detected_about_80_percent_of_the_time(k, seed_sd):
    # The design's MDE (median over pilot runs: with few seeds one pilot's variance estimate
    # is itself noisy), then a true difference of that size: the interval should exclude 0 in
    # about 80% of repetitions (not 50%, not 99%).
    rng = np.random.default_rng(0)
    pilots = [crossed_difference(*_grids(rng, k, 300, 0.6, 0.6, seed_sd)) for _ in range(20)]
    mde = float(np.median([minimum_detectable_effect(pilot) for pilot in pilots]))
    assert 0.02 < mde < 0.2
    detected = 0
    for _ in range(300):
        a, b = _grids(rng, k, 300, 0.6, 0.6, seed_sd)
        detected += crossed_difference(a + mde, b).low > 0  # A shifted by +MDE against B
    assert 0.72 <= detected / 300 <= 0.88


def test_more_seeds_or_prompts_shrink_the_mde_and_the_replication_reaches_a_target():
    rng = np.random.default_rng(1)
    a, b = _grids(rng, 3, 500, 0.7, 0.65, seed_sd=0.2)
    estimate = crossed_difference(a, b, bounds=(-1, 1))
    mde = minimum_detectable_effect(estimate)
    needed = replication_needed(estimate, mde / 2)
    assert needed.seeds is not None and needed.seeds > 3
    assert f"about {needed.seeds} seeds at 500 prompts" in needed.sentence
    # The target is already met: one more seed is the smallest design searched.
    assert replication_needed(estimate, mde * 2).seeds == 4
    assert replication_needed(estimate, 0.0).sentence.startswith("no number of seeds")


def test_prompts_alone_cannot_beat_a_dominant_seed_variance():
    rng = np.random.default_rng(2)
    a, b = _grids(rng, 3, 500, 0.7, 0.6, seed_sd=0.6, prompt_sd=0.0)
    estimate = crossed_difference(a, b, bounds=(-1, 1))
    needed = replication_needed(estimate, 0.01)
    assert needed.prompts is None
    assert "more prompts alone cannot do it: the seed-to-seed variance dominates" in (
        needed.sentence
    )


def test_one_seed_names_the_prompts_and_says_seeds_are_unknown():
    rng = np.random.default_rng(3)
    a, b = _grids(rng, 1, 200, 0.7, 0.68)
    estimate = crossed_difference(a, b, bounds=(-1, 1))
    needed = replication_needed(estimate, 0.03)
    assert needed.seeds is None and needed.prompts is not None and needed.prompts > 200
    assert needed.sentence == (
        f"about {needed.prompts} prompts at 1 seed (a claim about fresh seeds needs at least 3: "
        "with one, the seed-to-seed variance is unknown)"
    )


# -- beats and equivalent_to ------------------------------------------------------------------


def test_beats_holds_only_for_a_decidable_interval_above_zero():
    rng = np.random.default_rng(4)
    a, b = _grids(rng, 3, 500, 0.8, 0.5, seed_sd=0.05)
    assert beats_failure(crossed_difference(a, b, bounds=(-1, 1))) is None
    two = crossed_difference(a[:2], b[:2], bounds=(-1, 1))
    assert two.low > 0 and "run at least 3 seeds" in beats_failure(two)
    worse = beats_failure(crossed_difference(b, a, bounds=(-1, 1)))
    assert worse.endswith("whose 95% CI lies below 0: the other method is better.")


def test_an_underpowered_beats_says_what_it_would_take():
    rng = np.random.default_rng(5)
    a, b = _grids(rng, 3, 100, 0.62, 0.6, seed_sd=0.1)
    difference = crossed_difference(a, b, bounds=(-1, 1))
    assert difference.low < 0 < difference.high
    failure = beats_failure(difference)
    if difference.value > 0:
        assert "whose 95% CI includes 0: underpowered for the observed" in failure
        assert "would take about" in failure or "more than 100 seeds" in failure
    else:
        assert "whose estimate is not positive" in failure
    assert "with 80% power" in failure


def test_equivalence_holds_inside_the_margin_and_is_underpowered_when_the_ci_straddles_it():
    rng = np.random.default_rng(6)
    a, b = _grids(rng, 5, 2000, 0.6, 0.6, seed_sd=0.02)
    close = crossed_difference(a, b, bounds=(-1, 1))
    assert equivalence_failure(close, 0.05) is None
    a, b = _grids(rng, 3, 100, 0.6, 0.6, seed_sd=0.3)
    small = crossed_difference(a, b, bounds=(-1, 1))
    assert abs(small.value) < 0.05 and (small.low < -0.05 or small.high > 0.05)
    failure = equivalence_failure(small, 0.05)
    assert "whose 95% CI is not inside +-0.05: underpowered" in failure
    assert "showing equivalence at the observed" in failure
    far = crossed_difference(a[:3], b[:3] * 0.0, bounds=(-1, 1))
    assert equivalence_failure(far, 0.05).endswith("they differ by more.")


def test_check_expectation_reads_the_pooled_lines(tiny_cells):
    dpo, sft = tiny_cells
    lines = {"dpo": [dpo], "sft": [sft]}
    expectation = Expectation(method="dpo", equivalent_to="sft", margin=0.02, min_winrate=0.9)
    failures = check_expectation(expectation, "dpo", "n=40", [0], lines)
    assert failures[0].startswith("dpo at n=40 (seed 0) has winrate 0.550 [")
    assert "below the expected minimum 0.9." in failures[0]
    assert failures[1].startswith("dpo at n=40 (seed 0) was expected to be within 0.02 of sft")
    assert len(failures) == 2


@pytest.fixture
def cells(tiny_suite: Path) -> dict[str, Cell]:
    return {cell.id: cell for cell in load_suite(tiny_suite).cells()}


@pytest.fixture
def tiny_cells(cells):
    dpo = ResultLine.model_validate(cell_line(cells["dpo[n=40,seed=0]"]))
    sft = ResultLine.model_validate(cell_line(cells["sft[n=40,seed=0]"], outcomes="WLLT" * 15))
    return dpo, sft


# -- old lines --------------------------------------------------------------------------------


def _schema_1(line: dict, outcomes: str, order_answers=None, kind="gold") -> dict:
    """A line as schema 1 wrote it: invalid verdicts out of n and out of the winrate."""
    old = {**line, "outcomes": outcomes, "schema_version": 1}
    for key in ("valid_winrate", "valid_ci_low", "valid_ci_high", "n_failed", "reward_floor"):
        old.pop(key, None)
    old["judge"] = {**old["judge"], "kind": kind}
    if order_answers is not None:
        old["order_answers"] = order_answers
    old["n"] = sum(outcomes.count(letter) for letter in "WLT")
    return old


def test_schema_1_lines_are_refused_with_a_pointer_to_migrate(tmp_path, cells):
    line = cell_line(cells["dpo[n=40,seed=0]"])
    (tmp_path / "tiny.jsonl").write_text(json.dumps(_schema_1(line, line["outcomes"])) + "\n")
    with pytest.raises(ResultFileError, match="rewrite the file with `pftbench migrate <folder>`"):
        load_results(tmp_path)


def test_migrate_recomputes_numbers_keeps_the_old_text_and_is_idempotent(tmp_path, cells, capsys):
    line = cell_line(cells["dpo[n=40,seed=0]"])
    old = _schema_1(line, line["outcomes"])
    path = tmp_path / "tiny.jsonl"
    path.write_text(json.dumps(old) + "\n")
    assert main(["migrate", str(tmp_path)]) == 0
    assert "1 line(s) rewritten in schema 2" in capsys.readouterr().out
    (migrated,) = load_results(tmp_path)
    assert (tmp_path / "tiny.jsonl.v1").read_text() == json.dumps(old) + "\n"
    # The gold judge's floor is the task's worst gold reward; the numbers follow from it.
    assert migrated.reward_floor == pytest.approx(-9.1)
    expected = line_numbers(line["outcomes"], line["rewards"], migrated.reward_floor)
    assert migrated.winrate == expected["winrate"] and migrated.n == 60
    assert migrated.created_at == old["created_at"] and migrated.config_hash == old["config_hash"]
    assert main(["migrate", str(tmp_path)]) == 0
    assert "every line is already current" in capsys.readouterr().out


def test_migrate_tells_a_pairwise_judges_failure_from_an_invalid_output(cells):
    line = cell_line(cells["dpo[n=40,seed=0]"], outcomes="WLIT" * 15)
    answers = ["AB", "BA", None, "AA"] * 14 + ["AB", "BA", "A?", "AA"]
    old = _schema_1(line, line["outcomes"], answers, kind="llm_pairwise")
    old["rewards"] = None
    migrated = ResultLine.model_validate(migrate_v1(old))
    # The last I had answers (one unreadable): the judge failed; the others were never sent.
    assert migrated.outcomes == "WLIT" * 14 + "WLFT"
    assert (migrated.n_invalid, migrated.n_failed, migrated.n) == (14, 1, 59)
    assert migrated.reward_floor is None and migrated.mean_reward is None


def test_a_missing_folder_or_bad_json_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["migrate", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert main(["migrate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bad.jsonl'}:1: not JSON" in err and len(err.splitlines()) == 1


def test_the_committed_leaderboard_is_current():
    lines = load_results(REPO_ROOT / "leaderboard" / "results")
    assert lines and all(line.schema_version == 2 for line in lines)
