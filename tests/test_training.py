"""The shared training loop `bench.train.training.run`: determinism, resumption after a crash, the
learning-rate schedule, and its token and example counts.

The model is a ~1,100-parameter GPT-2 trained with `sft_loss` on word sequences; a run of a
dozen steps takes a fraction of a second.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.tasks.keywords import SPECIAL_TOKENS, word, write_word_tokenizer
from bench.train import training
from bench.train.modeling import build_gpt2, encode_completions, load_tokenizer, sft_loss
from bench.train.training import LoopConfig, _epoch_loader, lr_factor, total_steps

VOCAB = SPECIAL_TOKENS + [word(i) for i in range(8)]

# (prompt, completion); tokens with EOS: prompt words + <sep> + completion words + 1
EXAMPLES = [
    ("w00 w01 <sep>", "w00"),  # 3 + 1 + 1 = 5
    ("w02 <sep>", "w02 w03"),  # 2 + 2 + 1 = 5
    ("w04 w05 w06 <sep>", "w05"),  # 4 + 1 + 1 = 6
    ("w07 <sep>", "w07 w07 w01"),  # 2 + 3 + 1 = 6
    ("w01 w02 w03 w04 <sep>", "w04 w03"),  # 5 + 2 + 1 = 8
    ("w05 <sep>", "w05"),  # 2 + 1 + 1 = 4
    ("w06 w00 <sep>", "w00 w06"),  # 3 + 2 + 1 = 6
    ("w03 w03 w02 <sep>", "w03"),  # 4 + 1 + 1 = 6
    ("w01 <sep>", "w01 w02"),  # 2 + 2 + 1 = 5
    ("w07 w06 w05 <sep>", "w06"),  # 4 + 1 + 1 = 6
    ("w00 w04 <sep>", "w04 w00"),  # 3 + 2 + 1 = 6
    ("w02 w05 w07 <sep>", "w07 w02"),  # 4 + 2 + 1 = 7
]
TOKENS_PER_PASS = 5 + 5 + 6 + 6 + 8 + 4 + 6 + 6 + 5 + 6 + 6 + 7  # = 70

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("tokenizer")
    write_word_tokenizer(VOCAB, path)
    return load_tokenizer(path)


@pytest.fixture(scope="module")
def initial() -> Any:
    """A tiny GPT-2 as the micro base model builds it (no dropout)."""
    return build_gpt2(
        vocab_size=len(VOCAB),
        n_positions=16,
        n_embd=8,
        n_layer=1,
        n_head=2,
        initializer_range=0.5,
        eos_token_id=3,
        pad_token_id=0,
        seed=0,
    )


def fresh(initial: Any, dropout: bool = False) -> Any:
    """A copy of the initial weights; with dropout 0.1 when asked (as pretrained checkpoints
    often have), so the loop's seeding of dropout masks can be tested."""
    model = copy.deepcopy(initial)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1 if dropout else 0.0
    return model


