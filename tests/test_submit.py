"""`pftbench submit`: a bundle is merged only when every line checks out against the suites."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from result_factory import cell_line, forged_outcomes, with_numbers, write_bundle

from bench.cli import main
from bench.config import Cell, load_suite
from bench.report.integrity import number_discrepancies, outcome_problems
from bench.report.leaderboard import cell_table, markdown_tables
from bench.report.results import (
    SCHEMA_VERSION,
    ResultLine,
    append_result,
    latest_per_cell,
    load_located_results,
    load_results,
)
from bench.report.submit import judge_pin_problem
from bench.run.hashing import content_hash
from judges.llm_pairwise import answers_verdict

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cells(tiny_suite: Path) -> dict[str, Cell]:
    suite = load_suite(tiny_suite)
    return {cell.id: cell for cell in suite.cells()}


def submit(tmp_path: Path, bundle: Path) -> int:
    return main(
        [
            "submit",
            str(bundle),
            "--suites-dir",
            str(tmp_path / "suites"),
            "--results-dir",
            str(tmp_path / "board"),
        ]
    )


def test_a_valid_bundle_is_merged_once(tmp_path, cells, capsys):
    bundle = write_bundle(tmp_path / "bundle.jsonl", [cell_line(c) for c in cells.values()])
    assert submit(tmp_path, bundle) == 0
    out = capsys.readouterr().out
    assert "accepted 4 result lines: 4 merged" in out
    merged = load_results(tmp_path / "board")
    assert [(line.method, line.budget) for line in merged] == [
        (c.method.name, c.budget.label) for c in cells.values()
    ]

    assert submit(tmp_path, bundle) == 0
    out = capsys.readouterr().out
    assert "accepted 4 result lines: 0 merged into" in out and "4 already there" in out
    assert len(load_results(tmp_path / "board")) == 4


def _set(path: tuple, value):
    def change(line: dict) -> None:
        target = line
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _rehash(change):
    def changed_and_rehashed(line: dict) -> None:
        change(line)
        line["config_hash"] = content_hash(line["config"])

    return changed_and_rehashed


def _drop(key: str):
    return lambda line: line.pop(key)


TAMPERINGS = {
    "winrate raised": (
        _set(("winrate",), 0.9),
        "winrate is 0.9000, but its outcomes give 0.5500",
        "",
    ),
    "config edited, hash kept": (
        _set(("config", "method", "config", "lr"), 0.01),
        "config_hash ",
        "does not match the hash of its config",
    ),
    "config edited and rehashed": (
        _rehash(_set(("config", "method", "config", "lr"), 0.01)),
        "its config differs from what ",
        "resolves to for dpo[n=40,seed=0], so it was produced with a different config: "
        "method.config.lr is 0.01, the suite gives 0.001",
    ),
    "unknown suite version": (
        _rehash(
            lambda line: (
                _set(("suite_version",), 2)(line),
                _set(("config", "suite_version"), 2)(line),
            )
        ),
        "suite tiny-keywords version 2 is unknown: ",
        "has version 1",
    ),
    "unknown suite": (
        _rehash(
            lambda line: (_set(("suite",), "nope")(line), _set(("config", "suite"), "nope")(line))
        ),
        "suite 'nope' is unknown: no suite file under ",
        "(known: tiny-keywords)",
    ),
    "schema: a field missing": (_drop("winrate"), "field `winrate`: Field required", ""),
    "schema: a wrong type": (
        _set(("n",), "many"),
        "field `n`: Input should be a valid integer",
        "",
    ),
    "schema: unknown version": (
        _set(("schema_version",), 3),
        "field `schema_version`: Value error, schema_version 3 is not known",
        "",
    ),
    "seed missing": (_drop("seed"), "seeds are missing: the line has no seed", ""),
    "judge version missing": (
        _set(("judge", "version"), None),
        "judge gold/gold vNone is not pinned: no version",
        "",
    ),
    "seed disagrees with config": (
        _set(("seed",), 1),
        "seed 1 disagrees with its config's seed 0",
        "",
    ),
    "outcomes truncated": (
        lambda line: line.update(
            outcomes=line["outcomes"][:-1],
            rewards=line["rewards"][:-1],
            output_lengths=line["output_lengths"][:-1],
            reference_lengths=line["reference_lengths"][:-1],
            reference_rewards=line["reference_rewards"][:-1],
            n_invalid=line["n_invalid"] - 1,
            n=line["n"] - 1,
        ),
        "it has 59 outcomes, but its config evaluates 60 prompts",
        "",
    ),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_tampered_line_is_rejected_with_its_reason(tmp_path, cells, capsys, tampering):
    change, start, end = TAMPERINGS[tampering]
    lines = [cell_line(c) for c in cells.values()]
    change(lines[2])  # dpo[n=40,seed=0]
    bundle = write_bundle(tmp_path / "bundle.jsonl", lines)
    assert submit(tmp_path, bundle) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("rejected: ") and err[-1].endswith("; nothing was merged")
    reasons = [line for line in err[:-1] if line.startswith(f"{bundle}:3: ")]
    assert any(start in reason and end in reason for reason in reasons), err
    assert all(line.startswith(f"{bundle}:3: ") for line in err[:-1]), err
    assert not (tmp_path / "board").exists()


def test_every_reason_is_on_its_own_line(tmp_path, cells, capsys):
    lines = [cell_line(c) for c in cells.values()]
    lines[0]["winrate"] = 0.99
    lines[1]["config"]["generation"]["max_new_tokens"] = 9
    lines[3].pop("seed")
    bundle = write_bundle(tmp_path / "bundle.jsonl", [*lines, "{not json"])
    assert submit(tmp_path, bundle) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[0] for line in err] == [
        f"{bundle}:1",
        f"{bundle}:2",
        f"{bundle}:2",
        f"{bundle}:4",
        f"{bundle}:5",
        "rejected",
    ]
    assert "not valid JSON" in err[4]
    assert err[-1] == "rejected: 5 problems; nothing was merged"


def test_every_seed_must_be_submitted(tmp_path, tiny_suite, capsys):
    tiny_suite.write_text(tiny_suite.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    suite = load_suite(tiny_suite)
    lines = [cell_line(c) for c in suite.cells() if c.seed == 0 or c.method.name == "sft"]
    bundle = write_bundle(tmp_path / "bundle.jsonl", lines)
    assert submit(tmp_path, bundle) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[:-1] == [
        f"{bundle}:{index}: seeds are missing: tiny-keywords dpo at {budget} has seeds [0] of "
        "the suite's [0, 1]; submit every seed (missing [1])"
        for index, budget in ((5, "n=40"), (6, "n=120"))
    ]


def test_a_new_method_entry_is_accepted_when_its_protocol_matches(tmp_path, cells, capsys):
    line = cell_line(cells["dpo[n=40,seed=0]"])
    line.update(method="my_method", method_id="my_method")
    line["config"]["method"] = {"name": "my_method", "method": "my_method", "config": {"k": 2}}
    line["config_hash"] = content_hash(line["config"])
    bundle = write_bundle(tmp_path / "bundle.jsonl", [line])
    assert submit(tmp_path, bundle) == 0
    out = capsys.readouterr().out
    assert "my_method (method my_method) is a new method entry" in out
    assert load_results(tmp_path / "board")[0].method == "my_method"

    line["config"]["generation"]["temperature"] = 0.7
    line["config_hash"] = content_hash(line["config"])
    assert submit(tmp_path, write_bundle(tmp_path / "other.jsonl", [line])) == 2
    err = capsys.readouterr().err
    assert "resolves to for n=40, seed 0, so it was produced with a different config: " in err
    assert "generation.temperature is 0.7, the suite gives 0.0" in err


def test_a_new_entry_of_a_registered_method_needs_its_complete_config(tmp_path, cells, capsys):
    line = cell_line(cells["dpo[n=40,seed=0]"])
    line["method"] = "dpo_small_lr"
    line["config"]["method"] = {"name": "dpo_small_lr", "method": "dpo", "config": {"lr": 1e-5}}
    line["config_hash"] = content_hash(line["config"])
    assert submit(tmp_path, write_bundle(tmp_path / "bundle.jsonl", [line])) == 2
    err = capsys.readouterr().err
    assert "method.config of dpo_small_lr is not the complete config of dpo (missing " in err


def test_a_line_contradicting_a_merged_one_is_rejected(tmp_path, cells, capsys):
    cell = cells["sft[n=40,seed=0]"]
    assert submit(tmp_path, write_bundle(tmp_path / "a.jsonl", [cell_line(cell)])) == 0
    other = cell_line(cell, outcomes="W" * 60)
    assert submit(tmp_path, write_bundle(tmp_path / "b.jsonl", [other])) == 2
    err = capsys.readouterr().err
    assert "it contradicts " in err and "(merged) for the same config hash" in err
    assert "(winrate 1.0000 here, 0.5500 there)" in err


@pytest.mark.parametrize(
    ("model", "revision", "pinned"),
    [
        ("gpt-4o-2024-08-06", None, True),
        ("claude-3-5-sonnet-20241022", None, True),
        ("gpt-4-0613", None, True),
        ("Qwen/Qwen2.5-7B-Instruct@" + "0123456789abcdef" * 2 + "01234567", None, True),
        ("Qwen/Qwen2.5-7B-Instruct", "fedcba9876543210" * 2 + "fedcba98", True),
        ("gpt-4o", None, False),
        ("claude-3-5-sonnet-latest", None, False),
        ("Qwen/Qwen2.5-7B-Instruct", None, False),
        ("Qwen/Qwen2.5-7B-Instruct", "main", False),
    ],
)
def test_judge_pinning_rule(model, revision, pinned):
    params = {"model": model} | ({"revision": revision} if revision else {})
    problem = judge_pin_problem({"kind": "llm", "id": "llm", "version": 1, "params": params})
    if pinned:
        assert problem is None
    else:
        assert problem.startswith(f"judge model {model!r} is not pinned: name a dated snapshot")


def test_a_judge_needs_an_id_and_a_version():
    assert judge_pin_problem({"kind": "gold", "id": "gold", "version": 1}) is None
    assert judge_pin_problem({"kind": "x", "id": "", "version": None}) == (
        "judge x/ vNone is not pinned: no id and no version"
    )


def test_nothing_in_a_bundle_is_imported_or_run(tmp_path, cells, capsys, monkeypatch):
    marker = tmp_path / "ran"
    (tmp_path / "evil_payload.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = cell_line(cells["dpo[n=40,seed=0]"])
    line.update(method="evil_payload", method_id="evil_payload")
    line["config"]["method"] = {"name": "evil_payload", "method": "evil_payload", "config": {}}
    line["judge"]["kind"] = line["config"]["judge"]["kind"] = "evil_payload"
    line["config_hash"] = content_hash(line["config"])
    pickled = "\\x80\\x04\\x95 cos\\nsystem\\n(S'touch ran'\\ntR."
    bundle = write_bundle(tmp_path / "bundle.jsonl", [line, json.dumps({"__reduce__": pickled})])
    assert submit(tmp_path, bundle) == 2
    assert not marker.exists() and "evil_payload" not in sys.modules
    err = capsys.readouterr().err
    assert f"{bundle}:1: " in err and f"{bundle}:2: field `suite`: Field required" in err


def test_submit_and_the_pages_never_import_torch(tmp_path, cells):
    bundle = write_bundle(tmp_path / "bundle.jsonl", [cell_line(c) for c in cells.values()])
    code = f"""
        import sys
        from bench.cli import main
        board = {str(tmp_path / "board")!r}
        assert main(["submit", {str(bundle)!r}, "--suites-dir", {str(tmp_path / "suites")!r},
                     "--results-dir", board]) == 0
        assert main(["leaderboard", "--results-dir", board, "--out", board + "/README.md"]) == 0
        assert "torch" not in sys.modules, "submit or leaderboard imported torch"
    """
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "board" / "index.html").is_file()


# -- the schema -------------------------------------------------------------------------------


def test_per_prompt_lengths_must_match_the_outcomes(cells):
    line = cell_line(cells["sft[n=40,seed=0]"])
    line["output_lengths"] = line["output_lengths"][:-1]
    with pytest.raises(ValueError, match="output_lengths has 59 entries for 60 outcomes"):
        ResultLine.model_validate(line)


def test_lines_without_the_newer_optional_fields_still_load(cells):
    line = cell_line(cells["sft[n=40,seed=0]"])
    for key in ("output_lengths", "reference_lengths", "data_hash"):
        line.pop(key)
    assert ResultLine.model_validate(line).output_lengths is None
    committed = load_results(REPO_ROOT / "leaderboard" / "results")
    assert committed and all(line.schema_version == SCHEMA_VERSION for line in committed)


def test_a_reproduced_line_that_adds_lengths_supersedes_the_old_one(tmp_path, cells):
    line = cell_line(cells["sft[n=40,seed=0]"])
    old = {key: value for key, value in line.items() if key != "output_lengths"}
    assert append_result(tmp_path, ResultLine.model_validate(old))
    assert append_result(tmp_path, ResultLine.model_validate(line))
    assert not append_result(tmp_path, ResultLine.model_validate(line))
    assert not append_result(tmp_path, ResultLine.model_validate(old))
    assert latest_per_cell(load_results(tmp_path))[0].output_lengths == line["output_lengths"]


# -- outcomes must follow from what the judge recorded ---------------------------------------


def test_outcomes_flipped_with_their_numbers_recomputed_are_rejected(tmp_path, cells, capsys):
    # Issue 13's attack: 50 losses flipped to wins, winrate, interval and counts recomputed, the
    # gold rewards (below the references') left as the run recorded them.
    honest = cell_line(cells["dpo[n=40,seed=0]"], outcomes="L" * 55 + "W" * 5)
    forged = forged_outcomes(honest, "W" * 50 + "L" * 5 + "W" * 5)
    assert not number_discrepancies(ResultLine.model_validate(forged))
    lines = [cell_line(c) for c in cells.values()]
    lines[2] = forged
    bundle = write_bundle(tmp_path / "bundle.jsonl", lines)
    assert submit(tmp_path, bundle) == 2
    err = capsys.readouterr().err.splitlines()
    reference = honest["reference_rewards"][0]
    assert err[0] == (
        f"{bundle}:3: dpo[n=40,seed=0]: outcome of prompt 0 is W, but its reward "
        f"{reference - 1:g} is below the reference's {reference:g}: the gold judge gives L"
    )
    assert [line.split(": ", 2)[2].split(",")[0] for line in err[:5]] == [
        f"outcome of prompt {index} is W" for index in range(5)
    ]
    assert err[5] == (
        f"{bundle}:3: dpo[n=40,seed=0]: and 45 more prompts whose outcome does not follow from "
        "the record like these"
    )
    assert err[-1] == "rejected: 6 problems; nothing was merged"
    assert not (tmp_path / "board").exists()


def test_reference_rewards_must_be_the_tasks_gold_rewards(tmp_path, cells, capsys):
    # Lowering the reference's reward would make a flipped loss look like a win.
    line = cell_line(cells["dpo[n=40,seed=0]"])
    reference = line["reference_rewards"][1]
    line["reference_rewards"][1] = reference - 5
    assert submit(tmp_path, write_bundle(tmp_path / "bundle.jsonl", [line])) == 2
    err = capsys.readouterr().err
    assert (
        f"dpo[n=40,seed=0]: the reference reward of prompt 1 is {reference - 5:g}, but the "
        f"task's gold reward of that reference is {reference:g}"
    ) in err


def test_a_gold_line_without_rewards_cannot_be_verified(tmp_path, cells, capsys):
    line = with_numbers({**cell_line(cells["sft[n=40,seed=0]"]), "rewards": None})
    assert submit(tmp_path, write_bundle(tmp_path / "bundle.jsonl", [line])) == 2
    assert (
        "sft[n=40,seed=0]: its outcomes cannot be verified: it records no rewards, the gold "
        "rewards its verdicts follow from"
    ) in capsys.readouterr().err


def test_old_gold_lines_are_verified_against_the_tasks_reference_rewards(tmp_path, cells):
    # Lines written before reference_rewards was recorded: the task gives them back.
    line = cell_line(cells["sft[n=40,seed=0]"])
    line.pop("reference_rewards")
    assert outcome_problems(ResultLine.model_validate(line)) == []
    assert line["outcomes"][2] == "L"
    flipped = forged_outcomes(line, line["outcomes"][:2] + "W" + line["outcomes"][3:])
    (problem,) = outcome_problems(ResultLine.model_validate(flipped))
    assert problem.startswith("outcome of prompt 2 is W, but its reward ")


def test_every_committed_line_is_self_consistent_and_its_outcomes_follow():
    tasks: dict = {}
    for where, line in load_located_results(REPO_ROOT / "leaderboard" / "results"):
        assert number_discrepancies(line) == [], where
        assert outcome_problems(line, tasks) == [], where


def _judged_as(line: dict, kind: str, params: dict, **records) -> ResultLine:
    judge = {"kind": kind, "id": kind, "version": 1, "params": params}
    return ResultLine.model_validate(with_numbers({**line, "judge": judge, **records}))


def test_rouge_outcomes_follow_from_the_scores_and_the_threshold(cells):
    line = cell_line(cells["sft[n=40,seed=0]"], outcomes="WLI" * 20)
    scores = [0.5, 0.49, None] * 20
    records = {"rewards": scores, "reference_rewards": None, "reward_floor": 0.0}
    rouge = _judged_as(line, "rouge", {"threshold": 0.5}, **records)
    assert outcome_problems(rouge) == []
    strict = _judged_as(line, "rouge", {"threshold": 0.6}, **records)
    assert outcome_problems(strict)[0] == (
        "outcome of prompt 0 is W, but its ROUGE-L 0.5 against the threshold 0.6: the rouge "
        "judge gives L"
    )


def test_a_reward_floor_above_the_judges_worst_score_is_refused(cells):
    # A floor above the worst score lifts the mean reward of a policy that fails.
    line = cell_line(cells["sft[n=40,seed=0]"], outcomes="WLI" * 20)
    scores = [0.5, 0.49, None] * 20
    lifted = _judged_as(
        line, "rouge", {"threshold": 0.5}, rewards=scores, reference_rewards=None, reward_floor=0.4
    )
    assert outcome_problems(lifted) == [
        "its reward_floor is 0.4000, but the rouge judge's worst score is 0.0000"
    ]
    gold = ResultLine.model_validate(with_numbers({**line, "reward_floor": 0.0}))
    assert outcome_problems(gold)[0] == (
        "its reward_floor is 0.0000, but the gold judge's worst score is -9.1000"
    )


def test_reward_model_outcomes_need_the_references_scores(cells):
    line = cell_line(cells["sft[n=40,seed=0]"], outcomes="WTLI" * 15)
    params = {"path": "rm", "tolerance": 0.1}
    rewards, references = [1.0, 0.55, 0.0, None] * 15, [0.5] * 60
    rm = _judged_as(line, "reward_model", params, rewards=rewards, reference_rewards=references)
    assert outcome_problems(rm) == []
    unrecorded = _judged_as(line, "reward_model", params, rewards=rewards, reference_rewards=None)
    assert outcome_problems(unrecorded) == [
        "its outcomes cannot be verified: it lacks rewards or reference_rewards, the RM scores "
        "its verdicts follow from"
    ]


@pytest.mark.parametrize(
    ("answers", "on_disagreement", "verdict"),
    [
        ("AB", "tie", "W"),
        ("BA", "tie", "L"),
        ("AA", "tie", "T"),
        ("AA", "invalid", "F"),
        ("A?", "tie", "F"),
        ("A-", "tie", "W"),
        ("-A", "tie", "L"),
    ],
)
def test_the_verdict_of_two_orders(answers, on_disagreement, verdict):
    # The first character answers with the policy as A, the second with the policy as B.
    assert answers_verdict(answers, on_disagreement).value == verdict


@pytest.fixture
def pairwise_cell(tiny_suite: Path) -> Cell:
    tiny_suite.write_text(
        tiny_suite.read_text().replace(
            "judge:\n  kind: gold\n",
            "judge:\n  kind: llm_pairwise\n"
            "  params: {model: judge-2024-08-06, api_key_env: null}\n",
        )
    )
    (cell,) = load_suite(tiny_suite).cells(["sft"], ["40"])
    return cell


def pairwise_line(cell: Cell, answers: list[str | None]) -> dict:
    """An honest line of a pairwise LLM judge: its outcomes are what its answers give."""
    outcomes = "".join("I" if a is None else answers_verdict(a, "tie").value for a in answers)
    line = cell_line(cell)
    judge = {**cell.resolved_config()["judge"], "id": "llm_pairwise:judge", "version": 1}
    return with_numbers(
        {
            **line,
            "outcomes": outcomes,
            "judge": judge,
            "rewards": None,
            "reference_rewards": None,
            "order_answers": answers,
        }
    )


def test_a_pairwise_line_must_carry_the_answers_of_both_orders(tmp_path, pairwise_cell, capsys):
    answers = ["AB", "BA", "AA", None, "A?"] * 12
    line = pairwise_line(pairwise_cell, answers)
    assert submit(tmp_path, write_bundle(tmp_path / "honest.jsonl", [line])) == 0
    capsys.readouterr()

    unanswered = with_numbers({**line, "order_answers": None})
    assert submit(tmp_path, write_bundle(tmp_path / "unanswered.jsonl", [unanswered])) == 2
    assert "sft[n=40,seed=0]: its outcomes cannot be verified: it records no order_answers" in (
        capsys.readouterr().err
    )

    flipped = forged_outcomes(line, "WW" + line["outcomes"][2:])
    assert submit(tmp_path, write_bundle(tmp_path / "flipped.jsonl", [flipped])) == 2
    assert (
        "sft[n=40,seed=0]: outcome of prompt 1 is W, but the judge answered 'BA' (policy first, "
        "reference first): the llm_pairwise judge gives L"
    ) in capsys.readouterr().err


# -- provenance ---------------------------------------------------------------------------------


def test_lines_from_a_dirty_tree_are_merged_with_a_warning_and_marked(tmp_path, cells, capsys):
    lines = [cell_line(c) for c in cells.values()]
    lines[1]["git_dirty"] = True
    lines[3]["git_dirty"] = True
    lines[2].update(git_commit=None, git_dirty=None)
    bundle = write_bundle(tmp_path / "bundle.jsonl", lines)
    assert submit(tmp_path, bundle) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"warning: 2 lines ran from a working tree with uncommitted changes (git_dirty), so the "
        f"code behind them cannot be checked out again: {bundle} lines 2, 4; merged with "
        "git_dirty kept, marked †dirty on the leaderboard"
    )
    assert out[1] == (
        f"warning: 1 line record no git commit (not run from a git checkout): {bundle} line 3; "
        "merged, marked †no-commit on the leaderboard"
    )
    merged = load_results(tmp_path / "board")
    assert [line.git_dirty for line in merged] == [False, True, None, True]
    table = markdown_tables(cell_table(merged))
    assert "n=60 inv=6 †dirty |" in table and "n=60 inv=6 †no-commit |" in table
    assert table.count("†") == 3
