"""Training in several processes, on this CPU: 2 processes started by torchrun (what
`accelerate launch` runs for GPUs), gloo between them.

- The training loop (tests/distributed_worker.py): both processes end with the weights one
  process would have trained (the batch is split, not multiplied), checkpoints are collective
  and resume, and the weight and object exchanges of `bench.train.distributed` work.
- The runner (`python -m bench.cli run` under torchrun) on a small micro suite, starting from
  the same base and pool as a one-process run: every stage is committed once, by the main
  process, the result lines are written once, and DPO trains the same number of steps on the
  same batches as in one process; the RL methods take the same first step and end close.
- The shipped accelerate configs (FSDP, DeepSpeed ZeRO 2 and 3, DDP) load as accelerate reads
  them. FSDP and DeepSpeed need GPUs (accelerate runs them on CUDA only): their test runs the
  worker under `accelerate launch` where 2 GPUs are present, and skips here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from distributed_worker import BATCH_SIZE, N_EXAMPLES, tiny_model, train_tiny, weights

# Suites and training under torchrun, in two processes.
pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"


def torchrun(args: list[str], cwd: Path, timeout_s: float = 600) -> str:
    """`torchrun --nproc_per_node 2 args...`; the output, or a failure with its end."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    env.pop("PFTBENCH_CACHE_DIR", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args]
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if done.returncode != 0:
        pytest.fail(f"torchrun {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout


# -- the training loop and the exchanges --------------------------------------------------------
@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("distributed_worker")
    torchrun([str(REPO / "tests" / "distributed_worker.py"), str(out)], cwd=out)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_train_what_one_process_trains(worker: list[dict]) -> None:
    one_model, one_report = train_tiny(None)
    one = weights(one_model)
    for rank in worker:
        assert rank["world_size"] == 2
        report = rank["report"]
        # the same steps, each on the same batch (split in two halves), as in one process
        assert report["steps"] == one_report.steps == 2 * N_EXAMPLES // BATCH_SIZE
        assert report["examples"] == one_report.examples == 2 * N_EXAMPLES
        assert report["losses"] == pytest.approx(one_report.losses, abs=1e-5)
        gap = max(
            abs(a - b)
            for name, values in one.items()
            for a, b in zip(values, rank["trained"][name], strict=True)
        )
        # Float rounding of the gradient average, grown by Adam over 8 steps, moved them by
        # ~5e-4 here; another batch order moves them by ~7e-2.
        assert gap < 5e-3, f"weights differ from one process's by {gap}"
    assert worker[0]["trained"] == worker[1]["trained"], "the replicas must stay identical"


def test_micro_batches_in_several_processes(worker: list[dict]) -> None:
    """Each process's 8 examples of a step in passes of 3, 3 and 2: the same losses."""
    for rank in worker:
        assert rank["micro_losses"] == pytest.approx(rank["report"]["losses"], abs=1e-5)


def test_collective_checkpoints_resume(worker: list[dict]) -> None:
    """A checkpoint after every step (every process saving at the same step), then a second
    run on the same scratch folder resumes at the last step."""
    for rank in worker:
        assert rank["resumed_from_step"] == rank["report"]["steps"]


def test_weights_and_objects_travel_between_processes(worker: list[dict]) -> None:
    import torch

    model = tiny_model()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    expected = float(sum(p.detach().double().sum() for p in model.parameters()))
    for rank in worker:
        assert rank["broadcast"] == pytest.approx(expected, rel=1e-12)
        assert rank["gathered"] == [0, 0, 1, 10]
        assert rank["mapped"] == [[i, i % 2] for i in range(7)], "every other item, in order"


def test_a_batch_that_does_not_split_is_refused(worker: list[dict]) -> None:
    for rank in worker:
        assert rank["batch_error"] == (
            "batch_size 3 does not split over 2 processes: use a multiple of 2 "
            "(the batch is the same whatever the process count)"
        )


# -- the runner under torchrun --------------------------------------------------------------------
SUITE = """\
include: {base}
name: distributed-check
version: 1
description: the runner in two processes
task:
  params: {{n_train: 2000, n_eval: 100, pool_size: 500}}
base_model: {{pretrain_steps: 100, sft_epochs: 1}}
generation: {{n_eval_prompts: 100}}
budgets: [256]
methods:
  - sft
  - method: dpo
    beta: 0.5
    lr: 0.0003
    epochs: 2
  - method: online_dpo
    samples: 4
  - method: rloo
    prompt_epochs: 0.25
    minibatch_size: 32
  - method: grpo
    prompt_epochs: 0.25
    minibatch_size: 32
  - method: ppo
    prompt_epochs: 0.25
    minibatch_size: 32
"""


def pftbench(args: list[str], cwd: Path) -> str:
    env = dict(os.environ)
    env.pop("PFTBENCH_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", *args, "--no-progress"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The base and pool built once (sft cell, one process), then the whole suite on copies of
    that cache: in one process and in two."""
    root = tmp_path_factory.mktemp("distributed_runner")
    (root / "suite.yaml").write_text(SUITE.format(base=REPO / "suites/micro/_micro_base.yaml"))
    pftbench(["run", "suite.yaml", "--cache-dir", "shared", "--method", "sft"], root)
    for name in ("one", "two"):
        shutil.copytree(root / "shared", root / f"cache_{name}")
    pftbench(["run", "suite.yaml", "--cache-dir", "cache_one", "--results-dir", "one"], root)
    stdout = torchrun(
        ["-m", "bench.cli", "run", "suite.yaml", "--cache-dir", "cache_two"]
        + ["--results-dir", "two", "--no-progress"],
        cwd=root,
    )
    lines = {
        name: {
            line["method"]: line
            for line in map(json.loads, (root / name / "distributed-check.jsonl").open())
        }
        for name in ("one", "two")
    }
    return {"root": root, "stdout": stdout, "lines": lines}


def test_the_main_process_alone_reports_and_writes(runs: dict) -> None:
    root = runs["root"]
    assert runs["stdout"].count("suite ") == 1, "one table, printed by the main process"
    assert len(list((root / "two" / "distributed-check.jsonl").open())) == 6
    models = root / "cache_two" / "models"
    committed = [d for d in models.iterdir() if not d.name.startswith(".")]
    assert len(committed) == 7, (
        "the base and the policies of sft, dpo, online DPO and the RL family"
    )
    assert all((d / "pftbench.json").is_file() for d in committed)
    assert not [d.name for d in models.iterdir() if d.name.startswith(".")], "no partial builds"
    assert not list((root / "cache_two" / "tmp").iterdir()), "discarded outputs removed"


def test_dpo_trains_the_same_steps_as_one_process(runs: dict) -> None:
    one, two = runs["lines"]["one"], runs["lines"]["two"]
    assert two["sft"]["outcomes"] == one["sft"]["outcomes"], "the shared base, judged alike"
    one_dpo, two_dpo = one["dpo"]["metrics"]["train"], two["dpo"]["metrics"]["train"]
    # 256 pairs in batches of 32: no short batch, so the same batches, split in two halves
    for key in ("train_steps", "train_examples", "train_tokens"):
        assert two_dpo[key] == one_dpo[key], key
    assert two_dpo["final_loss"] == pytest.approx(one_dpo["final_loss"], rel=1e-3)
    # the reference log-probs, each process scoring half of the pairs
    (one_file,) = (runs["root"] / "cache_one" / "reference_logps").iterdir()
    two_file = runs["root"] / "cache_two" / "reference_logps" / one_file.name
    one_ref, two_ref = json.loads(one_file.read_text()), json.loads(two_file.read_text())
    for side in ("chosen", "rejected"):
        assert two_ref[side] == pytest.approx(one_ref[side], abs=1e-4)
    print(
        f"\nDPO winrate: one process {one['dpo']['winrate']:.3f}, "
        f"two {two['dpo']['winrate']:.3f}; final loss {one_dpo['final_loss']:.5f} vs "
        f"{two_dpo['final_loss']:.5f}"
    )


def test_online_rounds_sample_every_prompt_across_processes(runs: dict) -> None:
    """Each process samples half of the prompts; gathered, every prompt has its samples."""
    two = runs["lines"]["two"]["online_dpo"]["metrics"]
    assert two["counters"]["samples_generated"] == 256 * 4
    (round_report,) = two["train"]["rounds"]
    assert 0.9 * 256 <= round_report["pairs_built"] <= 256


@pytest.mark.parametrize("method", ["rloo", "grpo", "ppo"])
def test_rl_methods_train_what_one_process_trains(runs: dict, method: str) -> None:
    """The main process samples every rollout for both (`ctx.sample(shard=False)`) and each
    minibatch is split in two halves with weights fixed on the whole: the first step sees the
    same rollout and gives the same loss as in one process; float rounding in the gradient
    average could move a later sample, so later figures are compared to 1e-3 (measured: 3e-7)."""
    one = runs["lines"]["one"][method]["metrics"]
    two = runs["lines"]["two"][method]["metrics"]
    for key in ("samples_generated", "rm_queries"):
        assert two["counters"][key] == one["counters"][key] == 2 * 32 * 4, key
    first_one, first_two = one["train"]["first_step"], two["train"]["first_step"]
    assert first_one.keys() == first_two.keys()
    for key, value in first_one.items():
        assert first_two[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert two["train"]["rollout_rewards"][0] == pytest.approx(
        one["train"]["rollout_rewards"][0], abs=1e-4
    )
    assert two["train"]["rollout_rewards"] == pytest.approx(
        one["train"]["rollout_rewards"], abs=1e-3
    )
    assert two["train"]["last"]["loss"] == pytest.approx(one["train"]["last"]["loss"], abs=1e-4)
    print(
        f"\n{method}: first-step loss {first_one['loss']:.6f} (one) {first_two['loss']:.6f} (two)"
    )


# -- the shipped accelerate configs ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ddp.yaml", "MULTI_GPU"),
        ("fsdp.yaml", "FSDP"),
        ("deepspeed_zero2.yaml", "DEEPSPEED"),
        ("deepspeed_zero3.yaml", "DEEPSPEED"),
    ],
)
def test_accelerate_configs_load(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type.value == kind
    assert config.num_machines == 1 and config.num_processes >= 2
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if name == "deepspeed_zero3.yaml":
        # bench.train.training gathers the full weights after each loop: ZeRO-3 must consolidate
        # them
        assert config.deepspeed_config["zero3_save_16bit_model"] is True
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == [
        "ddp.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
        "fsdp.yaml",
    ]


def gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.parametrize("name", ["fsdp.yaml", "deepspeed_zero3.yaml"])
def test_sharded_training_on_gpus(name: str, tmp_path: Path) -> None:
    """Sharded training (the parameters split over 2 GPUs) ends, as data parallel training
    does, with the full trained weights in every process."""
    if gpus() < 2:
        pytest.skip(
            "needs 2 CUDA GPUs: accelerate runs FSDP and DeepSpeed on GPUs only, and this "
            "machine has none"
        )
    if name.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="pip install -e '.[deepspeed]'")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file"]
    command += [str(CONFIGS / name), "--num_processes", "2", "--mixed_precision", "no"]
    command += [str(REPO / "tests" / "distributed_worker.py"), str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["trained"] == ranks[1]["trained"]
    one = weights(train_tiny(None)[0])
    gap = max(
        abs(a - b)
        for name, values in one.items()
        for a, b in zip(values, ranks[0]["trained"][name], strict=True)
    )
    assert gap < 1e-4, f"weights differ from one process's by {gap}"
