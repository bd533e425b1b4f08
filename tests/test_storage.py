"""Storage layer: canonical hashing, the artifact cache, result lines and the leaderboard."""

from __future__ import annotations

import dataclasses
import enum
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from bench.evaluate.verdicts import outcomes_from_string
from bench.report.leaderboard import (
    cell_table,
    markdown_table,
    markdown_tables,
    print_table,
    render,
)
from bench.report.results import (
    ResultFileError,
    ResultLine,
    append_result,
    latest_per_cell,
    load_results,
    provenance,
    result_path,
)
from bench.report.stats import crossed_mean, verdict_scores
from bench.report.summary import line_numbers
from bench.run.cache import Cache, CacheMiss
from bench.run.hashing import canonical_json, content_hash, short

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, **kwargs) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv, with the repo importable."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        text=True,
        **kwargs,
    )


def make_line(
    outcomes: str = "WWLTI",
    *,
    suite: str = "tldr",
    method: str = "dpo",
    budget: str = "n=250",
    n_pairs: int = 250,
    seed: int = 0,
    rewards: list[float | None] | None = None,
    judge_id: str = "rouge",
    reward_floor: float | None = None,
) -> ResultLine:
    """A consistent result line whose summary numbers are computed from `outcomes` and
    `rewards` the way the runner does."""
    config = {"suite": suite, "method": method, "budget": budget, "seed": seed}
    return ResultLine(
        suite=suite,
        suite_version=1,
        suite_file=f"suites/micro/{suite}.yaml",
        tier="micro",
        method=method,
        method_id=method.split("_")[0],
        budget=budget,
        n_pairs=n_pairs,
        seed=seed,
        **line_numbers(outcomes, rewards, reward_floor),
        outcomes=outcomes,
        rewards=rewards,
        judge={"kind": "reference", "id": judge_id, "version": 1},
        config_hash=content_hash(config),
        config=config,
        git_commit=None,
        git_dirty=None,
        packages={"python": "3.12"},
        hardware={"cpu_count": 2},
        timings={"train": 1.5, "judge": 0.1},
    )


# --- hashing ---------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class TrainArgs:
    lr: float
    betas: tuple[float, float]


class MethodConfig(BaseModel):
    name: str
    beta: float
    output: Path


def test_canonical_json_is_sorted_compact_and_keeps_unicode():
    assert canonical_json({"b": 1, "a": [1, 2.5, "é"], "c": None, "d": True}) == (
        '{"a":[1,2.5,"é"],"b":1,"c":null,"d":true}'
    )


def test_canonical_json_ignores_key_order_at_every_depth():
    first = {"outer": {"b": [{"y": 1, "x": 2}], "a": 0}, "z": 1}
    second = {"z": 1, "outer": {"a": 0, "b": [{"x": 2, "y": 1}]}}
    assert canonical_json(first) == canonical_json(second)
    assert content_hash(first) == content_hash(second)


def test_canonical_json_converts_models_dataclasses_paths_tuples_and_enums():
    value = {
        "model": MethodConfig(name="dpo", beta=0.05, output=Path("out/dpo")),
        "args": TrainArgs(lr=3e-7, betas=(0.9, 0.99)),
        "path": Path("data/pairs.jsonl"),
        "color": Color.RED,
    }
    plain = {
        "model": {"name": "dpo", "beta": 0.05, "output": "out/dpo"},
        "args": {"lr": 3e-7, "betas": [0.9, 0.99]},
        "path": "data/pairs.jsonl",
        "color": "red",
    }
    assert canonical_json(value) == canonical_json(plain)


def test_canonical_json_rejects_what_it_cannot_spell_canonically():
    with pytest.raises(TypeError, match="set"):
        canonical_json({"a": {1, 2}})
    with pytest.raises(TypeError, match="int"):
        canonical_json({1: "one"})  # would collide with {"1": "one"}
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json({"loss": [1.0, math.nan]})


