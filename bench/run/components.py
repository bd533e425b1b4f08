"""The parts a suite's cells share, built once per run: its task, generation backend and judge.

A backend holds a model (a vLLM engine holds most of a GPU), so it is built once per backend
config and released with `close_backends` when training needs the room or the run ends.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.config import Cell, Suite
from bench.evaluate.judging import build_judge
from bench.registry import BACKENDS, JUDGES
from bench.run.cache import Cache
from bench.run.hashing import content_hash
from bench.tasks.base import Sample, Task, build_task


class Components:
    """Tasks, backends and judges by the config that builds them."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self._tasks: dict[str, Task] = {}
        self._backends: dict[str, Any] = {}
        self._judges: dict[str, Any] = {}

    def task(self, suite: Suite) -> Task:
        key = content_hash(
            {"task": suite.task.model_dump(mode="json"), "base": suite.base_model.model_dump()}
        )
        if key not in self._tasks:
            self._tasks[key] = build_task(
                suite.task.name, suite.task.params, suite.base_model.model_dump()
            )
        return self._tasks[key]

    def backend(self, suite: Suite) -> Any:
        """The suite's generation backend, built once per backend config (it holds a model)."""
        key = content_hash([suite.generation.backend, suite.generation.backend_params])
        if key not in self._backends:
            entry = BACKENDS.get(suite.generation.backend)
            self._backends[key] = entry.fn(entry.config(**suite.generation.backend_params))
        return self._backends[key]

    def judge(self, suite: Suite) -> Any:
        """The suite's judge for its task; judges with a cache of their own get the run's."""
        key = content_hash(
            [suite.judge.model_dump(mode="json"), suite.task.model_dump(mode="json")]
        )
        if key not in self._judges:
            entry = JUDGES.get(suite.judge.kind)
            params = entry.config(**suite.judge.params)
            self._judges[key] = build_judge(
                entry, params, self.task(suite), cache_root=self.cache.root
            )
        return self._judges[key]

    def close_backends(self) -> None:
        """Release what the backends hold (models, vLLM engines and their processes); a backend
        used again loads anew."""
        for backend in self._backends.values():
            backend.close()

    def sampler(self, suite: Suite, model_dir: Path) -> Any:
        """sample(prompts, n, temperature, seed) from the policy in `model_dir`: a SampleFn."""
        from bench.evaluate.generation import Decoding

        task = self.task(suite)

        def sample(prompts: list[str], n: int, temperature: float, seed: int) -> list[list[Sample]]:
            decoding = Decoding(
                max_new_tokens=suite.generation.max_new_tokens,
                n=n,
                temperature=temperature,
                min_new_tokens=task.min_new_tokens(),
                seed=seed,
            )
            return self.backend(suite).generate(model_dir, prompts, decoding)

        return sample

    def eval_decoding(self, cell: Cell) -> Any:
        """The suite's evaluation decoding for the cell (its seed, the task's minimum length)."""
        from bench.evaluate.generation import Decoding

        spec = cell.suite.generation
        return Decoding(
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            min_new_tokens=self.task(cell.suite).min_new_tokens(),
            seed=cell.seed,
        )
