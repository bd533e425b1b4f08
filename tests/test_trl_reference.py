"""The RL family's pieces agree with TRL 1.16 on the same tensors (benchmarks/trl_reference.py).

TRL pins its own transformers, so it lives in its own venv (.ci/run makes it at .trl-venv;
$PFTBENCH_TRL_PYTHON points elsewhere): the script runs there as a subprocess (about 5 s), and
this module reads its table. Every row is checked by name: a quantity whose definitions agree
must say `match`, a deliberate difference must show on the tensors (`DIFFERS`).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from venvs import REPO, venv_python

TRL_PYTHON_ENV = "PFTBENCH_TRL_PYTHON"
DEFAULT_TRL_PYTHON = REPO / ".trl-venv" / "bin" / "python"
SCRIPT = REPO / "benchmarks" / "trl_reference.py"

MATCH, DIFFERS = "match", "DIFFERS"
EXPECTED = {
    ("GRPO advantages", 'GRPOTrainer scale_rewards="group" (default)'): MATCH,
    ("GRPO advantages", 'GRPOTrainer scale_rewards="batch"'): DIFFERS,
    ("RLOO advantages", "RLOOTrainer beta=0"): MATCH,
    ("RLOO advantages", "RLOOTrainer beta=0, normalize_advantages=True"): DIFFERS,
    ("k3 KL, token mean", "GRPOTrainer beta=1, A=0, use_bias_correction_kl=False"): MATCH,
    ("k3 KL, token mean", "GRPOTrainer beta=1, A=0, use_bias_correction_kl=True (default)"): (
        DIFFERS
    ),
    ("clipped surrogate", 'GRPOTrainer loss_type="grpo", beta=0'): MATCH,
    ("clipped surrogate", 'GRPOTrainer loss_type="bnpo", beta=0'): MATCH,
    ("clipped surrogate", 'GRPOTrainer loss_type="dapo", beta=0'): MATCH,
    ("clipped surrogate", 'GRPOTrainer loss_type="dr_grpo", beta=0'): DIFFERS,
    ("clipped surrogate", 'GRPOTrainer loss_type="grpo", beta=0, epsilon_high=0.28'): DIFFERS,
    (
        "clipped surrogate",
        'GRPOTrainer loss_type="grpo", beta=0, importance_sampling_level="sequence"',
    ): DIFFERS,
    ("GRPO advantages, centred only", 'GRPOTrainer scale_rewards="none"'): MATCH,
    ("GRPO loss", 'GRPOTrainer loss_type="grpo", beta=0.04, use_bias_correction_kl=False'): MATCH,
    ("GRPO loss", 'GRPOTrainer loss_type="bnpo", beta=0.04, use_bias_correction_kl=False'): MATCH,
    ("GRPO loss", 'GRPOTrainer loss_type="dapo", beta=0.04, use_bias_correction_kl=False'): MATCH,
    (
        "GRPO loss",
        'GRPOTrainer loss_type="dapo", beta=0.04, use_bias_correction_kl=True '
        "(TRL's defaults but beta)",
    ): DIFFERS,
    ("RLOO advantages, KL in the reward", "RLOOTrainer beta=0.05 (default)"): MATCH,
    ("RLOO loss", "RLOOTrainer beta=0.05, epsilon=0.2"): MATCH,
    ("RLOO loss, on-policy (old = now)", "RLOOTrainer beta=0.05, epsilon=0.2"): MATCH,
}
"""(quantity, TRL option) -> how the row's verdict starts."""


@pytest.fixture(scope="module")
def reference_run() -> subprocess.CompletedProcess:
    python = venv_python(TRL_PYTHON_ENV, DEFAULT_TRL_PYTHON)
    if python is None:
        pytest.skip(
            f"no TRL venv: .ci/run installs trl 1.16 into .trl-venv; or set {TRL_PYTHON_ENV} to "
            "the python of a venv with trl 1.16 and this package"
        )
    # this checkout's package, whichever the venv has installed
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [str(python), str(SCRIPT)], capture_output=True, text=True, cwd=REPO, timeout=600, env=env
    )


def table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The table's rows as (quantity, TRL option) -> the verdicts of its rows (one per project
    function or option compared)."""
    rows = [line.strip("|").split(" | ") for line in stdout.splitlines() if line.startswith("| ")]
    verdicts: dict[tuple[str, str], list[str]] = {}
    for r in rows[1:]:
        verdicts.setdefault((r[0].strip(), r[1].strip()), []).append(r[-1].strip())
    return verdicts


@pytest.mark.trl
def test_agrees_with_trl_where_the_definitions_agree(reference_run) -> None:
    assert reference_run.returncode == 0, reference_run.stdout + reference_run.stderr
    assert reference_run.stdout.startswith("TRL 1.16."), reference_run.stdout
    verdicts = table_rows(reference_run.stdout)
    assert set(verdicts) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        assert all(v.startswith(expected) for v in verdicts[key]), f"{key}: {verdicts[key]}"
