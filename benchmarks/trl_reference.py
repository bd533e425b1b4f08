"""TRL 1.16 as the reference for the RL family's pieces: the same tensors through both.

    .trl-venv/bin/python benchmarks/trl_reference.py

Seeded random tensors (P prompts x K samples, ragged completion lengths, one group of equal
rewards; token log-probs now, when sampled and under the reference) go through TRL's own
GRPOTrainer and RLOOTrainer and through the project's functions (bench/train/policy_gradient.py,
methods/grpo.py, methods/rloo.py), and one table compares them. TRL 1.16 has no PPO trainer, so
PPO is not compared.

How TRL is made to compute on exactly these tensors: a real trainer is built (on a tiny GPT-2
saved to a temporary folder, with a word-level tokenizer written here; nothing from the hub;
bf16 and activation checkpointing off, TRL's defaults being on), and two of its methods are
replaced on the instance: `_generate`, which returns completions of the chosen lengths (so
TRL's own padding makes the completion mask), and `_get_per_token_logps_and_entropies`, which
returns the given log-probs (the reference's when called with the reference model, the
sampling-time ones under no_grad, a leaf tensor needing grad otherwise). The rewards arrive
through TRL's reward-function API (a dataset column returned as is). Then TRL's own
`_generate_and_score_completions` computes the advantages (and, for RLOO, the KL-shaped
rewards), and its `compute_loss` the loss, whose gradient with respect to the log-prob leaf is
compared too. The loss is called with the advantages the project computes, so each loss row
checks the loss alone.

TRL runs in its own venv (.ci/run makes .trl-venv: the CPU torch, trl 1.16, this package), as
TRL pins its own transformers. Exit 1 when a quantity whose definitions agree differs by more
than `TOLERANCE`, or when a difference listed as deliberate does not show on these tensors
(the tensors would then not exercise it). tests/test_trl_reference.py runs this script.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import trl

from bench.train import policy_gradient as pg
from bench.train.modeling import build_gpt2, quiet_transformers
from methods.grpo import grpo_advantages, grpo_loss
from methods.rloo import rloo_loss, rloo_rewards

TOLERANCE = 1e-6
"""Largest |difference| that counts as a match: the log-probs are float64, the rewards float32
(TRL scores them in float32)."""
N_PROMPTS, SAMPLES, MAX_LEN = 4, 4, 8
CLIP_EPS = 0.2
GRPO_BETA, RLOO_BETA = 0.04, 0.05
"""The GRPO paper's beta; TRL's RLOOConfig default."""
EQUAL_GROUP = 1
"""The prompt whose K rewards are all equal (its group's std is 0)."""


@dataclass(frozen=True)
class Tensors:
    """One batch, prompt-major: sequence b = prompt b // K, sample b % K."""

    rewards: torch.Tensor  # [P, K] float32
    lengths: torch.Tensor  # [B] completion lengths, 1..T, the longest exactly T
    mask: torch.Tensor  # [B, T] 1 on a completion's tokens
    logps: torch.Tensor  # [B, T] float64: the policy now
    old_logps: torch.Tensor  # [B, T]: the policy that sampled
    ref_logps: torch.Tensor  # [B, T]: the reference (SFT) policy

    @property
    def n_sequences(self) -> int:
        return self.mask.shape[0]


def make_tensors(seed: int = 0) -> Tensors:
    """Random but seeded. Padding positions hold random values too, so a computation that
    forgets the mask shows. Rewards: normal, one group all equal, one group 0/1."""
    g = torch.Generator().manual_seed(seed)
    n = N_PROMPTS * SAMPLES
    lengths = torch.randint(1, MAX_LEN + 1, (n,), generator=g)
    lengths[0] = MAX_LEN
    mask = (torch.arange(MAX_LEN)[None, :] < lengths[:, None]).long()
    logps = -3.0 * torch.rand(n, MAX_LEN, generator=g, dtype=torch.float64)
    # Sampling-time log-probs off by ~0.25: ratios both inside and outside 1 +- 0.2.
    old_logps = logps + 0.25 * torch.randn(n, MAX_LEN, generator=g, dtype=torch.float64)
    ref_logps = logps + 0.5 * torch.randn(n, MAX_LEN, generator=g, dtype=torch.float64)
    rewards = torch.randn(N_PROMPTS, SAMPLES, generator=g)
    rewards[EQUAL_GROUP] = 0.5
    rewards[2] = torch.tensor([0.0, 1.0, 1.0, 0.0])
    return Tensors(rewards, lengths, mask, logps, old_logps, ref_logps)


# -- TRL's side ------------------------------------------------------------------------------
def write_tiny_checkpoint(out: Path) -> Path:
    """A tiny GPT-2 (the project's `build_gpt2`) and a word-level tokenizer, saved to `out`:
    what the trainers load. Their outputs never matter, only that the trainers build."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i + 2 for i in range(30)}}
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, pad_token="<pad>", eos_token="<eos>"
    )
    tokenizer.save_pretrained(out)
    model = build_gpt2(
        vocab_size=len(vocab),
        n_positions=4 * MAX_LEN,
        n_embd=16,
        n_layer=1,
        n_head=2,
        initializer_range=0.02,
        eos_token_id=1,
        pad_token_id=0,
        seed=0,
    )
    model.save_pretrained(out)
    return out


def given_reward(completions: list, reward: list[float], **kwargs: Any) -> list[float]:
    """A TRL reward function: the dataset's `reward` column, as is."""
    return [float(r) for r in reward]


@dataclass
class TRLResult:
    advantages: torch.Tensor  # [B] as TRL computed them
    scored: dict[str, Any]  # TRL's generation batch
    loss: torch.Tensor | None = None
    grad: torch.Tensor | None = None  # d loss / d logps, [B, T]


def run_trl(
    kind: str,
    checkpoint: Path,
    t: Tensors,
    advantages: torch.Tensor | None = None,
    **options: Any,
) -> TRLResult:
    """Build TRL's `kind` ("grpo" or "rloo") trainer with `options` on top of the settings
    below, score `t` with it and, when `advantages` [B] is given, compute its loss on them."""
    from datasets import Dataset

    config_class, trainer_class = {
        "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
        "rloo": (trl.RLOOConfig, trl.RLOOTrainer),
    }[kind]
    n = t.n_sequences
    settings: dict[str, Any] = {
        "output_dir": str(checkpoint / f"out-{kind}"),
        "per_device_train_batch_size": n,
        "num_generations": SAMPLES,
        "max_completion_length": MAX_LEN,
        "bf16": False,  # TRL's default is True
        "activation_checkpointing": False,  # TRL's gradient_checkpointing default is True
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
    }
    if kind == "grpo":
        # GRPOTrainer reuses the current log-probs as the old ones (ratio 1) when it updates
        # once per generation; two iterations per generation make it ask for them.
        settings["num_iterations"] = 2
    prompts = [f"w{b // SAMPLES}" for b in range(n)]
    rewards = t.rewards.flatten().tolist()
    dataset = Dataset.from_dict({"prompt": prompts, "reward": rewards})
    tokenizer = _load_tokenizer(checkpoint)
    trainer = trainer_class(
        model=str(checkpoint),
        reward_funcs=given_reward,
        args=config_class(**settings | options),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    current = t.logps.clone().requires_grad_(True)

    def given_logps(
        model: Any, *args: Any, compute_entropy: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, None]:
        if model is trainer.ref_model:
            logps = t.ref_logps
        elif torch.is_grad_enabled():
            logps = current
        else:
            logps = t.old_logps
        return logps, (torch.zeros_like(logps) if compute_entropy else None), None

    def given_completions(prompts: list) -> tuple:
        prompt_ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        completion_ids = [[2] * int(length) for length in t.lengths]
        texts = [tokenizer.decode(ids) for ids in completion_ids]
        if kind == "rloo":
            return prompt_ids, completion_ids, texts
        # (prompt ids, completion ids, tool mask, texts, sampling log-probs, extra fields,
        # images, tool images)
        return prompt_ids, completion_ids, None, texts, None, {}, None, None

    trainer._generate = given_completions
    trainer._get_per_token_logps_and_entropies = given_logps
    trainer.model.train()
    scored = trainer._generate_and_score_completions(
        [{"prompt": p, "reward": r} for p, r in zip(prompts, rewards, strict=True)]
    )
    if not torch.equal(scored["completion_mask"], t.mask):
        raise AssertionError("TRL padded the completions into another mask than ours")
    result = TRLResult(advantages=scored["advantages"], scored=scored)
    if advantages is not None:
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; one micro-batch
        result.loss = trainer.compute_loss(trainer.model, scored | {"advantages": advantages})
        result.loss.backward()
        result.grad = current.grad
    return result


def _load_tokenizer(checkpoint: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint)


# -- the project's side ----------------------------------------------------------------------
def project_loss(t: Tensors, loss: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
    """(value, d value / d logps) of `loss(logps)`."""
    current = t.logps.clone().requires_grad_(True)
    value = loss(current)
    value.backward()
    return value.detach(), current.grad


# -- the table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    quantity: str
    trl_option: str
    project: str
    value_diff: float
    grad_diff: float | None = None
    deliberate: str | None = None
    """Why the definitions differ on purpose; None where they agree."""

    @property
    def diff(self) -> float:
        return max(self.value_diff, self.grad_diff or 0.0)

    @property
    def verdict(self) -> str:
        if self.deliberate is None:
            return "match" if self.diff <= TOLERANCE else "MISMATCH"
        if self.diff > TOLERANCE:
            return f"DIFFERS (deliberate: {self.deliberate})"
        return f"NOT EXERCISED (deliberate: {self.deliberate})"

    @property
    def ok(self) -> bool:
        return self.verdict == "match" or self.verdict.startswith("DIFFERS")


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def loss_row(
    quantity: str,
    trl_option: str,
    project: str,
    trl_result: TRLResult,
    project_result: tuple,
    deliberate: str | None = None,
) -> Row:
    value, grad = project_result
    return Row(
        quantity,
        trl_option,
        project,
        max_abs(trl_result.loss.detach(), value),
        max_abs(trl_result.grad, grad),
        deliberate,
    )


def comparisons(checkpoint: Path, t: Tensors) -> list[Row]:
    rows: list[Row] = []
    grouped = t.rewards

    def grpo(advantages: torch.Tensor | None = None, **options: Any) -> TRLResult:
        return run_trl("grpo", checkpoint, t, advantages, **options)

    def rloo(
        advantages: torch.Tensor | None = None, tensors: Tensors = t, **options: Any
    ) -> TRLResult:
        return run_trl("rloo", checkpoint, tensors, advantages, **options)

    # Advantages.
    normalized = pg.group_normalized_advantages(grouped).flatten()
    rows.append(
        Row(
            "GRPO advantages",
            'GRPOTrainer scale_rewards="group" (default)',
            "group_normalized_advantages",
            max_abs(grpo(scale_rewards="group").advantages, normalized),
        )
    )
    rows.append(
        Row(
            "GRPO advantages",
            'GRPOTrainer scale_rewards="batch"',
            "group_normalized_advantages",
            max_abs(grpo(scale_rewards="batch").advantages, normalized),
            deliberate="TRL divides by the whole batch's std (PPO-Lite); no counterpart",
        )
    )
    leave_one_out = pg.rloo_advantages(grouped).flatten()
    rows.append(
        Row(
            "RLOO advantages",
            "RLOOTrainer beta=0",
            "rloo_advantages",
            max_abs(rloo(beta=0.0).advantages, leave_one_out),
        )
    )
    rows.append(
        Row(
            "RLOO advantages",
            "RLOOTrainer beta=0, normalize_advantages=True",
            "rloo_advantages",
            max_abs(rloo(beta=0.0, normalize_advantages=True).advantages, leave_one_out),
            deliberate="TRL can whiten the advantages over the batch; off by default, no "
            "counterpart",
        )
    )

    # The k3 KL alone: zero advantages leave only beta * KL in GRPOTrainer's per-token loss.
    zero = torch.zeros(t.n_sequences, dtype=torch.float64)
    k3_token = project_loss(t, lambda lp: pg.aggregate(pg.k3_kl(lp, t.ref_logps), t.mask, "token"))
    kl_options = {"beta": 1.0, "loss_type": "bnpo"}
    rows.append(
        loss_row(
            "k3 KL, token mean",
            "GRPOTrainer beta=1, A=0, use_bias_correction_kl=False",
            'aggregate(k3_kl, "token")',
            grpo(zero, use_bias_correction_kl=False, **kl_options),
            k3_token,
        )
    )
    rows.append(
        loss_row(
            "k3 KL, token mean",
            "GRPOTrainer beta=1, A=0, use_bias_correction_kl=True (default)",
            'aggregate(k3_kl, "token")',
            grpo(zero, use_bias_correction_kl=True, **kl_options),
            k3_token,
            deliberate="TRL weights the KL by the ratio pi/pi_old (DeepSeek-V3.2)",
        )
    )

    # The clipped surrogate and its aggregation (beta = 0: the surrogate alone).
    def surrogate(how: str) -> tuple:
        return project_loss(
            t,
            lambda lp: pg.aggregate(
                pg.clipped_surrogate(lp, t.old_logps, normalized[:, None], CLIP_EPS)[0], t.mask, how
            ),
        )

    sequence, token = surrogate("sequence"), surrogate("token")
    for loss_type, project, reference, deliberate in [
        ("grpo", '"sequence"', sequence, None),
        ("bnpo", '"token"', token, None),
        ("dapo", '"token"', token, None),
        ("dr_grpo", '"token"', token, "TRL divides by B * max_completion_length; no counterpart"),
    ]:
        rows.append(
            loss_row(
                "clipped surrogate",
                f'GRPOTrainer loss_type="{loss_type}", beta=0',
                f"aggregate(clipped_surrogate, {project})",
                grpo(normalized, loss_type=loss_type, beta=0.0, epsilon=CLIP_EPS),
                reference,
                deliberate,
            )
        )
    rows.append(
        loss_row(
            "clipped surrogate",
            'GRPOTrainer loss_type="grpo", beta=0, epsilon_high=0.28',
            'aggregate(clipped_surrogate, "sequence")',
            grpo(normalized, loss_type="grpo", beta=0.0, epsilon=CLIP_EPS, epsilon_high=0.28),
            sequence,
            deliberate="TRL's asymmetric clip (DAPO's clip-higher); the project clips "
            "symmetrically",
        )
    )
    rows.append(
        loss_row(
            "clipped surrogate",
            'GRPOTrainer loss_type="grpo", beta=0, importance_sampling_level="sequence"',
            'aggregate(clipped_surrogate, "sequence")',
            grpo(
                normalized,
                loss_type="grpo",
                beta=0.0,
                epsilon=CLIP_EPS,
                importance_sampling_level="sequence",
            ),
            sequence,
            deliberate="GSPO's ratio, exp of the mean token log-ratio; the project's is per token",
        )
    )
    return rows + method_rows(grpo, rloo, t, normalized)


def method_rows(grpo: Callable, rloo: Callable, t: Tensors, normalized: torch.Tensor) -> list[Row]:
    """The methods' own functions (methods/grpo.py, methods/rloo.py) against the trainers."""
    rows = [
        Row(
            "GRPO advantages, centred only",
            'GRPOTrainer scale_rewards="none"',
            "grpo_advantages(scale=False)",
            max_abs(grpo(scale_rewards="none").advantages, grpo_advantages(t.rewards, False)),
        )
    ]

    def project_grpo(aggregation: str) -> tuple:
        return project_loss(
            t,
            lambda lp: grpo_loss(
                lp,
                t.old_logps,
                t.ref_logps,
                normalized,
                t.mask,
                clip_eps=CLIP_EPS,
                beta=GRPO_BETA,
                aggregation=aggregation,
            ),
        )

    sequence, token = project_grpo("sequence"), project_grpo("token")
    for loss_type, correction, aggregation, reference, deliberate in [
        ("grpo", False, "sequence", sequence, None),
        ("bnpo", False, "token", token, None),
        ("dapo", False, "token", token, None),
        ("dapo", True, "token", token, "TRL weights the KL by the ratio pi/pi_old"),
    ]:
        default = " (TRL's defaults but beta)" if correction and loss_type == "dapo" else ""
        rows.append(
            loss_row(
                "GRPO loss",
                f'GRPOTrainer loss_type="{loss_type}", beta={GRPO_BETA}, '
                f"use_bias_correction_kl={correction}{default}",
                f'grpo_loss(aggregation="{aggregation}")',
                grpo(
                    normalized,
                    loss_type=loss_type,
                    beta=GRPO_BETA,
                    epsilon=CLIP_EPS,
                    use_bias_correction_kl=correction,
                ),
                reference,
                deliberate,
            )
        )

    # RLOO: the KL as a k1 penalty on the sequence reward, then leave-one-out advantages.
    def sequence_sum(x: torch.Tensor) -> torch.Tensor:
        return (x * t.mask).sum(-1).view(t.rewards.shape)

    penalised = rloo_rewards(
        t.rewards, sequence_sum(t.old_logps), sequence_sum(t.ref_logps), RLOO_BETA
    )
    advantages = pg.rloo_advantages(penalised).flatten()
    rows.append(
        Row(
            "RLOO advantages, KL in the reward",
            f"RLOOTrainer beta={RLOO_BETA} (default)",
            "rloo_advantages(rloo_rewards(...))",
            max_abs(rloo(beta=RLOO_BETA).advantages, advantages),
        )
    )
    on_policy = replace(t, old_logps=t.logps)
    for name, tensors in [("RLOO loss", t), ("RLOO loss, on-policy (old = now)", on_policy)]:
        rows.append(
            loss_row(
                name,
                f"RLOOTrainer beta={RLOO_BETA}, epsilon={CLIP_EPS}",
                "rloo_loss",
                rloo(advantages, tensors, beta=RLOO_BETA, epsilon=CLIP_EPS),
                project_loss(
                    tensors,
                    lambda lp, tensors=tensors: rloo_loss(
                        lp, tensors.old_logps, advantages, tensors.mask, clip_eps=CLIP_EPS
                    ),
                ),
            )
        )
    return rows


def print_table(rows: list[Row]) -> None:
    header = ("quantity", "TRL 1.16 option", "project function/option", "max |diff| value",
              "max |diff| grad", "verdict")  # fmt: skip
    lines = [header] + [
        (
            r.quantity,
            r.trl_option,
            r.project,
            f"{r.value_diff:.1e}",
            "-" if r.grad_diff is None else f"{r.grad_diff:.1e}",
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main() -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's renames in TRL
    quiet_transformers()
    torch.manual_seed(0)
    t = make_tensors()
    with tempfile.TemporaryDirectory() as tmp:
        rows = comparisons(write_tiny_checkpoint(Path(tmp)), t)
    print(f"TRL {trl.__version__}, torch {torch.__version__}; tolerance {TOLERANCE:g}")
    print_table(rows)
    bad = [r for r in rows if not r.ok]
    agree = sum(r.deliberate is None for r in rows)
    print(
        f"{len(rows)} rows: {agree} with agreeing definitions, {len(rows) - agree} deliberate "
        f"differences; {len(bad)} failed"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
