"""Shared fixtures: a tiny micro suite that runs end to end in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a module's tests (`pytest.mark.usefixtures("one_torch_thread")`):
    on tiny models a second thread only adds contention on a shared machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a vLLM engine or server is end to end too (`-m "not e2e"` skips it)."""
    for item in items:
        if item.get_closest_marker("vllm") or item.get_closest_marker("vllm_server"):
            item.add_marker(pytest.mark.e2e)


TINY_SUITE = """\
name: tiny-keywords
version: 1
tier: micro
description: A seconds-long micro suite for the end-to-end tests.
task:
  name: keywords
  params: {seed: 0, n_train: 400, n_valid: 50, n_eval: 60, pool_size: 120}
base_model:
  kind: micro
  n_embd: 32
  n_layer: 1
  n_head: 2
  initializer_range: 0.1
  pretrain_steps: 20
  sft_epochs: 1
  lr: 0.003
  batch_size: 32
  seed: 0
budgets: [40, 120]
methods:
  - sft
  - method: dpo
    epochs: 1
    lr: 0.001
generation:
  backend: hf
  n_eval_prompts: 60
  max_new_tokens: 7
judge:
  kind: gold
seeds: [0]
"""


@pytest.fixture
def tiny_suite_text() -> str:
    return TINY_SUITE


@pytest.fixture
def tiny_suite(tmp_path: Path) -> Path:
    """The tiny suite at <tmp>/suites/tiny.yaml (the plugin collects files under suites/)."""
    path = tmp_path / "suites" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(TINY_SUITE)
    return path
