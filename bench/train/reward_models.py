"""Reward models (verifiers) trained on the preference pairs, with their capacity as a dial.

The paper's H6 (generation-verification gap): a verifier that is a simpler function than the
optimal policy needs less data to learn, and RL against it searches only over policies optimal
for simple rewards. The kinds here span that dial:

- `global`: a scalar-head transformers classifier initialised from the SFT model and trained
  with the Bradley-Terry loss, the paper's recipe. `capacity: full` trains all weights,
  `capacity: head` freezes the backbone and trains the scalar head only. `readout: logp` reads
  the scalar out of the SFT model's own token log-probs instead of its last hidden state,
  starting at r = log pi(y|x) (`bench.train.logp_readout`): the learned verifier that gets past
  chance on the micro tier.
- `local`: r(x, y) = log pi(y | x), the summed token log-probs of a policy-class model trained
  with the Bradley-Terry loss and no reference term (the paper's local RM).
- `dpo`: the implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) of a trained DPO policy
  (`save_implicit_reward` declares one; `bench.train.preference.fit_verifier` trains the policy).
- `oracle_features`: an ORACLE, not a learned verifier: a linear Bradley-Terry model over the
  terms the gold reward itself is made of (`Task.features`), so its held-out accuracy sits at
  the Bayes ceiling by construction. It is the ceiling row a learned verifier is read against,
  never the dial; it is the only code that unwraps a method's view of its task
  (`bench.tasks.base.oracle_task`), and the cell is marked an oracle for it.

Every kind is trained by the same Bradley-Terry loss, -log sigmoid(r(x, y_w) - r(x, y_l)), and
evaluated the same way on held-out pairs (`pair_metrics`): accuracy and mean BT likelihood, the
paper's H5 comparison. A trained model is saved to a directory (`save`) and loaded back by
`load_reward_model`; a method hands its verifier to the runner with
`MethodContext.save_verifier` (`bench.method_api`), so that the runner evaluates it on held-out
pairs.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from bench.config import StrictParams, TaskNeed
from bench.tasks.base import MethodTask, PreferencePair, Sample, Task, oracle_task

if TYPE_CHECKING:
    import torch

INVALID_SCORE = -1e4
"""Score of an output the oracle verifier cannot read (no features): below any real one."""

ORACLE_FEATURES = "oracle_features"
"""The oracle verifier's kind, and the name its use is recorded under."""

SPEC_FILE = "reward_model.json"


class RewardModelSpec(StrictParams):
    kind: Literal["global", "local", "dpo", "oracle_features"] = "global"
    """global: a scalar-head classifier; local: summed log-probs; dpo: implicit; oracle_features:
    the ORACLE, a linear model on the gold reward's own features (a ceiling, not a verifier)."""
    capacity: Literal["full", "head"] = "full"
    """For `global`: train all weights, or only the scalar head."""
    lr: float = Field(1e-3, gt=0)
    """Peak AdamW learning rate (global full/head, local; dpo uses its own DPO config)."""
    epochs: float = Field(2.0, gt=0)
    """Passes over the pairs (global full/head, local; dpo: of its DPO policy)."""
    batch_size: int = Field(32, ge=1)
    """Pairs per optimiser step (global full/head, local; dpo: of its DPO policy)."""
    readout: Literal["last_hidden", "logp"] = "last_hidden"
    """For `global` full/head: where the scalar is read. `last_hidden`: a linear head on the last
    token's hidden state (the paper's classifier). `logp`: a per-token readout of the model's own
    log-probs, r = sum_t [a log pi(y_t | ...) + b_word or b_eos (+ u . h_t)], initialised at
    log pi(y | x) (`bench.train.logp_readout`); `capacity: head` freezes the LM and trains the
    readout, `full` trains both."""
    residual: bool = False
    """For `readout: logp`: add the learned linear correction u . h_t from the hidden state."""
    l2: float = Field(1e-3, ge=0)
    """For `oracle_features`: L2 penalty of the linear model's weights."""
    beta: float = Field(0.1, gt=0)
    """For `dpo`: the beta of the implicit reward (and of the DPO policy it comes from)."""

    @field_validator("capacity", mode="before")
    @classmethod
    def _linear_is_the_oracle(cls, capacity: Any) -> Any:
        if capacity == "linear":
            raise ValueError(
                "'linear' read the gold reward's own features: it is the oracle now, "
                "written `reward_model: {kind: oracle_features}`"
            )
        return capacity

    @model_validator(mode="after")
    def _readout_needs_a_global_model(self) -> RewardModelSpec:
        # A readout is read out of a model: a `local`, `dpo` or oracle verifier has none to set.
        if self.readout == "logp" and self.kind != "global":
            raise ValueError("readout: logp is for kind: global with capacity full or head")
        if self.residual and self.readout != "logp":
            raise ValueError("residual: true is for readout: logp")
        return self

    @property
    def label(self) -> str:
        if self.kind == ORACLE_FEATURES:
            return "oracle-features"
        if self.kind != "global":
            return self.kind
        if self.readout == "logp":
            return f"global-logp-{self.capacity}"
        return f"global-{self.capacity}"

    @property
    def is_oracle(self) -> bool:
        return self.kind == ORACLE_FEATURES

    def task_needs(self) -> list[TaskNeed]:
        # The oracle is a regression on the features the task declares.
        if self.kind == ORACLE_FEATURES:
            return [(("kind",), "has_features")]
        return []


