"""`pftbench`: run suites, validate them, submit results, check regressions, render the leaderboard.

    pftbench run SUITE... [--method M] [--budget B] [--seed S] [--results-dir D] [--cache-dir D]
    pftbench validate PATH...
    pftbench leaderboard [--results-dir D] [--out FILE] [--html FILE]
    pftbench submit FILE... [--suites-dir D] [--results-dir D]
    pftbench check SUITE... [--method M] [--budget B] [--seed S] [--baseline-dir D] [--cache-dir D]
    pftbench migrate FOLDER...

`pftbench run` writes its result lines to ./results (yours, ignored by git). The committed
leaderboard/results is written only on purpose: by `pftbench submit`, which checks the lines
first, or by naming it with --results-dir; `check` and `leaderboard` read it by default.

`pftbench run` and `pftbench check` also run under `accelerate launch` (`-m bench.cli`): every
process takes part in training, the main one does the rest and prints the report.

Exit codes: 0 success, 1 an expectation failed or a winrate shifted, 2 bad input (config or
usage errors, a rejected submission).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

from bench.errors import ConfigError
from bench.run import threads
from bench.train import distributed

RUN_RESULTS_DIR = Path("results")
"""Where `pftbench run` writes result lines by default: the user's own, never committed."""
LEADERBOARD_RESULTS_DIR = Path("leaderboard/results")
"""The committed leaderboard: written by `pftbench submit`, read by `check` and `leaderboard`."""
DEFAULT_SUITES_DIR = Path("suites")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from bench.evaluate.judging import JudgeError
    from bench.report.results import ResultFileError
    from bench.run.selection import UsageError

    try:
        threads.configure(getattr(args, "threads", None))
    except ValueError as error:
        print(f"pftbench: {error}", file=sys.stderr)
        return 2
    try:
        if distributed.is_main():
            return args.func(args)
        # Under accelerate launch the other processes train alongside the main one: one report.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            return args.func(args)
    except (ConfigError, ResultFileError) as error:
        print(error, file=sys.stderr)
        return 2
    except JudgeError as error:
        print(f"pftbench: the judge could not finish: {error}", file=sys.stderr)
        return 1
    except UsageError as error:
        print(f"pftbench: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished stages are cached; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _add_threads_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="torch CPU threads (default: $OMP_NUM_THREADS, else the physical cores this process "
        "may use); fixed for the run, never from the load, since it can move the last digits",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pftbench", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run suites (every cell cached) and check their expectations"
    )
    run.add_argument("suites", nargs="+", metavar="SUITE", help="suite files or directories")
    run.add_argument("--method", action="append", help="only this method entry or id (repeatable)")
    run.add_argument(
        "--budget", action="append", help="only this budget, e.g. 250 or n=250 (repeatable)"
    )
    run.add_argument("--seed", action="append", type=int, help="only this seed (repeatable)")
    run.add_argument(
        "--results-dir",
        type=Path,
        default=RUN_RESULTS_DIR,
        help="where result lines go (default ./results; the committed leaderboard/results "
        "only when named, or by `pftbench submit`)",
    )
    run.add_argument(
        "--cache-dir",
        type=Path,
        help="cache root (default $PFTBENCH_CACHE_DIR or ~/.cache/pftbench)",
    )
    run.add_argument("--run-slow", action="store_true", help="also run suites marked slow")
    run.add_argument(
        "--regression",
        action="store_true",
        help="also compare every cell with the committed leaderboard (as `pftbench check`)",
    )
    run.add_argument(
        "--baseline-dir",
        type=Path,
        default=LEADERBOARD_RESULTS_DIR,
        help="the committed result lines --regression compares with (default leaderboard/results)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_option(run)
    run.add_argument(
        "--micro-batch-size",
        type=_positive_int,
        metavar="N",
        help="examples per forward/backward pass in training (gradients accumulated over a "
        "step's batch: less memory, same gradient; not part of any cache key)",
    )
    run.set_defaults(func=_run)

    validate = commands.add_parser("validate", help="check suite files without running them")
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.set_defaults(func=_validate)

    board = commands.add_parser(
        "leaderboard",
        help="render leaderboard/README.md and leaderboard/index.html from the result lines",
    )
    board.add_argument(
        "--results-dir",
        type=Path,
        default=LEADERBOARD_RESULTS_DIR,
        help="the result lines (default leaderboard/results)",
    )
    board.add_argument(
        "--out",
        type=Path,
        help="the markdown page (default: leaderboard/README.md for leaderboard/results, "
        "else README.md inside --results-dir); plots/ go next to it",
    )
    board.add_argument(
        "--html", type=Path, help="the static page (default: index.html next to --out)"
    )
    board.set_defaults(func=_leaderboard)

    migrate = commands.add_parser(
        "migrate", help="rewrite result lines of an older schema (old text kept as *.jsonl.v1)"
    )
    migrate.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    migrate.set_defaults(func=_migrate)

    submit = commands.add_parser(
        "submit", help="check a bundle of result lines and merge it into the leaderboard"
    )
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE", help="JSON-lines files")
    submit.add_argument(
        "--suites-dir",
        type=Path,
        default=DEFAULT_SUITES_DIR,
        help="the suites the results must match (default ./suites)",
    )
    submit.add_argument(
        "--results-dir",
        type=Path,
        default=LEADERBOARD_RESULTS_DIR,
        help="where accepted lines go (default leaderboard/results)",
    )
    submit.set_defaults(func=_submit)

    check = commands.add_parser(
        "check", help="rerun cells (cached) and compare them with the committed winrates"
    )
    check.add_argument("suites", nargs="+", metavar="SUITE", help="suite files or directories")
    check.add_argument("--method", action="append", help="only this method entry or id")
    check.add_argument("--budget", action="append", help="only this budget, e.g. 250 or n=250")
    check.add_argument("--seed", action="append", type=int, help="only this seed")
    check.add_argument(
        "--baseline-dir",
        type=Path,
        default=LEADERBOARD_RESULTS_DIR,
        help="the committed result lines (default leaderboard/results); nothing is written",
    )
    check.add_argument(
        "--cache-dir",
        type=Path,
        help="cache root (default $PFTBENCH_CACHE_DIR or ~/.cache/pftbench)",
    )
    check.add_argument("--run-slow", action="store_true", help="also run suites marked slow")
    check.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_option(check)
    check.add_argument(
        "--micro-batch-size",
        type=_positive_int,
        metavar="N",
        help="examples per forward/backward pass in training (gradients accumulated over a "
        "step's batch: less memory, same gradient; not part of any cache key)",
    )
    check.set_defaults(func=_check)

    tune = commands.add_parser(
        "tune", help="score a grid of a method entry's settings on the valid split"
    )
    tune.add_argument("suite", metavar="SUITE", help="a suite file")
    tune.add_argument("--method", required=True, help="the method entry (name or method id)")
    tune.add_argument(
        "--grid",
        action="append",
        required=True,
        metavar="KEY=V1,V2",
        help="a setting and its values (repeatable; dotted keys reach nested blocks, e.g. "
        "reward_model.lr=1e-4,1e-3)",
    )
    tune.add_argument("--budget", action="append", help="only this budget (repeatable)")
    tune.add_argument("--seed", action="append", type=int, help="only this seed (repeatable)")
    tune.add_argument(
        "--objective",
        choices=["reward", "winrate", "verifier"],
        default="reward",
        help="what the best point is chosen by (default: the mean valid reward)",
    )
    tune.add_argument(
        "--valid-prompts",
        type=_positive_int,
        metavar="N",
        help="valid prompts scored (default: the suite's n_eval_prompts, at most the split)",
    )
    tune.add_argument("--out", type=Path, help="also write the table (markdown) here")
    tune.add_argument(
        "--cache-dir",
        type=Path,
        help="cache root (default $PFTBENCH_CACHE_DIR or ~/.cache/pftbench)",
    )
    tune.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_threads_option(tune)
    tune.set_defaults(func=_tune)
    return parser


def _run(args: argparse.Namespace) -> int:
    """Run, check expectations, and with --regression compare (`bench.run.session`)."""
    from bench.run.selection import check_groups

    session, selection = _session(args, args.results_dir, args.regression)
    if not selection.cells:
        print("no cell matches the filters")
        return 0
    start = time.perf_counter()
    session.run_all(selection.cells, _progress(args))
    groups = check_groups(selection.cells)
    failed_expectations = [
        f"{group.cell.suite.name} {group.id}: {sentence}"
        for group in groups
        for sentence in session.check(group)
    ]
    shifted = [f for f in map(session.regression_failure, selection.cells) if f]
    print(session.table())
    for line in session.regression_report():
        print(line)
    n_checks = sum(len(g.cell.suite.expectations_for(g.cell)) for g in groups)
    n_failed = len(failed_expectations)
    print(
        f"{len(selection.cells)} cells in {time.perf_counter() - start:.1f} s; "
        f"expectations: {n_checks - n_failed} held, {n_failed} failed"
    )
    failures = failed_expectations + shifted
    for failure in failures:
        print(f"FAILED {failure}")
    if args.results_dir is not None:
        print(f"result lines in {args.results_dir}/")
    return 1 if failures else 0


def _session(args: argparse.Namespace, results_dir: Path | None, regression: bool) -> tuple:
    """The session and selection `run` and `check` share: the baseline read first (before any
    line is written), then the suites selected, the runner built."""
    from tqdm.auto import tqdm

    from bench.report.regression import Baseline
    from bench.run.cache import Cache
    from bench.run.runner import Runner
    from bench.run.session import Session, select

    baseline = Baseline.snapshot(args.baseline_dir) if regression else None
    selection = select(args.suites, args.method, args.budget, args.seed, args.run_slow)
    for skipped in selection.skipped:
        print(f"skipped {skipped}")
    cache = Cache(args.cache_dir) if args.cache_dir else Cache.default()
    runner = Runner(
        cache,
        results_dir,
        progress=not args.no_progress,
        log=tqdm.write,
        micro_batch_size=args.micro_batch_size,
    )
    return Session(runner, baseline), selection


def _progress(args: argparse.Namespace):
    from tqdm.auto import tqdm

    return lambda cells: tqdm(cells, desc="cells", disable=args.no_progress)


def _tune(args: argparse.Namespace) -> int:
    """`bench.run.tuning`: every grid point trained and scored on the valid split."""
    from bench.config import load_suite
    from bench.run import tuning
    from bench.run.cache import Cache
    from bench.run.runner import Runner

    try:
        grid = tuning.parse_grid(args.grid)
    except ValueError as error:
        print(f"pftbench tune: {error}", file=sys.stderr)
        return 2
    suite = load_suite(args.suite)
    cache = Cache(args.cache_dir) if args.cache_dir else Cache.default()
    runner = Runner(cache, None, progress=not args.no_progress)
    try:
        points = tuning.tune(
            runner,
            suite,
            args.method,
            grid,
            budgets=args.budget,
            seeds=args.seed,
            n_prompts=args.valid_prompts,
        )
    except ValueError as error:
        print(f"pftbench tune: {error}", file=sys.stderr)
        return 2
    text = tuning.markdown(
        points,
        args.objective,
        title=f"{suite.name} v{suite.version}: {args.method} on the valid split",
        grid=grid,
    )
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from bench.config import load_suite
    from bench.run.selection import suite_paths

    status = 0
    for path in suite_paths(args.paths):
        try:
            suite = load_suite(path)
        except ConfigError as error:
            print(error, file=sys.stderr)
            status = 2
            continue
        cells = suite.cells()
        print(
            f"ok {path} ({suite.name} v{suite.version}: {len(suite.methods)} methods x "
            f"{len(suite.budgets)} budgets x {len(suite.seeds)} seeds = {len(cells)} cells)"
        )
    return status


def _leaderboard(args: argparse.Namespace) -> int:
    from bench.report.leaderboard import render
    from bench.report.pages import write_html, write_plots

    out = args.out or board_page(args.results_dir)
    html_out = args.html or out.parent / "index.html"
    print(render(args.results_dir, out))
    write_html(args.results_dir, html_out)
    plots = write_plots(args.results_dir, out.parent / "plots")
    print(f"written to {out}, {html_out} and {len(plots)} plots in {out.parent / 'plots'}/")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from bench.report.migrate import migrate_folder

    for folder in args.folders:
        try:
            changed = migrate_folder(folder)
        except (FileNotFoundError, ValueError) as error:
            print(f"pftbench: {error}", file=sys.stderr)
            return 2
        for path, count in changed:
            print(f"{path}: {count} line(s) rewritten in schema 2 (old text in {path.name}.v1)")
        if not changed:
            print(f"{folder}: every line is already current")
    return 0


def board_page(results_dir: Path) -> Path:
    """Where `pftbench leaderboard` writes its README.md (index.html and plots/ beside it).

    The committed leaderboard/results renders to leaderboard/; any other folder renders into
    itself, so that a user's own leaderboard never overwrites the committed pages.
    """
    if results_dir.resolve() == LEADERBOARD_RESULTS_DIR.resolve():
        return LEADERBOARD_RESULTS_DIR.parent / "README.md"
    return results_dir / "README.md"


def _submit(args: argparse.Namespace) -> int:
    from bench.report.submit import BundleRejected, submit

    try:
        merged = submit(args.files, args.suites_dir, args.results_dir)
    except BundleRejected as rejected:
        for problem in rejected.problems:
            print(problem, file=sys.stderr)
        count = len(rejected.problems)
        print(f"rejected: {count} problem{'s' * (count != 1)}; nothing was merged", file=sys.stderr)
        return 2
    for note in merged.check.notes:
        print(note)
    for line in merged.written:
        print(
            f"merged {line.suite} v{line.suite_version} {line.method}[{line.budget},seed="
            f"{line.seed}]: winrate {line.winrate:.3f} [{line.ci_low:.3f}, {line.ci_high:.3f}]"
        )
    print(
        f"accepted {len(merged.check.lines)} result lines: {len(merged.written)} merged into "
        f"{args.results_dir}/, {len(merged.already_there)} already there. "
        "Run `pftbench leaderboard` to render the pages."
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    """Rerun (from the cache) and compare with the committed leaderboard; nothing is written."""
    from bench.report.regression import summary

    session, selection = _session(args, None, regression=True)
    session.run_all(selection.cells, _progress(args))
    for cell in selection.cells:
        comparison = session.comparisons[cell]
        failed = session.regression_failure(cell) is not None
        print(("FAILED " if failed else f"{comparison.status.value}: ") + comparison.sentence)
    print(summary(list(session.comparisons.values()), session.baseline))
    return 1 if any(map(session.regression_failure, selection.cells)) else 0


if __name__ == "__main__":
    sys.exit(main())
