"""Offline DPO (Rafailov et al. 2023), with the IPO loss (Azar et al. 2023) as an option.

The policy is fit directly to the preference pairs, regularised toward the base SFT policy:

    h = beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))]
    sigmoid (DPO, eq. 7):  L = -log sigmoid(h)
    ipo     (IPO, eq. 17): L = (h / beta - 1 / (2 beta))^2

The config (`DPOConfig`), the pure loss (`dpo_loss`) and the trainer (`train_dpo_policy`) live in
`bench.train.preference`, because online DPO and the `dpo` verifier train with them too. The trained
policy's implicit reward beta * (log pi - log pi_ref) is handed back as its verifier, so the
result line reports its held-out accuracy.
"""

from __future__ import annotations

from bench.method_api import MethodContext
from bench.registry import register_method
from bench.train.preference import DPOConfig, train_dpo_policy


@register_method("dpo", config=DPOConfig, family="offline", negative_gradient=True)
def train(ctx: MethodContext, cfg: DPOConfig) -> dict[str, float]:
    from bench.train.modeling import load_tokenizer

    report = train_dpo_policy(ctx, cfg, ctx.pairs, ctx.output_dir)
    load_tokenizer(ctx.base_model_dir).save_pretrained(ctx.output_dir)
    ctx.save_implicit_verifier(ctx.output_dir, beta=cfg.beta)
    return report