LEARNED_VERIFIER = RewardModelSpec(
    kind="global", capacity="head", readout="logp", lr=0.03, epochs=8
)
"""The online methods' default verifier: the log-prob readout of the frozen SFT model, tuned on
the valid split of the micro tier (issue 11; benchmarks/verifier_recipes.md). A default never
reads the gold reward."""


class RewardModel(ABC):
    """Scores (prompt, output) pairs; higher is better."""

    @abstractmethod
    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]: ...

    @abstractmethod
    def save(self, out_dir: Path) -> None: ...


def bradley_terry_loss(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> torch.Tensor:
    """Per-pair -log sigmoid(r_w - r_l): [B] from two [B] reward tensors."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def pair_metrics(model: RewardModel, pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """Held-out accuracy (a tie counts half) and mean BT likelihood sigmoid(r_w - r_l)."""
    prompts = [p.prompt for p in pairs]
    chosen = model.score(prompts, [p.chosen for p in pairs])
    rejected = model.score(prompts, [p.rejected for p in pairs])
    accuracy = sum(
        1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected, strict=True)
    )
    likelihood = sum(_sigmoid(c - r) for c, r in zip(chosen, rejected, strict=True))
    return {
        "accuracy": accuracy / len(pairs),
        "bt_likelihood": likelihood / len(pairs),
        "n": len(pairs),
    }


def score_samples(
    model: RewardModel, prompts: Sequence[str], samples: Sequence[Sequence[Sample]]
) -> list[list[float]]:
    """The verifier's score of every sample, per prompt; an unfinished sample scores lowest
    (INVALID_SCORE). The online methods rank their samples, and best-of-N its candidates, so."""
    flat_prompts = [p for p, group in zip(prompts, samples, strict=True) for _ in group]
    flat_samples = [s for group in samples for s in group]
    flat_scores = model.score(flat_prompts, [s.text for s in flat_samples])
    flat_scores = [
        score if s.finished else INVALID_SCORE
        for score, s in zip(flat_scores, flat_samples, strict=True)
    ]
    out, start = [], 0
    for group in samples:
        out.append(flat_scores[start : start + len(group)])
        start += len(group)
    return out


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))


# -- the oracle ---------------------------------------------------------------------------------
class OracleFeaturesRewardModel(RewardModel):
    """The ORACLE verifier: r(x, y) = w . features(x, y) over the gold reward's own terms, a
    Bradley-Terry logistic regression without intercept (the intercept cancels in r_w - r_l),
    fitted by Newton's method with an L2 penalty. `task` is the unwrapped task
    (`bench.tasks.base.oracle_task`)."""

    def __init__(self, task: Task, weights: list[float]) -> None:
        self.task = task
        self.weights = weights

    @classmethod
    def fit(
        cls, task: Task, pairs: Sequence[PreferencePair], l2: float
    ) -> OracleFeaturesRewardModel:
        import numpy as np

        rows = []
        for pair in pairs:
            chosen, rejected = (
                task.features(pair.prompt, pair.chosen),
                task.features(pair.prompt, pair.rejected),
            )
            if chosen is not None and rejected is not None:
                rows.append(np.array(chosen) - np.array(rejected))
        if not rows:
            raise ValueError(
                "no pair with two readable outputs: the oracle verifier has nothing to fit"
            )
        diffs = np.stack(rows)
        weights = np.zeros(diffs.shape[1])
        for _ in range(50):
            p = 1.0 / (1.0 + np.exp(-diffs @ weights))
            gradient = diffs.T @ (1.0 - p) - l2 * len(rows) * weights
            hessian = -(diffs.T * (p * (1.0 - p))) @ diffs - l2 * len(rows) * np.eye(len(weights))
            step = np.linalg.solve(hessian, gradient)
            weights = weights - step
            if np.abs(step).max() < 1e-10:
                break
        return cls(task, [float(w) for w in weights])

    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        scores = []
        for prompt, output in zip(prompts, outputs, strict=True):
            features = self.task.features(prompt, output)
            scores.append(
                INVALID_SCORE
                if features is None
                else sum(w * f for w, f in zip(self.weights, features, strict=True))
            )
        return scores

    def save(self, out_dir: Path) -> None:
        _write_spec(out_dir, {"kind": ORACLE_FEATURES, "weights": self.weights})


# -- transformer scorers ------------------------------------------------------------------------
class ClassifierRewardModel(RewardModel):
    """A sequence classifier's scalar at the last token of prompt + output + EOS."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 256) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return _batched_scores(
            self.model, self.tokenizer, prompts, outputs, self.batch_size, _classifier_rewards
        )

    def save(self, out_dir: Path) -> None:
        self.model.save_pretrained(out_dir / "model")
        self.tokenizer.save_pretrained(out_dir / "model")
        _write_spec(out_dir, {"kind": "classifier"})


