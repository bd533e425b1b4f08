"""Build the small tier's CPU smoke-test base model: a tiny GPT-2 SFT'd on the TL;DR fixtures.

    python suites/small/data/build_tiny_tldr_model.py

It writes `suites/small/data/tiny-gpt2-tldr/`: a word-level tokenizer over the fixtures' words
(tests/fixtures/tldr) and a standard `GPT2LMHeadModel` (1 layer, width 32, 576 positions: a
512-token prompt and a 53-token summary fit), trained by plain SFT on the fixtures' train
references until it copies their form and ends them with EOS. It stands in for the paper's
Pythia SFT policy so that `suites/small/tldr_tiny.yaml` and tests/test_tldr.py run the pretrained
path (a base model loaded by path) in seconds; its summaries mean nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures" / "tldr"
OUT = Path(__file__).resolve().parent / "tiny-gpt2-tldr"

N_POSITIONS = 576
SFT_EPOCHS = 150
SEED = 0


def fixture_words() -> list[str]:
    words: set[str] = set()
    for path in sorted(FIXTURES.rglob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for text in _texts(row):
                words.update(text.split())
    return sorted(words)


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def main() -> None:
    from bench.tasks.keywords import SPECIAL_TOKENS, write_word_tokenizer
    from bench.tasks.tldr import TldrParams, TldrTask
    from bench.train import training
    from bench.train.modeling import build_gpt2, encode_completions, load_tokenizer, sft_loss

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    words = [w for w in fixture_words() if w not in SPECIAL_TOKENS]
    write_word_tokenizer(SPECIAL_TOKENS + words, OUT)
    tokenizer = load_tokenizer(OUT)
    task = TldrTask(
        TldrParams(
            sft_source=str(FIXTURES / "sft"),
            pairs_source=str(FIXTURES / "pairs"),
            tokenizer=str(OUT),
        )
    )
    model = build_gpt2(
        vocab_size=len(tokenizer),
        n_positions=N_POSITIONS,
        n_embd=32,
        n_layer=1,
        n_head=2,
        initializer_range=0.02,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        seed=SEED,
    )
    examples = task.examples("train")

    def collate(batch: list) -> dict:
        return encode_completions(
            tokenizer, [e.prompt for e in batch], [e.reference for e in batch]
        )

    loop = training.LoopConfig(
        lr=3e-3, batch_size=8, epochs=SFT_EPOCHS, warmup_ratio=0.02, seed=SEED
    )
    report = training.run(model, examples, collate, sft_loss, loop, desc="tiny sft")
    model.save_pretrained(OUT)
    print(f"saved {OUT.relative_to(REPO)}: {report.summary()}")


if __name__ == "__main__":
    main()
