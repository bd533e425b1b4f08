"""Several processes under `accelerate launch`: who is the main process, waiting for all, and
moving weights and samples between them.

Under `accelerate launch --num_processes N` every process runs the same command (`pftbench run`)
over the same cells. The training loop (`bench.train.training.run`) is the part they share: data
parallel (DDP), or sharded (FSDP, DeepSpeed ZeRO) as the launch config says. The runner keeps
everything else on the main process: it builds the stages that only read a model (pools,
generations, judgments, diagnostics) and writes every cache entry and result line, while the
other processes wait at a barrier and then read what it wrote (`bench.run.runner`). A method runs in
every process, so after each training loop every process holds the same full weights, and what
the method does between loops (reference log-probs, a round's samples) is split over the
processes and gathered (`map_shards`), leaving every process with the same result.

Without `accelerate launch` (one process), every function here is a no-op or the identity.
Nothing here imports torch or accelerate until a second process exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def world_size() -> int:
    """Processes started together (accelerate launch sets WORLD_SIZE); 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's index among them, 0 for the main process."""
    return int(os.environ.get("RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def _state() -> Any:
    """accelerate's process state: joins the process group on first use (gloo on the CPU)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def barrier() -> None:
    """Wait until every process gets here."""
    if is_distributed():
        _state().wait_for_everyone()


def gather_objects(items: list[Any]) -> list[Any]:
    """Every process's `items`, concatenated in rank order, in every process."""
    if not is_distributed():
        return items
    from accelerate.utils import gather_object

    _state()
    return gather_object(items)


def broadcast_object(item: Any) -> Any:
    """The main process's `item` (any picklable object; the others pass None), in every
    process."""
    if not is_distributed():
        return item
    import torch.distributed as dist

    _state()
    box = [item]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def map_shards(items: list[Any], fn: Callable[[list[Any]], list[Any]]) -> list[Any]:
    """`fn(items)` with the work split: each process applies `fn` (one result per item, in
    order) to every N-th item, and every process gets all the results, in item order."""
    n_processes = world_size()
    if n_processes == 1:
        return fn(items)
    mine = fn(items[rank() :: n_processes])
    everyone = gather_objects([mine])
    return [everyone[i % n_processes][i // n_processes] for i in range(len(items))]


def broadcast_weights(model: nn.Module, state_dict: dict[str, Any] | None) -> None:
    """Load `state_dict` (full tensors, held by the main process only; None elsewhere) into
    `model` in every process, one tensor at a time (memory stays at one tensor beyond the
    model). For sharded training, whose full weights only the main process gathers."""
    import torch
    import torch.distributed as dist

    names = [sorted(state_dict)] if is_main() and state_dict is not None else [None]
    if is_distributed():
        dist.broadcast_object_list(names, src=0)
    targets = model.state_dict()
    device = _state().device
    for name in names[0]:  # tied weights may appear once: the model's other name shares it
        target = targets[name]
        buffer = torch.empty(target.shape, dtype=target.dtype, device=device)
        if is_main():
            buffer.copy_(state_dict[name])
        if is_distributed():
            dist.broadcast(buffer, src=0)
        with torch.no_grad():
            target.copy_(buffer)
