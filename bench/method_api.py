"""What a method receives and what it must leave behind.

A method is one function registered with `@register_method(name, config=ConfigModel)`:

    def train(ctx: MethodContext, cfg: ConfigModel) -> dict[str, float]

It learns from `ctx.pairs` (the pairs at the cell's budget, the same for every method) and from
models it trains itself, saves its policy with `save_pretrained` into `ctx.output_dir`, and
returns its metrics. It never sees the gold reward or the judge. A method that samples from the
policy it trains (online DPO, filtering) does so with `ctx.sample`, through the suite's
generation backend, so that the paper tier's rounds sample with vLLM.

A method that trains a verifier (a reward model, or the implicit reward of its DPO policy) hands
it back with `ctx.save_verifier` or `ctx.save_implicit_verifier`: the runner reports its
held-out accuracy, and the method's `generate` hook reads it back with `load_saved_verifier`.
Where in the policy directory it lives is this module's business alone (`VERIFIER_DIR`).
Whether a method is online or offline it declares where it registers
(`register_method(..., family=...)`, `bench.registry`).

`ctx.task` (and `GenerationContext.task`) is a `bench.tasks.base.MethodTask`: the task
without its oracles. The gold reward, the reward's own features, the pair pool's labelling,
anything private and the evaluation split raise `OracleAccessError`. The one route to the
features is the verifier named an oracle, `RewardModelSpec(kind="oracle_features")`
(`bench.train.reward_models`), which unwraps the task with `oracle_task` and so marks the cell:
its result line lists the oracle in `metrics["oracles"]`, and the leaderboard shows the row as
an oracle ceiling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.evaluate.generation import Decoding, GenerationBackend
from bench.run.cache import Cache
from bench.run.hashing import content_hash
from bench.run.stage_store import METADATA_FILE, StageStore
from bench.tasks.base import MethodTask, PreferencePair, Sample, Task
from bench.train import distributed
from bench.train.reward_models import (
    RewardModel,
    load_reward_model,
    save_implicit_reward,
    score_samples,
)

if TYPE_CHECKING:
    from bench.train.training import LoopReport

COUNTERS = (
    "pairs_used",
    "samples_generated",
    "rm_queries",
    "tokens_trained",
    "verifier_tokens_trained",
    "verifier_fit_s",
    "sample_s",
    "score_s",
    "train_s",
)
"""The compute counters every result line records (`MethodContext.counters`), each 0 where the
method did none of that work."""


@dataclass(frozen=True)
class GenerationContext:
    """What a method's `generate` hook gets: its saved policy and the evaluation prompts."""

    policy_dir: Path
    task: MethodTask
    """The task without its oracles (`MethodTask`)."""
    prompts: list[str]
    decoding: Decoding
    """The suite's evaluation decoding (length limits, top_p, seed)."""
    backend: GenerationBackend
    """The suite's generation backend (`generate(model_dir, prompts, decoding)`)."""


VERIFIER_DIR = "reward_model"
"""The folder of a policy directory that holds the verifier its method trained: written by
`MethodContext.save_verifier` and `save_implicit_verifier`, read by `load_saved_verifier`. No
other code names it (tests/test_contracts.py checks)."""


def load_saved_verifier(policy_dir: Path, task: Task) -> RewardModel | None:
    """The verifier the method that trained the policy in `policy_dir` saved; None if it saved
    none (SFT, or a method that learns from the pairs alone without declaring a reward)."""
    verifier_dir = policy_dir / VERIFIER_DIR
    if not verifier_dir.is_dir():
        return None
    return load_reward_model(verifier_dir, task)


