"""Best-of-N: at inference, sample N outputs of the SFT policy and return the verifier's best.

No policy is trained: the verifier (fitted on the budget's pairs) does all the work, which makes
best-of-N the cleanest probe of how good a verifier is. `n` may be a list: the largest N is the
cell's headline, every N is judged too (the BoN@N curve, in the result's `variants`).
"""

from __future__ import annotations

from pydantic import Field

from bench.config import StrictParams
from bench.method_api import GenerationContext, MethodContext, load_saved_verifier
from bench.registry import register_method
from bench.tasks.base import Sample
from bench.train.preference import fit_verifier
from bench.train.reward_models import LEARNED_VERIFIER, RewardModelSpec, score_samples


class BestOfNConfig(StrictParams):
    n: int | list[int] = 16
    """Samples per prompt; a list gives the BoN@N curve (the largest is the headline)."""
    temperature: float = Field(0.7, gt=0)
    """Sampling temperature of the N candidates."""
    reward_model: RewardModelSpec = LEARNED_VERIFIER
    """The verifier that picks the best candidate, trained on the budget's pairs."""

    @property
    def ns(self) -> list[int]:
        return sorted(set(self.n if isinstance(self.n, list) else [self.n]))


def generate(gen: GenerationContext, cfg: BestOfNConfig) -> dict[str, list[Sample]]:
    """The verifier's pick among the first N samples, for every N (nested: BoN@2 is chosen from
    the same first two samples BoN@16 sees)."""
    from dataclasses import replace

    verifier = load_saved_verifier(gen.policy_dir, gen.task)
    if verifier is None:
        raise FileNotFoundError(f"{gen.policy_dir} holds no verifier: best_of_n's train saves one")
    decoding = replace(gen.decoding, n=max(cfg.ns), temperature=cfg.temperature)
    samples = gen.backend.generate(gen.policy_dir, gen.prompts, decoding)
    scores = score_samples(verifier, gen.prompts, samples)
    variants = {}
    for n in cfg.ns:
        picks = [max(range(n), key=lambda i, s=group_scores: s[i]) for group_scores in scores]
        variants[f"n={n}"] = [group[i] for group, i in zip(samples, picks, strict=True)]
    variants["main"] = variants[f"n={max(cfg.ns)}"]
    return variants


@register_method("best_of_n", config=BestOfNConfig, generate=generate, family="online")
def train(ctx: MethodContext, cfg: BestOfNConfig) -> dict:
    _, rm_metrics = fit_verifier(ctx, cfg.reward_model)
    ctx.save_base_as_policy()
    return {"reward_model": cfg.reward_model.label, "rm_train": rm_metrics}
