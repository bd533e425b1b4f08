"""`pftbench submit`: check a bundle of result lines against this repository, then merge it.

A bundle is one or more JSON-lines files of result lines (`bench.report.results.ResultLine`), as
`pftbench run` writes them. Nothing in it is ever executed: each line is parsed with `json.loads`
and validated as data; no name in it is imported or looked up as code (a method id is only
compared with the registry, which holds what this checkout already ships or has installed).

A bundle is rejected, with every reason on its own line, when a line:

- is not JSON or not a valid result line (the schema: a missing or mistyped field, an unknown
  schema_version), named by `file:line` and the field;
- has no seed (seeds are missing), or the bundle lacks some of the suite's seeds for a
  (method, budget) it reports: every seed of the suite must be submitted, so that no one picks
  the best seed;
- names a suite, or a suite version, that no suite file under the suites folder has;
- has a `config_hash` that is not `bench.run.hashing.content_hash(config)`, or summary fields
  (suite, version, tier, method, budget, seed, judge) that disagree with its own config;
- has a config other than the one the repository's suite resolves to for that cell
  (`Suite.cells()`, `Cell.resolved_config()`): the run used a different protocol. A method entry
  the suite does not list is a new method: everything but its `method` block must match the
  suite's protocol at that budget and seed, and where its method id is registered here its
  method config must be a complete valid config of that method;
- has a judge that is not pinned (see `judge_pin_problem`);
- has summary numbers (winrate and its CI, mean reward) that its per-prompt outcomes and
  rewards do not reproduce (`bench.report.integrity.number_discrepancies`), or fewer or more
  outcomes than the suite's evaluation prompts;
- has outcomes that do not follow from what it records the judge saw, by the judge's own rule
  (`bench.report.integrity.outcome_problems`): a gold verdict against the task's gold reward of the
  reference (recomputed here from the task), a ROUGE-L score against the threshold, an RM score
  against the reference's, the answers of both orders of an LLM judge (`order_answers`); or
  lacks the record its judge's rule needs (no rewards, no order_answers), so that its outcomes
  cannot be verified;
- conflicts with a line already merged for the same config hash (results are deterministic
  for a config and seed: a different outcome for the same config is not a new result).

A bundle without problems is merged into the results folder with `append_result`, which skips
lines already there: submitting twice changes nothing. Lines run from a working tree with
uncommitted changes (`git_dirty`) or without a git commit are merged with a warning that names
them; they keep their provenance, and the leaderboard marks their cells.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.config import Cell, Suite, load_suite
from bench.errors import ConfigError
from bench.report.integrity import number_discrepancies, outcome_problems
from bench.report.regression import cell_id, config_differences
from bench.report.results import ResultLine, append_result, load_result_file, result_path
from bench.run.hashing import content_hash, short
from bench.run.selection import UsageError, suite_paths
from bench.tasks.base import Task

CONFIG_FIELDS = (
    # (result-line field, key path in its config)
    ("suite", ("suite",)),
    ("suite_version", ("suite_version",)),
    ("tier", ("tier",)),
    ("method", ("method", "name")),
    ("method_id", ("method", "method")),
    ("budget", ("budget",)),
    ("seed", ("seed",)),
)
"""Summary fields of a result line that must repeat what its config says."""

_DATED_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|\d{4})$")
_HUB_REVISION = re.compile(r"@[0-9a-f]{40}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class Problem:
    """One reason to reject a bundle, with where it was found (`file:line` or a file)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class BundleCheck:
    """What `check_bundle` found: the valid lines (with where each came from), the problems,
    and notes that are not problems (e.g. a new method entry)."""

    lines: list[tuple[str, ResultLine]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Merged:
    """What `submit` merged: lines written, and lines already in the results folder."""

    written: list[ResultLine]
    already_there: list[ResultLine]
    check: BundleCheck


class BundleRejected(Exception):
    """The bundle has problems; nothing was merged. `problems` holds one reason each."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def submit(paths: Sequence[Path], suites_dir: Path, results_dir: Path) -> Merged:
    """Check the bundle (`check_bundle`) and, if it has no problem, merge it into `results_dir`.

    Raises BundleRejected (nothing merged) listing every problem, or UsageError when a file or
    the suites folder does not exist.
    """
    check = check_bundle(paths, suites_dir, results_dir)
    if check.problems:
        raise BundleRejected(check.problems)
    written, already_there = [], []
    for _, line in check.lines:
        (written if append_result(results_dir, line) else already_there).append(line)
    return Merged(written, already_there, check)


def check_bundle(
    paths: Sequence[Path], suites_dir: Path, results_dir: Path | None = None
) -> BundleCheck:
    """Every problem of the bundle (empty `problems`: it may be merged); see the module doc.

    `results_dir`, when given and present, holds the lines merged so far: a bundle line that
    contradicts one of them for the same config hash is a problem.
    """
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    suites, load_failures = _load_suites(suites_dir)
    check = BundleCheck()
    tasks: dict[str, Task] = {}
    for path in paths:
        for where, raw in _json_lines(Path(path), check.problems):
            line = _parse_line(where, raw, check.problems)
            if line is None:
                continue
            problems_before = len(check.problems)
            _check_line(where, line, suites, load_failures, suites_dir, check)
            if len(check.problems) == problems_before:
                # Only a line whose config is the suite's protocol: its task is one we build.
                for reason in outcome_problems(line, tasks):
                    check.problems.append(Problem(where, f"{cell_id(line)}: {reason}"))
            if len(check.problems) == problems_before:
                check.lines.append((where, line))
    _check_seeds(check, suites)
    _check_duplicates(check, results_dir)
    _note_provenance(check)
    return check


# -- parsing ----------------------------------------------------------------------------------


def _json_lines(path: Path, problems: list[Problem]) -> Iterable[tuple[str, Any]]:
    """(file:line, parsed JSON value) for each non-blank line; problems for unreadable ones."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        problems.append(
            Problem(str(path), f"not UTF-8 text ({error.reason} at byte {error.start})")
        )
        return
    if not text.strip():
        problems.append(Problem(str(path), "the file holds no result line"))
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            yield where, json.loads(raw)
        except json.JSONDecodeError as error:
            problems.append(Problem(where, f"not valid JSON: {error.msg} at column {error.colno}"))


