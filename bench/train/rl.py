"""What the RL methods share (issue 12): rollouts of the policy being trained, scored by the
verifier, and the update loop that trains on them with one optimiser for the whole run.

A run of `train_policy` repeats, for each of its iterations:

1. **Rollout.** P prompts (the budget's prompts, in seeded passes) and K samples each from the
   current policy through `ctx.sample` (vLLM on the paper tier), the main process sampling for
   every process so that the run does not depend on the process count.
2. **Rewards.** The verifier fitted on the budget's pairs (`reward_model`, the same block and
   recipes as online DPO, the oracle named as such) scores every sample; scores are
   standardised by the verifier's scores of the budget's own pairs (`RewardScale`: mean 0,
   std 1 over their chosen and rejected completions, as "The N+ implementation details of RLHF
   with PPO" normalises its reward model on SFT outputs), and a sample that never ended (no
   EOS), or one the verifier cannot read, gets `invalid_reward` instead.
3. **Old and reference log-probs** of every completion token under the policy as sampled and
   the SFT policy, [B, T] (B = P * K rows, T token positions), exact on the sampled tokens.
4. **The method's `prepare`** turns the rollout into per-row training tensors (advantages, and
   for PPO returns and old values) and **its `loss`** scores a minibatch; the loop makes
   `update_epochs` seeded passes over the rollout in minibatches of `minibatch_size` rows, one
   AdamW step each (linear warm-up and decay over the whole run, gradient clipping).

Per-token losses (GRPO's, PPO's) are averaged with `bench.train.policy_gradient.row_weights`,
fixed per minibatch before it is split into micro-batches (`--micro-batch-size`) and over
processes, and per-completion losses (RLOO's) are a mean over rows, so the same minibatch gives
the same gradient however it is split. Under `accelerate launch` the training is
data parallel (DDP); sharded training (FSDP, DeepSpeed) is refused: the policy must sample between
steps. With a scratch folder the run saves its state after an iteration, at most every
`CHECKPOINT_INTERVAL_S`, and a restarted run resumes at the next iteration with the same numbers
(its history and counters restored).

Compute is counted in `ctx.counters`: samples_generated and sample_s by `ctx.sample`, the
verifier's tokens by `fit_verifier`, and here rm_queries, tokens_trained and the wall seconds of
verifier_fit, score and train.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from bench.config import StrictParams
from bench.method_api import MethodContext
from bench.tasks.base import PreferencePair, Sample
from bench.train.policy_gradient import Aggregation, row_weights
from bench.train.reward_models import (
    INVALID_SCORE,
    LEARNED_VERIFIER,
    RewardModel,
    RewardModelSpec,
)

if TYPE_CHECKING:
    import torch


class RolloutConfig(StrictParams):
    """The settings every RL method has: what it samples, how it scores and how it steps."""

    reward_model: RewardModelSpec = LEARNED_VERIFIER
    """The verifier, trained on the budget's pairs (as online DPO's)."""
    prompt_epochs: float = Field(2.0, gt=0)
    """Passes over the budget's prompts; the run has ceil(prompt_epochs * prompts / P)
    iterations."""
    prompts_per_rollout: int = Field(32, ge=1)
    """P: prompts sampled per iteration."""
    samples: int = Field(4, ge=1)
    """K: completions per prompt per iteration."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature T of the rollouts. Log-probs are taken at T too, so the policy
    being optimised is softmax(logits / T), the one that samples (as TRL does)."""
    update_epochs: int = Field(1, ge=1)
    """Passes over each rollout; more than 1 reuses samples, which the clipped ratio corrects."""
    minibatch_size: int = Field(64, ge=1)
    """Rows (sequences) per optimiser step; must divide P * K."""
    lr: float = Field(1e-4, gt=0)
    """Peak AdamW learning rate."""
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    """Fraction of the steps over which the learning rate rises linearly from 0."""
    clip_eps: float = Field(0.2, gt=0)
    """epsilon of the clipped importance ratio, clip(rho, 1 - eps, 1 + eps)."""
    invalid_reward: float = -3.0
    """Standardised reward of a sample that never ended (no EOS within the length limit) or
    that the verifier cannot read."""

    @model_validator(mode="after")
    def _minibatches_fill_a_rollout(self) -> RolloutConfig:
        rows = self.prompts_per_rollout * self.samples
        if rows % self.minibatch_size:
            raise ValueError(
                f"minibatch_size {self.minibatch_size} does not divide prompts_per_rollout x "
                f"samples = {rows}: every minibatch of a rollout must be whole"
            )
        return self


@dataclass
class RewardScale:
    """Standardises verifier scores: (score - mean) / std, with the mean and std of the
    verifier's scores of the budget's pairs (chosen and rejected together, leaving out the
    outputs the verifier cannot read)."""

    mean: float
    std: float

    @classmethod
    def fit(cls, verifier: RewardModel, pairs: list[PreferencePair]) -> RewardScale:
        prompts = [p.prompt for p in pairs] * 2
        scores = verifier.score(prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
        scores = [s for s in scores if s > INVALID_SCORE] or [0.0]
        mean = sum(scores) / len(scores)
        var = sum((s - mean) ** 2 for s in scores) / max(len(scores) - 1, 1)
        return cls(mean=mean, std=math.sqrt(var) if var > 0 else 1.0)

    def rewards(
        self, verifier: RewardModel, prompts: list[str], samples: list[list[Sample]], invalid: float
    ) -> list[list[float]]:
        """Standardised scores of `samples` ([P][K]); `invalid` for a sample without EOS or
        one the verifier cannot read (the oracle's INVALID_SCORE)."""
        flat = [(p, s) for p, group in zip(prompts, samples, strict=True) for s in group]
        scores = verifier.score([p for p, _ in flat], [s.text for _, s in flat])
        values = [
            (score - self.mean) / self.std if s.finished and score > INVALID_SCORE else invalid
            for score, (_, s) in zip(scores, flat, strict=True)
        ]
        k = len(samples[0])
        return [values[i : i + k] for i in range(0, len(values), k)]


@dataclass
class Rollout:
    """One iteration's samples as tensors. B = P * K rows, prompt-major (row p * K + k);
    token tensors are [B, T] over positions 1..L-1 of the [B, L] input (the frame of
    `bench.train.modeling.token_logps`)."""

    prompts: list[str]
    samples: list[list[Sample]]
    rewards: torch.Tensor
    """[P, K] standardised verifier rewards."""
    input_ids: torch.Tensor
    """[B, L] prompt + completion (EOS included when it ended), right-padded."""
    attention_mask: torch.Tensor
    """[B, L]."""
    mask: torch.Tensor
    """[B, T] 1.0 on completion tokens, 0 on prompt and padding."""
    old_logps: torch.Tensor
    """[B, T] log-probs of the sampled tokens under the policy that sampled them (masked)."""
    ref_logps: torch.Tensor
    """[B, T] the same under the SFT policy (masked)."""
    temperature: float = 1.0
    """The sampling temperature, at which every log-prob of the rollout is taken."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-row tensors the method's `prepare` adds ([B] or [B, T]): advantages, returns, ..."""

    @property
    def n_rows(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class RLMethod:
    """What a method plugs into `train_policy`."""

    prepare: Callable[[Any, Rollout], dict[str, float]]
    """(trainable module, rollout) -> statistics; adds the method's tensors to `rollout.extras`."""
    loss: Callable[[Any, dict[str, Any]], tuple[torch.Tensor, dict[str, float]]]
    """(prepared module, minibatch) -> (loss, metrics); the minibatch holds input_ids,
    attention_mask, mask, old_logps, ref_logps, the extras, and `weights` ([B] row weights)."""
    aggregation: Aggregation | None
    """How the loss's per-token terms are averaged (`bench.train.policy_gradient.aggregate`):
    the minibatch's `weights` are its `row_weights`; None for a loss per row (RLOO's), whose
    minibatch loss is the mean over rows (`weights` all 1)."""
    trainable: Callable[[Any, MethodContext], Any] = lambda policy, ctx: policy
    """(policy, ctx) -> the module the optimiser trains: the policy itself, or (PPO) a module
    holding it beside a value model; the policy alone samples."""


def completion_logps(
    logits: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """[B, L, V] logits, [B, L] ids and [B, T = L - 1] mask -> [B, T] log pi_T(token_t | <t),
    masked, where pi_T = softmax(logits / temperature)."""
    import torch

    scaled = logits[:, :-1].float() / temperature
    logps = torch.gather(scaled.log_softmax(-1), 2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return logps * mask


def policy_logps(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """[B, T] masked log-probs of `batch`'s tokens under a causal LM, at the batch's sampling
    `temperature`."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return completion_logps(logits, batch["input_ids"], batch["mask"], batch["temperature"])


def build_rollout(
    tokenizer: Any,
    prompts: list[str],
    samples: list[list[Sample]],
    rewards: list[list[float]],
    policy: Any,
    reference: Any,
    batch_size: int,
    temperature: float = 1.0,
) -> Rollout:
    """The rollout's tensors: prompt tokens + the sampled tokens (exact when the backend reports
    them, else the text re-encoded, with EOS when the sample ended), and the old and reference
    log-probs in batches of `batch_size` rows."""
    import torch

    from bench.train.modeling import batch_from_token_ids

    prompt_rows, completion_rows = [], []
    for prompt, group in zip(prompts, samples, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        for sample in group:
            ids = sample.token_ids
            if ids is None:
                ids = tokenizer(sample.text, add_special_tokens=False).input_ids
                ids = ids + [tokenizer.eos_token_id] if sample.finished else ids
            prompt_rows.append(prompt_ids)
            completion_rows.append(list(ids))
    encoded = batch_from_token_ids(prompt_rows, completion_rows, tokenizer.pad_token_id)
    device = next(policy.parameters()).device
    encoded = {k: v.to(device) for k, v in encoded.items()}
    mask = encoded["loss_mask"][:, 1:].float()
    old, ref = [], []
    with torch.inference_mode():
        for start in range(0, mask.shape[0], batch_size):
            rows = {
                "input_ids": encoded["input_ids"][start : start + batch_size],
                "attention_mask": encoded["attention_mask"][start : start + batch_size],
                "mask": mask[start : start + batch_size],
                "temperature": temperature,
            }
            old.append(policy_logps(policy, rows))
            ref.append(policy_logps(reference, rows))
    return Rollout(
        prompts=prompts,
        samples=samples,
        rewards=torch.tensor(rewards, dtype=torch.float32, device=device),
        input_ids=encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        mask=mask,
        old_logps=torch.cat(old),
        ref_logps=torch.cat(ref),
        temperature=temperature,
    )


def prompt_schedule(
    prompts: list[str], per_rollout: int, epochs: float, seed: int
) -> list[list[str]]:
    """The prompts of each iteration: seeded permutations of `prompts` laid end to end, cut into
    ceil(epochs * len(prompts) / per_rollout) rollouts of exactly `per_rollout` prompts."""
    import torch

    n_iterations = max(1, math.ceil(epochs * len(prompts) / per_rollout))
    order: list[str] = []
    generator = torch.Generator().manual_seed(seed)
    while len(order) < n_iterations * per_rollout:
        order += [prompts[i] for i in torch.randperm(len(prompts), generator=generator).tolist()]
    return [order[i * per_rollout : (i + 1) * per_rollout] for i in range(n_iterations)]


def minibatch_weights(mask: torch.Tensor, aggregation: Aggregation | None) -> torch.Tensor:
    """[B, T] mask of a whole minibatch -> [B] row weights of its loss: `row_weights` for a
    per-token loss, all 1 for a per-row one (`aggregation` None)."""
    if aggregation is None:
        return mask.new_ones(mask.shape[0])
    return row_weights(mask, aggregation)


def minibatch(rollout: Rollout, rows: list[int], weights: torch.Tensor) -> dict[str, Any]:
    """Rows `rows` of the rollout as a training batch, cut to their longest real row."""
    import torch

    index = torch.tensor(rows, device=rollout.input_ids.device)
    width = int(rollout.attention_mask[index].sum(dim=-1).max())
    batch = {
        "input_ids": rollout.input_ids[index, :width],
        "attention_mask": rollout.attention_mask[index, :width],
        "mask": rollout.mask[index, : width - 1],
        "old_logps": rollout.old_logps[index, : width - 1],
        "ref_logps": rollout.ref_logps[index, : width - 1],
        "weights": weights,
        "temperature": rollout.temperature,
    }
    for name, value in rollout.extras.items():
        batch[name] = value[index, : width - 1] if value.dim() == 2 else value[index]
    return batch


def train_policy(ctx: MethodContext, cfg: RolloutConfig, method: RLMethod) -> dict[str, Any]:
    """Fit the verifier, then run the RL iterations on the SFT policy; saves the policy in
    `ctx.output_dir` and returns the run's metrics (first and last iteration's statistics and
    the mean standardised reward of every rollout)."""
    import torch
    from accelerate.utils import DistributedType
    from tqdm.auto import tqdm

    from bench.train import training
    from bench.train.modeling import disable_dropout, load_causal_lm, load_tokenizer
    from bench.train.preference import fit_verifier, unique_prompts

    with ctx.timed("verifier_fit"):
        verifier, rm_metrics = fit_verifier(ctx, cfg.reward_model)
        scale = RewardScale.fit(verifier, ctx.pairs)
    tokenizer = load_tokenizer(ctx.base_model_dir)
    policy = load_causal_lm(ctx.base_model_dir)
    disable_dropout(policy)
    reference = load_causal_lm(ctx.base_model_dir).eval()
    module = method.trainable(policy, ctx)

    rows_per_rollout = cfg.prompts_per_rollout * cfg.samples  # a multiple of minibatch_size
    accelerator = training.make_accelerator()
    n_processes = accelerator.num_processes
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(
            "the RL methods train data parallel only: the policy samples between steps"
        )
    if cfg.minibatch_size % n_processes:
        raise ValueError(
            f"minibatch_size {cfg.minibatch_size} does not split over {n_processes} processes: "
            f"use a multiple of {n_processes}"
        )
    schedule = prompt_schedule(
        unique_prompts(ctx.pairs), cfg.prompts_per_rollout, cfg.prompt_epochs, ctx.seed
    )
    steps_per_iteration = cfg.update_epochs * rows_per_rollout // cfg.minibatch_size
    n_steps = len(schedule) * steps_per_iteration
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = int(cfg.warmup_ratio * n_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: training.lr_factor(step, warmup, n_steps, True)
    )
    prepared, optimizer, scheduler = accelerator.prepare(module, optimizer, scheduler)
    scratch = ctx.scratch_dir
    start_iteration = training.resume_step(accelerator, scratch)
    history = _restore_progress(ctx, scratch, start_iteration)
    last_checkpoint = time.perf_counter()
    bar = tqdm(
        total=len(schedule),
        initial=start_iteration,
        desc="rl",
        disable=not ctx.progress or not accelerator.is_main_process,
        leave=False,
    )
    for iteration in range(start_iteration, len(schedule)):
        prompts = schedule[iteration]
        decoding = ctx.decoding(cfg.samples, cfg.temperature, seed=ctx.seed * 1000 + iteration)
        policy.eval()
        samples = ctx.sample(policy, tokenizer, prompts, decoding, shard=False)  # counted there
        with ctx.timed("score"):
            rewards = scale.rewards(verifier, prompts, samples, cfg.invalid_reward)
        ctx.count("rm_queries", rows_per_rollout)
        with ctx.timed("train"):
            rollout = build_rollout(
                tokenizer,
                prompts,
                samples,
                rewards,
                policy,
                reference,
                cfg.minibatch_size,
                cfg.temperature,
            )
            stats = method.prepare(module, rollout)
            policy.train()
            steps = _update(
                ctx, accelerator, (prepared, optimizer, scheduler), rollout, method, cfg, iteration
            )
        kl = ((rollout.old_logps - rollout.ref_logps) * rollout.mask).sum(-1).mean()
        history.append(
            {
                "reward": float(rollout.rewards.mean()),
                "kl": float(kl),
                **{k: round(v, 6) for k, v in stats.items()},
                **{k: sum(v) / len(v) for k, v in steps.items()},
                **({"first_step": {k: v[0] for k, v in steps.items()}} if iteration == 0 else {}),
            }
        )
        bar.update(1)
        bar.set_postfix(reward=f"{history[-1]['reward']:.3f}", refresh=False)
        if scratch is not None and training.checkpoint_due(
            accelerator, time.perf_counter() - last_checkpoint >= CHECKPOINT_INTERVAL_S
        ):
            _save_progress(ctx, scratch, iteration + 1, history, accelerator.is_main_process)
            training.save_checkpoint(accelerator, scratch, iteration + 1)
            last_checkpoint = time.perf_counter()
    bar.close()
    policy.eval()
    accelerator.wait_for_everyone()
    policy.save_pretrained(ctx.output_dir)
    tokenizer.save_pretrained(ctx.output_dir)
    return {
        "reward_model": cfg.reward_model.label,
        "rm_train": rm_metrics,
        "reward_scale": {"mean": scale.mean, "std": scale.std},
        "iterations": len(schedule),
        "optimizer_steps": n_steps,
        "resumed_from_iteration": start_iteration,
        "first": history[0] if history else {},
        "first_step": history[0].get("first_step", {}) if history else {},
        "last": history[-1] if history else {},
        "rollout_rewards": [round(h["reward"], 4) for h in history],
    }


CHECKPOINT_INTERVAL_S = 120.0
"""Seconds between resumable checkpoints (taken after an iteration) when there is a scratch
folder."""

LOOP_COUNTERS = (
    "samples_generated",
    "rm_queries",
    "tokens_trained",
    "sample_s",
    "score_s",
    "train_s",
)
"""The counters the iterations add to: saved with a checkpoint, restored on
resume, so a resumed run reports the compute of the whole run."""


def _update(
    ctx: MethodContext,
    accelerator: Any,
    trainer: tuple[Any, Any, Any],
    rollout: Rollout,
    method: RLMethod,
    cfg: RolloutConfig,
    iteration: int,
) -> dict[str, list[float]]:
    """`update_epochs` seeded passes over the rollout in minibatches, one optimiser step each;
    every process takes its contiguous share of a minibatch. Returns each step's loss and the
    method's metrics, in step order."""
    import torch

    from bench.train import training

    prepared, optimizer, scheduler = trainer
    n_processes, rank = accelerator.num_processes, accelerator.process_index
    micro = ctx.micro_batch_size or cfg.minibatch_size // n_processes
    steps: dict[str, list[float]] = {}

    def collate(chunk: list[tuple[int, Any]]) -> dict[str, Any]:
        return minibatch(rollout, [row for row, _ in chunk], torch.stack([w for _, w in chunk]))

    for epoch in range(cfg.update_epochs):
        generator = torch.Generator().manual_seed((ctx.seed * 100_003 + iteration) * 101 + epoch)
        order = torch.randperm(rollout.n_rows, generator=generator).tolist()
        for start in range(0, rollout.n_rows, cfg.minibatch_size):
            rows = order[start : start + cfg.minibatch_size]
            weights = minibatch_weights(rollout.mask[rows], method.aggregation)
            share = len(rows) // n_processes
            mine = [(rows[i], weights[i]) for i in range(rank * share, (rank + 1) * share)]
            loss, metrics, _, tokens = training.accumulate(
                accelerator, prepared, mine, collate, method.loss, micro
            )
            accelerator.clip_grad_norm_(prepared.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if n_processes > 1:  # each process saw its share: the minibatch's figures are
                # the mean of the shares' (weights fixed on the whole) and the tokens their sum
                names = sorted(metrics)
                figures = torch.tensor(
                    [float(loss), *(metrics[name] for name in names)], device=accelerator.device
                )
                figures = accelerator.reduce(figures, "mean").tolist()
                loss, metrics = figures[0], dict(zip(names, figures[1:], strict=True))
                count = torch.tensor(tokens, device=accelerator.device)
                tokens = int(accelerator.reduce(count, "sum"))
            ctx.count("tokens_trained", tokens)
            for key, value in {"loss": float(loss), **metrics}.items():
                steps.setdefault(key, []).append(value)
    return steps


def _save_progress(
    ctx: MethodContext, scratch: Any, next_iteration: int, history: list, main: bool
) -> None:
    """The history and loop counters as of the checkpoint at `next_iteration`, beside it."""
    import json

    if main:
        state = {
            "history": history,
            "counters": {k: ctx.counters.get(k, 0) for k in LOOP_COUNTERS},
        }
        scratch.mkdir(parents=True, exist_ok=True)
        tmp = scratch / "progress.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(scratch / f"progress-{next_iteration}.json")


def _restore_progress(ctx: MethodContext, scratch: Any, start_iteration: int) -> list:
    """The history of the iterations before `start_iteration`, their counters restored."""
    import json

    if scratch is None or start_iteration == 0:
        return []
    state = json.loads((scratch / f"progress-{start_iteration}.json").read_text())
    for key, value in state["counters"].items():
        ctx.counters[key] = value
    return state["history"]