def test_content_hash_is_pinned():
    # Changing this value invalidates every cache of every user: do it only on purpose.
    obj = {"method": "dpo", "beta": 0.05, "budget": (250, 500), "path": Path("a/b")}
    assert canonical_json(obj) == '{"beta":0.05,"budget":[250,500],"method":"dpo","path":"a/b"}'
    assert content_hash(obj) == "9bfaccc558ceae257022b40185d1f5be10e6983589ac321e52038445308b477e"
    assert short(content_hash(obj)) == content_hash(obj)[:12]


# --- cache -----------------------------------------------------------------------------------

KEY = "ab" * 32


def test_write_json_round_trips_atomically(tmp_path):
    cache = Cache(tmp_path)
    assert not cache.has("judgments", KEY)
    with pytest.raises(CacheMiss):
        cache.read_json("judgments", KEY)
    path = cache.write_json("judgments", KEY, {"verdicts": ["W", "L"], "args": (1, 2)})
    assert path == tmp_path / "judgments" / KEY == cache.path("judgments", KEY)
    assert cache.has("judgments", KEY)
    assert cache.read_json("judgments", KEY) == {"verdicts": ["W", "L"], "args": [1, 2]}
    assert os.listdir(tmp_path / "judgments") == [KEY]  # no temp file left behind


def test_cache_rejects_names_that_escape_or_collide_with_the_layout(tmp_path):
    cache = Cache(tmp_path)
    for kind, key in [
        ("models", "../x"),
        ("models", ".tmp-x"),
        ("models", "a.partial"),
        ("locks", KEY),
        ("a/b", KEY),
        ("models", ""),
    ]:
        with pytest.raises(ValueError):
            cache.path(kind, key)


def test_writing_dir_commits_on_success_and_clears_the_scratch_dir(tmp_path):
    cache = Cache(tmp_path)
    scratch = cache.scratch_dir("models", KEY)
    (scratch / "checkpoint-10").write_text("step 10")
    assert cache.scratch_dir("models", KEY) == scratch  # persistent: same folder, same content
    assert (scratch / "checkpoint-10").exists()
    assert not cache.has("models", KEY)

    with cache.writing_dir("models", KEY) as folder:
        assert folder.parent == tmp_path / "models" and folder != cache.path("models", KEY)
        (folder / "weights.bin").write_bytes(b"1234")
        assert not cache.has("models", KEY)  # invisible until the block ends
    assert (cache.path("models", KEY) / "weights.bin").read_bytes() == b"1234"
    assert not scratch.exists()
    assert os.listdir(tmp_path / "models") == [KEY]


def test_writing_dir_leaves_nothing_when_the_block_raises(tmp_path):
    cache = Cache(tmp_path)
    scratch = cache.scratch_dir("models", KEY)
    with pytest.raises(RuntimeError), cache.writing_dir("models", KEY) as folder:
        (folder / "weights.bin").write_bytes(b"half")
        raise RuntimeError("training diverged")
    assert not cache.has("models", KEY)
    assert sorted(os.listdir(tmp_path / "models")) == [scratch.name]  # scratch kept to resume


def test_writing_dir_keeps_an_entry_that_appeared_meanwhile(tmp_path):
    cache = Cache(tmp_path)
    with cache.writing_dir("generations", KEY) as slow:
        (slow / "out.json").write_text("slow")
        with cache.writing_dir("generations", KEY) as fast:
            (fast / "out.json").write_text("fast")
    assert (cache.path("generations", KEY) / "out.json").read_text() == "fast"
    assert os.listdir(tmp_path / "generations") == [KEY]


def test_an_interrupted_write_is_never_an_entry(tmp_path):
    # os._exit skips every cleanup, like kill -9 in the middle of writing a checkpoint.
    code = f"""
        import os
        from pathlib import Path
        from bench.run.cache import Cache
        cache = Cache(Path({str(tmp_path)!r}))
        with cache.writing_dir("models", {KEY!r}) as folder:
            (folder / "weights.bin").write_bytes(b"half")
            os._exit(3)
    """
    assert run_python(code).returncode == 3
    leftovers = os.listdir(tmp_path / "models")
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-")
    assert not Cache(tmp_path).has("models", KEY)


