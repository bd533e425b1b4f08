"""The runner: one cell from its config to its result line, every stage cached.

    suite cell -> task -> base policy -> pair pool -> (budget prefix) -> method -> policy
               -> generations on the eval prompts -> judgments -> statistics -> result line

Each stage's cache key is the hash of the config that produces it plus the key of the stage it
reads, so keys are known before anything runs: a cell whose record is cached is answered without
importing torch, and an interrupted run redoes only the stages (and training steps) it lost.
The CLI and the pytest plugin both call `Runner.run_cell` and `Runner.check`.

Under `accelerate launch` every process runs the same cells (`bench.distributed`). A stage that
trains (the micro base build, the method's training) is built by all of them together; every
other stage by the main process alone. Only the main process writes the cache and the result
lines; the others wait at a barrier after each stage and read what it wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import distributed
from bench.cache import Cache, atomic_write_text
from bench.config import Cell, Suite
from bench.expectations import check_expectation
from bench.hashing import content_hash
from bench.judging import build_judge, judge_stats, worst_score
from bench.method_api import METADATA_FILE
from bench.registry import BACKENDS, JUDGES, METHODS
from bench.results import ResultLine, append_result, line_numbers, provenance
from bench.stats import mean_reward_estimate, winrate_estimate
from bench.tasks.base import PreferencePair, Sample, Task, build_task
from bench.verdicts import outcomes_from_string, outcomes_to_string

CACHE_VERSION = 1
"""Part of every stage's cache key: bump when a stage's code changes what it produces."""

RECORD_VERSION = 6
"""Part of a cell record's key: bump when the result line gains or changes a field."""

JUDGMENTS_VERSION = 3
"""Part of the judgments stage's key: bump when what it records changes (2: order_answers;
3: a judge's failure is F, apart from the policy's invalid output I)."""

DIAGNOSTICS_VERSION = 2
"""Part of the diagnostics stage's key: bump when an estimator changes (2: KL on sampled tokens)."""

STAGES = ("base", "pool", "train", "generate", "judge", "diagnostics")

HELDOUT_PAIRS = 500
"""Held-out labelled pairs (on the `valid` prompts) every verifier is evaluated on."""
KL_PROMPTS = 200
"""Eval prompts whose sampled outputs estimate KL(policy || reference)."""


@dataclass(frozen=True)
class StageKeys:
    base: str
    pool: str
    policy: str
    generations: str
    judgments: str
    cell: str


