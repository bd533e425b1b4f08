"""DPO: the pure loss against numbers computed by hand, the batching and log-prob plumbing of
`bench.train.modeling` against a manual computation, and one short training run on a tiny GPT-2.

The model here has ~1,100 parameters (12-word vocabulary, width 8, one layer); never the micro
base model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.method_api import MethodContext
from bench.run.cache import Cache
from bench.run.hashing import content_hash
from bench.tasks.base import PreferencePair
from bench.tasks.keywords import (
    SPECIAL_TOKENS,
    KeywordsParams,
    KeywordsTask,
    word,
    write_word_tokenizer,
)
from bench.train.modeling import (
    build_gpt2,
    concat_batches,
    encode_completions,
    encode_pairs,
    load_tokenizer,
    sequence_logps,
    token_logps,
)
from bench.train.preference import DPOConfig, collate_pairs, dpo_loss, reference_logps
from methods import dpo

# Token ids of the word tokenizer: <pad> 0, <unk> 1, <sep> 2, <eos> 3, then w00 = 4 ... w07 = 11.
PAD, SEP, EOS = 0, 2, 3
VOCAB = SPECIAL_TOKENS + [word(i) for i in range(8)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def w(i: int) -> int:
    """Token id of word w0i."""
    return 4 + i


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("tokenizer")
    write_word_tokenizer(VOCAB, path)
    return load_tokenizer(path)


def tiny_gpt2(seed: int = 0) -> Any:
    model = build_gpt2(
        vocab_size=len(VOCAB),
        n_positions=16,
        n_embd=8,
        n_layer=1,
        n_head=2,
        initializer_range=0.5,
        eos_token_id=EOS,
        pad_token_id=PAD,
        seed=seed,
    )
    return model.eval()


@pytest.fixture(scope="module")
def model() -> Any:
    return tiny_gpt2()


# --- the loss -----------------------------------------------------------------------------------

# Three pairs: [policy chosen, policy rejected, reference chosen, reference rejected]
#   row 0: log-ratios chosen -1 - -1.5 = 0.5, rejected -2 - -1.5 = -0.5, h = 1
#   row 1: everything 0, h = 0
#   row 2: log-ratios chosen -3 - -2 = -1, rejected -1 - -2 = 1, h = -2
POLICY_CHOSEN = [-1.0, 0.0, -3.0]
POLICY_REJECTED = [-2.0, 0.0, -1.0]
REFERENCE_CHOSEN = [-1.5, 0.0, -2.0]
REFERENCE_REJECTED = [-1.5, 0.0, -2.0]


def loss_of(
    beta: float, loss: str, requires_grad: bool = False
) -> tuple[list[torch.Tensor], tuple]:
    inputs = [
        torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad)
        for v in (POLICY_CHOSEN, POLICY_REJECTED, REFERENCE_CHOSEN, REFERENCE_REJECTED)
    ]
    return inputs, dpo_loss(*inputs, beta=beta, loss=loss)


@pytest.mark.parametrize(
    ("beta", "loss", "expected"),
    [
        # sigmoid: -log sigmoid(beta h) = log(1 + e^(-beta h))
        #   beta 0.5: h 1 -> log(1 + e^-0.5) = 0.474077; h 0 -> log 2 = 0.693147;
        #             h -2 -> log(1 + e^1) = 1.313262
        (0.5, "sigmoid", [0.4740769842, 0.6931471806, 1.3132616875]),
        #   beta 0.1: h 1 -> log(1 + e^-0.1) = 0.644397; h -2 -> log(1 + e^0.2) = 0.798139
        (0.1, "sigmoid", [0.6443966601, 0.6931471806, 0.7981388693]),
        # ipo: (h - 1 / (2 beta))^2
        #   beta 0.5: (1 - 1)^2 = 0; (0 - 1)^2 = 1; (-2 - 1)^2 = 9
        (0.5, "ipo", [0.0, 1.0, 9.0]),
        #   beta 0.1: (1 - 5)^2 = 16; (0 - 5)^2 = 25; (-2 - 5)^2 = 49
        (0.1, "ipo", [16.0, 25.0, 49.0]),
    ],
)
def test_dpo_loss_by_hand(beta: float, loss: str, expected: list[float]) -> None:
    _, (losses, chosen_rewards, rejected_rewards) = loss_of(beta, loss)
    assert losses.shape == chosen_rewards.shape == rejected_rewards.shape == (3,)
    assert losses.tolist() == pytest.approx(expected, abs=1e-9)
    # Implicit rewards beta * (log pi - log pi_ref), whatever the loss:
    #   chosen: beta * [0.5, 0, -1], rejected: beta * [-0.5, 0, 1]
    assert chosen_rewards.tolist() == pytest.approx([beta * 0.5, 0.0, -beta], abs=1e-12)
    assert rejected_rewards.tolist() == pytest.approx([-beta * 0.5, 0.0, beta], abs=1e-12)


def test_sigmoid_gradient_by_hand() -> None:
    # d/d(policy chosen) of log(1 + e^(-beta h)) = -beta * sigmoid(-beta h); rejected: opposite.
    #   row 0, beta 0.5, h 1: -0.5 * sigmoid(-0.5) = -0.5 * 0.3775407 = -0.1887703
    #   row 1, h 0: -0.5 * 0.5 = -0.25
    #   row 2, h -2: -0.5 * sigmoid(1) = -0.5 * 0.7310586 = -0.3655293
    inputs, (losses, chosen_rewards, rejected_rewards) = loss_of(0.5, "sigmoid", requires_grad=True)
    losses.sum().backward()
    policy_chosen, policy_rejected = inputs[0], inputs[1]
    assert policy_chosen.grad.tolist() == pytest.approx([-0.1887703, -0.25, -0.3655293], abs=1e-7)
    assert policy_rejected.grad.tolist() == pytest.approx([0.1887703, 0.25, 0.3655293], abs=1e-7)
    # The rewards are metrics: no gradient flows through them.
    assert not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_ipo_gradient_by_hand() -> None:
    # d/d(policy chosen) of (h - 1/(2 beta))^2 = 2 (h - 5) at beta 0.1: rows 2 * [-4, -5, -7]
    inputs, (losses, _, _) = loss_of(0.1, "ipo", requires_grad=True)
    losses.sum().backward()
    assert inputs[0].grad.tolist() == pytest.approx([-8.0, -10.0, -14.0])
    assert inputs[1].grad.tolist() == pytest.approx([8.0, 10.0, 14.0])


def test_unknown_loss_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DPO loss 'hinge'; known: sigmoid, ipo"):
        loss_of(0.1, "hinge")


def test_config_rejects_unknown_loss_and_keys() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        DPOConfig(loss="hinge")
    with pytest.raises(ValidationError):
        DPOConfig(betta=0.1)


# --- batching -----------------------------------------------------------------------------------


def test_encode_completions_masks_completion_and_eos(tokenizer: Any) -> None:
    batch = encode_completions(tokenizer, ["w00 w01 <sep>", "w02 <sep>"], ["w03 w04", "w05"])
    # row 0: prompt [4, 5, 2] + completion [7, 8] + EOS: 6 tokens, the widest
    # row 1: prompt [6, 2] + completion [9] + EOS, right-padded with <pad> 0 to 6
    assert batch["input_ids"].tolist() == [
        [w(0), w(1), SEP, w(3), w(4), EOS],
        [w(2), SEP, w(5), EOS, PAD, PAD],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_encode_an_empty_completion_is_its_eos(tokenizer: Any) -> None:
    batch = encode_completions(tokenizer, ["w00 <sep>"], [""])
    assert batch["input_ids"].tolist() == [[w(0), SEP, EOS]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1]]


def test_encode_truncates_prompts_left_and_completions_right(tokenizer: Any) -> None:
    batch = encode_completions(
        tokenizer,
        ["w00 w01 w02 <sep>"],
        ["w03 w04 w05"],
        max_prompt_tokens=2,
        max_completion_tokens=1,
    )
    # prompt keeps its last 2 tokens [w02, <sep>]; completion its first [w03]; EOS always added
    assert batch["input_ids"].tolist() == [[w(2), SEP, w(3), EOS]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1]]


def test_encode_with_no_prompt_tokens_keeps_none(tokenizer: Any) -> None:
    batch = encode_completions(tokenizer, ["w00 w01 <sep>"], ["w03"], max_prompt_tokens=0)
    assert batch["input_ids"].tolist() == [[w(3), EOS]]


def test_concat_batches_pads_to_the_wider_and_keeps_rows(tokenizer: Any) -> None:
    first = encode_completions(tokenizer, ["w00 <sep>", "w01 <sep>"], ["w02", "w03"])  # width 4
    second = encode_completions(tokenizer, ["w00 <sep>", "w01 <sep>"], ["w04 w05 w06", "w07"])  # 6
    batch = concat_batches(first, second, tokenizer.pad_token_id)
    assert {k: tuple(v.shape) for k, v in batch.items()} == {
        "input_ids": (4, 6),
        "attention_mask": (4, 6),
        "loss_mask": (4, 6),
    }
    assert batch["input_ids"].tolist() == [
        [w(0), SEP, w(2), EOS, PAD, PAD],
        [w(1), SEP, w(3), EOS, PAD, PAD],
        [w(0), SEP, w(4), w(5), w(6), EOS],
        [w(1), SEP, w(7), EOS, PAD, PAD],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0],
    ]
    assert batch["loss_mask"].tolist() == [
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1],
        [0, 0, 1, 1, 0, 0],
    ]


def test_pairs_collate_chosen_rows_then_rejected_rows_with_their_reference(tokenizer: Any) -> None:
    pairs = [
        PreferencePair("w00 <sep>", "w02", "w04 w05 w06"),
        PreferencePair("w01 <sep>", "w03", "w07"),
    ]
    batch = collate_pairs(tokenizer, [(pairs[0], -1.0, -2.0), (pairs[1], -3.0, -4.0)])
    # The same rows as test_concat_batches: chosen 0, chosen 1, rejected 0, rejected 1.
    assert batch["input_ids"].tolist() == [
        [w(0), SEP, w(2), EOS, PAD, PAD],
        [w(1), SEP, w(3), EOS, PAD, PAD],
        [w(0), SEP, w(4), w(5), w(6), EOS],
        [w(1), SEP, w(7), EOS, PAD, PAD],
    ]
    assert batch["reference_chosen"].tolist() == [-1.0, -3.0]
    assert batch["reference_rejected"].tolist() == [-2.0, -4.0]
    encoded = encode_pairs(tokenizer, pairs)
    assert set(encoded) == {"input_ids", "attention_mask", "loss_mask"}
    for key, value in encoded.items():
        assert torch.equal(value, batch[key])


# --- log-probs ----------------------------------------------------------------------------------


def manual_completion_logp(model: Any, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """Sum over the completion's tokens t of log softmax(logits[t - 1])[token t], one row."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    start = len(prompt_ids)
    return sum(logps[t - 1, ids[0, t]].item() for t in range(start, ids.shape[1]))