def collate_with(tokenizer: Any) -> Any:
    def collate(rows: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
        return encode_completions(tokenizer, [r[0] for r in rows], [r[1] for r in rows])

    return collate


def train(model: Any, tokenizer: Any, cfg: LoopConfig, **kwargs: Any) -> training.LoopReport:
    return training.run(
        model, EXAMPLES, collate_with(tokenizer), sft_loss, cfg, progress=False, **kwargs
    )


def same_weights(a: Any, b: Any) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


# 12 examples in batches of 3: 4 steps per pass, 12 steps in 3 passes; warm-up over int(0.25 * 12)
# = 3 steps, then linear decay.
CFG = LoopConfig(lr=0.02, batch_size=3, epochs=3, warmup_ratio=0.25, seed=0)


# --- determinism --------------------------------------------------------------------------------


def test_same_seed_same_weights(initial: Any, tokenizer: Any) -> None:
    first, second = fresh(initial), fresh(initial)
    report_first = train(first, tokenizer, CFG)
    report_second = train(second, tokenizer, CFG)
    assert report_first.steps == report_second.steps == 12
    assert not same_weights(first, initial)  # it trained
    assert same_weights(first, second)
    assert report_first.losses == report_second.losses


def test_same_seed_same_weights_with_dropout(initial: Any, tokenizer: Any) -> None:
    first, second = fresh(initial, dropout=True), fresh(initial, dropout=True)
    torch.manual_seed(1)  # whatever ran earlier in the process (a generation, another cell)
    train(first, tokenizer, CFG)
    torch.manual_seed(2)
    train(second, tokenizer, CFG)
    assert same_weights(first, second)


def test_seed_sets_the_batch_order() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        cfg = LoopConfig(lr=1.0, batch_size=4, seed=seed)
        return [i for batch in _epoch_loader(list(range(20)), cfg, epoch) for i in batch]

    assert sorted(order(0, 0)) == list(range(20))  # a permutation: every example once per pass
    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(1, 0)  # another seed, another order
    assert order(0, 0) != order(0, 1)  # and each pass its own order


def test_another_seed_gives_other_weights(initial: Any, tokenizer: Any) -> None:
    first, second = fresh(initial), fresh(initial)
    train(first, tokenizer, CFG)
    train(second, tokenizer, LoopConfig(**{**CFG.__dict__, "seed": 1}))
    assert not same_weights(first, second)


# --- resumption ---------------------------------------------------------------------------------


class Crash(Exception):
    pass


def crash_after(n_steps: int) -> Any:
    """sft_loss that raises on step n_steps + 1, as a kill after n_steps would."""
    calls = 0

    def loss(model: Any, batch: dict) -> Any:
        nonlocal calls
        calls += 1
        if calls > n_steps:
            raise Crash
        return sft_loss(model, batch)

    return loss


@pytest.mark.parametrize("crash_step", [4, 6], ids=["at-a-pass-boundary", "mid-pass"])
def test_a_crashed_run_resumes_to_the_same_weights(
    initial: Any, tokenizer: Any, tmp_path: Path, crash_step: int
) -> None:
    cfg = LoopConfig(**{**CFG.__dict__, "checkpoint_interval_s": 0.0})  # a checkpoint every step
    uninterrupted = fresh(initial)
    full = train(uninterrupted, tokenizer, cfg, scratch_dir=tmp_path / "uninterrupted")
    # Checkpointing does not perturb training, and only the last state is kept.
    reference = fresh(initial)
    train(reference, tokenizer, CFG)
    assert same_weights(uninterrupted, reference)
    assert (tmp_path / "uninterrupted" / "step").read_text() == "12"
    assert [p.name for p in (tmp_path / "uninterrupted").glob("state-*")] == ["state-12"]

    scratch = tmp_path / "crashed"
    with pytest.raises(Crash):
        training.run(
            fresh(initial),
            EXAMPLES,
            collate_with(tokenizer),
            crash_after(crash_step),
            cfg,
            scratch_dir=scratch,
            progress=False,
        )
    assert (scratch / "step").read_text() == str(crash_step)

    resumed = fresh(initial)
    report = train(resumed, tokenizer, cfg, scratch_dir=scratch)
    assert report.resumed_from_step == crash_step
    assert report.steps == 12
    # Only the unfinished steps ran, with the same losses as the uninterrupted run's.
    assert len(report.losses) == 12 - crash_step
    assert report.losses == pytest.approx(full.losses[crash_step:], rel=1e-6)
    assert same_weights(resumed, uninterrupted)


def test_resume_from_a_shorter_run_with_a_constant_rate(
    initial: Any, tokenizer: Any, tmp_path: Path
) -> None:
    """The brief's crash: a run capped by max_steps leaves its checkpoint; the full run continues
    from it. Only equivalent to a crash when the schedule does not depend on the step count."""
    cfg = LoopConfig(lr=0.02, batch_size=3, epochs=3, decay=False, checkpoint_interval_s=0.0)
    uninterrupted = fresh(initial)
    train(uninterrupted, tokenizer, cfg, scratch_dir=tmp_path / "uninterrupted")
    scratch = tmp_path / "capped"
    capped = train(
        fresh(initial),
        tokenizer,
        LoopConfig(**{**cfg.__dict__, "max_steps": 7}),
        scratch_dir=scratch,
    )
    assert capped.steps == 7
    resumed = fresh(initial)
    report = train(resumed, tokenizer, cfg, scratch_dir=scratch)
    assert report.resumed_from_step == 7
    assert same_weights(resumed, uninterrupted)


def test_no_scratch_dir_no_resume(initial: Any, tokenizer: Any, tmp_path: Path) -> None:
    report = train(fresh(initial), tokenizer, CFG, scratch_dir=tmp_path / "empty")
    assert report.resumed_from_step == 0
    assert report.steps == 12


# --- the schedule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "warmup", "n_steps", "decay", "factor"),
    [
        # warm-up of 2 steps over 10: (step + 1) / 2
        (0, 2, 10, True, 0.5),
        (1, 2, 10, True, 1.0),
        # then (n_steps - step) / (n_steps - warmup) = (10 - step) / 8
        (2, 2, 10, True, 1.0),
        (3, 2, 10, True, 0.875),
        (6, 2, 10, True, 0.5),
        (9, 2, 10, True, 0.125),
        (10, 2, 10, True, 0.0),
        # no decay: flat after warm-up
        (0, 2, 10, False, 0.5),
        (9, 2, 10, False, 1.0),
        # no warm-up: (10 - step) / 10
        (0, 0, 10, True, 1.0),
        (5, 0, 10, True, 0.5),
        # never below 0
        (12, 0, 10, True, 0.0),
    ],
)
def test_lr_factor_by_hand(
    step: int, warmup: int, n_steps: int, decay: bool, factor: float
) -> None:
    assert lr_factor(step, warmup, n_steps, decay) == pytest.approx(factor)


