"""Speed of the micro tier on this machine: prints figures, asserts nothing.

    python benchmarks/micro_bench.py [--quick] [--json OUT]

Three parts, each a small table:

1. The default micro suite end to end, as a user runs it: `pftbench run SUITE` in a subprocess
   (interpreter start and imports included) on a fresh cache ("cold": base model, pair pool,
   training, generation and judging all computed), then the same command again ("warm":
   everything cached, so no torch import). Targets: cold <= 180 s, warm <= 5 s. Below them, the
   seconds each stage took per cell, read from the result lines; base and pool are built once
   and shared, and a cell that found a stage cached shows the seconds recorded when it was built.
2. What DPO costs over plain training, on the micro model and one batch of 32 pairs collated as
   DPO collates them ([2B, T], chosen rows then rejected rows): (a) a plain SFT step (forward,
   backward, AdamW) on that batch, (b) a DPO step (sequence log-probs, DPO loss, backward, AdamW)
   on the same batch, both in steady state (median over iterations after warm-up) and in train
   mode, as the training loop runs the model, and (c) one epoch of `bench.train.training.run` with
   the DPO loss, so accelerate, data loading, collation and gradient clipping are included.
   Tokens/s counts the non-pad tokens through the model, as the training loop does.
3. HF generation throughput of the micro model on the evaluation prompts at the HF backend's
   batch size: greedy (as evaluation decodes) and n=2 sampling at the pool temperature (as the
   pair pool is drawn). Generated tokens/s = sum of Sample.n_tokens / wall time. The trained base
   model from part 1's cache is used when there is one, else a freshly initialised model of the
   same architecture, whose outputs stop at EOS at other times: read its throughput together
   with its mean generated tokens.

`--quick` checks that the script works in well under a minute: fewer iterations, and no cold
suite run (it takes minutes). With `--cache-dir` pointing at a cache the suite already filled,
part 1 times the warm run alone against it. Timings on a machine shared with other work are
noisy: the load average is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from bench.config import Suite, load_suite
from bench.evaluate.backends.hf import HFParams, generate_with
from bench.evaluate.generation import Decoding
from bench.run.cache import Cache
from bench.run.runner import STAGES, Runner
from bench.tasks.base import PreferencePair, Sample, Task
from bench.train import training
from bench.train.modeling import (
    build_gpt2,
    device,
    load_causal_lm,
    load_tokenizer,
    sequence_logps,
    sft_loss,
)
from bench.train.preference import DPOConfig, collate_pairs, dpo_batch_loss

REPO_ROOT = Path(__file__).resolve().parents[1]
COLD_TARGET_S = 180.0
WARM_TARGET_S = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer iterations and no cold suite run: checks that the script works in a minute",
    )
    parser.add_argument(
        "--json", type=Path, metavar="OUT", help="also write every figure, with the environment"
    )
    parser.add_argument(
        "--suite",
        type=Path,
        default=Path("suites/micro/keywords.yaml"),
        help="the suite timed in part 1; parts 2 and 3 use its micro base model's sizes",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="a cache this suite already filled: part 1 times only the warm run against it",
    )
    parser.add_argument(
        "--method", action="append", default=[], help="part 1 runs only this method (repeatable)"
    )
    parser.add_argument(
        "--budget", action="append", default=[], help="part 1 runs only this budget (repeatable)"
    )
    args = parser.parse_args(argv)
    # The suite runs from the repository root; a cache given from elsewhere must still be found.
    if args.cache_dir is not None:
        args.cache_dir = args.cache_dir.resolve()
    return args


# -- environment -----------------------------------------------------------------------------
def environment() -> dict[str, Any]:
    """What the figures depend on: versions, the CPU, threads and how busy the machine is."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device()),
        "load_average": list(os.getloadavg()),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- part 1: the suite end to end ------------------------------------------------------------