def test_sequence_logps_is_the_completion_log_prob(model: Any, tokenizer: Any) -> None:
    prompts, completions = ["w00 w01 w02 <sep>", "w03 <sep>"], ["w01 w02", "w04 w05 w06"]
    batch = encode_completions(tokenizer, prompts, completions)
    expected = [
        manual_completion_logp(model, [w(0), w(1), w(2), SEP], [w(1), w(2), EOS]),
        manual_completion_logp(model, [w(3), SEP], [w(4), w(5), w(6), EOS]),
    ]
    with torch.no_grad():
        per_token = token_logps(model, batch)
        total = sequence_logps(model, batch)
    assert per_token.shape == (2, 6)  # [B, T - 1], T = 7
    assert total.shape == (2,)
    assert total.tolist() == pytest.approx(expected, abs=1e-5)
    # Only completion and EOS positions (loss_mask[:, 1:]) carry a log-prob; they are all < 0.
    counted = batch["loss_mask"][:, 1:].bool()
    assert bool((per_token[~counted] == 0).all())
    assert bool((per_token[counted] < 0).all())
    assert counted.sum(-1).tolist() == [3, 4]


def test_padding_does_not_change_a_log_prob(model: Any, tokenizer: Any) -> None:
    alone = encode_completions(tokenizer, ["w00 <sep>"], ["w01"])  # 4 tokens
    padded = encode_completions(
        tokenizer, ["w00 <sep>", "w02 w03 w04 w05 <sep>"], ["w01", "w06 w07 w00"]
    )
    assert padded["input_ids"].shape[1] == 9  # the short row carries 5 pads
    with torch.no_grad():
        assert sequence_logps(model, padded)[0].item() == pytest.approx(
            sequence_logps(model, alone)[0].item(), abs=1e-5
        )
        # The same through DPO's chosen-and-rejected concatenation.
        long_alone = encode_completions(tokenizer, ["w02 w03 w04 w05 <sep>"], ["w06 w07 w00"])
        both = sequence_logps(model, concat_batches(alone, long_alone, PAD))
        assert both.tolist() == pytest.approx(sequence_logps(model, padded).tolist(), abs=1e-5)