class Runner:
    """Runs cells, reusing everything already in the cache, and appends their result lines."""

    def __init__(
        self,
        cache: Cache,
        results_dir: Path | None,
        *,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> None:
        self.cache = cache
        self.results_dir = results_dir
        self.progress = progress
        self.log = log
        self._tasks: dict[str, Task] = {}
        self._backends: dict[str, Any] = {}
        self._judges: dict[str, Any] = {}
        self._building = 0
        """Depth of stage builds in progress: a stage reached from inside another's build is
        built there and then, by whichever processes build the outer one."""
        if not distributed.is_main():
            self.results_dir, self.progress, self.log = None, False, lambda _: None
        else:
            stale = cache.remove_stale_temps()
            if stale:
                entries = "entry" if len(stale) == 1 else "entries"
                self.log(f"removed {len(stale)} unfinished cache {entries} left by killed runs")

    # -- keys -------------------------------------------------------------------------------
    def keys(self, cell: Cell) -> StageKeys:
        config = cell.resolved_config()
        # Local data files enter the keys by content, not by path (tasks without local files,
        # and Hub data pinned by revision, add nothing).
        fingerprint = self.task(cell.suite).data_fingerprint()
        data = {"data": fingerprint} if fingerprint is not None else {}
        base = content_hash(
            {
                "v": CACHE_VERSION,
                "stage": "base",
                "task": config["task"],
                "base_model": config["base_model"],
                **data,
            }
        )
        generation = config["generation"]
        pool = content_hash(
            {
                "v": CACHE_VERSION,
                "stage": "pool",
                "base": base,
                "seed": cell.seed,
                # the pool is sampled with the suite's backend and length limit
                "sampling": [
                    generation["backend"],
                    generation["backend_params"],
                    generation["max_new_tokens"],
                ],
            }
        )
        policy = content_hash(
            {
                "v": CACHE_VERSION,
                "stage": "policy",
                "pool": pool,
                "budget": config["budget"],
                "method": {
                    "method": config["method"]["method"],
                    "config": config["method"]["config"],
                },
            }
        )
        generations = content_hash(
            {
                "v": CACHE_VERSION,
                "stage": "generations",
                "policy": policy,
                "generation": config["generation"],
                "seed": cell.seed,
            }
        )
        judgments = content_hash(
            {
                "v": CACHE_VERSION,
                "stage": "judgments",
                "judgments": JUDGMENTS_VERSION,
                "generations": generations,
                "judge": config["judge"],
            }
        )
        cell_key = content_hash(
            {
                "v": CACHE_VERSION,
                "record": RECORD_VERSION,
                "stage": "cell",
                "config": config,
                **data,
            }
        )
        return StageKeys(base, pool, policy, generations, judgments, cell_key)

    # -- the cell ---------------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> ResultLine:
        """The cell's result line: from the cache when its record is there, else computed."""
        keys = self.keys(cell)
        if self._together():
            # Every process computes the line (the stages synchronise them); the main writes it.
            distributed.barrier()
            if self.cache.has("cells", keys.cell):
                line = ResultLine.model_validate(self.cache.read_json("cells", keys.cell))
            else:
                line = self._compute_cell(cell, keys)
                if distributed.is_main():
                    self.cache.write_json("cells", keys.cell, line.model_dump(mode="json"))
        elif self.cache.has("cells", keys.cell):
            line = ResultLine.model_validate(self.cache.read_json("cells", keys.cell))
        else:
            with self.cache.lock("cells", keys.cell):
                if self.cache.has("cells", keys.cell):
                    line = ResultLine.model_validate(self.cache.read_json("cells", keys.cell))
                else:
                    line = self._compute_cell(cell, keys)
                    self.cache.write_json("cells", keys.cell, line.model_dump(mode="json"))
        if self.results_dir is not None:
            append_result(self.results_dir, line)
        return line

    def _compute_cell(self, cell: Cell, keys: StageKeys) -> ResultLine:
        suite = cell.suite
        self.log(f"{suite.name} {cell.id}: computing")
        task = self.task(suite)
        timings: dict[str, float] = {}
        base_meta = self._base_policy(suite, task, keys)
        timings["base"] = base_meta["wall_s"]
        pool_meta = self._pool(cell, task, keys)
        timings["pool"] = pool_meta["wall_s"]
        policy_meta = self._policy(cell, task, keys)
        timings["train"] = policy_meta["wall_s"]
        generations = self._generations(cell, task, keys)
        timings["generate"] = generations["wall_s"]
        judged = self._judgments(cell, task, keys, generations)
        timings["judge"] = judged["wall_s"]
        diagnostics = self._diagnostics(cell, task, keys)
        timings["diagnostics"] = diagnostics.pop("wall_s")

        rewards = judged["output_scores"]
        samples = [Sample(**s) for s in generations["samples"]]
        eval_examples = task.examples("eval", suite.generation.n_eval_prompts)
        metrics = {
            "mean_length_tokens": sum(s.n_tokens for s in samples) / len(samples),
            "finished_rate": sum(s.finished for s in samples) / len(samples),
            "reference_mean_score": _mean(judged["reference_scores"]),
            "base": {k: v for k, v in base_meta["metrics"].items() if not isinstance(v, list)},
            "pool": pool_meta["metrics"],
            "train": policy_meta["metrics"],
            "counters": policy_meta["counters"],
            "generate_tokens_per_s": generations["tokens_per_s"],
            "judge": judged.get("judge_stats", {}),
            **diagnostics,
            "variants": {
                name: _variant_summary(v) for name, v in judged.get("variants", {}).items()
            },
        }
        config = cell.resolved_config()
        judge = self._judge(suite, task)
        return ResultLine(
            suite=suite.name,
            suite_version=suite.version,
            suite_file=suite.source,
            tier=suite.tier,
            method=cell.method.name,
            method_id=cell.method.method,
            budget=cell.budget.label,
            n_pairs=pool_meta["n_pairs_by_budget"][cell.budget.label],
            seed=cell.seed,
            **line_numbers(judged["outcomes"], rewards, worst_score(judge)),
            outcomes=judged["outcomes"],
            rewards=rewards,
            reference_rewards=_recorded(judged["reference_scores"]),
            order_answers=_recorded(judged["order_answers"]),
            output_lengths=[len(s.text.split()) for s in samples],
            reference_lengths=[len(e.reference.split()) for e in eval_examples],
            data_hash=content_hash(
                {
                    "pairs": [[p.prompt, p.chosen, p.rejected] for p in self.pairs(cell)],
                    "eval": [[e.prompt, e.reference] for e in eval_examples],
                }
            ),
            judge={
                "kind": suite.judge.kind,
                "id": judge.id,
                "version": judge.version,
                "params": dict(suite.judge.params),
            },
            config_hash=content_hash(config),
            config=config,
            timings=timings,
            metrics=metrics,
            **provenance(Path.cwd()),
        )

    # -- stages -----------------------------------------------------------------------------
    def task(self, suite: Suite) -> Task:
        key = content_hash(
            {"task": suite.task.model_dump(mode="json"), "base": suite.base_model.model_dump()}
        )
        if key not in self._tasks:
            self._tasks[key] = build_task(
                suite.task.name, suite.task.params, suite.base_model.model_dump()
            )
        return self._tasks[key]

    def base_model_dir(self, cell: Cell) -> Path:
        """The base (SFT) policy's directory, built first if needed."""
        keys = self.keys(cell)
        self._base_policy(cell.suite, self.task(cell.suite), keys)
        return self.cache.path("models", keys.base)

    def _base_policy(self, suite: Suite, task: Task, keys: StageKeys) -> dict[str, Any]:
        spec = suite.base_model
        if spec.kind == "pretrained":
            return self._stage_dir(
                "models", keys.base, lambda out: _link_pretrained(spec, out), "base policy"
            )

        def build(out: Path) -> dict[str, Any]:
            from bench.micro import build_base_policy

            return {"metrics": build_base_policy(task, spec, out, progress=self.progress)}

        return self._stage_dir("models", keys.base, build, "base policy (micro build)", trains=True)

    def _sampler(self, suite: Suite, task: Task, model_dir: Path) -> Any:
        """sample(prompts, n, temperature, seed) from the policy in `model_dir`: a SampleFn."""
        from bench.generation import Decoding

        def sample(prompts: list[str], n: int, temperature: float, seed: int) -> list[list[Sample]]:
            decoding = Decoding(
                max_new_tokens=suite.generation.max_new_tokens,
                n=n,
                temperature=temperature,
                min_new_tokens=task.min_new_tokens(),
                seed=seed,
            )
            return self._backend(suite).generate(model_dir, prompts, decoding)

        return sample

    def _pool(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        """The labelled pair pool of this seed; its prefixes are the budgets."""
        suite = cell.suite

        def build() -> dict[str, Any]:
            sample = self._sampler(suite, task, self.cache.path("models", keys.base))
            pairs = task.preference_pool(task.pool_size(), cell.seed, sample)
            return {
                "pairs": [[p.prompt, p.chosen, p.rejected] for p in pairs],
                "metrics": {
                    "pool_size": len(pairs),
                    "identical_rate": sum(p.chosen == p.rejected for p in pairs) / len(pairs),
                    **task.pool_metrics(),
                },
            }

        meta = self._stage_json("pools", keys.pool, build, f"pair pool (seed {cell.seed})")
        pool_size = len(meta["pairs"])
        meta["n_pairs_by_budget"] = {b.label: b.n_pairs(pool_size) for b in suite.budgets}
        return meta

    def heldout_pairs(self, cell: Cell, size: int = HELDOUT_PAIRS) -> list[PreferencePair]:
        """Labelled pairs on the `valid` prompts, for evaluating verifiers; no method sees them."""
        suite, task, keys = cell.suite, self.task(cell.suite), self.keys(cell)
        key = content_hash({"pool": keys.pool, "split": "valid", "size": size})

        def build() -> dict[str, Any]:
            sample = self._sampler(suite, task, self.cache.path("models", keys.base))
            n = min(size, task.heldout_size())
            pairs = task.preference_pool(n, cell.seed, sample, split="valid")
            return {"pairs": [[p.prompt, p.chosen, p.rejected] for p in pairs]}

        meta = self._stage_json("pools", key, build, f"held-out pairs (seed {cell.seed})")
        return [PreferencePair(*row) for row in meta["pairs"]]

    def pairs(self, cell: Cell) -> list:
        from bench.tasks.base import PreferencePair

        keys = self.keys(cell)
        meta = self._pool(cell, self.task(cell.suite), keys)
        n = meta["n_pairs_by_budget"][cell.budget.label]
        return [PreferencePair(*row) for row in meta["pairs"][:n]]

    def _policy(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        from bench.method_api import MethodContext

        entry = METHODS.get(cell.method.method)
        pairs = self.pairs(cell)
        suite = cell.suite

        def train(out: Path) -> dict[str, Any]:
            ctx = MethodContext(
                task=task,
                pairs=pairs,
                base_model_dir=self.cache.path("models", keys.base),
                output_dir=out,
                seed=cell.seed,
                cache=self.cache,
                base_key=keys.base,
                max_new_tokens=suite.generation.max_new_tokens,
                scratch_dir=self.cache.scratch_dir("models", keys.policy),
                progress=self.progress,
                backend=self._backend(suite),
            )
            # Models the backends hold (a vLLM engine takes most of a GPU) make room for training.
            self.close_backends()
            metrics = entry.fn(ctx, entry.config(**cell.method.config)) or {}
            return {"metrics": metrics, "counters": {"pairs_used": len(pairs), **ctx.counters}}

        return self._stage_dir("models", keys.policy, train, f"train {cell.id}", trains=True)

    def _eval_decoding(self, cell: Cell, task: Task) -> Any:
        from bench.generation import Decoding

        spec = cell.suite.generation
        return Decoding(
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            min_new_tokens=task.min_new_tokens(),
            seed=cell.seed,
        )

    def _generations(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        """Outputs on the eval prompts: plain generation from the saved policy, or the method's
        own `generate` hook, whose extra variants (e.g. BoN@N) are stored and judged too."""
        suite = cell.suite
        entry = METHODS.get(cell.method.method)

        def build() -> dict[str, Any]:
            from bench.method_api import GenerationContext

            prompts = [e.prompt for e in task.examples("eval", suite.generation.n_eval_prompts)]
            decoding = self._eval_decoding(cell, task)
            policy_dir = self.cache.path("models", keys.policy)
            start = time.perf_counter()
            if entry.generate is not None:
                gen = GenerationContext(
                    policy_dir=policy_dir,
                    task=task,
                    prompts=prompts,
                    decoding=decoding,
                    backend=self._backend(suite),
                )
                variants = entry.generate(gen, entry.config(**cell.method.config))
            else:
                variants = {
                    "main": [
                        s[0] for s in self._backend(suite).generate(policy_dir, prompts, decoding)
                    ]
                }
            elapsed = time.perf_counter() - start
            samples = variants.pop("main")
            return {
                "samples": [s.__dict__ for s in samples],
                "variants": {name: [s.__dict__ for s in v] for name, v in variants.items()},
                "tokens_per_s": sum(s.n_tokens for s in samples) / max(elapsed, 1e-9),
            }

        return self._stage_json("generations", keys.generations, build, f"generate {cell.id}")

    def _judgments(
        self, cell: Cell, task: Task, keys: StageKeys, generations: dict[str, Any]
    ) -> dict[str, Any]:
        suite = cell.suite

        def build() -> dict[str, Any]:
            judge = self._judge(suite, task)
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

        return self._stage_json("judgments", keys.judgments, build, f"judge {cell.id}")

    def _diagnostics(self, cell: Cell, task: Task, keys: StageKeys) -> dict[str, Any]:
        """What the numbers alone do not show: KL(policy || reference) on eval prompts and the
        held-out accuracy of the verifier the method trained (if any)."""

        def build() -> dict[str, Any]:
            policy_dir = self.cache.path("models", keys.policy)
            out: dict[str, Any] = {}
            if (policy_dir / "reward_model").is_dir():
                from bench.reward_models import load_reward_model, pair_metrics

                verifier = load_reward_model(policy_dir / "reward_model", task)
                out["reward_model"] = pair_metrics(verifier, self.heldout_pairs(cell))
            if METHODS.get(cell.method.method).generate is None:
                prompts = [
                    e.prompt
                    for e in task.examples(
                        "eval", min(KL_PROMPTS, cell.suite.generation.n_eval_prompts)
                    )
                ]
                out["kl"] = estimate_kl(
                    policy_dir,
                    self.cache.path("models", keys.base),
                    prompts,
                    self._eval_decoding(cell, task),
                    seed=cell.seed,
                )
            return out

        key = content_hash(
            {
                "v": CACHE_VERSION,
                "diagnostics": DIAGNOSTICS_VERSION,
                "stage": "diagnostics",
                "policy": keys.policy,
                "seed": cell.seed,
                "kl_prompts": KL_PROMPTS,
                "heldout": HELDOUT_PAIRS,
            }
        )
        return self._stage_json("diagnostics", key, build, f"diagnostics {cell.id}")

    def close_backends(self) -> None:
        """Release what the generation backends hold (models, vLLM engines and their processes);
        a backend used again loads anew."""
        for backend in self._backends.values():
            backend.close()

    def _backend(self, suite: Suite) -> Any:
        """The suite's generation backend, built once per backend config (it holds a model)."""
        key = content_hash([suite.generation.backend, suite.generation.backend_params])
        if key not in self._backends:
            entry = BACKENDS.get(suite.generation.backend)
            self._backends[key] = entry.fn(entry.config(**suite.generation.backend_params))
        return self._backends[key]

    def _judge(self, suite: Suite, task: Task) -> Any:
        key = content_hash(
            [suite.judge.model_dump(mode="json"), suite.task.model_dump(mode="json")]
        )
        if key not in self._judges:
            entry = JUDGES.get(suite.judge.kind)
            params = entry.config(**suite.judge.params)
            self._judges[key] = build_judge(entry, params, task, cache_root=self.cache.root)
        return self._judges[key]

    # -- cache plumbing ---------------------------------------------------------------------
    def _together(self) -> bool:
        """Several processes, outside any stage build: stages synchronise them."""
        return distributed.is_distributed() and self._building == 0

    def _stage_json(
        self, kind: str, key: str, build: Callable[[], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        if self._together():
            distributed.barrier()
            if distributed.is_main() and not self.cache.has(kind, key):
                self._build_json(kind, key, build, what)
            distributed.barrier()
            return self.cache.read_json(kind, key)
        with self.cache.lock(kind, key):
            if self.cache.has(kind, key):
                return self.cache.read_json(kind, key)
            return self._build_json(kind, key, build, what)

    def _build_json(
        self, kind: str, key: str, build: Callable[[], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        self.log(f"  {what} ...")
        start = time.perf_counter()
        self._building += 1
        try:
            meta = build()
        finally:
            self._building -= 1
        meta["wall_s"] = round(time.perf_counter() - start, 3)
        self.cache.write_json(kind, key, meta)
        return meta

    def _stage_dir(
        self,
        kind: str,
        key: str,
        build: Callable[[Path], dict[str, Any]],
        what: str,
        *,
        trains: bool = False,
    ) -> dict[str, Any]:
        """A directory artifact (a model) with its metadata in `pftbench.json` inside it.

        `trains`: the build runs the training loop, so under `accelerate launch` every process
        builds it; the main process commits its output, the others' outputs are thrown away."""
        if self._together():
            distributed.barrier()
            # A build that trains cannot commit before every process has joined it, so all of
            # them see the same answer here; any other build is the main process's alone.
            if not self.cache.has(kind, key):
                if distributed.is_main():
                    with self.cache.lock(kind, key):
                        self._build_dir(kind, key, build, what)
                elif trains:
                    with self.cache.discarded_dir() as out:
                        self._building += 1
                        try:
                            build(out)
                        finally:
                            self._building -= 1
            distributed.barrier()
            return json.loads((self.cache.path(kind, key) / METADATA_FILE).read_text())
        with self.cache.lock(kind, key):
            if self.cache.has(kind, key):
                return json.loads((self.cache.path(kind, key) / METADATA_FILE).read_text())
            return self._build_dir(kind, key, build, what)

    def _build_dir(
        self, kind: str, key: str, build: Callable[[Path], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        self.log(f"  {what} ...")
        start = time.perf_counter()
        self._building += 1
        try:
            with self.cache.writing_dir(kind, key) as out:
                meta = build(out)
                meta["wall_s"] = round(time.perf_counter() - start, 3)
                # Replace, never write in place: a method may have hard-linked files into `out`.
                atomic_write_text(out / METADATA_FILE, json.dumps(meta, indent=1, default=str))
        finally:
            self._building -= 1
        return meta

    # -- expectations -----------------------------------------------------------------------
    def check(self, cell: Cell, line: ResultLine, seeds: list[int] | None = None) -> list[str]:
        """One plain sentence per failed expectation of the cell (empty when all hold).

        With `seeds`, the numbers pool those seeds' cells (seeds x prompts); else the cell's own.
        The rules are `bench.expectations`'; this runs the cells they need.
        """
        seeds = seeds or [cell.seed]
        failures = []
        for expectation in cell.suite.expectations_for(cell):
            failures += check_expectation(
                expectation,
                cell.method.name,
                cell.budget.label,
                seeds,
                lambda method: self._lines(cell, method, seeds),
            )
        return failures

    def _lines(self, cell: Cell, method: str, seeds: list[int]) -> list[ResultLine]:
        entry = next(m for m in cell.suite.methods if m.name == method)
        return [self.run_cell(Cell(cell.suite, entry, cell.budget, seed)) for seed in seeds]


def estimate_kl(
    policy_dir: Path, reference_dir: Path, prompts: list[str], decoding: Any, seed: int
) -> dict[str, float]:
    """KL(pi || pi_ref) ~ mean over prompts of log pi(y|x) - log pi_ref(y|x), y ~ pi at T = 1.

    One sample per prompt, scored on exactly the sampled tokens (an unfinished sample has no
    EOS to score): an unbiased estimate of the sequence-level KL, reported with its standard
    error. Decoding limits (max/min new tokens) are the evaluation's.
    """
    import statistics
    from dataclasses import replace

    import torch

    from bench.backends.hf import generate_with
    from bench.modeling import batch_from_token_ids, load_causal_lm, load_tokenizer, sequence_logps

    tokenizer = load_tokenizer(policy_dir)
    policy, reference = load_causal_lm(policy_dir).eval(), load_causal_lm(reference_dir).eval()
    sampling = replace(decoding, temperature=1.0, top_p=1.0, n=1, seed=seed + 7919)
    samples = [s[0] for s in generate_with(policy, tokenizer, prompts, sampling, batch_size=256)]
    prompt_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    ratios: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), 256):
            chunk = slice(start, start + 256)
            batch = batch_from_token_ids(
                prompt_ids[chunk], [s.token_ids for s in samples[chunk]], tokenizer.pad_token_id
            )
            batch = {k: v.to(policy.device) for k, v in batch.items()}
            ratios += (sequence_logps(policy, batch) - sequence_logps(reference, batch)).tolist()
    stderr = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
    return {"kl": statistics.mean(ratios), "kl_stderr": stderr, "n": len(ratios)}


def _variant_summary(judged: dict[str, Any]) -> dict[str, Any]:
    winrate = winrate_estimate(outcomes_from_string(judged["outcomes"]))
    reward = mean_reward_estimate(judged["output_scores"])
    return {
        "winrate": winrate.to_dict(),
        "mean_reward": reward.value if reward else None,
        "outcomes": judged["outcomes"],
    }


def _recorded(per_prompt: list[Any]) -> list[Any] | None:
    """A per-prompt record for the result line; None when the judge gave no value at all."""
    return per_prompt if any(value is not None for value in per_prompt) else None


def _mean(values: list[float | None]) -> float | None:
    valid = [v for v in values if v is not None]
    return sum(valid) / len(valid) if valid else None


def _link_pretrained(spec: Any, out: Path) -> dict[str, Any]:
    """A pretrained base: record where it lives (and copy a local directory's files in)."""
    source = Path(spec.path)
    if source.is_dir():
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, out / item.name)
        return {"metrics": {"source": str(source)}}
    from huggingface_hub import snapshot_download

    local = Path(snapshot_download(spec.path, revision=spec.revision))
    for item in local.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    return {"metrics": {"source": spec.path, "revision": spec.revision}}
