"""Generation and judging: decoding, the HF and vLLM backends, the judge interface, its answer
cache, ROUGE-L, verdicts."""
