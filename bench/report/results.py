"""Result lines: one JSON line per (suite, method, budget, seed) run, with its provenance.

A result line is the unit everything downstream reads: the leaderboard pools its per-prompt
`outcomes` over seeds, and anyone can recompute a number or trace it back to the config, the
commit and the machine that produced it. Lines are appended to `<results_dir>/<suite>.jsonl`
and never rewritten; a rerun of a cached cell that reproduces the same numbers adds nothing.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.evaluate.verdicts import Verdict

PROVENANCE_PACKAGES = (
    "pftbench",
    "torch",
    "transformers",
    "accelerate",
    "datasets",
    "vllm",
    "openai",
    "pandas",
    "pydantic",
    "numpy",
)
"""Distributions whose versions are recorded with every result (absent ones are omitted)."""

_VERDICT_LETTERS = frozenset(verdict.value for verdict in Verdict)

SCHEMA_VERSION = 2
"""The result-line layout this code writes and reads. Version 2 (issue 10) counts an invalid
output as a loss in `winrate` and at `reward_floor` in `mean_reward`, keeps the valid-only
winrate in `valid_winrate`, and counts failed judgments (F) apart in `n_failed`; version-1 lines
are refused with a pointer to `pftbench migrate`, which rewrites them (`bench.report.migrate`).
Fields added within a version (output_lengths, reference_lengths, data_hash, reference_rewards,
order_answers, method_family) are optional, so older lines of it still load."""

PER_PROMPT_EXTRAS = (
    "output_lengths",
    "reference_lengths",
    "data_hash",
    "reference_rewards",
    "order_answers",
)
"""Optional fields a newer run of the same cell may add to an older line (see append_result)."""


class ResultFileError(ValueError):
    """A line of a results file that is not a valid result line; names the file and line."""


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ResultLine(BaseModel):
    """One run of one method at one budget and seed on one suite, judged on the eval prompts."""

    # NaN (a winrate with no valid judgment) is written as the JSON constant NaN, which Python
    # and pydantic read back, rather than null, which would not load back into a float field.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    schema_version: int = SCHEMA_VERSION
    """Version of this layout; bumped (with a migration) whenever a field changes meaning."""

    suite: str
    """Suite name; also the results file name."""
    suite_version: int
    """Suite version: numbers from different versions are never pooled."""
    suite_file: str
    """Path of the suite YAML the run was configured from."""
    tier: str
    """Scale tier of the suite (micro, small, paper, ...)."""
    method: str
    """Name of the method entry in the suite, e.g. "dpo_2x"."""
    method_id: str
    """Registered method it runs, e.g. "dpo"."""
    method_family: str | None = None
    """What that method declared it is where it registered: "offline" or "online"
    (`bench.registry.MethodFamily`). None on lines written before it was recorded: readers
    then ask the registry (`bench.report.leaderboard.family_of`)."""
    budget: str
    """Budget label as written in the suite, e.g. "n=250" or "frac=0.5"."""
    n_pairs: int
    """Number of preference pairs the budget resolved to."""
    seed: int
    """Training seed."""

    winrate: float
    """The headline winrate: (wins + ties / 2) / n, where an invalid output is a loss."""
    ci_low: float
    """Lower end of the winrate's 95% interval (`bench.report.stats.winrate_estimate`)."""
    ci_high: float
    """Upper end of the winrate's 95% interval."""
    n: int
    """Prompts in the headline winrate: wins + losses + ties + invalid outputs (all but the
    failed judgments)."""
    n_invalid: int
    """Invalid outputs (I: unfinished, malformed): losses in `winrate`, left out of
    `valid_winrate`."""
    n_failed: int = 0
    """Failed judgments (F: the judge's fault, not the policy's): left out of every winrate."""
    wins: int
    losses: int
    ties: int
    valid_winrate: float | None = None
    """Secondary: (wins + ties / 2) / (wins + losses + ties), invalid outputs left out; NaN
    when no output was valid."""
    valid_ci_low: float | None = None
    valid_ci_high: float | None = None

    mean_reward: float | None
    """Mean reward of the policy's outputs (the judge's score: the gold reward, the RM's score,
    ROUGE-L), an invalid output counted at `reward_floor`; None when the judge scores nothing."""
    reward_ci_low: float | None
    reward_ci_high: float | None
    reward_floor: float | None = None
    """The reward an invalid output counts as in `mean_reward`: the judge's worst score (the
    task's lowest gold reward, 0 for ROUGE). None when the judge has no worst score (a reward
    model's is unbounded): invalid outputs are then left out of `mean_reward`."""

    outcomes: str
    """One verdict letter (W/L/T/I/F) per eval prompt, in prompt order: the raw data to pool."""
    rewards: list[float | None] | None
    """Per-prompt reward of the policy's output (None where invalid), in prompt order."""
    output_lengths: list[int] | None = None
    """Per-prompt length of the policy's output in words, for length-controlled winrates."""
    reference_lengths: list[int] | None = None
    """Per-prompt length of the reference in words."""
    reference_rewards: list[float | None] | None = None
    """Per-prompt score the judge gave the reference (the gold reward, the RM's score), in prompt
    order; None where the judge scores no reference (ROUGE, an LLM judge)."""
    order_answers: list[str | None] | None = None
    """Pairwise judges: per prompt, the judge's answer in each order, two characters for (policy
    first, reference first): A or B as answered, ? for an answer without a verdict, - for an
    order not asked; None for an output that was not judged (invalid). The outcome follows from
    it (`judges.llm_pairwise.answers_verdict`)."""
    data_hash: str | None = None
    """Content hash of the data the cell saw: its budget's pairs and the eval prompts/references."""

    judge: dict[str, Any]
    """The judge's identity: at least kind, id and version."""
    config_hash: str
    """Content hash of the resolved config of this cell (seed included)."""
    config: dict[str, Any]
    """The resolved config itself."""
    git_commit: str | None
    git_dirty: bool | None
    packages: dict[str, str]
    """Versions of the packages that matter (see `provenance`)."""
    hardware: dict[str, Any]
    timings: dict[str, float]
    """Wall seconds per stage (train, generate, judge, ...); cached stages take ~0."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    """Extra diagnostics (final loss, KL to reference, output lengths, ...)."""
    created_at: str = Field(default_factory=_utc_now)
    """ISO 8601 UTC time the line was written."""

    @field_validator("outcomes")
    @classmethod
    def _outcomes_are_verdict_letters(cls, outcomes: str) -> str:
        unknown = sorted(set(outcomes) - _VERDICT_LETTERS)
        if unknown:
            raise ValueError(f"outcomes may hold only W, L, T, I, F; found {unknown}")
        return outcomes

    @field_validator("schema_version")
    @classmethod
    def _schema_is_known(cls, schema_version: int) -> int:
        if schema_version != SCHEMA_VERSION:
            if schema_version < SCHEMA_VERSION:
                raise ValueError(
                    f"schema_version {schema_version} predates this pftbench's version "
                    f"{SCHEMA_VERSION} (invalid outputs now count as losses); rewrite the file "
                    "with `pftbench migrate <folder>`"
                )
            raise ValueError(
                f"schema_version {schema_version} is not known; this pftbench reads version "
                f"{SCHEMA_VERSION}"
            )
        return schema_version

    @field_validator("judge")
    @classmethod
    def _judge_is_identified(cls, judge: dict[str, Any]) -> dict[str, Any]:
        missing = [key for key in ("kind", "id", "version") if key not in judge]
        if missing:
            raise ValueError(f"judge must name its kind, id and version; missing {missing}")
        return judge

    @model_validator(mode="after")
    def _counts_match_outcomes(self) -> ResultLine:
        # The counts are derived from `outcomes`; a mismatch means one of them is wrong.
        counted = {letter: self.outcomes.count(letter) for letter in _VERDICT_LETTERS}
        expected = {
            "wins": counted["W"],
            "losses": counted["L"],
            "ties": counted["T"],
            "n_invalid": counted["I"],
            "n_failed": counted["F"],
            "n": counted["W"] + counted["L"] + counted["T"] + counted["I"],
        }
        wrong = [
            f"{name}={getattr(self, name)} (outcomes say {value})"
            for name, value in expected.items()
            if getattr(self, name) != value
        ]
        if wrong:
            raise ValueError("counts disagree with outcomes: " + ", ".join(wrong))
        if self.rewards is not None and len(self.rewards) != len(self.outcomes):
            raise ValueError(
                f"rewards has {len(self.rewards)} entries for {len(self.outcomes)} outcomes"
            )
        for name in ("output_lengths", "reference_lengths", "reference_rewards", "order_answers"):
            per_prompt = getattr(self, name)
            if per_prompt is not None and len(per_prompt) != len(self.outcomes):
                raise ValueError(
                    f"{name} has {len(per_prompt)} entries for {len(self.outcomes)} outcomes"
                )
        return self


GENERATED_PATHSPECS = (":(exclude,top)leaderboard",)
"""What git_dirty does not count: the committed leaderboard (its result lines, pages and plots)
is what runs write, not what they run. Without this, a run writing to leaderboard/results
marked every cell after its first dirty, the first line itself having dirtied the tree."""


def provenance(repo_dir: Path) -> dict[str, Any]:
    """Where a result came from: git_commit, git_dirty (uncommitted changes outside
    GENERATED_PATHSPECS), packages and hardware.

    git fields are None when `repo_dir` is not a git work tree (or has no commit, or git is not
    installed). GPU names are recorded only if torch is already imported by the run: importing
    it here would cost seconds on a fully cached rerun that never needed it.
    """
    commit = _git(repo_dir, "rev-parse", "HEAD")
    status = (
        _git(repo_dir, "status", "--porcelain", "--", ":/", *GENERATED_PATHSPECS)
        if commit is not None
        else None
    )
    return {
        "git_commit": commit.strip() if commit is not None else None,
        "git_dirty": bool(status.strip()) if status is not None else None,
        "packages": _package_versions(),
        "hardware": _hardware(),
    }


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "-C", str(repo_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["python"] = platform.python_version()
    return versions


def _hardware() -> dict[str, Any]:
    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    processor = _proc_field("/proc/cpuinfo", "model name")
    if processor is not None:
        hardware["processor"] = processor
    mem_total = _proc_field("/proc/meminfo", "MemTotal")
    if mem_total is not None:
        hardware["memory_gb"] = round(int(mem_total.split()[0]) / 1024**2, 1)  # value in kB
    torch = sys.modules.get("torch")
    # The thread count can move the last digits of a CPU run's numbers (bench/run/threads.py).
    threads = str(torch.get_num_threads()) if torch else os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit():
        hardware["torch_threads"] = int(threads)
    if torch is not None and torch.cuda.is_available():
        hardware["gpus"] = [
            torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())
        ]
    return hardware


def _proc_field(path: str, field: str) -> str | None:
    """Value of the first `field: value` line of a /proc file, or None where there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        return None
    return None