@dataclass
class MethodContext:
    task: MethodTask
    """The task without its oracles (`MethodTask`): no gold reward, no features, no eval split."""
    pairs: list[PreferencePair]
    """The labelled pairs at this budget: a prefix of the pool shared by all methods."""
    base_model_dir: Path
    """The SFT policy: where training starts and the reference policy of KL-regularised losses."""
    output_dir: Path
    """Save the trained policy here (model and tokenizer)."""
    seed: int
    cache: Cache
    base_key: str
    """Cache key of the base model, for sub-artifacts derived from it."""
    max_new_tokens: int = 64
    """Length limit of any sampling the method does (the suite's generation.max_new_tokens)."""
    scratch_dir: Path | None = None
    """Resumable training state survives here across a crash."""
    progress: bool = True
    micro_batch_size: int | None = None
    """Examples per forward/backward pass of every training loop the method runs (pass it to
    `bench.train.training.LoopConfig`): `pftbench run --micro-batch-size`; None: a whole batch."""
    counters: dict[str, float] = field(default_factory=dict)
    """Compute accounting every result line records (`COUNTERS`, in `metrics.counters`), added
    to by the helpers that do the work, so a method that uses them counts nothing itself:
    pairs_used (the runner: the budget's pairs); samples_generated (`sample`); rm_queries,
    the verifier's scores of samples (`score`); tokens_trained, non-padding tokens through the
    policy's training passes (`train_loop`, `LoopReport.tokens`); verifier_tokens_trained, the
    same for the verifier (`bench.train.preference.fit_verifier`); and wall seconds per stage
    (`timed`, `<stage>_s`): verifier_fit_s, sample_s, score_s, train_s. A method that does such
    work some other way adds it with `count`."""
    backend: GenerationBackend | None = None
    """The suite's generation backend, which `sample` uses; None: the HF backend's defaults."""
    _open_stages: set[str] = field(default_factory=set, init=False, repr=False)
    """The stages `timed` is timing now."""

    def count(self, name: str, amount: float) -> None:
        """Add `amount` to the counter `name` (see `counters`)."""
        self.counters[name] = self.counters.get(name, 0) + amount

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall seconds the `with` block takes to the counter `<stage>_s`. A block
        inside another of the same stage adds nothing: the outer one counts that time."""
        if stage in self._open_stages:
            yield
            return
        self._open_stages.add(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._open_stages.discard(stage)
            name = f"{stage}_s"
            self.counters[name] = round(self.counters.get(name, 0) + time.perf_counter() - start, 3)

    def decoding(self, n: int, temperature: float, seed: int) -> Decoding:
        """How a method samples its policy in training: `n` samples per prompt at
        `temperature`, within the suite's length limit and the task's minimum length."""
        return Decoding(
            max_new_tokens=self.max_new_tokens,
            n=n,
            temperature=temperature,
            min_new_tokens=self.task.min_new_tokens(),
            seed=seed,
        )

    def sample(
        self,
        model: Any,
        tokenizer: Any,
        prompts: list[str],
        decoding: Decoding,
        *,
        shard: bool = True,
    ) -> list[list[Sample]]:
        """`decoding.n` samples per prompt from the policy being trained (in memory), through
        the suite's backend: the HF backend samples from the model object, vLLM from a
        checkpoint saved in the scratch folder or from weights sent to its running engine.

        Under accelerate launch each process samples its share of the prompts with a seed of its
        own (`shard`), or, with `shard=False`, the main process samples every prompt with the
        decoding's seed and the others receive its samples: the same samples as one process,
        for methods whose updates must not depend on the process count (the RL family).

        Counted: the samples returned (every process's, gathered) in `samples_generated`, the
        wall seconds in `sample_s`."""
        with self.timed("sample"):
            samples = self._sample(model, tokenizer, prompts, decoding, shard)
        self.count("samples_generated", sum(len(group) for group in samples))
        return samples

    def _sample(
        self,
        model: Any,
        tokenizer: Any,
        prompts: list[str],
        decoding: Decoding,
        shard: bool,
    ) -> list[list[Sample]]:
        """`sample`'s samples, uncounted."""
        backend = self.backend
        if backend is None:
            from bench.evaluate.backends.hf import HFBackend, HFParams

            backend = HFBackend(HFParams())
        rank, n_processes = distributed.rank(), distributed.world_size()
        checkpoint_dir = (self.scratch_dir or self.output_dir) / f"sampler_checkpoint_{rank}"

        def generate(share: list[str], decoding: Decoding) -> list[list[Sample]]:
            return backend.generate_from(model, tokenizer, share, decoding, checkpoint_dir)

        if n_processes == 1:
            return generate(prompts, decoding)
        if not shard:
            return distributed.broadcast_object(
                generate(prompts, decoding) if distributed.is_main() else None
            )
        decoding = dataclasses.replace(decoding, seed=decoding.seed * n_processes + rank)
        return distributed.map_shards(prompts, lambda share: generate(share, decoding))

    def score(
        self, verifier: RewardModel, prompts: list[str], samples: list[list[Sample]]
    ) -> list[list[float]]:
        """The verifier's score of every sample, per prompt
        (`bench.train.reward_models.score_samples`), counted: one verifier query per sample in
        `rm_queries`, the wall seconds in `score_s`."""
        with self.timed("score"):
            scores = score_samples(verifier, prompts, samples)
        self.count("rm_queries", sum(len(group) for group in samples))
        return scores

    def train_loop(
        self,
        model: Any,
        examples: list[Any],
        collate: Callable[[list[Any]], dict[str, Any]],
        loss_fn: Callable[..., Any],
        loop: Any,
        *,
        desc: str,
        trains: Literal["policy", "verifier"] = "policy",
        resumable: bool = False,
    ) -> LoopReport:
        """`bench.train.training.run` with this context's progress setting, counted: the loop's
        non-padding tokens (`LoopReport.tokens`, every process's) in `tokens_trained`, or in
        `verifier_tokens_trained` when it `trains` a verifier; a policy's loop's wall seconds
        in `train_s` (a verifier's are inside `verifier_fit_s`, which `fit_verifier` times).

        `resumable`: keep resumable state in the scratch folder, for the one loop that trains
        the policy saved to `output_dir` (two loops sharing it would resume each other's
        state). A run resumed after a kill counts the tokens of the steps it ran since."""
        from bench.train import training

        stage = self.timed("train") if trains == "policy" else contextlib.nullcontext()
        with stage:
            report = training.run(
                model,
                examples,
                collate,
                loss_fn,
                loop,
                scratch_dir=self.scratch_dir if resumable else None,
                desc=desc,
                progress=self.progress,
            )
        counter = "tokens_trained" if trains == "policy" else "verifier_tokens_trained"
        self.count(counter, report.tokens)
        return report

    def cached_json(self, kind: str, key_parts: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per distinct `key_parts`, then from the cache (e.g. reference logps).

        Under accelerate launch every process calls `compute()` (which may split its work over
        them with `bench.train.distributed.map_shards`) and the main process writes the result: the
        protocol of `bench.run.stage_store`."""
        store = StageStore(self.cache)
        return store.json(kind, content_hash(key_parts), compute, every_process=True)

    @property
    def verifier_dir(self) -> Path:
        """Where this method's verifier is saved (inside `output_dir`); a verifier built on a
        model of its own (the `dpo` kind's policy) keeps that model in a folder under it."""
        return self.output_dir / VERIFIER_DIR

    def save_verifier(self, verifier: RewardModel) -> None:
        """Hand back the verifier this method trained: the runner reports its held-out
        accuracy, and `load_saved_verifier` gives it to the method's `generate` hook."""
        verifier.save(self.verifier_dir)

    def save_implicit_verifier(self, policy_dir: Path, beta: float) -> None:
        """Hand back as the verifier the DPO-implicit reward beta * (log pi - log pi_ref) of the
        policy saved in `policy_dir`, the base policy being the reference; neither is copied."""
        save_implicit_reward(
            self.verifier_dir, policy=policy_dir, reference=self.base_model_dir, beta=beta
        )

    def loop_config(self, cfg: Any, **overrides: Any) -> Any:
        """The training loop's settings (`bench.train.training.LoopConfig`) for this method:
        `cfg`'s `lr`, `batch_size`, `epochs` and `warmup_ratio`, each unless `overrides` gives
        it, with this context's seed and micro-batch size; other `overrides` pass through."""
        from bench.train.training import LoopConfig

        taken = {
            name: overrides.pop(name) if name in overrides else getattr(cfg, name)
            for name in ("lr", "batch_size", "epochs", "warmup_ratio")
        }
        return LoopConfig(
            **taken, micro_batch_size=self.micro_batch_size, seed=self.seed, **overrides
        )

    def save_base_as_policy(self) -> None:
        """The policy is the base model itself: link its files (no copy) into output_dir.

        The harness's own metadata file stays behind: the policy gets its own."""
        for item in self.base_model_dir.iterdir():
            if item.is_file() and item.name != METADATA_FILE:
                try:
                    os.link(item, self.output_dir / item.name)
                except OSError:
                    shutil.copy2(item, self.output_dir / item.name)
