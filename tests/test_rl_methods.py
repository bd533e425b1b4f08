"""The RL family (methods/rloo.py, grpo.py, ppo.py on bench.train.rl).

- By hand: each method's advantages, rewards and losses on numbers small enough to check on
  paper, the log-probs at the sampling temperature, and the loss aggregation that does not
  depend on how a minibatch is split (micro-batches, processes).
- End to end (a micro suite of seconds, the oracle verifier, evaluation at the temperature the
  methods sample at): every method raises the mean gold reward over the SFT policy; before the
  first update the ratio is 1, approx-KL 0 and the clip fraction 0 (the golden check of "The N+
  implementation details of RLHF with PPO"); the compute counters; a run killed mid-way resumes
  with the same numbers.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.cli import main
from bench.method_api import COUNTERS
from bench.train import rl
from bench.train.policy_gradient import aggregate, row_weights, weighted_mean
from methods.grpo import grpo_advantages, grpo_loss
from methods.ppo import ppo_losses, ppo_token_rewards
from methods.rloo import rloo_loss, rloo_rewards

REPO = Path(__file__).resolve().parents[1]
METHODS = ["grpo", "rloo", "ppo"]
ITERATIONS, PROMPTS, SAMPLES = 20, 20, 4  # prompt_epochs 4 over the 100 pairs' prompts

SUITE = """\
include: {base}
name: rl-check
version: 1
description: The RL methods on a small micro suite, evaluated at their sampling temperature.
task:
  params: {{n_train: 2000, n_eval: 100, pool_size: 300}}
base_model: {{n_embd: 32, pretrain_steps: 100, sft_epochs: 2}}
generation: {{n_eval_prompts: 100, temperature: 1.0}}
budgets: [100]
methods:
  - sft
{methods}
"""
METHOD_ENTRY = """\
  - method: {name}
    reward_model: {{kind: oracle_features}}
    lr: 0.001
    prompt_epochs: 4
    prompts_per_rollout: {prompts}
    samples: {samples}
    minibatch_size: 40
