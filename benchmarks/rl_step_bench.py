"""Speed of one RL update step, the project's RLOO, GRPO and PPO against TRL 1.16's RLOOTrainer
and GRPOTrainer, on the same model and batch: prints a table, asserts nothing.

    .trl-venv/bin/python benchmarks/rl_step_bench.py [--threads 2] [--repeats 20]

The model is the micro tier's size (suites/micro/_micro_base.yaml: n_embd 128, one layer, 4
heads) freshly initialised on the keywords task's word tokenizer, saved once and loaded by both
sides. The batch: 8 training prompts x K = 4 completions of seeded random words (2 to 6, then
EOS, as the task's summaries), with seeded random rewards. Generation and scoring (old and
reference log-probs, advantages) are done once, untimed; a step is what each side does per
optimiser step on that batch of 32 sequences, timed as the median over `--repeats` steps after
`--warmup`, the implementations taking turns step by step:

- project: `bench.train.rl`'s pieces as its update loop calls them: the minibatch's weights
  (`minibatch_weights`), `training.accumulate` (collate with `minibatch`, the method's `loss`,
  backward through accelerate) on the whole batch as one micro-batch, gradient clipping at 1,
  AdamW step. The methods' defaults, except P, K and the minibatch (all 32 rows); PPO also runs
  its value model (a second transformer) forward and backward.
- TRL: the trainer's `training_step` (its `compute_loss`: log-probs through the model's fused
  LM head, entropies, clipping, metrics; then backward), gradient clipping at `max_grad_norm`
  (1), the trainer's AdamW and scheduler step. bf16 and activation checkpointing off (TRL's
  defaults are on), the loss settings closest to the project's defaults: GRPO loss_type "grpo"
  (per-sequence mean), beta 0.04; RLOO beta 0.05 (its default). TRL's
  `_generate` is replaced to return the batch's completions, and `_prepare_inputs` to return
  the scored batch as is, so no step generates.

Tokens/s counts the batch's non-pad tokens (prompt and completion) once per step, whatever the
side runs them through. Timings on a machine shared with other work are noisy: the load average
is printed at the start and at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import transformers
import trl

from bench.tasks.base import Sample, build_task
from bench.train import training
from bench.train.modeling import (
    build_gpt2,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    quiet_transformers,
)
from bench.train.rl import RLMethod, build_rollout, minibatch, minibatch_weights
from methods.grpo import GRPOConfig, grpo
from methods.ppo import PPOConfig, ppo
from methods.rloo import RLOOConfig, rloo

N_PROMPTS, SAMPLES = 8, 4
MICRO_MODEL = {"n_embd": 128, "n_layer": 1, "n_head": 4, "initializer_range": 0.1}
"""suites/micro/_micro_base.yaml's base model."""
TASK_PARAMS = {"seed": 0, "n_train": 100, "n_valid": 10, "n_eval": 10, "pool_size": 10}


