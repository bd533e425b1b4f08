"""What a cell's numbers alone do not show: KL(policy || base) and the verifier's held-out accuracy.

Both are measured on data no method trains on: KL on samples for the evaluation prompts, the
verifier on labelled pairs of the `valid` prompts (`Runner.heldout_pairs`). The runner caches
them as the cell's diagnostics stage (`bench.run.stage_keys.DIAGNOSTICS_VERSION` names the
estimators) and records them in the result line's `metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.evaluate.generation import Decoding
from bench.method_api import load_saved_verifier
from bench.tasks.base import PreferencePair, Task


def diagnostics(
    policy_dir: Path,
    base_dir: Path,
    task: Task,
    kl_prompts: list[str] | None,
    decoding: Decoding,
    seed: int,
    heldout_pairs: Callable[[], list[PreferencePair]],
) -> dict[str, Any]:
    """`reward_model`: the held-out pair metrics of the verifier the method saved (if any);
    `kl`: KL(policy || base) on `kl_prompts` (None: the method generates its own way, e.g.
    best-of-N, so its saved policy is not what is evaluated and KL is not measured)."""
    out: dict[str, Any] = {}
    verifier = load_saved_verifier(policy_dir, task)
    if verifier is not None:
        from bench.train.reward_models import pair_metrics

        out["reward_model"] = pair_metrics(verifier, heldout_pairs())
    if kl_prompts is not None:
        out["kl"] = estimate_kl(policy_dir, base_dir, kl_prompts, decoding, seed=seed)
    return out


def estimate_kl(
    policy_dir: Path, reference_dir: Path, prompts: list[str], decoding: Decoding, seed: int
) -> dict[str, float]:
    """KL(pi || pi_ref) ~ mean over prompts of log pi(y|x) - log pi_ref(y|x), y ~ pi at T = 1.

    One sample per prompt, scored on exactly the sampled tokens (an unfinished sample has no
    EOS to score): an unbiased estimate of the sequence-level KL, reported with its standard
    error. Decoding limits (max/min new tokens) are the evaluation's.
    """
    import statistics

    import torch

    from bench.evaluate.backends.hf import generate_with
    from bench.train.modeling import (
        batch_from_token_ids,
        load_causal_lm,
        load_tokenizer,
        sequence_logps,
    )

    tokenizer = load_tokenizer(policy_dir)
    policy, reference = load_causal_lm(policy_dir).eval(), load_causal_lm(reference_dir).eval()
    sampling = replace(decoding, temperature=1.0, top_p=1.0, n=1, seed=seed + 7919)
    samples = [s[0] for s in generate_with(policy, tokenizer, prompts, sampling, batch_size=256)]
    prompt_ids = tokenizer(prompts, add_special_tokens=False).input_ids
    ratios: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), 256):
            chunk = slice(start, start + 256)
            batch = batch_from_token_ids(
                prompt_ids[chunk], [s.token_ids for s in samples[chunk]], tokenizer.pad_token_id
            )
            batch = {k: v.to(policy.device) for k, v in batch.items()}
            ratios += (sequence_logps(policy, batch) - sequence_logps(reference, batch)).tolist()
    stderr = statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else float("nan")
    return {"kl": statistics.mean(ratios), "kl_stderr": stderr, "n": len(ratios)}