def test_log_probs_differ_between_completions(model: Any, tokenizer: Any) -> None:
    """Guards the tests above against a degenerate model that gives every sequence one log-prob."""
    batch = encode_completions(tokenizer, ["w00 <sep>"] * 2, ["w01 w02", "w03 w04"])
    with torch.no_grad():
        first, second = sequence_logps(model, batch).tolist()
    assert abs(first - second) > 1e-3


# --- one DPO training run -----------------------------------------------------------------------

# Chosen summaries copy the document's repeated word; rejected ones name absent words.
PAIRS = [
    PreferencePair("w00 w01 w00 w02 <sep>", "w00 w01", "w06 w07"),
    PreferencePair("w03 w03 w04 w05 <sep>", "w03 w04", "w07 w06"),
    PreferencePair("w01 w02 w02 w03 <sep>", "w02 w01", "w05 w06"),
    PreferencePair("w04 w05 w04 w00 <sep>", "w04 w00", "w07 w01"),
    PreferencePair("w02 w03 w01 w01 <sep>", "w01 w03", "w06 w04"),
    PreferencePair("w05 w00 w05 w01 <sep>", "w05 w00", "w03 w07"),
    PreferencePair("w00 w03 w03 w04 <sep>", "w03 w00", "w06 w05"),
    PreferencePair("w01 w04 w02 w04 <sep>", "w04 w02", "w07 w00"),
]
BETA = 0.5


