"""The one training loop every method uses, built on accelerate so the same code runs on the
CPU, one GPU, or many under `accelerate launch` (FSDP / DeepSpeed via its config files).

A method supplies its examples, a collate function and a loss; the loop supplies the order
(a seeded permutation per epoch), the optimiser (AdamW with linear warm-up and decay), gradient
clipping, throughput figures and resumption: when given a scratch directory it saves the full
training state there every `checkpoint_interval_s` seconds, and a restarted run loads it and
skips the batches already seen, so a killed run redoes only the unfinished steps.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

LossFn = Callable[["PreTrainedModel", dict[str, Any]], tuple["torch.Tensor", dict[str, float]]]


@dataclass(frozen=True)
class LoopConfig:
    lr: float
    """Peak learning rate of AdamW."""
    batch_size: int
    """Examples per optimiser step, over all processes: under `accelerate launch` each process
    takes batch_size / N of every batch (a multiple of N is required), so the steps, the
    learning-rate schedule and the data a step sees do not depend on how many processes train."""
    epochs: float = 1.0
    """Passes over the examples; a fraction trains on a prefix of the last pass."""
    max_steps: int | None = None
    """Stop after this many steps, whatever `epochs` says."""
    micro_batch_size: int | None = None
    """Examples per forward and backward pass in each process: a step accumulates the gradients
    of its passes, so this trades memory for time and leaves the step's gradient (the mean over
    its batch) as it is, up to float rounding. A method passes its context's
    (`MethodContext.micro_batch_size`, from `pftbench run --micro-batch-size`). None: the
    process's whole share of the batch, halved after each CUDA out-of-memory error (one process
    only)."""
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    """Fraction of the steps over which the learning rate rises linearly from 0."""
    decay: bool = True
    """Decay the learning rate linearly to 0 after warm-up."""
    max_grad_norm: float = 1.0
    seed: int = 0
    """Seeds initialisation-free randomness: the batch order (and dropout, if any)."""
    checkpoint_interval_s: float = 120.0
    """Seconds between resumable checkpoints when a scratch directory is given."""


@dataclass
class LoopReport:
    steps: int = 0
    examples: int = 0
    tokens: int = 0
    """Non-padding tokens through the model (forward and backward)."""
    wall_s: float = 0.0
    resumed_from_step: int = 0
    losses: list[float] = field(default_factory=list)
    """Loss at each step."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Mean of each metric the loss reported, over the last epoch's steps."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "train_steps": self.steps,
            "train_examples": self.examples,
            "train_tokens": self.tokens,
            "train_wall_s": round(self.wall_s, 3),
            "train_tokens_per_s": round(self.tokens_per_s, 1),
            "final_loss": self.losses[-1] if self.losses else float("nan"),
            **{f"train_{k}": v for k, v in self.metrics.items()},
        }


def total_steps(n_examples: int, cfg: LoopConfig) -> int:
    """Whole passes of ceil(n / batch_size) steps each (the last batch may be short), then the
    steps that cover the remaining fraction of a pass."""
    whole = int(cfg.epochs)
    steps = whole * math.ceil(n_examples / cfg.batch_size)
    steps += math.ceil((cfg.epochs - whole) * n_examples / cfg.batch_size)
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


