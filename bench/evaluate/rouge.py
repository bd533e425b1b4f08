"""ROUGE-L F1 (Lin 2004), the paper's hidden-reference reward: a pure function shared by the
`rouge` judge (judges/rouge.py) and the TL;DR task's ROUGE-L labels (bench/tasks/tldr.py).

The score follows the `rouge-score` package's English defaults (what the paper's numbers use):
text lowercased, every run of characters other than [a-z0-9] replaced by a space, split on
whitespace, no stemming; then LCS-based precision P = LCS / |output|, recall R = LCS / |reference|
and F1 = 2PR / (P + R), 0 when either side has no token.
"""

from __future__ import annotations

import re

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """`rouge-score`'s tokenizer without stemming: lowercase, [^a-z0-9]+ -> space, split."""
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists, by dynamic programming
    (O(|a| |b|) time, O(|b|) memory)."""
    previous = [0] * (len(b) + 1)
    for token_a in a:
        current = [0]
        for j, token_b in enumerate(b):
            current.append(
                previous[j] + 1 if token_a == token_b else max(previous[j + 1], current[j])
            )
        previous = current
    return previous[-1]


def rouge_l(output: str, reference: str) -> float:
    """ROUGE-L F1 of `output` against `reference`, in [0, 1]."""
    output_tokens, reference_tokens = rouge_tokens(output), rouge_tokens(reference)
    if not output_tokens or not reference_tokens:
        return 0.0
    lcs = lcs_length(output_tokens, reference_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(output_tokens)
    recall = lcs / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)