def test_the_next_run_removes_what_a_killed_run_left(tmp_path):
    # A killed writer's temporary entry goes; a live writer's, another host's and every
    # complete entry stay.
    code = f"""
        import os
        from pathlib import Path
        from bench.run.cache import Cache
        cache = Cache(Path({str(tmp_path)!r}))
        cache.write_json("judgments", {KEY!r}, [1])
        with cache.writing_dir("models", {KEY!r}) as folder:
            (folder / "weights.bin").write_bytes(b"half")
            os._exit(3)
    """
    assert run_python(code).returncode == 3
    cache = Cache(tmp_path)
    (killed,) = (tmp_path / "models").glob(f".tmp-{KEY}-*")
    scratch = cache.scratch_dir("models", "other")
    elsewhere = tmp_path / "models" / f".tmp-{KEY}-1.0badc0de-abcdefgh"
    elsewhere.mkdir()
    from bench.run.runner import Runner

    messages = []
    with cache.writing_dir("generations", KEY) as live:
        Runner(cache, None, progress=False, log=messages.append)
        assert live.exists()
    assert not killed.exists()
    assert messages == ["removed 1 unfinished cache entry left by killed runs"]
    assert sorted(os.listdir(tmp_path / "models")) == sorted([elsewhere.name, scratch.name])
    assert cache.read_json("judgments", KEY) == [1] and cache.has("generations", KEY)
    assert cache.remove_stale_temps() == []