class LogProbReadoutRewardModel(RewardModel):
    """A `LogProbReadout` (`bench.train.logp_readout`): a readout of the LM's token log-probs."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 256) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return _batched_scores(
            self.model, self.tokenizer, prompts, outputs, self.batch_size, _readout_rewards
        )

    def save(self, out_dir: Path) -> None:
        self.model.lm.save_pretrained(out_dir / "model")
        self.tokenizer.save_pretrained(out_dir / "model")
        _write_spec(out_dir, {"kind": "logp_readout", "readout": self.model.readout_state()})


class LogProbRewardModel(RewardModel):
    """r = beta * (log pi(y|x) - log pi_ref(y|x)); without a reference, r = log pi(y|x) (local)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        reference: Any | None = None,
        beta: float = 1.0,
        batch_size: int = 256,
    ) -> None:
        self.model, self.tokenizer, self.reference, self.beta = model, tokenizer, reference, beta
        self.batch_size = batch_size

    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        from bench.train.modeling import sequence_logps

        def rewards(_model: Any, batch: dict) -> torch.Tensor:
            logps = sequence_logps(self.model, batch)
            if self.reference is not None:
                logps = logps - sequence_logps(self.reference, batch)
            return self.beta * logps

        return _batched_scores(
            self.model, self.tokenizer, prompts, outputs, self.batch_size, rewards
        )

    def save(self, out_dir: Path) -> None:
        """Save a local RM (no reference); `save_implicit_reward` declares an implicit one."""
        if self.reference is not None:
            raise ValueError("save an implicit reward with save_implicit_reward(policy, reference)")
        self.model.save_pretrained(out_dir / "model")
        self.tokenizer.save_pretrained(out_dir / "model")
        _write_spec(
            out_dir, {"kind": "logprob", "beta": self.beta, "model": "model", "reference": None}
        )


def save_implicit_reward(rm_dir: Path, policy: Path, reference: Path, beta: float) -> None:
    """Declare beta * (log pi - log pi_ref) of the policy in `policy` as a reward model, without
    copying either model. Both are recorded by their paths relative to `rm_dir`, so the
    declaration survives the cache entry's atomic rename and a move of the whole cache."""
    import os

    rm_dir.mkdir(parents=True, exist_ok=True)
    _write_spec(
        rm_dir,
        {
            "kind": "logprob",
            "beta": beta,
            "model": os.path.relpath(policy, rm_dir),
            "reference": os.path.relpath(reference, rm_dir),
        },
    )


def _classifier_rewards(model: Any, batch: dict) -> torch.Tensor:
    return model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).logits.squeeze(-1)


def _readout_rewards(model: Any, batch: dict) -> torch.Tensor:
    return model(batch)


def _batched_scores(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    outputs: Sequence[str],
    batch_size: int,
    rewards: Any,
) -> list[float]:
    import torch

    from bench.train.modeling import encode_completions, map_batches

    def score(rows: Sequence[tuple[str, str]]) -> list[float]:
        batch = encode_completions(tokenizer, [r[0] for r in rows], [r[1] for r in rows])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.inference_mode():
            return rewards(model, batch).float().tolist()

    was_training = model.training
    model.eval()
    try:
        return map_batches(list(zip(prompts, outputs, strict=True)), batch_size, score)
    finally:
        model.train(was_training)