def _parse_line(where: str, raw: Any, problems: list[Problem]) -> ResultLine | None:
    if not isinstance(raw, dict):
        problems.append(Problem(where, f"expected a JSON object, got {type(raw).__name__}"))
        return None
    seedless = raw.get("seed") is None
    if seedless:
        problems.append(Problem(where, "seeds are missing: the line has no seed"))
    try:
        line = ResultLine.model_validate(raw)
    except ValidationError as error:
        for issue in error.errors():
            if seedless and tuple(issue["loc"]) == ("seed",):
                continue  # said above, in the words of the rule
            location = ".".join(str(part) for part in issue["loc"])
            problems.append(
                Problem(where, f"field `{location}`: {issue['msg']}" if location else issue["msg"])
            )
        return None
    return None if seedless else line


def _load_suites(suites_dir: Path) -> tuple[dict[str, list[Suite]], list[str]]:
    """Suite name -> the suites of that name under `suites_dir`; and the files that failed."""
    suites_dir = Path(suites_dir)
    if not suites_dir.is_dir():
        raise UsageError(f"suites folder {suites_dir} does not exist")
    suites: dict[str, list[Suite]] = {}
    failures = []
    for path in suite_paths([suites_dir]):
        try:
            suite = load_suite(path)
        except ConfigError as error:
            failures.append(f"{path} ({len(error.issues)} config issues)")
            continue
        suites.setdefault(suite.name, []).append(suite)
    return suites, failures


# -- one line ---------------------------------------------------------------------------------


def _check_line(
    where: str,
    line: ResultLine,
    suites: dict[str, list[Suite]],
    load_failures: list[str],
    suites_dir: Path,
    check: BundleCheck,
) -> None:
    def problem(reason: str) -> None:
        check.problems.append(Problem(where, reason))

    config = line.config
    try:
        recomputed = content_hash(config)
    except (TypeError, ValueError) as error:
        problem(f"its config cannot be hashed: {error}")
        recomputed = None
    if recomputed is not None and recomputed != line.config_hash:
        problem(
            f"config_hash {short(line.config_hash)} does not match the hash of its config "
            f"({short(recomputed)}): the config was changed after the run, or the hash was"
        )
    for name, path in CONFIG_FIELDS:
        configured = _get(config, path)
        if configured != getattr(line, name):
            problem(
                f"{name} {getattr(line, name)!r} disagrees with its config's "
                f"{'.'.join(path)} {configured!r}"
            )
    judge_config = config.get("judge")
    if not isinstance(judge_config, dict) or (
        line.judge.get("kind"),
        line.judge.get("params", {}),
    ) != (judge_config.get("kind"), judge_config.get("params", {})):
        problem(f"judge {_judge_text(line.judge)} disagrees with its config's judge {judge_config}")
    pin = judge_pin_problem(line.judge)
    if pin:
        problem(pin)
    for discrepancy in number_discrepancies(line):
        problem(str(discrepancy))
    n_prompts = _get(config, ("generation", "n_eval_prompts"))
    if isinstance(n_prompts, int) and len(line.outcomes) != n_prompts:
        problem(
            f"it has {len(line.outcomes)} outcomes, but its config evaluates {n_prompts} prompts"
        )

    candidates = suites.get(line.suite, [])
    suite = next((s for s in candidates if s.version == line.suite_version), None)
    if suite is None:
        if candidates:
            versions = ", ".join(f"{s.version} ({s.source})" for s in candidates)
            problem(
                f"suite {line.suite} version {line.suite_version} is unknown: "
                f"{suites_dir} has version {versions}"
            )
        else:
            failed = f"; suite files that failed to load: {', '.join(load_failures)}"
            problem(
                f"suite {line.suite!r} is unknown: no suite file under {suites_dir} has that "
                f"name (known: {', '.join(sorted(suites)) or 'none'}"
                f"){failed if load_failures else ''}"
            )
        return
    _check_protocol(line, suite, problem, check.notes)