def pair_logps(
    model: Any, tokenizer: Any, pairs: list[PreferencePair]
) -> tuple[list[float], list[float]]:
    prompts = [p.prompt for p in pairs]
    with torch.no_grad():
        chosen = sequence_logps(
            model.eval(), encode_completions(tokenizer, prompts, [p.chosen for p in pairs])
        )
        rejected = sequence_logps(
            model, encode_completions(tokenizer, prompts, [p.rejected for p in pairs])
        )
    return chosen.tolist(), rejected.tolist()


@pytest.mark.e2e
def test_dpo_training_run(tmp_path: Path, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.train.modeling import load_causal_lm

    base_dir = tmp_path / "base"
    base = tiny_gpt2(seed=1)
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    task = KeywordsTask(
        KeywordsParams(
            vocab_size=8, doc_len=4, n_salient=1, salient_repeats=2, n_train=10, pool_size=10
        )
    )
    ctx = MethodContext(
        task=task,
        pairs=PAIRS,
        base_model_dir=base_dir,
        output_dir=tmp_path / "policy",
        seed=0,
        cache=Cache(tmp_path / "cache"),
        base_key="tiny-base",
        progress=False,
    )
    cfg = DPOConfig(beta=BETA, lr=0.05, epochs=6, batch_size=4, warmup_ratio=0.0)

    torch.manual_seed(0)
    metrics = dpo.train(ctx, cfg)

    # ceil(8 pairs * 6 epochs / 4) = 12 steps of 4 pairs (8 sequences each: chosen then rejected)
    assert metrics["train_steps"] == 12
    assert metrics["train_examples"] == 12 * 8
    # Counted by the loop it ran (`MethodContext.train_loop`): 6 passes over each pair's
    # non-padding chosen and rejected tokens, and the training's seconds; no sampling, scoring
    # or verifier fit.
    pair_tokens = sum(int(encode_pairs(tokenizer, [p])["attention_mask"].sum()) for p in PAIRS)
    assert ctx.counters["tokens_trained"] == metrics["train_tokens"] == 6 * pair_tokens
    assert ctx.counters["train_s"] > 0
    assert set(ctx.counters) == {"tokens_trained", "train_s"}

    # The policy and its tokenizer are saved where the runner looks for them.
    assert (ctx.output_dir / "config.json").is_file()
    assert (ctx.output_dir / "tokenizer.json").is_file()
    policy = load_causal_lm(ctx.output_dir)

    # The reference log-probs are the base model's, cached under the hash of base and pairs.
    reference_chosen, reference_rejected = pair_logps(base, tokenizer, PAIRS)
    key = content_hash(
        {"base": "tiny-base", "pairs": [(p.prompt, p.chosen, p.rejected) for p in PAIRS]}
    )
    assert ctx.cache.has("reference_logps", key)
    cached = ctx.cache.read_json("reference_logps", key)
    assert cached["chosen"] == pytest.approx(reference_chosen, abs=1e-5)
    assert cached["rejected"] == pytest.approx(reference_rejected, abs=1e-5)

    # A second call reads the cache: it computes nothing (no model or tokenizer is even needed).
    def no_forward(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("reference log-probs recomputed despite the cache")

    monkeypatch.setattr("bench.train.modeling.sequence_logps", no_forward)
    assert reference_logps(ctx, None, None, PAIRS) == cached
    monkeypatch.undo()

    # Training raised the implicit reward margin beta * [(pi_c - ref_c) - (pi_r - ref_r)] on its
    # pairs from 0 (policy = reference) to a clearly positive value, on every pair.
    policy_chosen, policy_rejected = pair_logps(policy, tokenizer, PAIRS)
    margins = [
        BETA * ((pc - rc) - (pr - rr))
        for pc, pr, rc, rr in zip(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected, strict=True
        )
    ]
    assert min(margins) > 0
    assert sum(margins) / len(margins) > 1.0
    assert metrics["train_reward_accuracy"] > 0.5
    # The policy moved, but the base checkpoint on disk did not.
    base_chosen, base_rejected = pair_logps(load_causal_lm(base_dir), tokenizer, PAIRS)
    assert base_chosen == pytest.approx(reference_chosen, abs=1e-5)
    assert base_rejected == pytest.approx(reference_rejected, abs=1e-5)
    assert not math.isnan(metrics["final_loss"])