"""

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def suite_text(methods: list[str]) -> str:
    entries = "".join(
        METHOD_ENTRY.format(name=name, prompts=PROMPTS, samples=SAMPLES) for name in methods
    )
    return SUITE.format(base=REPO / "suites/micro/_micro_base.yaml", methods=entries.rstrip())


# -- by hand ---------------------------------------------------------------------------------------
def test_grpo_advantages_by_hand() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])
    std = math.sqrt((4 + 1 + 0 + 9) / 3)  # Bessel's correction
    expected = [-2 / (std + 1e-4), -1 / (std + 1e-4), 0.0, 3 / (std + 1e-4), 0, 0, 0, 0]
    assert grpo_advantages(rewards).tolist() == pytest.approx(expected, abs=1e-6)
    centred = [-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    assert grpo_advantages(rewards, scale=False).tolist() == pytest.approx(centred)


def test_grpo_loss_by_hand_before_an_update() -> None:
    """At rho = 1 the surrogate is -A per token; the k3 term adds beta (e^d - d - 1)."""
    logps = torch.tensor([[-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    k3 = math.exp(-0.5) + 0.5 - 1
    loss = grpo_loss(
        logps, logps, ref, torch.tensor([2.0]), mask, clip_eps=0.2, beta=0.1, aggregation="sequence"
    )
    assert float(loss) == pytest.approx(((-2 + 0.1 * k3) + -2) / 2, abs=1e-6)


def test_rloo_penalised_rewards_and_loss_by_hand() -> None:
    rewards = torch.tensor([[1.0, 0.0]])
    penalised = rloo_rewards(
        rewards, torch.tensor([[-2.0, -1.0]]), torch.tensor([[-3.0, -1.0]]), beta=0.5
    )
    assert penalised.tolist() == [[0.5, 0.0]]  # 1 - 0.5 * (-2 - -3), 0 - 0.5 * 0
    # one ratio per sequence: 1.5 for the first (clipped at 1.2, its advantage positive), 1 next
    old = torch.tensor([[0.0, -1.0], [0.0, -1.0]])
    logps = old + torch.tensor([[math.log(1.5), 0.0], [0.0, 5.0]])  # padding does not count
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = rloo_loss(logps, old, advantages, mask, clip_eps=0.2)
    assert float(loss) == pytest.approx((-1.2 + 1.0) / 2, abs=1e-6)


def test_ppo_token_rewards_by_hand() -> None:
    """-kl_coef (old - ref) on every completion token, the score on the last."""
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    old = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -1.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0], [0.0, -2.0, 0.0, 0.0]])
    rewards = ppo_token_rewards(torch.tensor([2.0, -1.0]), old, ref, mask, kl_coef=0.1)
    expected = torch.tensor([[0.0, -0.05, 0.1 + 2.0, 0.0], [0.0, -0.1 - 1.0, 0.0, 0.0]])
    assert torch.allclose(rewards, expected, atol=1e-6)


def test_ppo_losses_by_hand() -> None:
    """Token 0: ratio 1.5 clipped at 1.2, its value's unclipped error the larger; token 1: the
    value moved past the clip, whose error is then the larger."""
    old = torch.tensor([[0.0, 0.0]])
    logps = torch.tensor([[math.log(1.5), 0.0]])
    terms = ppo_losses(
        logps,
        old,
        values=torch.tensor([[1.0, 0.9]]),
        old_values=torch.tensor([[0.5, 0.5]]),
        advantages=torch.tensor([[1.0, 1.0]]),
        returns=torch.tensor([[0.0, 1.0]]),
        clip_eps=0.2,
        value_clip=0.2,
    )
    assert terms["policy"][0].tolist() == pytest.approx([-1.2, -1.0], abs=1e-6)
    assert terms["clipped"].tolist() == [[1.0, 0.0]]
    # token 0: max(1.0^2, (0.7 - 0)^2) / 2; token 1: max(0.1^2, (0.7 - 1)^2) / 2
    assert terms["value"][0].tolist() == pytest.approx([0.5, 0.045], abs=1e-6)
    assert terms["value_clipped"].tolist() == [[0.0, 1.0]]
    assert terms["approx_kl"][0].tolist() == pytest.approx([0.5 * math.log(1.5) ** 2, 0.0])


def test_log_probs_at_the_sampling_temperature() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, generator=generator)
    ids = torch.randint(0, 6, (2, 4), generator=generator)
    mask = torch.ones(2, 3)
    expected = torch.gather((logits[:, :-1] / 2.0).log_softmax(-1), 2, ids[:, 1:, None])
    got = rl.completion_logps(logits, ids, mask, temperature=2.0)
    assert torch.allclose(got, expected.squeeze(-1), atol=1e-6)


@pytest.mark.parametrize("how", ["sequence", "token"])
def test_aggregation_does_not_depend_on_the_split(how: str) -> None:
    """Row weights fixed on the whole minibatch: the mean over any equal split of the chunk
    means (what micro-batches and processes compute) is the minibatch's `aggregate`."""
    generator = torch.Generator().manual_seed(1)
    per_token = torch.randn(8, 5, generator=generator)
    lengths = torch.tensor([1, 5, 2, 4, 3, 5, 1, 2])
    mask = (torch.arange(5)[None, :] < lengths[:, None]).float()
    weights = row_weights(mask, how)
    whole = aggregate(per_token, mask, how)
    halves = [
        weighted_mean(per_token[i : i + 4], mask[i : i + 4], weights[i : i + 4]) for i in (0, 4)
    ]
    assert float(sum(halves) / 2) == pytest.approx(float(whole), abs=1e-6)
    naive = [aggregate(per_token[i : i + 4], mask[i : i + 4], how) for i in (0, 4)]
    if how == "token":  # averaging the halves' own token means would weigh tokens unequally
        assert float(sum(naive) / 2) != pytest.approx(float(whole), abs=1e-4)


# -- end to end ------------------------------------------------------------------------------------
def run_suite(root: Path, methods: list[str], cache: Path, results: Path) -> dict[str, dict]:
    suite = root / "suites" / "rl.yaml"
    suite.parent.mkdir(parents=True, exist_ok=True)
    suite.write_text(suite_text(methods))
    args = ["run", str(suite), "--cache-dir", str(cache), "--results-dir", str(results)]
    assert main([*args, "--no-progress"]) == 0
    lines = [json.loads(line) for line in (results / "rl-check.jsonl").read_text().splitlines()]
    return {line["method"]: line for line in lines}


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("rl")
    return run_suite(root, METHODS, root / "cache", root / "results")


def rewards_or_floor(line: dict) -> list[float]:
    return [line["reward_floor"] if r is None else r for r in line["rewards"]]


