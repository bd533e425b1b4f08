"""The generation interface every backend implements (HF transformers here, vLLM for the paper
tier), and the decoding parameters they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.tasks.base import Sample


@dataclass(frozen=True)
class Decoding:
    """How to decode. Maps one to one onto HF `generate` and vLLM `SamplingParams`."""

    max_new_tokens: int
    n: int = 1
    """Samples per prompt."""
    temperature: float = 0.0
    """0 is greedy decoding."""
    top_p: float = 1.0
    min_new_tokens: int = 0
    """EOS is suppressed before this many tokens."""
    seed: int = 0
    stop: tuple[str, ...] = ()
    """Extra stop strings (EOS always stops)."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class GenerationBackend(Protocol):
    """Turns prompts into samples with the policy saved in `model_dir`."""

    def generate(
        self, model_dir: Path, prompts: list[str], decoding: Decoding
    ) -> list[list[Sample]]:
        """`decoding.n` samples for each prompt, in prompt order."""
        ...

    def generate_from(
        self,
        model: Any,
        tokenizer: Any,
        prompts: list[str],
        decoding: Decoding,
        checkpoint_dir: Path,
    ) -> list[list[Sample]]:
        """`decoding.n` samples per prompt from an in-memory policy that is still training (an
        online method's round). A backend that cannot sample from the model object itself saves
        it to `checkpoint_dir` (or sends it its weights) first."""
        ...

    def close(self) -> None:
        """Release the loaded model (memory, worker processes)."""
        ...
