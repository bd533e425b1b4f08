"""The runner: one cell from its config to its result line, every stage cached.

    suite cell -> task -> base policy -> pair pool -> (budget prefix) -> method -> policy
               -> generations on the eval prompts -> judgments -> diagnostics -> result line

The stages' cache keys are one pure function of the cell's resolved config
(`bench.run.stage_keys`), computed once per cell, so a cell whose record is cached is answered
without importing torch, and an interrupted run redoes only the stages (and training steps) it
lost. Every artifact is built by the one compute-once protocol of `bench.run.stage_store`.
Selecting cells, checking expectations and comparing with the leaderboard is the session's
(`bench.run.session`), for the CLI and the pytest plugin alike.

Under `accelerate launch` every process runs the same cells (`bench.train.distributed`). A stage
that trains (the micro base build, the method's training) is built by all of them together; every
other stage by the main process alone. Only the main process writes the cache and the result
lines; the others wait at a barrier after each stage and read what it wrote.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.config import Cell, Suite, n_pairs_by_budget
from bench.evaluate.judging import judge_stats
from bench.evaluate.verdicts import outcomes_to_string
from bench.registry import METHODS
from bench.report.results import ResultLine, append_result
from bench.run.cache import Cache
from bench.run.components import Components
from bench.run.diagnostics import diagnostics
from bench.run.record import result_line
from bench.run.stage_keys import HELDOUT_PAIRS, KL_PROMPTS, StageKeys, stage_keys
from bench.run.stage_store import StageStore
from bench.tasks.base import PreferencePair, Sample, Task
from bench.train import distributed

STAGES = ("base", "pool", "train", "generate", "judge", "diagnostics")


class Runner:
    """Runs cells, reusing everything already in the cache, and appends their result lines."""

    def __init__(
        self,
        cache: Cache,
        results_dir: Path | None,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
        micro_batch_size: int | None = None,
    ) -> None:
        self.cache = cache
        self.results_dir = results_dir
        self.progress = progress
        self.micro_batch_size = micro_batch_size
        """Examples per forward/backward pass in every training loop (None: whole batches);
        not part of any cache key."""
        self.log = log
        self.components = Components(cache)
        self._keys: dict[Cell, StageKeys] = {}
        if not distributed.is_main():
            self.results_dir, self.progress, self.log = None, False, lambda _: None
        else:
            stale = cache.remove_stale_temps()
            if stale:
                entries = "entry" if len(stale) == 1 else "entries"
                self.log(f"removed {len(stale)} unfinished cache {entries} left by killed runs")
        self.store = StageStore(cache, self.log)

    def keys(self, cell: Cell) -> StageKeys:
        """The cell's stage keys (`bench.run.stage_keys`), computed once per cell."""
        if cell not in self._keys:
            fingerprint = self.task(cell.suite).data_fingerprint()
            self._keys[cell] = stage_keys(cell.resolved_config(), fingerprint)
        return self._keys[cell]

    # -- the cell ---------------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> ResultLine:
        """The cell's result line: from the cache when its record is there, else computed (by
        every process under accelerate: the stages synchronise them; the main one writes)."""
        keys = self.keys(cell)
        record = self.store.json(
            "cells",
            keys.cell,
            lambda: self._compute_cell(cell, keys).model_dump(mode="json"),
            every_process=True,
        )
        line = ResultLine.model_validate(record)
        if self.results_dir is not None:
            append_result(self.results_dir, line)
        return line

    def _compute_cell(self, cell: Cell, keys: StageKeys) -> ResultLine:
        self.log(f"{cell.suite.name} {cell.id}: computing")
        task = self.task(cell.suite)
        stages: dict[str, dict[str, Any]] = {}
        stages["base"] = self._base_policy(cell.suite, task, keys)
        stages["pool"] = self._pool(cell, task, keys)
        stages["train"] = self._policy(cell, task, keys)
        stages["generate"] = self._generations(cell, task, keys)
        stages["judge"] = self._judgments(cell, task, keys, stages["generate"])
        stages["diagnostics"] = self._diagnostics(cell, task, keys)
        timings = {name: stages[name].pop("wall_s") for name in STAGES}
        judge = self.components.judge(cell.suite)
        return result_line(cell, task, judge, self.pairs(cell), stages, timings)

    # -- stages -----------------------------------------------------------------------------
    def task(self, suite: Suite) -> Task:
        return self.components.task(suite)

    def close_backends(self) -> None:
        """Release what the generation backends hold (`Components.close_backends`)."""
        self.components.close_backends()

    def base_model_dir(self, cell: Cell) -> Path:
        """The base (SFT) policy's directory, built first if needed."""
        keys = self.keys(cell)
        self._base_policy(cell.suite, self.task(cell.suite), keys)
        return self.cache.path("models", keys.base)

    def policy(self, cell: Cell) -> dict[str, Any]:
        """The cell's trained policy (base, pool and training built first if needed, as
        `run_cell` builds them): its stage metadata; the model is at
        `cache.path("models", keys(cell).policy)`. Tuning (`bench.run.tuning`) scores it on the
        valid split without a result line."""
        keys = self.keys(cell)
        task = self.task(cell.suite)
        self._base_policy(cell.suite, task, keys)
        self._pool(cell, task, keys)
        return self._policy(cell, task, keys)

    def _base_policy(self, suite: Suite, task: Task, keys: StageKeys) -> dict[str, Any]:
        spec = suite.base_model
        if spec.kind == "pretrained":
            return self.store.directory(
                "models", keys.base, lambda out: _link_pretrained(spec, out), "base policy"
            )

        def build(out: Path) -> dict[str, Any]:
            from bench.train.micro import build_base_policy

            return {
                "metrics": build_base_policy(
                    task, spec, out, progress=self.progress, micro_batch_size=self.micro_batch_size
                )
            }

        what = "base policy (micro build)"
        return self.store.directory("models", keys.base, build, what, every_process=True)

    def _pool(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        """The labelled pair pool of this seed; its prefixes are the budgets."""
        suite = cell.suite

        def build() -> dict[str, Any]:
            sample = self.components.sampler(suite, self.cache.path("models", keys.base))
            pairs = task.preference_pool(task.pool_size(), cell.seed, sample)
            return {
                "pairs": [[p.prompt, p.chosen, p.rejected] for p in pairs],
                "metrics": {
                    "pool_size": len(pairs),
                    "identical_rate": sum(p.chosen == p.rejected for p in pairs) / len(pairs),
                    **task.pool_metrics(),
                },
            }

        meta = self.store.json("pools", keys.pool, build, f"pair pool (seed {cell.seed})")
        pool_size = len(meta["pairs"])
        meta["n_pairs_by_budget"] = n_pairs_by_budget(suite, pool_size)
        return meta

    def heldout_pairs(self, cell: Cell) -> list[PreferencePair]:
        """Labelled pairs on the `valid` prompts, for evaluating verifiers; no method sees them."""
        suite, task, keys = cell.suite, self.task(cell.suite), self.keys(cell)

        def build() -> dict[str, Any]:
            sample = self.components.sampler(suite, self.cache.path("models", keys.base))
            n = min(HELDOUT_PAIRS, task.heldout_size())
            pairs = task.preference_pool(n, cell.seed, sample, split="valid")
            return {"pairs": [[p.prompt, p.chosen, p.rejected] for p in pairs]}

        meta = self.store.json("pools", keys.heldout, build, f"held-out pairs (seed {cell.seed})")
        return [PreferencePair(*row) for row in meta["pairs"]]

    def pairs(self, cell: Cell) -> list[PreferencePair]:
        """The cell's budget: the first n pairs of its seed's pool."""
        meta = self._pool(cell, self.task(cell.suite), self.keys(cell))
        n = meta["n_pairs_by_budget"][cell.budget.label]
        return [PreferencePair(*row) for row in meta["pairs"][:n]]

    def _policy(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        from bench.method_api import COUNTERS, MethodContext, MethodTask

        entry = METHODS.get(cell.method.method)
        pairs = self.pairs(cell)
        suite = cell.suite

        def train(out: Path) -> dict[str, Any]:
            view = MethodTask(task)
            ctx = MethodContext(
                task=view,
                pairs=pairs,
                base_model_dir=self.cache.path("models", keys.base),
                output_dir=out,
                seed=cell.seed,
                cache=self.cache,
                base_key=keys.base,
                max_new_tokens=suite.generation.max_new_tokens,
                scratch_dir=self.cache.scratch_dir("models", keys.policy),
                progress=self.progress,
                micro_batch_size=self.micro_batch_size,
                backend=self.components.backend(suite),
            )
            # Models the backends hold (a vLLM engine takes most of a GPU) make room for training.
            self.close_backends()
            metrics = entry.fn(ctx, entry.config(**cell.method.config)) or {}
            return {
                "metrics": metrics,
                # Every counter, 0 where the method did none of that work.
                "counters": {
                    **dict.fromkeys(COUNTERS, 0),
                    "pairs_used": len(pairs),
                    **ctx.counters,
                },
                "oracles": view.oracles_used,
            }

        what = f"train {cell.id}"
        return self.store.directory("models", keys.policy, train, what, every_process=True)

    def _generations(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        """Outputs on the eval prompts: plain generation from the saved policy, or the method's
        own `generate` hook, whose extra variants (e.g. BoN@N) are stored and judged too."""
        suite = cell.suite
        entry = METHODS.get(cell.method.method)

        def build() -> dict[str, Any]:
            from bench.method_api import GenerationContext, MethodTask

            prompts = [e.prompt for e in task.examples("eval", suite.generation.n_eval_prompts)]
            decoding = self.components.eval_decoding(cell)
            policy_dir = self.cache.path("models", keys.policy)
            backend = _CountingBackend(self.components.backend(suite))
            start = time.perf_counter()
            if entry.generate is not None:
                gen = GenerationContext(
                    policy_dir=policy_dir,
                    task=MethodTask(task),
                    prompts=prompts,
                    decoding=decoding,
                    backend=backend,
                )
                variants = entry.generate(gen, entry.config(**cell.method.config))
            else:
                variants = {"main": [s[0] for s in backend.generate(policy_dir, prompts, decoding)]}
            elapsed = time.perf_counter() - start
            samples = variants.pop("main")
            return {
                "samples": [s.__dict__ for s in samples],
                "variants": {name: [s.__dict__ for s in v] for name, v in variants.items()},
                "tokens_per_s": sum(s.n_tokens for s in samples) / max(elapsed, 1e-9),
                # The inference cost: samples decoded per prompt (best-of-N: N; else 1).
                "samples_per_prompt": backend.samples / max(len(prompts), 1),
            }

        return self.store.json("generations", keys.generations, build, f"generate {cell.id}")

    def _judgments(
        self, cell: Cell, task: Task, keys: StageKeys, generations: dict[str, Any]
    ) -> dict[str, Any]:
        suite = cell.suite

        def build() -> dict[str, Any]:
            judge = self.components.judge(suite)
            examples = task.examples("eval", suite.generation.n_eval_prompts)
            prompts, references = [e.prompt for e in examples], [e.reference for e in examples]

            def judged(samples: list[dict]) -> dict[str, Any]:
                judgments = judge.judge(prompts, [Sample(**s) for s in samples], references)
                return {
                    "outcomes": outcomes_to_string([j.verdict for j in judgments]),
                    "output_scores": [j.output_score for j in judgments],
                    "reference_scores": [j.reference_score for j in judgments],
                    "order_answers": [j.order_answers for j in judgments],
                }

            main = judged(generations["samples"])
            main["judge_stats"] = judge_stats(judge)
            main["variants"] = {
                name: judged(v) for name, v in generations.get("variants", {}).items()
            }
            return main

        return self.store.json("judgments", keys.judgments, build, f"judge {cell.id}")

    def _diagnostics(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        """`bench.run.diagnostics` of the cell's policy: its verifier's held-out accuracy, and KL
        to the base policy on the eval prompts unless the method generates its own way."""
        n_kl = min(KL_PROMPTS, cell.suite.generation.n_eval_prompts)
        kl_prompts = (
            [e.prompt for e in task.examples("eval", n_kl)]
            if METHODS.get(cell.method.method).generate is None
            else None
        )

        def build() -> dict[str, Any]:
            return diagnostics(
                self.cache.path("models", keys.policy),
                self.cache.path("models", keys.base),
                task,
                kl_prompts,
                self.components.eval_decoding(cell),
                cell.seed,
                lambda: self.heldout_pairs(cell),
            )

        return self.store.json("diagnostics", keys.diagnostics, build, f"diagnostics {cell.id}")


class _CountingBackend:
    """A generation backend that counts the samples it decodes (the evaluation's inference
    cost); everything else passes through."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.samples = 0

    def generate(self, model_dir: Path, prompts: list[str], decoding: Any) -> list[list[Sample]]:
        groups = self._backend.generate(model_dir, prompts, decoding)
        self.samples += sum(len(group) for group in groups)
        return groups

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


def _link_pretrained(spec: Any, out: Path) -> dict[str, Any]:
    """A pretrained base: record where it lives (and copy a local directory's files in)."""
    source = Path(spec.path)
    metrics = {"source": str(source)}
    if not source.is_dir():
        from huggingface_hub import snapshot_download

        source = Path(snapshot_download(spec.path, revision=spec.revision))
        metrics = {"source": spec.path, "revision": spec.revision}
    for item in source.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    return {"metrics": metrics}
