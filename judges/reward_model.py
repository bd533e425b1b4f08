"""The reward-model judge: a Hugging Face sequence classifier with one output (a Bradley-Terry RM,
as the paper trains on TL;DR) scores the policy's output and the reference for the same prompt.

The text scored is `template` filled with the task's prompt and the output (by default the two
concatenated, as the paper's RMs read query + response). The output WINS when its score exceeds
the reference's by more than `tolerance`, LOSES when it falls short by more, TIES otherwise;
`output_score` and `reference_score` are the raw RM scores, so `mean_reward` is the mean RM score.
An output the task cannot judge (`task.validity`) is INVALID and not scored.

Texts are scored in batches of `batch_size`; a text longer than `max_length` tokens keeps its end
(left truncation), where the response is. torch and transformers are imported on first use only.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from bench.config import StrictParams
from bench.evaluate.judging import Judgment, Replay, versus_reference
from bench.evaluate.verdicts import Verdict
from bench.registry import register_judge
from bench.report.results import ResultLine
from bench.run.hashing import short
from bench.tasks.base import Sample, Task

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


class RewardModelParams(StrictParams):
    path: str | None = None
    """The RM: a local directory saved with `save_pretrained` (or a hub id where the hub can be
    reached). Required: the default only lets the config be built empty."""
    template: str = "{prompt}{output}"
    """How the RM reads a (prompt, output) pair; placeholders {prompt} and {output}."""
    tolerance: float = Field(0.0, ge=0)
    """Score differences up to this are ties."""
    batch_size: int = Field(16, ge=1)
    """Texts scored per forward pass of the RM."""
    max_length: int = Field(1024, ge=8)
    """Tokens kept per text, from the end."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when available, else cpu."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """The RM's weights' dtype while scoring."""

    @field_validator("template")
    @classmethod
    def _template_has_both_placeholders(cls, template: str) -> str:
        for placeholder in ("{prompt}", "{output}"):
            if template.count(placeholder) != 1:
                raise ValueError(f"template must hold {placeholder} exactly once")
        return template


def rm_verdict(output_score: float, reference_score: float, tolerance: float) -> Verdict:
    """WIN when the output's RM score beats the reference's by more than `tolerance`, LOSS when
    it falls short by more, TIE otherwise."""
    difference = output_score - reference_score
    if abs(difference) <= tolerance:
        return Verdict.TIE
    return Verdict.WIN if difference > 0 else Verdict.LOSS


@functools.lru_cache(maxsize=8)
def _fingerprint(directory: str, signature: tuple) -> str:
    """SHA-256 over the config and weight files of a local model (memoised per size and mtime)."""
    digest = hashlib.sha256()
    for name, _, _ in signature:
        digest.update(name.encode())
        with open(Path(directory) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def model_fingerprint(path: str) -> str | None:
    """The content hash of a local model directory's config and weights; None for a hub id."""
    directory = Path(path)
    if not directory.is_dir():
        return None
    files = sorted(
        p for p in directory.iterdir() if p.name == "config.json" or p.suffix in WEIGHT_SUFFIXES
    )
    signature = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _fingerprint(str(directory.resolve()), signature)


class RewardModelJudge:
    version = 1
    worst_score = None
    """A reward model's scores are unbounded: invalid outputs stay out of the mean reward."""

    def __init__(self, params: RewardModelParams, task: Task) -> None:
        if params.path is None:
            raise ValueError("the reward_model judge needs `path`: the RM's directory or hub id")
        self.params = params
        self.task = task
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def id(self) -> str:
        fingerprint = model_fingerprint(self.params.path)  # type: ignore[arg-type]
        pin = f"@{short(fingerprint)}" if fingerprint else ""
        return f"reward_model:{Path(self.params.path).name}{pin}"  # type: ignore[arg-type]

    def judge(
        self, prompts: list[str], outputs: list[Sample], references: list[str]
    ) -> list[Judgment]:
        valid = self.task.validity(outputs)
        fill = self.params.template
        output_texts = [
            fill.replace("{prompt}", p, 1).replace("{output}", o.text, 1)
            for p, o, ok in zip(prompts, outputs, valid, strict=True)
            if ok
        ]
        reference_texts = [
            fill.replace("{prompt}", p, 1).replace("{output}", r, 1)
            for p, r in zip(prompts, references, strict=True)
        ]
        scores = iter(self.scores(output_texts))
        reference_scores = self.scores(reference_texts)
        judgments = []
        for is_valid, reference_score in zip(valid, reference_scores, strict=True):
            if not is_valid:
                judgments.append(Judgment(Verdict.INVALID, reference_score=reference_score))
                continue
            score = next(scores)
            verdict = rm_verdict(score, reference_score, self.params.tolerance)
            judgments.append(Judgment(verdict, score, reference_score))
        return judgments

    def scores(self, texts: list[str]) -> list[float]:
        """The RM's scalar score of each text, in batches."""
        if not texts:
            return []
        import torch

        model, tokenizer = self._load()
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.params.batch_size):
                batch = tokenizer(
                    texts[start : start + self.params.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.params.max_length,
                    return_tensors="pt",
                ).to(model.device)
                logits = model(**batch).logits  # [batch, 1]
                scores.extend(logits[:, 0].float().cpu().tolist())
        return scores

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            device = self.params.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            tokenizer = AutoTokenizer.from_pretrained(self.params.path)
            tokenizer.truncation_side = "left"  # keep the response, at the end
            tokenizer.padding_side = "right"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model = AutoModelForSequenceClassification.from_pretrained(
                self.params.path, dtype=getattr(torch, self.params.dtype)
            )
            if model.config.num_labels != 1:
                raise ValueError(
                    f"the reward_model judge needs a classifier with one output (a scalar "
                    f"reward); {self.params.path} has num_labels={model.config.num_labels}"
                )
            # The classifier reads the last non-pad token of each row: it must know the pad id.
            model.config.pad_token_id = tokenizer.pad_token_id
            self._model = model.to(device).eval()
            self._tokenizer = tokenizer
        return self._model, self._tokenizer


def replay_reward_model(
    params: RewardModelParams, line: ResultLine, task: Callable[[], Task]
) -> Replay:
    """The verdicts `line`'s RM scores give against its references' recorded RM scores.

    The references' scores are taken as recorded: recomputing them would mean loading the RM.
    """
    if line.rewards is None or line.reference_rewards is None:
        return Replay(
            missing="it lacks rewards or reference_rewards, the RM scores its verdicts follow from"
        )
    verdicts = []
    for score, reference in zip(line.rewards, line.reference_rewards, strict=True):
        verdict = (
            Verdict.INVALID
            if score is None or reference is None
            else rm_verdict(score, reference, params.tolerance)
        )
        verdicts.append((verdict, versus_reference(score, reference)))
    return Replay(verdicts)


@register_judge("reward_model", config=RewardModelParams, replay=replay_reward_model)
def make_reward_model_judge(params: RewardModelParams, task: Task) -> RewardModelJudge:
    return RewardModelJudge(params, task)
