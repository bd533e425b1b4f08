"""`pftbench submit`: a bundle is merged only when every line checks out against the suites."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from result_factory import cell_line, write_bundle

from bench.cli import main
from bench.config import Cell, load_suite
from bench.hashing import content_hash
from bench.results import ResultLine, append_result, latest_per_cell, load_results
from bench.submit import judge_pin_problem

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
        "winrate is 0.9000, but its outcomes give 0.6111",
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
        _set(("schema_version",), 2),
        "field `schema_version`: Value error, schema_version 2 is not known",
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
            n_invalid=line["n_invalid"] - 1,
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
    assert "(winrate 1.0000 here, 0.6111 there)" in err


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
    assert committed and all(line.schema_version == 1 for line in committed)


def test_a_reproduced_line_that_adds_lengths_supersedes_the_old_one(tmp_path, cells):
    line = cell_line(cells["sft[n=40,seed=0]"])
    old = {key: value for key, value in line.items() if key != "output_lengths"}
    assert append_result(tmp_path, ResultLine.model_validate(old))
    assert append_result(tmp_path, ResultLine.model_validate(line))
    assert not append_result(tmp_path, ResultLine.model_validate(line))
    assert not append_result(tmp_path, ResultLine.model_validate(old))
    assert latest_per_cell(load_results(tmp_path))[0].output_lengths == line["output_lengths"]