def train_reward_model(
    spec: RewardModelSpec,
    task: Task,
    pairs: Sequence[PreferencePair],
    base_model_dir: Path,
    seed: int,
    *,
    scratch_dir: Path | None = None,
    progress: bool = True,
    micro_batch_size: int | None = None,
) -> tuple[RewardModel, dict[str, float]]:
    """Fit a `global` or `local` reward model on `pairs`, or the oracle (a `dpo` one comes from
    a DPO policy: see `ImplicitRewardModel`). Returns the model and its training figures.
    `task` may be a method's view of its task (`MethodTask`): the oracle unwraps it."""
    if spec.kind == ORACLE_FEATURES:
        model = OracleFeaturesRewardModel.fit(oracle_task(task, ORACLE_FEATURES), pairs, spec.l2)
        return model, {"weights": model.weights}
    if spec.kind == "dpo":
        raise ValueError(
            "a dpo reward model is the implicit reward of a DPO policy: train the policy first"
        )
    import torch

    from bench.train import training
    from bench.train.modeling import encode_pairs, load_causal_lm, load_tokenizer, sequence_logps

    tokenizer = load_tokenizer(base_model_dir)
    if spec.kind == "global" and spec.readout == "logp":
        from bench.train.logp_readout import LogProbReadout

        torch.manual_seed(seed)
        model = LogProbReadout(
            load_causal_lm(base_model_dir),
            residual=spec.residual,
            train_lm=spec.capacity == "full",
        )
        rewards = _readout_rewards
        result: RewardModel = LogProbReadoutRewardModel(model, tokenizer)
    elif spec.kind == "global":
        from transformers import AutoModelForSequenceClassification

        from bench.train.modeling import device, quiet_transformers

        quiet_transformers()
        torch.manual_seed(seed)  # the scalar head's initialisation
        model = AutoModelForSequenceClassification.from_pretrained(base_model_dir, num_labels=1).to(
            device()
        )
        model.config.pad_token_id = tokenizer.pad_token_id
        if spec.capacity == "head":
            for name, parameter in model.named_parameters():
                parameter.requires_grad = name.startswith("score")
        rewards = _classifier_rewards
        result = ClassifierRewardModel(model, tokenizer)
    else:
        model = load_causal_lm(base_model_dir)
        rewards = sequence_logps
        result = LogProbRewardModel(model, tokenizer)

    def loss_fn(m: Any, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        r = rewards(m, batch) if spec.kind == "global" else sequence_logps(m, batch)
        n = r.shape[0] // 2
        losses = bradley_terry_loss(r[:n], r[n:])
        return losses.mean(), {"accuracy": (r[:n] > r[n:]).float().mean().item()}

    loop = training.LoopConfig(
        lr=spec.lr,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        micro_batch_size=micro_batch_size,
        warmup_ratio=0.1,
        seed=seed,
    )
    report = training.run(
        model,
        list(pairs),
        lambda rows: encode_pairs(tokenizer, rows),
        loss_fn,
        loop,
        scratch_dir=scratch_dir,
        desc=f"rm {spec.label}",
        progress=progress,
    )
    return result, report.summary()


def _write_spec(out_dir: Path, spec: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPEC_FILE).write_text(json.dumps(spec, indent=1))


def load_reward_model(rm_dir: Path, task: Task | MethodTask) -> RewardModel:
    """A reward model saved by `RewardModel.save`; `task` may be a method's view of its task,
    which the oracle unwraps."""
    spec = json.loads((rm_dir / SPEC_FILE).read_text())
    if spec["kind"] == ORACLE_FEATURES:
        return OracleFeaturesRewardModel(oracle_task(task, ORACLE_FEATURES), spec["weights"])
    from bench.train.modeling import device, load_causal_lm, load_tokenizer, quiet_transformers

    if spec["kind"] == "classifier":
        tokenizer = load_tokenizer(rm_dir / "model")
        from transformers import AutoModelForSequenceClassification

        quiet_transformers()
        model = (
            AutoModelForSequenceClassification.from_pretrained(rm_dir / "model").to(device()).eval()
        )
        return ClassifierRewardModel(model, tokenizer)
    if spec["kind"] == "logp_readout":
        from bench.train.logp_readout import LogProbReadout

        readout = LogProbReadout(
            load_causal_lm(rm_dir / "model"),
            residual=spec["readout"]["residual"] is not None,
            train_lm=False,
        )
        readout.load_readout_state(spec["readout"])
        return LogProbReadoutRewardModel(
            readout.to(device()).eval(), load_tokenizer(rm_dir / "model")
        )
    model_dir = rm_dir / spec["model"]
    reference = load_causal_lm(rm_dir / spec["reference"]).eval() if spec["reference"] else None
    return LogProbRewardModel(
        load_causal_lm(model_dir).eval(), load_tokenizer(model_dir), reference, spec["beta"]
    )