def _check_protocol(line: ResultLine, suite: Suite, problem: Any, notes: list[str]) -> None:
    """The line's config must be what `suite` resolves to for its cell (see the module doc)."""
    budget = next((b for b in suite.budgets if b.label == line.budget), None)
    if budget is None:
        labels = ", ".join(b.label for b in suite.budgets)
        problem(f"budget {line.budget} is not one of {suite.source}'s budgets ({labels})")
        return
    if line.seed not in suite.seeds:
        problem(f"seed {line.seed} is not one of {suite.source}'s seeds {list(suite.seeds)}")
        return
    entry = next((m for m in suite.methods if m.name == line.method), None)
    cell = Cell(suite, entry or suite.methods[0], budget, line.seed)
    expected = cell.resolved_config()
    submitted = dict(line.config)
    if entry is None:
        # A new method entry: the protocol (everything but the method block) must be the suite's.
        expected.pop("method")
        submitted.pop("method", None)
        method_problem = _method_config_problem(line)
        if method_problem:
            problem(method_problem)
        note = (
            f"{line.suite} v{line.suite_version}: {line.method} (method {line.method_id}) is a "
            f"new method entry; {suite.source} does not list it, and its protocol matches"
        )
        if note not in notes:
            notes.append(note)
    differences = list(config_differences(submitted, expected, "the suite"))
    if differences:
        shown = "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")
        what = cell.id if entry else f"{line.budget}, seed {line.seed}"
        problem(
            f"its config differs from what {suite.source} resolves to for {what}, so it was "
            f"produced with a different config: {shown}"
        )


def _method_config_problem(line: ResultLine) -> str | None:
    """A registered method's config must validate and be complete (defaults filled in)."""
    from bench.registry import METHODS

    method = line.config.get("method", {})
    if line.method_id not in METHODS:
        return None  # not installed here: its config is its own, recorded and hashed
    entry = METHODS.get(line.method_id)
    config = method.get("config")
    if not isinstance(config, dict):
        return f"method.config of {line.method} is not a mapping"
    try:
        resolved = entry.config(**config).model_dump(mode="json")
    except (ValidationError, TypeError) as error:
        return f"method.config of {line.method} is not a valid config of {line.method_id}: {error}"
    if resolved != config:
        missing = sorted(set(resolved) - set(config))
        return (
            f"method.config of {line.method} is not the complete config of {line.method_id} "
            f"(missing {', '.join(missing) or 'normalised values'})"
        )
    return None


def judge_pin_problem(judge: dict[str, Any]) -> str | None:
    """Why a result line's judge is not pinned, or None when it is.

    A judge is pinned when its verdicts cannot change under the same name:

    - it names an id and a version (the judge code's own version, bumped when its verdicts
      change), neither empty;
    - if its params name a `model`, that model is one fixed set of weights: either a dated
      snapshot, i.e. the name ends in `-YYYY-MM-DD`, `-YYYYMMDD` or `-MMDD` (`gpt-4o-2024-08-06`,
      `claude-3-5-sonnet-20241022`, `gpt-4-0613`), or a hub id with a 40-hex commit, as
      `org/name@<commit>` or as the params' `revision`. A name containing `latest` never is.
      Floating aliases such as `gpt-4o` or `claude-3-5-sonnet-latest` move to new weights
      without notice, so their results cannot be compared over time.
    """
    missing = [key for key in ("id", "version") if judge.get(key) in (None, "")]
    if missing:
        return f"judge {_judge_text(judge)} is not pinned: no {' and no '.join(missing)}"
    params = judge.get("params") or {}
    model = params.get("model") if isinstance(params, dict) else None
    if model is None:
        return None
    revision = params.get("revision")
    pinned = isinstance(model, str) and "latest" not in model.lower()
    pinned = pinned and bool(
        _DATED_SNAPSHOT.search(model)
        or _HUB_REVISION.search(model)
        or (isinstance(revision, str) and _COMMIT.match(revision))
    )
    if pinned:
        return None
    return (
        f"judge model {model!r} is not pinned: name a dated snapshot (e.g. gpt-4o-2024-08-06) "
        f"or a hub id with a 40-hex commit (org/name@<commit> or params.revision), "
        f"not a floating alias"
    )