def test_total_steps() -> None:
    # ceil(12 * 3 / 3) = 12; ceil(12 * 0.5 / 5) = 2; capped by max_steps
    assert total_steps(12, LoopConfig(lr=1.0, batch_size=3, epochs=3)) == 12
    assert total_steps(12, LoopConfig(lr=1.0, batch_size=5, epochs=0.5)) == 2
    assert total_steps(12, LoopConfig(lr=1.0, batch_size=3, epochs=3, max_steps=5)) == 5


# --- counts -------------------------------------------------------------------------------------


def test_tokens_and_examples_counted(initial: Any, tokenizer: Any) -> None:
    seen_tokens = []

    def loss(model: Any, batch: dict) -> Any:
        seen_tokens.append(int(batch["attention_mask"].sum()))
        return sft_loss(model, batch)

    report = training.run(
        fresh(initial), EXAMPLES, collate_with(tokenizer), loss, CFG, progress=False
    )
    # 3 passes over 12 examples of 70 tokens in all (padding excluded)
    assert report.tokens == sum(seen_tokens) == 3 * TOKENS_PER_PASS == 210
    assert report.examples == 36
    assert report.steps == len(report.losses) == len(seen_tokens) == 12
    summary = report.summary()
    assert summary["train_tokens"] == 210
    assert summary["final_loss"] == report.losses[-1]
    assert summary["train_nll"] == pytest.approx(
        sum(report.losses[-4:]) / 4
    )  # mean over the last pass


def test_whole_epochs_see_every_example_each_pass(initial: Any, tokenizer: Any) -> None:
    cfg = LoopConfig(lr=0.01, batch_size=3, epochs=2)
    report = training.run(
        fresh(initial), EXAMPLES[:10], collate_with(tokenizer), sft_loss, cfg, progress=False
    )
    assert report.examples == 20
    assert report.steps == 8


def test_no_examples_no_steps(initial: Any, tokenizer: Any) -> None:
    model = fresh(initial)
    report = training.run(model, [], collate_with(tokenizer), sft_loss, CFG, progress=False)
    assert (report.steps, report.examples, report.tokens) == (0, 0, 0)
    assert same_weights(model, initial)


# --- micro-batches: gradient accumulation -------------------------------------------------------