def test_default_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("PFTBENCH_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Cache.default().root == tmp_path / "explicit"
    monkeypatch.delenv("PFTBENCH_CACHE_DIR")
    assert Cache.default().root == tmp_path / "xdg" / "pftbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Cache.default().root == tmp_path / "home" / ".cache" / "pftbench"


def test_lock_excludes_another_process(tmp_path):
    cache = Cache(tmp_path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys
            from pathlib import Path
            from bench.run.cache import Cache
            with Cache(Path({str(tmp_path)!r})).lock("models", {KEY!r}):
                print("locked", flush=True)
                sys.stdin.readline()
        """),
        ],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock_file = tmp_path / "locks" / f"models-{KEY}.lock"
        with open(lock_file) as handle, pytest.raises(BlockingIOError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.stdin.write("release\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
        with (
            cache.lock("models", KEY),
            open(lock_file) as handle,
            pytest.raises(BlockingIOError),
        ):
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.wait()


# --- results ---------------------------------------------------------------------------------


def test_result_lines_round_trip(tmp_path):
    first = make_line("WWLTI", rewards=[1.0, 0.5, None, 0.25, None])
    second = make_line("LLW", suite="other", n_pairs=100, budget="n=100")
    assert append_result(tmp_path / "results", first)
    assert append_result(tmp_path / "results", second)
    assert result_path(tmp_path / "results", "tldr") == tmp_path / "results" / "tldr.jsonl"
    assert load_results(tmp_path / "results") == [second, first]  # files in name order


def test_a_line_without_a_method_family_still_loads(tmp_path):
    """`method_family` was added within schema 2: lines written before it load, as None (the
    leaderboard then asks the registry, tests/test_pages.py); lines with it round-trip."""
    recorded = make_line("WWL").model_copy(update={"method_family": "offline"})
    older = json.loads(make_line("LLW").model_dump_json())
    del older["method_family"]
    path = result_path(tmp_path, "tldr")
    path.write_text(recorded.model_dump_json() + "\n" + json.dumps(older) + "\n")
    first, second = load_results(tmp_path)
    assert first == recorded and first.method_family == "offline"
    assert second.method_family is None


def test_nan_winrate_round_trips(tmp_path):
    line = make_line("WL").model_copy(
        update={
            "outcomes": "FF",
            "wins": 0,
            "losses": 0,
            "n": 0,
            "n_failed": 2,
            "winrate": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
        }
    )
    append_result(tmp_path, line)
    (loaded,) = load_results(tmp_path)
    assert math.isnan(loaded.winrate) and loaded.outcomes == "FF"
    assert not append_result(tmp_path, line)


def test_append_is_idempotent_for_a_reproduced_cell(tmp_path):
    line = make_line("WWLT")
    assert append_result(tmp_path, line)
    assert not append_result(tmp_path, line.model_copy(update={"created_at": "later"}))
    assert len(result_path(tmp_path, "tldr").read_text().splitlines()) == 1
    rerun = make_line("WLLT")  # same config, different outcomes: a new observation
    assert append_result(tmp_path, rerun)
    assert load_results(tmp_path) == [line, rerun]
    assert latest_per_cell(load_results(tmp_path)) == [rerun]


def test_a_reproduced_line_with_compute_counters_supersedes_one_without(tmp_path):
    old = make_line("WWLT")
    old = old.model_copy(update={"metrics": {**old.metrics, "counters": {"pairs_used": 4}}})
    assert append_result(tmp_path, old)
    counted = {"pairs_used": 4, "tokens_trained": 120, "train_s": 0.5}
    new = old.model_copy(update={"metrics": {**old.metrics, "counters": counted}})
    assert append_result(tmp_path, new), "it carries counters the old line lacks"
    assert not append_result(tmp_path, new), "and once there, it is not appended again"
    assert latest_per_cell(load_results(tmp_path)) == [new]


def test_a_malformed_line_is_reported_with_file_and_line(tmp_path):
    path = result_path(tmp_path, "tldr")
    append_result(tmp_path, make_line())
    with open(path, "a") as handle:
        handle.write("{not json\n")
    with pytest.raises(ResultFileError, match=f"{path}:2: not a valid result line"):
        load_results(tmp_path)

    record = make_line().model_dump(mode="json")
    record["winrat"] = 0.5
    path.write_text("\n" + json.dumps(record) + "\n")
    with pytest.raises(ResultFileError, match=rf"{path}:2: .*winrat: Extra inputs"):
        load_results(tmp_path)


def test_result_line_counts_must_match_outcomes():
    with pytest.raises(ValidationError, match="wins=3 \\(outcomes say 2\\)"):
        ResultLine.model_validate({**make_line("WWL").model_dump(), "wins": 3})
    with pytest.raises(ValidationError, match="only W, L, T, I"):
        ResultLine.model_validate({**make_line("WWL").model_dump(), "outcomes": "WWX"})


def test_load_results_of_a_missing_folder_fails_loudly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "typo")


def test_provenance_outside_git_and_without_importing_torch(tmp_path):
    code = f"""
        import sys
        from pathlib import Path
        import bench.run.cache, bench.run.hashing, bench.report.leaderboard, bench.report.results
        info = bench.report.results.provenance(Path({str(tmp_path)!r}))
        assert "torch" not in sys.modules, "torch was imported"
        assert info["git_commit"] is None and info["git_dirty"] is None, info
        assert set(info) == {{"git_commit", "git_dirty", "packages", "hardware"}}, info
        assert {{"pandas", "pydantic", "numpy", "python"}} <= set(info["packages"]), info
        assert {{"platform", "machine", "cpu_count"}} <= set(info["hardware"]), info
        assert "gpus" not in info["hardware"]
    """
    completed = run_python(code, capture_output=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_provenance_records_the_commit_and_dirtiness(tmp_path):
    def git(*args):
        subprocess.run(
            ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
            check=True,
            capture_output=True,
        )

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "start")
    clean = provenance(tmp_path)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    # The committed leaderboard is what runs write: a run appending there stays clean.
    (tmp_path / "leaderboard" / "results").mkdir(parents=True)
    (tmp_path / "leaderboard" / "results" / "s.jsonl").write_text("{}\n")
    assert provenance(tmp_path)["git_dirty"] is False
    assert provenance(tmp_path / "leaderboard")["git_dirty"] is False  # from a subfolder too
    (tmp_path / "new.txt").write_text("x")
    assert provenance(tmp_path)["git_dirty"] is True
    assert provenance(tmp_path / "leaderboard")["git_dirty"] is True


# --- leaderboard -----------------------------------------------------------------------------


@pytest.mark.parametrize("floor", [None, -1.0])
def test_one_seed_cell_equals_the_stored_line(floor):
    line = make_line(
        "WWWLTTIF", rewards=[1.0, 2.0, None, 0.5, 0.0, 1.5, None, 1.0], reward_floor=floor
    )
    (row,) = cell_table([line]).to_dict("records")
    assert row["seeds"] == [0]
    for column in [
        "winrate",
        "ci_low",
        "ci_high",
        "n",
        "n_invalid",
        "n_failed",
        "valid_winrate",
        "valid_ci_low",
        "valid_ci_high",
        "mean_reward",
        "reward_ci_low",
        "reward_ci_high",
        "n_pairs",
        "budget",
        "method",
    ]:
        assert row[column] == getattr(line, column), column


def test_seeds_are_pooled_and_a_rerun_supersedes_its_seed():
    seed0_old = make_line("LLLLL", seed=0)
    seed0 = make_line("WWLTF", seed=0)
    seed1 = make_line("WLLIT", seed=1)
    seed2 = make_line("WWWWW", seed=2)
    other = make_line("LLWWW", method="ipo")
    table = cell_table([seed0_old, seed2, other, seed0, seed1])
    assert list(table["method"]) == ["dpo", "ipo"]
    row = table.iloc[0]
    # Seeds share their prompts: the crossed grid, the prompt failed in seed 0 dropped from all.
    grid = [verdict_scores(outcomes_from_string(o)) for o in ["WWLTF", "WLLIT", "WWWWW"]]
    expected = crossed_mean(grid, bounds=(0.0, 1.0))
    assert row["seeds"] == [0, 1, 2]
    assert (row["winrate"], row["ci_low"], row["ci_high"], row["n"]) == (
        expected.value,
        expected.low,
        expected.high,
        expected.n,
    )
    assert row["n"] == 4 and row["winrate"] == pytest.approx(np.mean([0.625, 0.25, 1.0]))
    assert row["n_invalid"] == 1 and row["n_failed"] == 1
    # Valid-only: seed 1's invalid output drops its prompt (4) from every seed too.
    assert row["valid_winrate"] == pytest.approx(np.mean([2 / 3, 1 / 3, 1.0]))
    assert row["mean_reward"] is None


def test_seeds_that_disagree_on_their_prompts_are_not_pooled():
    with pytest.raises(ValueError, match="disagree on the number of prompts"):
        cell_table([make_line("WWL", seed=0), make_line("WWLL", seed=1)])


def test_seeds_with_different_pair_counts_are_not_pooled():
    with pytest.raises(ValueError, match="disagree on n_pairs"):
        cell_table([make_line(seed=0), make_line(seed=1, n_pairs=251)])


def test_markdown_tables_show_sections_cells_and_order():
    lines = [
        make_line("WWLTI", method="dpo", budget="n=500", n_pairs=500, rewards=[1, 2, 3, 4, None]),
        make_line("WWLTW", method="dpo", budget="n=250", n_pairs=250, seed=0),
        make_line("WLLTL", method="dpo", budget="n=250", n_pairs=250, seed=1),
        make_line("WLLL", method="online_dpo", budget="frac=0.1", n_pairs=25),
        make_line("WL", suite="tldr_short", method="sft", judge_id="gpt-4o"),
    ]
    df = cell_table(lines)
    text = markdown_tables(df)

    assert "## tldr (v1, micro, judge rouge)" in text
    assert "## tldr_short (v1, micro, judge gpt-4o)" in text
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "method",
        "frac=0.1 (25 pairs)",
        "n=250",
        "n=500",
    ]
    solo = df[(df.method == "dpo") & (df.budget == "n=500")].iloc[0]
    pooled = df[(df.method == "dpo") & (df.budget == "n=250")].iloc[0]
    solo_text = f"{solo.winrate:.3f} [{solo.ci_low:.3f}, {solo.ci_high:.3f}]"
    assert f"{solo_text} n=5 inv=1 †no-commit |" in text
    assert (
        f"{pooled.winrate:.3f} [{pooled.ci_low:.3f}, {pooled.ci_high:.3f}] n=5 seeds=2 "
        "(undecidable)" in text
    )
    assert "Valid-only winrate" in text  # a section with an invalid output shows both
    assert text.index("| dpo") < text.index("| online_dpo")
    assert f"{solo.mean_reward:.3f} [{solo.reward_ci_low:.3f}, {solo.reward_ci_high:.3f}]" in text
    assert text.count("Mean reward") == 1  # only the section with rewards has a reward table
    table_lines = [line for line in text.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in table_lines)


def test_markdown_table_aligns_and_escapes():
    table = markdown_table(["a", "long header"], [["x|y", "1"], ["zz", "22"]])
    assert table.splitlines() == [
        "| a    | long header |",
        "|------|-------------|",
        "| x\\|y | 1           |",
        "| zz   | 22          |",
    ]


def test_render_writes_the_leaderboard(tmp_path):
    results = tmp_path / "results"
    append_result(results, make_line("WWLT", seed=0))
    append_result(results, make_line("WLTT", seed=1))
    out = tmp_path / "README.md"
    text = render(results, out)
    assert out.read_text() == text
    assert text.startswith("# pftbench leaderboard")
    assert "(wins + ties/2) / n" in text and "95%" in text
    assert "## tldr (v1, micro, judge rouge)" in text and "seeds=2" in text
    assert "`results/*.jsonl`" in text
    assert set(os.listdir(tmp_path)) == {"README.md", "results"}  # no temp file left


def test_print_table_is_a_compact_summary():
    text = print_table([make_line("WWLT", seed=0), make_line("WLTT", seed=1)])
    header, row = text.splitlines()
    assert header.split()[:3] == ["suite", "method", "budget"]
    assert row.startswith("tldr v1") and "dpo" in row
    seeds = header.index("seeds")
    assert row[seeds:].split()[0] == "2"  # the number of seeds, not their ids "0,1"
    assert print_table([]) == "(no results)"


def test_the_run_table_prints_online_minus_offline_in_winrate_and_reward():
    rewards_dpo = [1.0, 0.5, None, 0.0, 2.0, 1.0]
    rewards_online = [1.5, 0.5, 1.0, None, 2.5, 1.0]
    floor = -9.0
    lines = [
        make_line("WLIWWL", method="dpo", seed=0, rewards=rewards_dpo, reward_floor=floor),
        make_line(
            "WWWIWL", method="online_dpo", seed=0, rewards=rewards_online, reward_floor=floor
        ),
    ]
    lines[1] = lines[1].model_copy(update={"method_id": "online_dpo", "method_family": "online"})
    text = print_table(lines)
    head, gap = text.splitlines()[-2:]
    assert head.startswith("online minus offline dpo, paired over the same prompts and seeds")
    # Per prompt online - dpo: winrate 0, 1, 1, -1, 0, 0; reward (invalid at the floor -9)
    # 0.5, 0, 10, -9, 0.5, 0: means +0.167 and +0.333.
    from bench.report.summary import difference, reward_difference

    winrate = difference(lines[1:], lines[:1])
    reward = reward_difference(lines[1:], lines[:1])
    assert winrate.value == pytest.approx(1 / 6) and reward.value == pytest.approx(2 / 6)
    assert gap.startswith("  tldr v1 online_dpo - dpo at n=250: winrate +0.167 [")
    assert f"mean reward +0.333 [{reward.low:+.3f}, {reward.high:+.3f}]" in gap
    assert gap.endswith("(n=6, seeds=1)")


def test_a_reward_difference_needs_rewards_and_one_floor():
    from bench.report.summary import reward_difference

    a = make_line("WL", rewards=[1.0, 0.0], reward_floor=-1.0)
    assert reward_difference([a], [make_line("WL", rewards=None)]) is None
    assert reward_difference([a], [make_line("WL", rewards=[0.0, 0.0], reward_floor=-2.0)]) is None
    with pytest.raises(ValueError, match="same seeds"):
        reward_difference([a, a], [a])