# -- the bundle as a whole --------------------------------------------------------------------


def _check_seeds(check: BundleCheck, suites: dict[str, list[Suite]]) -> None:
    """Every (suite, method, budget) in the bundle must bring every seed of its suite."""
    groups: dict[tuple, tuple[str, set[int]]] = {}
    for where, line in check.lines:
        key = (line.suite, line.suite_version, line.method, line.budget)
        first, seeds = groups.setdefault(key, (where, set()))
        seeds.add(line.seed)
    for (suite_name, version, method, budget), (where, seeds) in groups.items():
        suite = next((s for s in suites.get(suite_name, []) if s.version == version), None)
        missing = sorted(set(suite.seeds) - seeds) if suite else []
        if missing:
            check.problems.append(
                Problem(
                    where,
                    f"seeds are missing: {suite_name} {method} at {budget} has seeds "
                    f"{sorted(seeds)} of the suite's {list(suite.seeds)}; submit every seed "
                    f"(missing {missing})",
                )
            )


def _check_duplicates(check: BundleCheck, results_dir: Path | None) -> None:
    """Two lines for one config hash must agree, in the bundle and with what is merged."""
    seen: dict[str, tuple[str, ResultLine]] = {}
    if results_dir is not None and Path(results_dir).is_dir():
        suite_names = {line.suite for _, line in check.lines}
        for suite_name in sorted(suite_names):
            path = result_path(results_dir, suite_name)
            if path.is_file():
                for existing in load_result_file(path):
                    seen.setdefault(existing.config_hash, (f"{path} (merged)", existing))
    for where, line in check.lines:
        if line.config_hash in seen:
            other_where, other = seen[line.config_hash]
            if other.outcomes != line.outcomes:
                check.problems.append(
                    Problem(
                        where,
                        f"it contradicts {other_where} for the same config hash "
                        f"{short(line.config_hash)} (winrate {line.winrate:.4f} here, "
                        f"{other.winrate:.4f} there): the same config and seed reproduce the "
                        f"same outcomes, so one of them is wrong",
                    )
                )
            continue
        seen[line.config_hash] = (where, line)


def _note_provenance(check: BundleCheck) -> None:
    """Warn of lines whose code cannot be checked out again: they are merged, and marked."""
    dirty = [where for where, line in check.lines if line.git_dirty]
    if dirty:
        check.notes.append(
            f"warning: {len(dirty)} line{'s' * (len(dirty) != 1)} ran from a working tree with "
            f"uncommitted changes (git_dirty), so the code behind them cannot be checked out "
            f"again: {_places(dirty)}; merged with git_dirty kept, marked †dirty on the "
            f"leaderboard"
        )
    no_commit = [where for where, line in check.lines if line.git_commit is None]
    if no_commit:
        check.notes.append(
            f"warning: {len(no_commit)} line{'s' * (len(no_commit) != 1)} record no git commit "
            f"(not run from a git checkout): {_places(no_commit)}; merged, marked †no-commit on "
            f"the leaderboard"
        )


def _places(wheres: list[str]) -> str:
    """`a.jsonl lines 1, 2; b.jsonl line 3` for `file:line` places."""
    by_file: dict[str, list[str]] = {}
    for where in wheres:
        path, _, number = where.rpartition(":")
        by_file.setdefault(path, []).append(number)
    return "; ".join(
        f"{path} line{'s' * (len(numbers) != 1)} {', '.join(numbers)}"
        for path, numbers in by_file.items()
    )


# -- helpers ----------------------------------------------------------------------------------


def _get(mapping: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(mapping, dict) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _judge_text(judge: dict[str, Any]) -> str:
    return f"{judge.get('kind')}/{judge.get('id')} v{judge.get('version')}"