def run(
    model: PreTrainedModel,
    examples: Sequence[Any],
    collate: Callable[[list[Any]], dict[str, Any]],
    loss_fn: LossFn,
    cfg: LoopConfig,
    *,
    scratch_dir: Path | None = None,
    desc: str = "train",
    progress: bool = True,
) -> LoopReport:
    """Train `model` in place on `examples` and return what happened.

    Under `accelerate launch` every process calls this with the same arguments. Data parallel
    training updates `model` itself; sharded training (FSDP, DeepSpeed) trains a copy, whose
    full weights are then gathered and loaded into `model` in every process, so that afterwards
    `model` is the trained policy everywhere, as with one process."""
    import torch
    from accelerate.utils import DistributedType
    from tqdm.auto import tqdm

    accelerator = make_accelerator()
    n_processes = accelerator.num_processes
    if cfg.batch_size % n_processes:
        raise ValueError(
            f"batch_size {cfg.batch_size} does not split over {n_processes} processes: use a "
            f"multiple of {n_processes} (the batch is the same whatever the process count)"
        )
    torch.manual_seed(cfg.seed)  # dropout; a resumed run restores the saved RNG states instead
    n_steps = total_steps(len(examples), cfg)
    steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
    if n_steps == 0:
        return LoopReport()
    micro = cfg.micro_batch_size
    if micro is not None and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ValueError(
            f"micro_batch_size {micro} under DeepSpeed: DeepSpeed accumulates gradients itself; "
            "set gradient_accumulation_steps in its config instead"
        )
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    policy = model
    if sharded:
        # The wrapper takes over the parameters it shards: train a copy, keep `policy` whole.
        policy.to("cpu")
        model = copy.deepcopy(policy)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # DeepSpeed sizes its batches at prepare time, before any data loader exists here.
        ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
        ds_config["train_micro_batch_size_per_gpu"] = cfg.batch_size // n_processes
        ds_config["train_batch_size"] = cfg.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(cfg.warmup_ratio * n_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, warmup, n_steps, cfg.decay)
    )
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    report = LoopReport()
    step = resume_step(accelerator, scratch_dir)
    report.resumed_from_step = step
    last_checkpoint = time.perf_counter()
    start = time.perf_counter()
    model.train()
    bar = tqdm(
        total=n_steps,
        initial=step,
        desc=desc,
        disable=not progress or not accelerator.is_main_process,
        leave=False,
    )
    epoch_metrics: dict[str, list[float]] = {}
    while step < n_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        if offset == 0:
            epoch_metrics = {}
        loader = accelerator.prepare(_epoch_loader(examples, cfg, epoch))
        loader = accelerator.skip_first_batches(loader, offset) if offset else loader
        for share in loader:  # this process's examples of the step
            while True:
                try:
                    loss, metrics, rows, tokens = accumulate(
                        accelerator, model, share, collate, loss_fn, micro or len(share)
                    )
                    break
                except torch.OutOfMemoryError as error:
                    micro = _smaller_micro_batch(error, micro or len(share), n_processes)
                    optimizer.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if n_processes > 1:  # each process saw its share of the batch
                loss = accelerator.reduce(loss.detach(), "mean")
            report.losses.append(loss.item())
            report.examples += rows
            report.tokens += tokens
            for key, value in metrics.items():
                epoch_metrics.setdefault(key, []).append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{report.losses[-1]:.4f}", refresh=False)
            if scratch_dir is not None and checkpoint_due(
                accelerator, time.perf_counter() - last_checkpoint >= cfg.checkpoint_interval_s
            ):
                save_checkpoint(accelerator, scratch_dir, step)
                last_checkpoint = time.perf_counter()
            if step >= n_steps:
                break
    bar.close()
    report.steps = step
    report.wall_s = time.perf_counter() - start
    report.metrics = {k: sum(v) / len(v) for k, v in epoch_metrics.items()}
    if n_processes > 1:
        counts = torch.tensor([report.examples, report.tokens], device=accelerator.device)
        report.examples, report.tokens = accelerator.reduce(counts, "sum").tolist()
    model.eval()
    accelerator.wait_for_everyone()
    if sharded:
        from bench.train.distributed import broadcast_weights

        state_dict = accelerator.get_state_dict(model)
        broadcast_weights(policy, state_dict if accelerator.is_main_process else None)
        del model, optimizer, scheduler, state_dict
        accelerator.free_memory()
        policy.to(accelerator.device).eval()
    return report