def build_batch(out: Path) -> tuple[list[str], list[list[Sample]], list[list[float]]]:
    """Save the micro-sized model and the keywords tokenizer to `out`; return the prompts, the
    completions ([P][K], token ids given) and the rewards ([P][K])."""
    task = build_task("keywords", TASK_PARAMS, {})
    task.write_tokenizer(out)
    tokenizer = load_tokenizer(out)
    prompts = [e.prompt for e in task.examples("train", N_PROMPTS)]
    prompt_len = max(len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    build_gpt2(
        vocab_size=len(tokenizer),
        n_positions=prompt_len + task.max_new_tokens() + 1,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=0,
        **MICRO_MODEL,
    ).save_pretrained(out)
    g = torch.Generator().manual_seed(0)
    words = tokenizer.convert_tokens_to_ids(task.words)
    samples = []
    for _ in prompts:
        group = []
        for _ in range(SAMPLES):
            n = int(torch.randint(task.min_new_tokens(), task.max_new_tokens(), (1,), generator=g))
            ids = [words[int(i)] for i in torch.randint(len(words), (n,), generator=g)]
            ids.append(tokenizer.eos_token_id)
            group.append(Sample(tokenizer.decode(ids[:-1]), len(ids), True, ids))
        samples.append(group)
    rewards = torch.randn(N_PROMPTS, SAMPLES, generator=g).tolist()
    return prompts, samples, rewards


# -- the project's step ----------------------------------------------------------------------
def project_step(
    model_dir: Path, batch: tuple, method: RLMethod, cfg: Any
) -> tuple[Callable[[], None], int]:
    """(one update step of `method` on the batch, the batch's non-pad tokens)."""
    from accelerate import Accelerator

    prompts, samples, rewards = batch
    tokenizer = load_tokenizer(model_dir)
    policy = load_causal_lm(model_dir)
    disable_dropout(policy)
    reference = load_causal_lm(model_dir).eval()
    rollout = build_rollout(
        tokenizer, prompts, samples, rewards, policy, reference, cfg.minibatch_size
    )
    module = method.trainable(policy, SimpleNamespace(base_model_dir=model_dir))
    method.prepare(module, rollout)
    policy.train()
    accelerator = Accelerator(cpu=True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=0.0)
    prepared, optimizer = accelerator.prepare(module, optimizer)
    rows = list(range(rollout.n_rows))

    def collate(chunk: list[tuple[int, Any]]) -> dict[str, Any]:
        return minibatch(rollout, [row for row, _ in chunk], torch.stack([w for _, w in chunk]))

    def step() -> None:
        weights = minibatch_weights(rollout.mask[rows], method.aggregation)
        share = [(row, weights[i]) for i, row in enumerate(rows)]
        training.accumulate(accelerator, prepared, share, collate, method.loss, len(share))
        accelerator.clip_grad_norm_(prepared.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step, int(rollout.attention_mask.sum())


# -- TRL's step ------------------------------------------------------------------------------
def given_reward(completions: list, reward: list[float], **kwargs: Any) -> list[float]:
    """A TRL reward function: the dataset's `reward` column, as is."""
    return [float(r) for r in reward]


def trl_step(
    model_dir: Path, batch: tuple, kind: str, **options: Any
) -> tuple[Callable[[], None], int]:
    """(one optimiser step of TRL's `kind` trainer on the batch, scored once beforehand, the
    batch's non-pad tokens)."""
    from datasets import Dataset

    config_class, trainer_class = {
        "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
        "rloo": (trl.RLOOConfig, trl.RLOOTrainer),
    }[kind]
    prompts, samples, rewards = batch
    rows = [
        {"prompt": p, "reward": r} for p, group in zip(prompts, rewards, strict=True) for r in group
    ]
    tokenizer = load_tokenizer(model_dir)
    args = config_class(
        output_dir=str(model_dir / f"trl-{kind}"),
        per_device_train_batch_size=len(rows),
        num_generations=SAMPLES,
        max_completion_length=max(len(s.token_ids) for group in samples for s in group),
        learning_rate=1e-4,
        bf16=False,
        activation_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        **options,
    )
    trainer = trainer_class(
        model=str(model_dir),
        reward_funcs=given_reward,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    completion_ids = [s.token_ids for group in samples for s in group]
    texts = [s.text for group in samples for s in group]

    def given_completions(batch_prompts: list) -> tuple:
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in batch_prompts]
        if kind == "rloo":
            return prompt_ids, completion_ids, texts
        return prompt_ids, completion_ids, None, texts, None, {}, None, None

    trainer._generate = given_completions
    trainer.model.train()
    scored = trainer._generate_and_score_completions(rows)
    trainer._prepare_inputs = lambda inputs: inputs  # the scored batch, never a new generation
    trainer.current_gradient_accumulation_steps = 1
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    model = trainer.model
    tokens = int(scored["prompt_mask"].sum() + scored["completion_mask"].sum())

    def step() -> None:
        trainer.training_step(model, scored, scored.get("num_items_in_batch"))
        trainer.accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)

    return step, tokens


# -- timing ----------------------------------------------------------------------------------
def median_seconds(steps: list[Callable[[], None]], warmup: int, repeats: int) -> list[float]:
    """Each step's median wall time over `repeats`, after `warmup` calls each. The steps take
    turns (one call of each per round), so a change in the machine's load reaches all alike."""
    for step in steps:
        for _ in range(warmup):
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, own in zip(steps, times, strict=True):
            start = time.perf_counter()
            step()
            own.append(time.perf_counter() - start)
    return [statistics.median(own) for own in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renames in TRL
    quiet_transformers()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers "
        f"{transformers.__version__}, TRL {trl.__version__}, Python {platform.python_version()}"
    )
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    shared = {"prompts_per_rollout": N_PROMPTS, "samples": SAMPLES, "minibatch_size": 32}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp)
        batch = build_batch(model_dir)
        sides: list[tuple[str, str, Callable[[], None]]] = []
        tokens = 0
        for name, config, factory in [
            ("RLOO", RLOOConfig(**shared), rloo),
            ("GRPO", GRPOConfig(**shared), grpo),
            ("PPO", PPOConfig(**shared), ppo),
        ]:
            method = factory(config)
            step, tokens = project_step(model_dir, batch, method, config)
            setting = (
                f"aggregation={method.aggregation}"
                if method.aggregation
                else "one ratio per completion"
            )
            sides.append((f"pftbench {name}", setting, step))
        for name, setting, kind, options in [
            ("TRL RLOOTrainer", "beta=0.05", "rloo", {"beta": 0.05}),
            (
                "TRL GRPOTrainer",
                'loss_type="grpo", beta=0.04',
                "grpo",
                {"loss_type": "grpo", "beta": 0.04},
            ),
        ]:
            step, trl_tokens = trl_step(model_dir, batch, kind, **options)
            if trl_tokens != tokens:
                raise AssertionError(f"TRL's batch has {trl_tokens} tokens, the project's {tokens}")
            sides.append((name, setting, step))
        medians = median_seconds([step for _, _, step in sides], args.warmup, args.repeats)
        rows = [(name, setting, m) for (name, setting, _), m in zip(sides, medians, strict=True)]
    n_sequences = N_PROMPTS * SAMPLES
    print(
        f"one update step on {n_sequences} sequences ({tokens} non-pad tokens), median of "
        f"{args.repeats} after {args.warmup} warm-up steps"
    )
    print("| implementation | setting | ms/step | tokens/s |")
    print("|---|---|---|---|")
    for name, setting, seconds in rows:
        print(f"| {name} | {setting} | {1000 * seconds:.1f} | {tokens / seconds:,.0f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