def time_suite(
    args: argparse.Namespace, cache_dir: Path, results_dir: Path, *, cold: bool
) -> dict[str, Any]:
    """Wall seconds of a cold run (if asked) then a warm run of the same `pftbench run`."""
    pftbench = Path(sys.executable).with_name("pftbench")
    command = [str(pftbench if pftbench.exists() else shutil.which("pftbench") or "pftbench")]
    command += ["run", str(args.suite), "--no-progress"]
    command += ["--cache-dir", str(cache_dir), "--results-dir", str(results_dir)]
    for method in args.method:
        command += ["--method", method]
    for budget in args.budget:
        command += ["--budget", budget]
    figures: dict[str, Any] = {"command": " ".join(command)}
    runs = ["cold", "warm"] if cold else ["warm"]
    for run in runs:
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        figures[f"{run}_s"] = time.perf_counter() - start
        # Exit code 1 is a failed expectation: the run itself completed and its time counts.
        if done.returncode not in (0, 1):
            tail = (done.stdout + done.stderr)[-3000:]
            raise RuntimeError(f"{figures['command']} exited with {done.returncode}:\n{tail}")
        figures[f"{run}_exit_code"] = done.returncode
        # The runner logs "<suite> <cell>: computing" for each cell not answered from the cache.
        figures[f"{run}_cells_computed"] = done.stdout.count(": computing")
    figures["stages"] = stage_timings(results_dir)
    return figures


def stage_timings(results_dir: Path) -> list[dict[str, Any]]:
    """Each result line's method, budget and per-stage seconds."""
    rows = []
    for path in sorted(results_dir.glob("*.jsonl")):
        for text in path.read_text().splitlines():
            if text.strip():
                line = json.loads(text)
                rows.append({"method": line["method"], "budget": line["budget"], **line["timings"]})
    return rows


def print_suite(figures: dict[str, Any] | None, skipped_because: str) -> None:
    print("\n1. micro suite end to end (pftbench run in a subprocess)")
    if figures is None:
        print(f"  skipped: {skipped_because}")
        return
    print(f"  {figures['command']}")
    print(f"  {'run':<28}{'wall s':>9}   target")
    for run, what, target in (
        ("cold", "cold (fresh cache)", COLD_TARGET_S),
        ("warm", "warm (everything cached)", WARM_TARGET_S),
    ):
        if f"{run}_s" not in figures:
            print(f"  {what:<28}{'-':>9}   <= {target:.0f} s  (not run: {skipped_because})")
            continue
        seconds = figures[f"{run}_s"]
        verdict = "within" if seconds <= target else "OVER"
        computed = figures[f"{run}_cells_computed"]
        print(
            f"  {what:<28}{seconds:>9.2f}   <= {target:.0f} s  {verdict}, {computed} cells computed"
        )
    stages = figures["stages"]
    if stages:
        print(
            "  seconds per stage, from the result lines (a cached stage: its recorded build time):"
        )
        print(f"  {'method':<10}{'budget':<10}" + "".join(f"{n:>10}" for n in STAGES))
        for row in stages:
            cells = "".join(f"{row.get(n, float('nan')):>10.2f}" for n in STAGES)
            print(f"  {row['method']:<10}{row['budget']:<10}{cells}")


# -- part 2: DPO against a plain step --------------------------------------------------------
@dataclass(frozen=True)
class MicroSetup:
    """The suite's task, its micro base model's architecture and the word tokenizer."""

    suite: Suite
    task: Task
    tokenizer: Any
    dpo: DPOConfig
    """The suite's DPO entry (beta, lr, batch size), or the defaults when it has none."""

    def build_model(self) -> Any:
        """A freshly initialised micro GPT-2, sized as `bench.train.micro.build_base_policy`
        sizes it."""
        spec = self.suite.base_model
        prompt = self.task.examples("train", 1)[0].prompt
        prompt_len = len(self.tokenizer(prompt, add_special_tokens=False).input_ids)
        return build_gpt2(
            vocab_size=len(self.tokenizer),
            n_positions=prompt_len + self.task.max_new_tokens() + 1,
            n_embd=spec.n_embd,
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            initializer_range=spec.initializer_range,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            seed=spec.seed,
        ).to(device())