def make_accelerator() -> Any:
    """The accelerator of every training loop: the CPU when there is no CUDA, and batches split
    over the processes (`split_batches`), which also makes the prepared learning-rate scheduler
    step once per optimiser step, not once per process."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    return Accelerator(
        cpu=not torch.cuda.is_available(),
        dataloader_config=DataLoaderConfiguration(split_batches=True),
    )


def lr_factor(step: int, warmup: int, n_steps: int, decay: bool) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if not decay:
        return 1.0
    return max(0.0, (n_steps - step) / max(1, n_steps - warmup))


def _epoch_loader(examples: Sequence[Any], cfg: LoopConfig, epoch: int) -> Any:
    """Batches of epoch `epoch` in a seeded order, so a resumed run sees the same batches; each
    batch a list of examples (collated per pass by `accumulate`)."""
    import torch

    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(examples), generator=generator).tolist()
    return torch.utils.data.DataLoader(
        [examples[i] for i in order], batch_size=cfg.batch_size, shuffle=False, collate_fn=_as_list
    )


def _as_list(examples: list[Any]) -> list[Any]:
    return examples


def accumulate(
    accelerator: Any,
    model: Any,
    share: list[Any],
    collate: Callable[[list[Any]], dict[str, Any]],
    loss_fn: LossFn,
    micro: int,
) -> tuple[Any, dict[str, float], int, int]:
    """Forward and backward passes over `share` in chunks of `micro` examples, each loss
    weighted by its chunk's share so that the gradients add up to the share's mean; processes
    synchronise gradients on the last pass only. Returns the share's mean loss, its metrics
    (weighted means), and the rows and non-padding tokens the passes saw."""
    import contextlib

    from accelerate.utils import send_to_device

    chunks = [share[start : start + micro] for start in range(0, len(share), micro)]
    total, metrics, rows, tokens = 0.0, {}, 0, 0
    for index, chunk in enumerate(chunks):
        batch = send_to_device(collate(chunk), accelerator.device)
        weight = len(chunk) / len(share)
        last = index == len(chunks) - 1
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            loss, chunk_metrics = loss_fn(model, batch)
            accelerator.backward(loss * weight if weight != 1 else loss)
        total = total + loss.detach() * weight
        for key, value in chunk_metrics.items():
            metrics[key] = metrics.get(key, 0.0) + value * weight
        rows += batch["input_ids"].shape[0]
        tokens += int(batch["attention_mask"].sum())
    return total, metrics, rows, tokens


def _smaller_micro_batch(error: BaseException, micro: int, n_processes: int) -> int:
    """The micro-batch to retry a step with after running out of memory: half of `micro`.
    Several processes cannot retry alone (the others would wait for their gradients), and a
    single example has nothing left to halve: those raise, saying what to set."""
    if n_processes > 1 or micro == 1:
        error.add_note(
            f"out of memory at {micro} examples per pass: set a smaller micro-batch "
            "(pftbench run --micro-batch-size N, or LoopConfig.micro_batch_size)"
        )
        raise error
    smaller = (micro + 1) // 2
    warnings.warn(
        f"out of memory at {micro} examples per pass: retrying the step with {smaller}",
        stacklevel=2,
    )
    return smaller


def checkpoint_due(accelerator: Any, due: bool) -> bool:
    """The main process's clock decides for all: saving the state is collective, so every
    process must take the same decision at the same step."""
    if accelerator.num_processes == 1:
        return due
    import torch
    from accelerate.utils import broadcast

    flag = torch.tensor([int(due)], device=accelerator.device)
    return bool(broadcast(flag, from_process=0).item())


def save_checkpoint(accelerator: Any, scratch_dir: Path, step: int) -> None:
    """Save the resumable state in its own directory, then point the `step` file at it; a save
    torn by a kill leaves the previous pointer, and its state, intact."""
    import shutil

    accelerator.save_state(str(scratch_dir / f"state-{step}"))
    if accelerator.is_main_process:
        tmp = scratch_dir / "step.tmp"
        tmp.write_text(str(step))
        tmp.replace(scratch_dir / "step")
        for old in scratch_dir.glob("state-*"):
            if old.name != f"state-{step}":
                shutil.rmtree(old, ignore_errors=True)


def resume_step(accelerator: Any, scratch_dir: Path | None) -> int:
    """The step to continue from: 0, or the last complete checkpoint's step (state restored)."""
    if scratch_dir is None or not (scratch_dir / "step").exists():
        return 0
    step = int((scratch_dir / "step").read_text())
    accelerator.load_state(str(scratch_dir / f"state-{step}"))
    return step