def result_path(results_dir: Path, suite: str) -> Path:
    """The JSON-lines file that holds the results of `suite`."""
    return Path(results_dir) / f"{suite}.jsonl"


def append_result(results_dir: Path, line: ResultLine) -> bool:
    """Append `line` to its suite's results file; return whether anything was written.

    Nothing is written (False) if the file already holds a line with the same config_hash,
    outcomes and winrate: rerunning a cached cell reproduces that line and must not count twice
    when seeds are pooled. The one exception is a reproduced line that carries what the old one
    lacks, an optional per-prompt field (PER_PROMPT_EXTRAS, e.g. output lengths) or a compute
    counter (`metrics.counters`): it is appended and, being the last line of its config_hash,
    supersedes the old one. The check and the
    append happen under an flock of the file, and the line goes out in one write, flushed and
    fsynced.
    """
    path = result_path(results_dir, line.suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        handle.seek(0)
        existing_text = handle.read()
        for existing in _parse_lines(path, existing_text):
            if (
                existing.config_hash == line.config_hash
                and existing.outcomes == line.outcomes
                and _same_number(existing.winrate, line.winrate)
                and not _adds_extras(existing, line)
            ):
                return False
        separator = "" if not existing_text or existing_text.endswith("\n") else "\n"
        handle.write(separator + line.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _adds_extras(existing: ResultLine, line: ResultLine) -> bool:
    """Whether `line` holds an optional per-prompt field or a compute counter that `existing`
    lacks."""
    if set(_counters(line)) - set(_counters(existing)):
        return True
    return any(
        getattr(line, name) is not None and getattr(existing, name) is None
        for name in PER_PROMPT_EXTRAS
    )


def _counters(line: ResultLine) -> dict[str, Any]:
    counters = line.metrics.get("counters")
    return counters if isinstance(counters, dict) else {}


def _same_number(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def load_results(results_dir: Path) -> list[ResultLine]:
    """Every result line of every `*.jsonl` file in `results_dir`, files in name order.

    Raises ResultFileError naming `file:line` for a line that is not a valid result line, and
    FileNotFoundError if `results_dir` does not exist (a typo should not read as "no results").
    """
    return [line for _, line in load_located_results(results_dir)]


def load_located_results(results_dir: Path) -> list[tuple[str, ResultLine]]:
    """`load_results`, each line with where it was read: `file:line`, for messages about it."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder {results_dir} does not exist")
    lines: list[tuple[str, ResultLine]] = []
    for path in sorted(results_dir.glob("*.jsonl")):
        lines.extend(_parse_located(path, path.read_text(encoding="utf-8")))
    return lines


def load_result_file(path: Path) -> list[ResultLine]:
    """The result lines of one results file; ResultFileError names `file:line` of a bad one."""
    path = Path(path)
    return _parse_lines(path, path.read_text(encoding="utf-8"))


def _parse_lines(path: Path, text: str) -> list[ResultLine]:
    return [line for _, line in _parse_located(path, text)]


def _parse_located(path: Path, text: str) -> list[tuple[str, ResultLine]]:
    lines = []
    for line_number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            lines.append((f"{path}:{line_number}", ResultLine.model_validate_json(raw)))
        except ValidationError as error:
            raise ResultFileError(
                f"{path}:{line_number}: not a valid result line: {_describe(error)}"
            ) from None
    return lines


def _describe(error: ValidationError) -> str:
    """One short sentence per problem, instead of pydantic's multi-line report."""
    problems = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"])
        problems.append(f"{location}: {problem['msg']}" if location else problem["msg"])
    return "; ".join(problems)


def latest_per_cell(lines: Iterable[ResultLine]) -> list[ResultLine]:
    """The last line of each config_hash (reruns supersede), in order of first appearance."""
    latest: dict[str, ResultLine] = {}
    for line in lines:
        latest[line.config_hash] = line
    return list(latest.values())