def micro_setup(suite: Suite, runner: Runner, scratch: Path) -> MicroSetup:
    if suite.base_model.kind != "micro":
        raise SystemExit(f"{suite.source}: parts 2 and 3 need a micro base model")
    task = runner.task(suite)
    task.write_tokenizer(scratch / "tokenizer")
    entry = next((m for m in suite.methods if m.method == "dpo"), None)
    dpo = DPOConfig(**entry.config) if entry else DPOConfig()
    return MicroSetup(suite, task, load_tokenizer(scratch / "tokenizer"), dpo)


def preference_rows(setup: MicroSetup, model: Any, n_pairs: int) -> list[tuple]:
    """`n_pairs` rows (pair, reference_chosen_logp, reference_rejected_logp) as DPO trains on:
    chosen is a train prompt's reference summary, rejected the next prompt's (another short
    summary), and the reference log-probs are the model's own before training."""
    examples = setup.task.examples("train", n_pairs + 1)
    pairs = [
        PreferencePair(prompt=e.prompt, chosen=e.reference, rejected=examples[i + 1].reference)
        for i, e in enumerate(examples[:-1])
    ]
    rows = []
    with torch.inference_mode():
        for start in range(0, n_pairs, 256):
            chunk = [(p, 0.0, 0.0) for p in pairs[start : start + 256]]
            batch = _to_device(collate_pairs(setup.tokenizer, chunk))
            logps = sequence_logps(model, batch).tolist()
            rows += [(row[0], logps[i], logps[len(chunk) + i]) for i, row in enumerate(chunk)]
    return rows