@pytest.mark.e2e
@pytest.mark.parametrize("method", METHODS)
def test_each_method_raises_the_gold_reward_over_sft(lines: dict, method: str) -> None:
    """Paired over the 100 evaluation prompts (an invalid output scores the floor), the 95%
    interval of the mean gain lies above 0."""
    gains = [
        a - b
        for a, b in zip(
            rewards_or_floor(lines[method]), rewards_or_floor(lines["sft"]), strict=True
        )
    ]
    mean = statistics.mean(gains)
    half = 1.984 * statistics.stdev(gains) / math.sqrt(len(gains))  # t, 99 degrees of freedom
    interval = f"[{mean - half:+.3f}, {mean + half:+.3f}]"
    print(f"\n{method}: gold reward gain over SFT {mean:+.3f} {interval}")
    assert mean - half > 0
    assert lines[method]["metrics"]["oracles"], "the oracle verifier marks the cell"


@pytest.mark.e2e
@pytest.mark.parametrize("method", METHODS)
def test_the_first_minibatch_is_on_policy(lines: dict, method: str) -> None:
    """Before any update the policy is the sampler: ratio 1, clip fraction 0 (and for PPO
    approx-KL 0 and no clipped value)."""
    first = lines[method]["metrics"]["train"]["first_step"]
    assert first["ratio"] == pytest.approx(1.0, abs=1e-6)
    assert first["clipfrac"] == 0.0
    if method == "ppo":
        assert first["approx_kl"] == pytest.approx(0.0, abs=1e-10)
        assert first["value_clipfrac"] == 0.0


@pytest.mark.e2e
@pytest.mark.parametrize("method", METHODS)
def test_compute_is_counted(lines: dict, method: str) -> None:
    counters = lines[method]["metrics"]["counters"]
    train = lines[method]["metrics"]["train"]
    assert train["iterations"] == ITERATIONS
    assert counters["samples_generated"] == ITERATIONS * PROMPTS * SAMPLES
    assert counters["rm_queries"] == counters["samples_generated"]
    # every row is a prompt (>= 1 token) and a completion (>= 1 token), trained on once
    assert counters["tokens_trained"] >= 2 * counters["samples_generated"]
    for stage in ("verifier_fit_s", "sample_s", "score_s", "train_s"):
        assert counters[stage] >= 0
    assert counters["sample_s"] > 0 and counters["train_s"] > 0
    # Every counter is recorded; the oracle verifier is a Newton fit on features: no tokens.
    assert set(counters) == set(COUNTERS)
    assert counters["verifier_tokens_trained"] == 0


@pytest.mark.e2e
def test_a_killed_run_resumes_with_the_same_numbers(
    lines: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint after every iteration, the run killed in its 4th rollout: the rerun resumes
    at iteration 3 and ends with the uninterrupted run's policy, judged the same."""
    monkeypatch.setattr(rl, "CHECKPOINT_INTERVAL_S", 0.0)
    build, calls = rl.build_rollout, []

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return build(*args, **kwargs)

    monkeypatch.setattr(rl, "build_rollout", dying)
    with pytest.raises((KeyboardInterrupt, AssertionError)):  # Ctrl-C: raised, or exit 130
        run_suite(tmp_path, ["grpo"], tmp_path / "cache", tmp_path / "first")
    assert len(calls) == 4
    monkeypatch.setattr(rl, "build_rollout", build)
    resumed = run_suite(tmp_path, ["grpo"], tmp_path / "cache", tmp_path / "second")["grpo"]
    train = resumed["metrics"]["train"]
    assert train["resumed_from_iteration"] == 3
    whole = lines["grpo"]
    assert resumed["rewards"] == whole["rewards"]
    assert train["rollout_rewards"] == whole["metrics"]["train"]["rollout_rewards"]
    assert resumed["metrics"]["counters"]["samples_generated"] == ITERATIONS * PROMPTS * SAMPLES


def test_validate_refuses_a_minibatch_that_does_not_fill_a_rollout(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text(["grpo"]).replace("minibatch_size: 40", "minibatch_size: 48"))
    assert main(["validate", str(suite)]) == 2
    (message,) = capsys.readouterr().err.strip().splitlines()
    assert message.startswith(f"{suite}: methods[1]:")
    assert "minibatch_size 48 does not divide prompts_per_rollout x samples = 80" in message
