"""Every cache key of a cell, as one pure function of its resolved config and data fingerprint.

Each stage's key is the hash of the config that produces it plus the key of the stage it reads,
so all keys are known before anything runs: a cell whose record is cached is answered without
importing torch. Bump a version below when a stage's code changes what it produces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.run.hashing import content_hash

CACHE_VERSION = 1
"""Part of every stage's cache key: bump when a stage's code changes what it produces."""

RECORD_VERSION = 9
"""Part of a cell record's key: bump when the result line gains or changes a field (7: a
best-of-N variant's mean reward counts invalid outputs at the judge's worst score; 8:
`metrics.oracles` and `metrics.eval_samples_per_prompt`; 9: every compute counter in
`metrics.counters`)."""

POLICY_VERSION = 2
"""Part of the policy stage's key: bump when what training records changes (2: the compute
counters, `bench.method_api.COUNTERS`)."""

JUDGMENTS_VERSION = 3
"""Part of the judgments stage's key: bump when what it records changes (2: order_answers;
3: a judge's failure is F, apart from the policy's invalid output I)."""

DIAGNOSTICS_VERSION = 2
"""Part of the diagnostics stage's key: bump when an estimator changes (2: KL on sampled tokens)."""

HELDOUT_PAIRS = 500
"""Held-out labelled pairs (on the `valid` prompts) every verifier is evaluated on."""

KL_PROMPTS = 200
"""Eval prompts whose sampled outputs estimate KL(policy || reference)."""


@dataclass(frozen=True)
class StageKeys:
    """The keys of one cell's stages, in the order they run."""

    base: str
    """The base (SFT) policy: task and base-model config."""
    pool: str
    """The labelled pair pool of the seed (budgets are its prefixes)."""
    heldout: str
    """The held-out pairs on the `valid` prompts that verifiers are evaluated on."""
    policy: str
    """The trained policy: pool, budget, method and its config."""
    generations: str
    """The policy's outputs on the evaluation prompts."""
    judgments: str
    """The judge's verdicts on them."""
    diagnostics: str
    """KL to the base policy and the held-out accuracy of the method's verifier."""
    cell: str
    """The cell's result line."""


def stage_keys(config: dict[str, Any], data_fingerprint: str | None) -> StageKeys:
    """The keys of the cell whose resolved config (`Cell.resolved_config()`) is `config`.

    `data_fingerprint` is the task's content hash of the local data files it reads (None when
    its params pin the data): local files enter the keys by content, not by path.
    """
    data = {"data": data_fingerprint} if data_fingerprint is not None else {}
    seed = config["seed"]
    generation = config["generation"]
    base = content_hash(
        {
            "v": CACHE_VERSION,
            "stage": "base",
            "task": config["task"],
            "base_model": config["base_model"],
            **data,
        }
    )
    pool = content_hash(
        {
            "v": CACHE_VERSION,
            "stage": "pool",
            "base": base,
            "seed": seed,
            # the pool is sampled with the suite's backend and length limit
            "sampling": [
                generation["backend"],
                generation["backend_params"],
                generation["max_new_tokens"],
            ],
        }
    )
    policy = content_hash(
        {
            "v": CACHE_VERSION,
            "stage": "policy",
            "policy": POLICY_VERSION,
            "pool": pool,
            "budget": config["budget"],
            "method": {
                "method": config["method"]["method"],
                "config": config["method"]["config"],
            },
        }
    )
    generations = content_hash(
        {
            "v": CACHE_VERSION,
            "stage": "generations",
            "policy": policy,
            "generation": generation,
            "seed": seed,
        }
    )
    return StageKeys(
        base=base,
        pool=pool,
        heldout=content_hash({"pool": pool, "split": "valid", "size": HELDOUT_PAIRS}),
        policy=policy,
        generations=generations,
        judgments=content_hash(
            {
                "v": CACHE_VERSION,
                "stage": "judgments",
                "judgments": JUDGMENTS_VERSION,
                "generations": generations,
                "judge": config["judge"],
            }
        ),
        diagnostics=content_hash(
            {
                "v": CACHE_VERSION,
                "diagnostics": DIAGNOSTICS_VERSION,
                "stage": "diagnostics",
                "policy": policy,
                "seed": seed,
                "kl_prompts": KL_PROMPTS,
                "heldout": HELDOUT_PAIRS,
            }
        ),
        cell=content_hash(
            {
                "v": CACHE_VERSION,
                "record": RECORD_VERSION,
                "stage": "cell",
                "config": config,
                **data,
            }
        ),
    )