def steady_step_seconds(
    model: Any, loss_fn: training.LossFn, batch: dict, lr: float, warmup: int, iterations: int
) -> list[float]:
    """Seconds of each of `iterations` optimiser steps on `batch`, after `warmup` untimed ones."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        _sync()

    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(iterations):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_dpo_overhead(setup: MicroSetup, quick: bool) -> dict[str, Any]:
    warmup, iterations = (3, 10) if quick else (5, 30)
    n_epoch_pairs = 256 if quick else 1000
    cfg = setup.dpo
    rows = preference_rows(setup, setup.build_model(), max(cfg.batch_size, n_epoch_pairs))
    batch = _to_device(collate_pairs(setup.tokenizer, rows[: cfg.batch_size]))
    batch_tokens = int(batch["attention_mask"].sum())
    dpo_fn = dpo_batch_loss(cfg.beta, cfg.loss)

    plain = steady_step_seconds(setup.build_model(), sft_loss, batch, cfg.lr, warmup, iterations)
    dpo = steady_step_seconds(setup.build_model(), dpo_fn, batch, cfg.lr, warmup, iterations)

    loop = training.LoopConfig(
        lr=cfg.lr, batch_size=cfg.batch_size, warmup_ratio=cfg.warmup_ratio, seed=0
    )
    epoch_rows = rows[:n_epoch_pairs]
    start = time.perf_counter()
    report = training.run(
        setup.build_model(),
        epoch_rows,
        lambda chunk: collate_pairs(setup.tokenizer, chunk),
        dpo_fn,
        loop,
        progress=False,
    )
    epoch_wall_s = time.perf_counter() - start
    return {
        "n_pairs": cfg.batch_size,
        "batch_shape": list(batch["input_ids"].shape),
        "batch_tokens": batch_tokens,
        "warmup_steps": warmup,
        "plain_step_s": plain,
        "dpo_step_s": dpo,
        "epoch": {
            "n_pairs": len(epoch_rows),
            "steps": report.steps,
            "tokens": report.tokens,
            "loop_wall_s": report.wall_s,
            "call_wall_s": epoch_wall_s,
        },
    }


def print_dpo(figures: dict[str, Any]) -> None:
    tokens = figures["batch_tokens"]
    n = len(figures["plain_step_s"])
    plain_rate = tokens / statistics.median(figures["plain_step_s"])
    print("\n2. DPO overhead on the micro model")
    print(
        f"  batch: {figures['n_pairs']} pairs collated by bench.train.preference.collate_pairs -> "
        f"[{', '.join(map(str, figures['batch_shape']))}], {tokens} non-pad tokens; "
        f"steady state: median [p25, p75] of n={n} steps after {figures['warmup_steps']} warm-up"
    )
    print(f"  {'step':<44}{'ms/step [p25, p75]':>24}{'tokens/s':>11}{'x plain':>9}")
    for name, key in (
        ("(a) plain SFT loss: fwd + bwd + AdamW", "plain_step_s"),
        ("(b) DPO loss: fwd + bwd + AdamW", "dpo_step_s"),
    ):
        seconds = figures[key]
        low, median, high = _quartiles(seconds)
        spread = f"{median * 1e3:.1f} [{low * 1e3:.1f}, {high * 1e3:.1f}]"
        rate = tokens / median
        print(f"  {name:<44}{spread:>24}{rate:>11.0f}{plain_rate / rate:>9.2f}")
    epoch = figures["epoch"]
    for name, key in (
        ("(c) training.run epoch, DPO loss: loop", "loop_wall_s"),
        ("    the same, whole call (accelerate setup)", "call_wall_s"),
    ):
        per_step = epoch[key] / max(epoch["steps"], 1)
        rate = epoch["tokens"] / epoch[key]
        print(f"  {name:<44}{per_step * 1e3:>24.1f}{rate:>11.0f}{plain_rate / rate:>9.2f}")
    print(
        f"  (c) is one epoch of {epoch['n_pairs']} pairs, {epoch['steps']} steps, with gradient "
        "clipping and the LR schedule (ms/step: its mean); 'x plain': time per token over (a)'s"
    )


# -- part 3: generation ----------------------------------------------------------------------
def generation_model(setup: MicroSetup, runner: Runner) -> tuple[Any, str]:
    """The trained base model in the runner's cache when part 1 left one, else an untrained one.

    The base model's directory is found by its cache key, as the runner finds it.
    """
    base_dir = runner.cache.path("models", runner.keys(setup.suite.cells()[0]).base)
    if (base_dir / "config.json").exists():
        return load_causal_lm(base_dir).eval(), f"trained base model {base_dir}"
    return setup.build_model().eval(), "untrained (freshly initialised) micro model"


def time_generation(setup: MicroSetup, model: Any, quick: bool) -> dict[str, Any]:
    spec = setup.suite.generation
    batch_size = HFParams(**spec.backend_params).batch_size
    prompts = [e.prompt for e in setup.task.examples("eval", spec.n_eval_prompts)]
    pool_temperature = setup.suite.task.params["pool_temperature"]
    min_new = setup.task.min_new_tokens()
    decodings = {
        "greedy": Decoding(max_new_tokens=spec.max_new_tokens, min_new_tokens=min_new),
        f"sample n=2 T={pool_temperature}": Decoding(
            max_new_tokens=spec.max_new_tokens,
            n=2,
            temperature=pool_temperature,
            min_new_tokens=min_new,
        ),
    }
    repeats = 1 if quick else 3
    generate_with(model, setup.tokenizer, prompts[:batch_size], decodings["greedy"], batch_size)
    figures: dict[str, Any] = {
        "batch_size": batch_size,
        "n_prompts": len(prompts),
        "max_new_tokens": spec.max_new_tokens,
        "min_new_tokens": min_new,
        "decodings": {},
    }
    for name, decoding in decodings.items():
        walls, samples = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            samples = generate_with(model, setup.tokenizer, prompts, decoding, batch_size)
            _sync()
            walls.append(time.perf_counter() - start)
        flat: list[Sample] = [s for per_prompt in samples for s in per_prompt]
        figures["decodings"][name] = {
            "wall_s": walls,
            "n_samples": len(flat),
            "n_tokens": sum(s.n_tokens for s in flat),
            "finished_rate": sum(s.finished for s in flat) / len(flat),
        }
    return figures


def print_generation(figures: dict[str, Any], model_note: str) -> None:
    print("\n3. HF generation (bench.evaluate.backends.hf.generate_with)")
    print(
        f"  model: {model_note}; {figures['n_prompts']} eval prompts, batch size "
        f"{figures['batch_size']}, max_new_tokens {figures['max_new_tokens']}, "
        f"min_new_tokens {figures['min_new_tokens']}"
    )
    header = f"{'samples':>9}{'wall s':>9}{'tokens/s':>11}{'samples/s':>11}"
    print(f"  {'decoding':<20}{header}{'mean tokens':>13}{'finished':>10}")
    for name, row in figures["decodings"].items():
        wall = statistics.median(row["wall_s"])
        mean_tokens = row["n_tokens"] / row["n_samples"]
        print(
            f"  {name:<20}{row['n_samples']:>9}{wall:>9.2f}{row['n_tokens'] / wall:>11.0f}"
            f"{row['n_samples'] / wall:>11.0f}{mean_tokens:>13.2f}{row['finished_rate']:>10.2f}"
        )
    repeats = len(next(iter(figures["decodings"].values()))["wall_s"])
    print(f"  wall s: median of {repeats} run(s) over all prompts, after one warm-up batch")


# -- helpers ---------------------------------------------------------------------------------
def _to_device(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.to(device()) for key, value in batch.items()}


def _sync() -> None:
    """Wait for queued GPU work so a timer stops when the step is done (no-op on the CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, median, high


# -- main ------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> dict[str, Any]:
    env = environment()
    mode = "quick" if args.quick else "full"
    print(f"pftbench micro benchmark ({mode}): figures only, nothing asserted")
    print(f"  python {env['python']}, torch {env['torch']}, transformers {env['transformers']}")
    print(
        f"  {env['cpu']}, {env['logical_cores']} logical cores, torch threads "
        f"{env['torch_threads']} (interop {env['torch_interop_threads']}), device {env['device']}"
    )
    print("  load average at start: " + " ".join(f"{x:.2f}" for x in env["load_average"]))

    suite = load_suite(REPO_ROOT / args.suite)
    with tempfile.TemporaryDirectory(prefix="pftbench-bench-") as scratch_name:
        scratch = Path(scratch_name)
        if args.cache_dir is not None:
            cache_dir: Path | None = args.cache_dir
            suite_figures = time_suite(args, args.cache_dir, scratch / "results", cold=False)
            skipped = "--cache-dir given, the cache is already filled"
        elif args.quick:
            cache_dir, suite_figures = None, None
            skipped = "--quick (a cold run takes minutes; --cache-dir times a warm one)"
        else:
            cache_dir = scratch / "cache"
            suite_figures = time_suite(args, cache_dir, scratch / "results", cold=True)
            skipped = ""
        print_suite(suite_figures, skipped)

        runner = Runner(Cache(cache_dir or scratch / "cache"), None, progress=False)
        setup = micro_setup(suite, runner, scratch)
        dpo_figures = time_dpo_overhead(setup, args.quick)
        print_dpo(dpo_figures)

        model, model_note = generation_model(setup, runner)
        generation_figures = time_generation(setup, model, args.quick)
        print_generation(generation_figures, model_note)

    # Another process busy on the cores slows every figure, often several-fold: say so.
    env["load_average_at_end"] = list(os.getloadavg())
    print("\nload average at end: " + " ".join(f"{x:.2f}" for x in env["load_average_at_end"]))
    print(f"  of {env['logical_cores']} cores: figures taken under load are slow and noisy")
    return {
        "mode": mode,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "environment": env,
        "suite": suite_figures,
        "dpo": dpo_figures,
        "generation": {"model": model_note, **generation_figures},
    }


if __name__ == "__main__":
    args = parse_args()
    figures = main(args)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1))
        print(f"\nfigures written to {args.json}")
