"""The lab's views (bench/report/views.py): verifiers with seed intervals, reward against KL, and
Tajwar et al.'s 2x2, from hand-made result lines whose numbers are known."""

from __future__ import annotations

import math
import statistics

import pytest
from result_factory import lab_line as line

from bench.report.results import ResultLine
from bench.report.stats import student_t_quantile
from bench.report.summary import pool
from bench.report.views import (
    markdown_quadrants,
    markdown_reward_kl,
    markdown_verifiers,
    quadrant_of,
    quadrant_table,
    reward_kl_table,
    verifier_table,
)


def verifier_metrics(label: str, accuracy: float, *, oracle: bool = False) -> dict:
    return {
        "train": {"reward_model": label},
        "reward_model": {"accuracy": accuracy, "bt_likelihood": accuracy - 0.1, "n": 500},
        "oracles": ["oracle_features"] if oracle else [],
    }


def test_verifiers_get_a_t_interval_over_seeds_and_shared_verifiers_one_row() -> None:
    accuracies = [0.60, 0.66, 0.69]
    lines = [
        line("online_dpo", "online_dpo", s, metrics=verifier_metrics("global-full", a))
        for s, a in enumerate(accuracies)
    ]
    lines += [
        line("best_of_n", "best_of_n", s, metrics=verifier_metrics("global-full", a))
        for s, a in enumerate(accuracies)
    ]
    lines += [
        line("dpo", "dpo", s, metrics={"reward_model": {"accuracy": 0.55, "bt_likelihood": 0.51}})
        for s in range(3)
    ]
    lines += [line("sft", "sft", s) for s in range(3)]  # no verifier: no row
    table = verifier_table(lines)
    assert list(table["verifier"]) == ["global-full", "dpo"]
    row = table.iloc[0]
    assert row["methods"] == ["online_dpo", "best_of_n"]
    half = float(student_t_quantile(0.975, 2.0)) * statistics.stdev(accuracies) / math.sqrt(3)
    assert row["accuracy"] == pytest.approx(0.65)
    assert (row["accuracy_low"], row["accuracy_high"]) == pytest.approx((0.65 - half, 0.65 + half))
    text = markdown_verifiers(table)
    assert f"0.650 [{0.65 - half:.3f}, {0.65 + half:.3f}]" in text
    assert "| dpo " in text and "0.550 [0.550, 0.550]" in text  # three equal seeds


def test_reward_against_kl_pools_the_reward_and_averages_kl_over_seeds() -> None:
    lines = [
        line(
            "dpo",
            "dpo",
            s,
            budget=b,
            reward_shift=b / 1000,
            metrics={"kl": {"kl": kl, "kl_stderr": 0.02, "n": 200}},
        )
        for b, kl in ((250, 0.1), (1000, 0.3))
        for s in range(2)
    ]
    lines.append(line("best_of_n", "best_of_n", 0))  # no KL: left out
    table = reward_kl_table(lines)
    assert list(table["budget"]) == ["n=250", "n=1000"]
    row = table.iloc[1]
    assert row["kl"] == pytest.approx(0.3)
    assert row["kl_stderr"] == pytest.approx(math.sqrt(2 * 0.02**2) / 2)
    pooled = pool([x for x in lines if x.budget == "n=1000"]).mean_reward
    assert (row["reward"], row["reward_low"], row["reward_high"]) == (
        pooled.value,
        pooled.low,
        pooled.high,
    )
    assert "| dpo    | n=1000 | 0.300 +- 0.014 |" in markdown_reward_kl(table)


@pytest.mark.parametrize(
    ("method_id", "train", "quadrant"),
    [
        ("sft", {}, None),  # the SFT policy itself: it trained on nothing
        ("sft", {"final_loss": 0.5}, ("off-policy", "no negative gradient")),
        ("dpo", {"final_loss": 0.5}, ("off-policy", "negative gradient")),
        ("filter", {"final_loss": 0.5}, ("on-policy", "no negative gradient")),
        ("online_dpo", {"rounds": []}, ("on-policy", "negative gradient")),
        ("online_dpo", {"init_dpo": {}, "rounds": []}, None),  # starts from DPO, not SFT
        ("best_of_n", {"reward_model": "global-full"}, None),  # trains no policy
        ("not_installed", {"final_loss": 0.5}, None),
    ],
)
def test_quadrant_of_reads_what_the_method_declared(
    method_id: str, train: dict, quadrant: tuple | None
) -> None:
    assert quadrant_of(line(method_id, method_id, 0, metrics={"train": train})) == quadrant


def test_the_2x2_pairs_on_policy_methods_by_their_verifier() -> None:
    def four(seed: int) -> list[ResultLine]:
        return [
            line("sft_chosen", "sft", seed, config={"epochs": 2}, reward_shift=1.0),
            line("dpo", "dpo", seed, reward_shift=1.1),
            line(
                "filter",
                "filter",
                seed,
                reward_shift=1.2,
                metrics=verifier_metrics("global-full", 0.6),
            ),
            line(
                "online_dpo",
                "online_dpo",
                seed,
                reward_shift=1.3,
                metrics=verifier_metrics("global-full", 0.6),
            ),
            line(
                "filter_oracle",
                "filter",
                seed,
                metrics=verifier_metrics("oracle-features", 0.7, oracle=True),
            ),
            line(
                "online_dpo_oracle",
                "online_dpo",
                seed,
                metrics=verifier_metrics("oracle-features", 0.7, oracle=True),
            ),
            line("sft", "sft", seed, metrics={"train": {}}),
        ]

    lines = four(0) + four(1)
    table = quadrant_table(lines)
    assert sorted(set(table["verifier"])) == ["global-full", "oracle-features"]
    learned = table[table["verifier"] == "global-full"]
    assert list(learned["method"]) == ["sft_chosen", "dpo", "filter", "online_dpo"]
    assert not learned["oracle"].any() and table[table["verifier"] != "global-full"]["oracle"].all()
    dpo = learned[learned["method"] == "dpo"].iloc[0]
    pooled = pool([x for x in lines if x.method == "dpo"]).mean_reward
    assert dpo["reward"] == pooled.value and dpo["sampling"] == "off-policy"
    text = markdown_quadrants(table)
    assert "### lab v1, n=250, verifier global-full\n" in text
    assert "### lab v1, n=250, verifier oracle-features (oracle)" in text
    assert "| on-policy  | filter: " in text
    # Without SFT on the chosen the 2x2 is incomplete: nothing to show.
    assert quadrant_table([x for x in lines if x.method != "sft_chosen"]).empty
