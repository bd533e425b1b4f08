"""The multi-process side of tests/test_distributed.py, started by torchrun (2 CPU processes):

    torchrun --nproc_per_node 2 tests/distributed_worker.py OUT_DIR

Each process writes OUT_DIR/rank<r>.json with what it saw:
- `trained`: a tiny GPT-2 trained by `bench.train.training.run` on 64 examples in batches of 16 (the
  same model and data as `train_tiny` in one process), checkpointing at every step into a shared
  scratch folder; its weights (as lists) and the loop report;
- `resumed_from_step`: a second call on the same scratch folder, which must resume at the end;
- `micro_losses`: the losses of the same training in passes of 3 examples (gradients
  accumulated, synchronised between the processes on each step's last pass);
- `broadcast`: a checksum of a model after `broadcast_weights` from the main process, which
  alone changed its weights;
- `gathered`: what `gather_objects` returned for [rank, rank * 10];
- `mapped`: what `map_shards` returned for 0..6 and a function that tags each item with the
  rank that handled it;
- `batch_error`: the error of a batch size (3) that does not split over the processes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

N_EXAMPLES, BATCH_SIZE = 64, 16


def tiny_model():  # noqa: ANN201
    from bench.train.modeling import build_gpt2

    return build_gpt2(
        vocab_size=32,
        n_positions=16,
        n_embd=16,
        n_layer=1,
        n_head=2,
        initializer_range=0.1,
        eos_token_id=3,
        pad_token_id=0,
        seed=0,
    )


def train_tiny(
    scratch_dir: Path | None,
    checkpoint_interval_s: float = 120.0,
    batch_size: int = BATCH_SIZE,
    micro_batch_size: int | None = None,
) -> tuple:
    """The model and report of training `tiny_model` on the fixed examples (any process count)."""
    import torch

    from bench.train import training

    generator = torch.Generator().manual_seed(0)
    examples = torch.randint(4, 32, (N_EXAMPLES, 8), generator=generator).tolist()

    def collate(rows: list) -> dict:
        ids = torch.tensor(rows)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

    def loss(model, batch: dict) -> tuple:  # noqa: ANN001
        return model(**batch).loss, {}

    model = tiny_model()
    cfg = training.LoopConfig(
        lr=1e-2,
        batch_size=batch_size,
        epochs=2,
        seed=3,
        checkpoint_interval_s=checkpoint_interval_s,
        micro_batch_size=micro_batch_size,
    )
    report = training.run(
        model, examples, collate, loss, cfg, scratch_dir=scratch_dir, progress=False
    )
    return model, report


def weights(model) -> dict[str, list]:  # noqa: ANN001
    return {name: p.detach().flatten().tolist() for name, p in model.named_parameters()}


def main(out_dir: Path) -> None:
    import torch

    from bench.train import distributed

    rank = distributed.rank()
    model, report = train_tiny(out_dir / "scratch", checkpoint_interval_s=0)
    _, again = train_tiny(out_dir / "scratch", checkpoint_interval_s=0)
    _, in_micro_batches = train_tiny(None, micro_batch_size=3)

    other = tiny_model()
    if distributed.is_main():
        with torch.no_grad():
            for parameter in other.parameters():
                parameter.add_(1.0)
    state = other.state_dict() if distributed.is_main() else None
    receiver = tiny_model()
    distributed.broadcast_weights(receiver, state)
    checksum = float(sum(p.detach().double().sum() for p in receiver.parameters()))

    try:
        train_tiny(None, batch_size=3)
        batch_error = None
    except ValueError as error:
        batch_error = str(error)

    result = {
        "world_size": distributed.world_size(),
        "trained": weights(model),
        "report": {"steps": report.steps, "examples": report.examples, "losses": report.losses},
        "resumed_from_step": again.resumed_from_step,
        "micro_losses": in_micro_batches.losses,
        "broadcast": checksum,
        "gathered": distributed.gather_objects([rank, rank * 10]),
        "mapped": distributed.map_shards(list(range(7)), lambda xs: [[x, rank] for x in xs]),
        "batch_error": batch_error,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
