"""A verifier read out of a language model's own log-probs (issue 11's "readout that starts from
what the LM already knows").

The paper's global RM is the SFT model with a scalar head on its last hidden state. On the micro
tier that head stays at chance: the base model was trained to copy, and what a reward reads
(how salient a word is) is in its next-token logits, not in a state a head can learn to read from
a few hundred noisy labels. This readout starts from the logits instead:

    r(x, y) = sum_t m_t * [ a * log pi(y_t | x, y_<t) + b_word * (1 - e_t) + b_eos * e_t
                            + u . h_t ]

over the completion's tokens t (m_t: completion mask, e_t: 1 at the EOS token, h_t: the LM's
last hidden state at the position that predicts y_t). At initialisation a = 1 and b_word =
b_eos = u = 0, so r = log pi(y | x), the zero-shot verifier; Bradley-Terry training then learns
how much each token's log-prob is worth (a), what a word and the stop cost (b_word: a length
term, which log pi alone gets wrong, penalising every extra word by its log-prob), and, with
`residual`, a correction from the hidden state. The LM is frozen (`train_lm=False`, the readout's
3 or n_embd + 3 weights train) or trained with it.
"""

from __future__ import annotations

from typing import Any

import torch


class LogProbReadout(torch.nn.Module):
    """r(x, y) from a causal LM's token log-probs; see the module docstring for the equation."""

    def __init__(self, lm: Any, *, residual: bool, train_lm: bool) -> None:
        super().__init__()
        self.lm = lm
        self.logp_scale = torch.nn.Parameter(torch.ones(()))
        """a: weight of each token's log-prob."""
        self.word_bias = torch.nn.Parameter(torch.zeros(()))
        """b_word: reward per non-EOS completion token."""
        self.eos_bias = torch.nn.Parameter(torch.zeros(()))
        """b_eos: reward of the EOS token."""
        self.residual = torch.nn.Linear(lm.config.n_embd, 1, bias=False) if residual else None
        """u: a linear correction from the hidden state, zero at initialisation."""
        if self.residual is not None:
            torch.nn.init.zeros_(self.residual.weight)
        for parameter in self.lm.parameters():
            parameter.requires_grad = train_lm

    @property
    def device(self) -> torch.device:
        return self.logp_scale.device

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Rewards [B] of a right-padded prompt + completion batch (`encode_completions`)."""
        out = self.lm(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=self.residual is not None,
        )
        logits = out.logits[:, :-1].float()
        targets = batch["input_ids"][:, 1:]
        token_logps = logits.log_softmax(-1).gather(2, targets.unsqueeze(-1)).squeeze(-1)
        mask = batch["loss_mask"][:, 1:].float()
        is_eos = (targets == self.lm.config.eos_token_id).float()
        per_token = (
            self.logp_scale * token_logps + self.word_bias * (1.0 - is_eos) + self.eos_bias * is_eos
        )
        if self.residual is not None:
            per_token = per_token + self.residual(out.hidden_states[-1][:, :-1].float()).squeeze(-1)
        return (per_token * mask).sum(-1)

    def readout_state(self) -> dict[str, Any]:
        """The readout's own weights (the LM is saved with `save_pretrained`), JSON-ready."""
        state = {
            "logp_scale": self.logp_scale.item(),
            "word_bias": self.word_bias.item(),
            "eos_bias": self.eos_bias.item(),
            "residual": None,
        }
        if self.residual is not None:
            state["residual"] = self.residual.weight.detach().cpu().squeeze(0).tolist()
        return state

    def load_readout_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.logp_scale.fill_(state["logp_scale"])
            self.word_bias.fill_(state["word_bias"])
            self.eos_bias.fill_(state["eos_bias"])
            if self.residual is not None:
                self.residual.weight.copy_(torch.tensor([state["residual"]]))