def per_example_loss(model: Any, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over examples of each example's per-token NLL: a mean over examples, as the DPO and
    reward-model losses are, so passes weighted by their example counts add up exactly."""
    from bench.train.modeling import token_logps

    logps = token_logps(model, batch)
    n_tokens = batch["loss_mask"][:, 1:].sum(dim=1).clamp(min=1)
    loss = (-logps.sum(dim=1) / n_tokens).mean()
    return loss, {"nll": loss.item()}


def train_per_example(model: Any, tokenizer: Any, cfg: LoopConfig) -> training.LoopReport:
    return training.run(
        model, EXAMPLES, collate_with(tokenizer), per_example_loss, cfg, progress=False
    )


def test_micro_batches_accumulate_the_same_gradient(initial: Any, tokenizer: Any) -> None:
    """Passes of 1 and 2 examples add up to the gradient of one pass over the step's batch."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    collate = collate_with(tokenizer)
    share = EXAMPLES[:5]

    def gradient(micro: int) -> tuple[list[torch.Tensor], float, int, int]:
        model = fresh(initial)
        loss, _, rows, tokens = training.accumulate(
            accelerator, model, share, collate, per_example_loss, micro
        )
        return [p.grad.clone() for p in model.parameters()], float(loss), rows, tokens

    whole, whole_loss, rows, tokens = gradient(5)
    for micro in (1, 2):
        grads, loss, micro_rows, micro_tokens = gradient(micro)
        for a, b in zip(whole, grads, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
        assert loss == pytest.approx(whole_loss, rel=1e-6)
        assert (micro_rows, micro_tokens) == (rows, tokens)


def test_training_in_micro_batches_follows_the_same_losses(initial: Any, tokenizer: Any) -> None:
    """Over 12 steps the losses stay those of whole batches (weights drift by float rounding
    that Adam enlarges where a gradient is near zero, so the losses are compared)."""
    whole, one_at_a_time = fresh(initial), fresh(initial)
    report_whole = train_per_example(whole, tokenizer, CFG)
    report_micro = train_per_example(
        one_at_a_time, tokenizer, dataclasses.replace(CFG, micro_batch_size=1)
    )
    assert report_micro.losses == pytest.approx(report_whole.losses, abs=1e-5)
    assert report_micro.examples == report_whole.examples
    assert report_micro.tokens == report_whole.tokens


def test_the_environment_does_not_change_the_micro_batch(
    initial: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The variable that used to carry `--micro-batch-size` is ignored: whole batches of 3."""
    passes = []

    def counting(model: Any, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        passes.append(batch["input_ids"].shape[0])
        return per_example_loss(model, batch)

    monkeypatch.setenv("PFTBENCH_MICRO_BATCH_SIZE", "1")
    training.run(fresh(initial), EXAMPLES, collate_with(tokenizer), counting, CFG, progress=False)
    assert set(passes) == {3}


class Stop(Exception):
    """Ends a run once the value under test has been seen."""


def test_the_command_line_hands_the_micro_batch_to_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bench.run.runner
    from bench import cli

    seen = {}

    def runner(*args: Any, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(bench.run.runner, "Runner", runner)
    suite = str(Path(__file__).resolve().parents[1] / "suites" / "micro" / "keywords.yaml")
    for command in ("run", "check"):
        seen.clear()
        with pytest.raises(Stop):
            cli.main([command, suite, "--micro-batch-size", "2", "--cache-dir", str(tmp_path)])
        assert seen["micro_batch_size"] == 2, command


def test_a_method_passes_its_context_micro_batch_to_the_loop(
    initial: Any, tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.method_api import MethodContext
    from bench.run.cache import Cache
    from methods.sft import SFTConfig
    from methods.sft import train as train_sft

    base = tmp_path / "base"
    fresh(initial).save_pretrained(base)
    tokenizer.save_pretrained(base)
    loops = []

    def run(*args: Any, **kwargs: Any) -> None:
        loops.append(args[4])
        raise Stop

    monkeypatch.setattr(training, "run", run)
    ctx = MethodContext(
        task=None,  # type: ignore[arg-type]  # SFT on the pairs asks nothing of the task
        pairs=[],
        base_model_dir=base,
        output_dir=tmp_path / "policy",
        seed=0,
        cache=Cache(tmp_path / "cache"),
        base_key="base",
        micro_batch_size=2,
    )
    with pytest.raises(Stop):
        train_sft(ctx, SFTConfig(epochs=1.0))
    assert [loop.micro_batch_size for loop in loops] == [2]


def test_out_of_memory_halves_the_micro_batch_and_retries(initial: Any, tokenizer: Any) -> None:
    """A pass over more than 2 examples 'runs out of memory': the step is redone in passes of
    2 (3 halved, rounded up), and training ends as it does with micro-batches of 2."""
    seen = []

    def tight(model: Any, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        seen.append(batch["input_ids"].shape[0])
        if batch["input_ids"].shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return per_example_loss(model, batch)

    squeezed, planned = fresh(initial), fresh(initial)
    with pytest.warns(UserWarning, match="out of memory at 3 examples per pass: retrying .* 2"):
        training.run(squeezed, EXAMPLES, collate_with(tokenizer), tight, CFG, progress=False)
    assert seen[:3] == [3, 2, 1] and set(seen[3:]) == {2, 1}, "halved once, then kept"
    train_per_example(planned, tokenizer, dataclasses.replace(CFG, micro_batch_size=2))
    assert same_weights(squeezed, planned)


def test_out_of_memory_is_raised_where_it_cannot_be_retried() -> None:
    for micro, n_processes in ((1, 1), (8, 2)):
        error = torch.OutOfMemoryError("CUDA out of memory")
        with pytest.raises(torch.OutOfMemoryError) as raised:
            training._smaller_micro_batch(error, micro, n_processes)
        assert raised.value.__notes__ == [
            f"out of memory at {micro} examples per pass: set a smaller micro-batch "
            "(pftbench run --micro-batch-size N, or LoopConfig.micro_batch_size)"
        ]


def test_inference_batches_are_halved_after_running_out_of_memory() -> None:
    from bench.train.modeling import map_batches

    sizes = []

    def square(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return [x * x for x in batch]

    with pytest.warns(UserWarning) as warned:
        assert map_batches(list(range(10)), 8, square) == [x * x for x in range(10)]
    assert [str(w.message) for w in warned] == [
        "out of memory at a batch of 8: continuing with 4",
        "out of memory at a batch of 4: continuing with 2",
    ]
    assert sizes == [8, 4, 2, 2, 2, 2, 2], "halved until it fits, then kept"

    def hopeless(batch: list[int]) -> list[int]:
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.warns(UserWarning), pytest.raises(torch.OutOfMemoryError):
        map_batches([1, 2], 2, hopeless)
