"""Reward models (bench.train.reward_models): the Bradley-Terry loss and pair metrics against
numbers computed by hand, the linear verifier against a known linear reward, every kind's save/load
round trip, and which weights each capacity trains.

Transformer verifiers here are tiny GPT-2s (12-word vocabulary, width 8, one layer: ~1,100
parameters) over the word tokenizer; never the micro base model.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from bench.method_api import VERIFIER_DIR
from bench.tasks.base import PreferencePair, Sample
from bench.tasks.keywords import (
    SPECIAL_TOKENS,
    KeywordsParams,
    KeywordsTask,
    format_prompt,
    parse_prompt,
    word,
    write_word_tokenizer,
)
from bench.train.logp_readout import LogProbReadout
from bench.train.modeling import build_gpt2, encode_completions, load_tokenizer, sequence_logps
from bench.train.reward_models import (
    INVALID_SCORE,
    SPEC_FILE,
    ClassifierRewardModel,
    LogProbReadoutRewardModel,
    LogProbRewardModel,
    OracleFeaturesRewardModel,
    RewardModel,
    RewardModelSpec,
    bradley_terry_loss,
    load_reward_model,
    pair_metrics,
    save_implicit_reward,
    train_reward_model,
)

PAD, EOS = 0, 3  # ids of <pad> and <eos> in the word tokenizer
VOCAB = SPECIAL_TOKENS + [word(i) for i in range(8)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the loss -----------------------------------------------------------------------------------


def test_bradley_terry_loss_by_hand() -> None:
    # -log sigmoid(r_w - r_l) = log(1 + e^-(r_w - r_l)):
    #   r_w - r_l = 1:  log(1 + e^-1) = 0.3132617
    #   r_w - r_l = 0:  log 2         = 0.6931472
    #   r_w - r_l = -2: log(1 + e^2)  = 2.1269280
    chosen = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    losses = bradley_terry_loss(chosen, rejected)
    assert losses.shape == (3,)
    assert losses.tolist() == pytest.approx([0.3132617, 0.6931472, 2.1269280], abs=1e-7)
    # d/dr_w = -sigmoid(-(r_w - r_l)): -sigmoid(-1) = -0.2689414, -0.5, -sigmoid(2) = -0.8807971
    losses.sum().backward()
    assert chosen.grad.tolist() == pytest.approx([-0.2689414, -0.5, -0.8807971], abs=1e-7)
    assert rejected.grad.tolist() == pytest.approx([0.2689414, 0.5, 0.8807971], abs=1e-7)


def test_bradley_terry_loss_is_stable_at_large_margins() -> None:
    # A margin of -200 would overflow exp in a naive log(1 + e^200): the loss is 200 (+ e^-200).
    losses = bradley_terry_loss(torch.tensor([-100.0, 100.0]), torch.tensor([100.0, -100.0]))
    assert losses.tolist() == pytest.approx([200.0, 0.0], abs=1e-6)


# --- pair metrics -------------------------------------------------------------------------------


class TableRewardModel(RewardModel):
    """Scores looked up in a table by output: a fake verifier with known scores."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def score(self, prompts: Sequence[str], outputs: Sequence[str]) -> list[float]:
        return [self.table[o] for o in outputs]

    def save(self, out_dir: Path) -> None:
        raise NotImplementedError


def test_pair_metrics_by_hand() -> None:
    model = TableRewardModel({"a": 2.0, "b": 1.0, "c": 0.0, "d": -1.0, "e": 3.0})
    pairs = [
        PreferencePair("x", "a", "b"),  # 2 > 1: right;  sigmoid(1)  = 0.7310586
        PreferencePair("x", "c", "c"),  # tie: half;      sigmoid(0)  = 0.5
        PreferencePair("x", "d", "b"),  # -1 < 1: wrong;  sigmoid(-2) = 0.1192029
        PreferencePair("x", "e", "c"),  # 3 > 0: right;   sigmoid(3)  = 0.9525741
    ]
    metrics = pair_metrics(model, pairs)
    # accuracy (1 + 0.5 + 0 + 1) / 4 = 0.625; likelihood 2.3028356 / 4 = 0.5757089
    assert metrics["accuracy"] == pytest.approx(0.625)
    assert metrics["bt_likelihood"] == pytest.approx(0.5757089, abs=1e-7)
    assert metrics["n"] == 4


def test_pair_metrics_likelihood_survives_invalid_scores() -> None:
    # An invalid chosen output (-1e4) against a real one: sigmoid(-1e4 - 0) underflows to 0, no
    # OverflowError from exp(1e4); the other pair: sigmoid(0 - -1e4) = 1.
    model = TableRewardModel({"bad": INVALID_SCORE, "ok": 0.0})
    metrics = pair_metrics(
        model, [PreferencePair("x", "bad", "ok"), PreferencePair("x", "ok", "bad")]
    )
    assert metrics == {"accuracy": 0.5, "bt_likelihood": pytest.approx(0.5), "n": 2}


# --- the linear verifier ------------------------------------------------------------------------

# The keywords task's gold reward is linear in its features [distinct salient, absent, repeats,
# length] with weights [1, -1, -0.5, -0.1] (salient bonus, absent, repeat and length penalties).
GOLD_WEIGHTS = [1.0, -1.0, -0.5, -0.1]


def random_summaries(
    prompts: list[str], n: int, temperature: float, seed: int
) -> list[list[Sample]]:
    """A fake SFT sampler: 2 to 6 words, each a random document position (so salient words, which
    fill 9 of 24 positions, are frequent and repeats happen) or, 1 time in 5, a word absent from
    the document, so that all four features vary across a pair."""
    rng = random.Random(seed)
    out = []
    for prompt in prompts:
        doc = parse_prompt(prompt)
        absent = [word(i) for i in range(64) if word(i) not in doc]
        group = []
        for _ in range(n):
            words = [
                rng.choice(doc) if rng.random() < 0.8 else rng.choice(absent)
                for _ in range(rng.randint(2, 6))
            ]
            group.append(Sample(" ".join(words), len(words) + 1, True))
        out.append(group)
    return out


def keywords_pairs(
    label_temperature: float, n_train: int, n_valid: int
) -> tuple[KeywordsTask, list[PreferencePair], list[PreferencePair]]:
    task = KeywordsTask(
        KeywordsParams(
            n_train=n_train,
            pool_size=n_train,
            n_valid=n_valid,
            label_temperature=label_temperature,
        )
    )
    train = task.preference_pool(n_train, 0, random_summaries)
    valid = task.preference_pool(n_valid, 0, random_summaries, split="valid")
    return task, train, valid


def test_linear_fit_recovers_the_direction_of_hard_labels() -> None:
    """Labels by the larger gold reward (label temperature 0): the data are separable up to
    ties, so the scale of the fit is set by the L2 penalty, not the data; its direction is the
    gold weights' one."""
    task, train, valid = keywords_pairs(0.0, n_train=2000, n_valid=500)
    model = OracleFeaturesRewardModel.fit(task, train, l2=1e-3)
    salient, absent, repeats, length = model.weights
    # Observed: [5.28, -5.41, -2.50, -0.67]; ratios to the salient weight
    # 1 : -1.02 : -0.47 : -0.13 against the gold 1 : -1 : -0.5 : -0.1.
    assert salient > 1.0
    assert absent / salient == pytest.approx(-1.0, abs=0.2)
    assert repeats / salient == pytest.approx(-0.5, abs=0.15)
    assert -0.3 < length / salient < 0
    # Ties are labelled by a coin, so 1.0 is out of reach; observed 0.982.
    assert pair_metrics(model, valid)["accuracy"] > 0.95


def test_linear_fit_recovers_the_weights_of_soft_labels() -> None:
    """Labels drawn from sigmoid(r_a - r_b) (label temperature 1) are exactly the Bradley-Terry
    model the fit assumes, so the maximum-likelihood weights converge to the gold weights
    themselves, scale included (observed [0.93, -1.01, -0.50, -0.07])."""
    task, train, _ = keywords_pairs(1.0, n_train=3000, n_valid=1)
    model = OracleFeaturesRewardModel.fit(task, train, l2=1e-5)
    assert model.weights == pytest.approx(GOLD_WEIGHTS, abs=0.15)


def test_linear_fit_skips_unreadable_pairs_and_refuses_when_none_is_left() -> None:
    task = KeywordsTask(KeywordsParams())
    prompt = format_prompt(
        ["w01"] * 3 + ["w02"] * 3 + ["w03"] * 3 + [word(i) for i in range(10, 25)]
    )
    unreadable = [PreferencePair(prompt, "w01 w02", "w99 w98"), PreferencePair(prompt, "w01", "")]
    with pytest.raises(ValueError, match="no pair with two readable outputs"):
        OracleFeaturesRewardModel.fit(task, unreadable, l2=1e-3)
    # One readable pair next to them is fitted alone: chosen [2, 0, 0, 2] - rejected [0, 0, 0, 2]
    # = d = [2, 0, 0, 0], so only the salient weight w moves. The penalised log-likelihood per
    # pair, log sigmoid(2 w) - l2 w^2 / 2, is stationary where 2 (1 - sigmoid(2 w)) = l2 w: with
    # l2 = 1, w = 0.5212985 (by bisection).
    readable = PreferencePair(prompt, "w01 w02", "w10 w11")
    model = OracleFeaturesRewardModel.fit(task, [*unreadable, readable], l2=1.0)
    assert model.weights[0] == pytest.approx(0.5212985, abs=1e-6)
    assert model.weights[1:] == [0.0, 0.0, 0.0]
    # The penalty is per pair: three copies of the pair give the same fit.
    assert OracleFeaturesRewardModel.fit(task, [readable] * 3, l2=1.0).weights == pytest.approx(
        model.weights, abs=1e-9
    )


def test_linear_scores_by_hand_and_unreadable_outputs_score_invalid() -> None:
    task = KeywordsTask(KeywordsParams())  # summaries of 2 to 6 known words
    # Salient w01, w02, w03 three times each; fillers w10..w24.
    prompt = format_prompt(
        ["w01"] * 3 + ["w02"] * 3 + ["w03"] * 3 + [word(i) for i in range(10, 25)]
    )
    model = OracleFeaturesRewardModel(task, [2.0, -3.0, -0.5, 0.25])
    outputs = [
        "w01 w02 w10",  # features [2, 0, 0, 3]: 4 + 0.75 = 4.75
        "w01 w01 w50",  # features [1, 1, 1, 3]: 2 - 3 - 0.5 + 0.75 = -0.75
        "",  # no words: below min_words
        "w01",  # one word: below min_words
        "w01 w02 w03 w10 w11 w12 w13",  # seven words: above max_words
        "w01 hello",  # not a word of the vocabulary
    ]
    scores = model.score([prompt] * len(outputs), outputs)
    assert scores[:2] == pytest.approx([4.75, -0.75])
    assert scores[2:] == [INVALID_SCORE] * 4
    assert INVALID_SCORE < -1000  # below any real score of a summary


# --- transformer verifiers ----------------------------------------------------------------------


def tiny_gpt2(seed: int) -> Any:
    return build_gpt2(
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


def save_policy(path: Path, seed: int) -> Path:
    """A tiny GPT-2 and the word tokenizer, saved as a policy directory."""
    tiny_gpt2(seed).save_pretrained(path)
    write_word_tokenizer(VOCAB, path)
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_policy(tmp_path_factory.mktemp("base"), seed=1)


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
PROMPTS = [p.prompt for p in PAIRS] * 2
OUTPUTS = [p.chosen for p in PAIRS] + [p.rejected for p in PAIRS]
SMALL_TASK = KeywordsTask(
    KeywordsParams(vocab_size=8, doc_len=4, n_salient=1, salient_repeats=2, n_train=8, pool_size=8)
)


def fit(base_dir: Path, **spec: Any) -> RewardModel:
    model, _ = train_reward_model(
        RewardModelSpec(lr=0.05, epochs=4, batch_size=4, **spec),
        SMALL_TASK,
        PAIRS,
        base_dir,
        seed=0,
        progress=False,
    )
    return model


def test_global_full_and_head_save_and_load_give_identical_scores(
    base_dir: Path, tmp_path: Path
) -> None:
    for capacity in ("full", "head"):
        model = fit(base_dir, kind="global", capacity=capacity)
        assert isinstance(model, ClassifierRewardModel)
        before = model.score(PROMPTS, OUTPUTS)
        model.save(tmp_path / capacity)
        loaded = load_reward_model(tmp_path / capacity, SMALL_TASK)
        assert isinstance(loaded, ClassifierRewardModel)
        assert loaded.score(PROMPTS, OUTPUTS) == before
        assert len(set(before)) > 1, "a constant scorer makes the round trip vacuous"


@pytest.mark.parametrize("spec", [{"kind": "global", "capacity": "full"}, {"kind": "local"}])
def test_training_separates_its_pairs(base_dir: Path, spec: dict[str, str]) -> None:
    """Four epochs on eight separable pairs at lr 0.05: the verifier ranks every chosen output
    above its rejected one, with confidence (observed BT likelihood 0.999 global, 0.994 local;
    an untrained scalar head is at chance)."""
    metrics = pair_metrics(fit(base_dir, **spec), PAIRS)
    assert metrics["accuracy"] == 1.0
    assert metrics["bt_likelihood"] > 0.9


def test_local_save_and_load_give_identical_scores(base_dir: Path, tmp_path: Path) -> None:
    model = fit(base_dir, kind="local")
    assert isinstance(model, LogProbRewardModel) and model.reference is None
    before = model.score(PROMPTS, OUTPUTS)
    model.save(tmp_path / "local")
    spec = json.loads((tmp_path / "local" / SPEC_FILE).read_text())
    assert spec == {"kind": "logprob", "beta": 1.0, "model": "model", "reference": None}
    loaded = load_reward_model(tmp_path / "local", SMALL_TASK)
    assert loaded.score(PROMPTS, OUTPUTS) == before
    # A local reward is the summed log-prob: negative, and it moved from the base model's.
    tokenizer = load_tokenizer(base_dir)
    batch = encode_completions(tokenizer, PROMPTS, OUTPUTS)
    with torch.no_grad():
        base_logps = sequence_logps(tiny_gpt2(seed=1).eval(), batch).tolist()
    assert all(s < 0 for s in before)
    assert before != pytest.approx(base_logps, abs=1e-3)


def test_linear_save_and_load_give_identical_scores(tmp_path: Path) -> None:
    task, train, valid = keywords_pairs(0.0, n_train=200, n_valid=50)
    model = OracleFeaturesRewardModel.fit(task, train, l2=1e-3)
    model.save(tmp_path / "linear")
    loaded = load_reward_model(tmp_path / "linear", task)
    assert isinstance(loaded, OracleFeaturesRewardModel)
    assert loaded.weights == model.weights
    prompts = [p.prompt for p in valid] * 2
    outputs = [p.chosen for p in valid] + [p.rejected for p in valid]
    assert loaded.score(prompts, outputs) == model.score(prompts, outputs)


@pytest.mark.parametrize(
    "layout",
    [
        "policy-above",  # the dpo method: <entry>/<VERIFIER_DIR> declares <entry> itself
        "policy-inside",  # the dpo-kind verifier of online methods: <entry>/<VERIFIER_DIR>/policy
    ],
)
def test_implicit_reward_survives_a_rename_of_its_entry(
    base_dir: Path, tmp_path: Path, layout: str
) -> None:
    """The cache builds an entry in a temporary folder and renames it into place: the implicit
    reward must find its policy after that rename."""
    building = tmp_path / "tmp-entry"
    rm_dir = building / VERIFIER_DIR
    policy = building if layout == "policy-above" else rm_dir / "policy"
    save_policy(policy, seed=2)
    save_implicit_reward(rm_dir, policy=policy, reference=base_dir, beta=0.5)
    spec = json.loads((rm_dir / SPEC_FILE).read_text())
    assert spec["model"] == (".." if layout == "policy-above" else "policy")
    before = load_reward_model(rm_dir, SMALL_TASK).score(PROMPTS, OUTPUTS)

    final = tmp_path / "entry"
    building.rename(final)
    loaded = load_reward_model(final / VERIFIER_DIR, SMALL_TASK)
    assert isinstance(loaded, LogProbRewardModel)
    assert loaded.score(PROMPTS, OUTPUTS) == before

    # beta * (log pi - log pi_ref), pi the seed-2 model and pi_ref the seed-1 base, by hand.
    batch = encode_completions(load_tokenizer(base_dir), PROMPTS, OUTPUTS)
    with torch.no_grad():
        expected = 0.5 * (
            sequence_logps(tiny_gpt2(seed=2).eval(), batch)
            - sequence_logps(tiny_gpt2(seed=1).eval(), batch)
        )
    assert before == pytest.approx(expected.tolist(), abs=1e-5)
    assert max(abs(s) for s in before) > 1e-2, "policy = reference would make this vacuous"


def test_implicit_reward_survives_a_move_of_the_whole_cache(tmp_path: Path) -> None:
    """Every other cache entry is addressed relative to the cache root; so is this one."""
    cache = tmp_path / "cache"
    base = save_policy(cache / "models" / "base", seed=1)
    policy = save_policy(cache / "models" / "policy", seed=2)
    save_implicit_reward(policy / VERIFIER_DIR, policy=policy, reference=base, beta=0.5)
    before = load_reward_model(policy / VERIFIER_DIR, SMALL_TASK).score(PROMPTS, OUTPUTS)
    cache.rename(tmp_path / "moved")
    moved = tmp_path / "moved" / "models" / "policy" / VERIFIER_DIR
    assert load_reward_model(moved, SMALL_TASK).score(PROMPTS, OUTPUTS) == before


def test_an_implicit_reward_is_not_saved_as_a_local_one(base_dir: Path, tmp_path: Path) -> None:
    from bench.train.modeling import load_causal_lm

    model = LogProbRewardModel(
        load_causal_lm(base_dir), load_tokenizer(base_dir), load_causal_lm(base_dir), beta=0.5
    )
    with pytest.raises(ValueError, match="save_implicit_reward"):
        model.save(tmp_path / "rm")


def test_a_dpo_reward_model_is_not_trained_here(base_dir: Path) -> None:
    with pytest.raises(ValueError, match="implicit reward of a DPO policy"):
        fit(base_dir, kind="dpo")


# --- capacity: which weights train --------------------------------------------------------------


def fresh_classifier(base_dir: Path, seed: int) -> Any:
    """What train_reward_model starts from: the base weights and a scalar head seeded by `seed`."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1)


def split_state(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone, head) parameters of a GPT-2 sequence classifier, by name."""
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    head = {k: v for k, v in state.items() if k.startswith("score")}
    backbone = {k: v for k, v in state.items() if not k.startswith("score")}
    assert head and backbone
    return backbone, head


@pytest.mark.parametrize("capacity", ["head", "full"])
def test_capacity_decides_which_weights_train(base_dir: Path, capacity: str) -> None:
    start_backbone, start_head = split_state(fresh_classifier(base_dir, seed=0))
    # The starting point is reproducible: a second load with the same seed is identical.
    again_backbone, again_head = split_state(fresh_classifier(base_dir, seed=0))
    assert all(torch.equal(start_head[k], again_head[k]) for k in start_head)
    assert all(torch.equal(start_backbone[k], again_backbone[k]) for k in start_backbone)

    model = fit(base_dir, kind="global", capacity=capacity)
    backbone, head = split_state(model.model)
    assert backbone.keys() == start_backbone.keys()
    changed = [k for k in backbone if not torch.equal(backbone[k], start_backbone[k])]
    assert any(not torch.equal(head[k], start_head[k]) for k in head), "the head did not train"
    if capacity == "head":
        assert changed == [], f"a frozen backbone changed: {changed}"
    else:
        # Every backbone tensor gets a gradient (layer norms, attention, embeddings).
        assert len(changed) == len(backbone)


# --- the spec -----------------------------------------------------------------------------------


def test_spec_rejects_unknown_keys_and_values() -> None:
    with pytest.raises(ValidationError, match="capcity"):
        RewardModelSpec(kind="global", capcity="head")
    with pytest.raises(ValidationError):
        RewardModelSpec(kind="linear")  # linear is a capacity of `global`, not a kind
    with pytest.raises(ValidationError):
        RewardModelSpec(capacity="probe")
    with pytest.raises(ValidationError):
        RewardModelSpec(lr=0)


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ({}, "global-full"),
        ({"capacity": "head"}, "global-head"),
        ({"kind": "oracle_features"}, "oracle-features"),
        ({"kind": "local"}, "local"),
        # The capacity means nothing outside `global`, so it stays out of the label.
        ({"kind": "local", "capacity": "head"}, "local"),
        ({"kind": "dpo"}, "dpo"),
    ],
)
def test_spec_label(spec: dict[str, str], label: str) -> None:
    assert RewardModelSpec(**spec).label == label


# --- the log-prob readout (issue 11) ------------------------------------------------------------


def length_confounded_pairs(base_dir: Path, n: int, seed: int) -> list[PreferencePair]:
    """Pairs labelled by a reward in the readout's class that zero-shot log pi gets backwards:
    r*(x, y) = log pi_base(y | x) + 3 * |y| (a word is worth more than its log-prob costs under
    the tiny base, about -log 12 = -2.5), the larger r* chosen. Outputs are 1 to 4 random words."""
    rng = random.Random(seed)
    tokenizer = load_tokenizer(base_dir)
    prompts, outputs = [], []
    for _ in range(n):
        prompt = " ".join(word(rng.randrange(8)) for _ in range(4)) + " <sep>"
        for _ in range(2):
            prompts.append(prompt)
            outputs.append(" ".join(word(rng.randrange(8)) for _ in range(rng.randint(1, 4))))
    with torch.no_grad():
        logps = sequence_logps(
            tiny_gpt2(seed=1).eval(), encode_completions(tokenizer, prompts, outputs)
        )
    rewards = [lp + 3.0 * len(o.split()) for lp, o in zip(logps.tolist(), outputs, strict=True)]
    pairs = []
    for i in range(0, 2 * n, 2):
        a, b = (i, i + 1) if rewards[i] > rewards[i + 1] else (i + 1, i)
        pairs.append(PreferencePair(prompts[i], outputs[a], outputs[b]))
    return pairs


def test_logp_readout_starts_at_log_pi_and_learns_what_a_word_is_worth(
    base_dir: Path, tmp_path: Path
) -> None:
    """The readout is initialised at r = log pi(y | x) (the zero-shot verifier) and learns, from
    96 pairs, the length term that log pi gets wrong: held-out accuracy on 64 pairs from chance
    to near 1 (observed 0.51 -> 0.95; learnt a = 0.53, b_word = 1.68). The frozen LM is left as
    it was, and the verifier round-trips through save and load."""
    train, heldout = (
        length_confounded_pairs(base_dir, 96, seed=0),
        length_confounded_pairs(base_dir, 64, seed=1),
    )
    spec = RewardModelSpec(
        kind="global", capacity="head", readout="logp", lr=0.1, epochs=10, batch_size=16
    )
    assert spec.label == "global-logp-head"
    tokenizer = load_tokenizer(base_dir)
    zero_shot = LogProbRewardModel(tiny_gpt2(seed=1).eval(), tokenizer)
    untrained = LogProbReadoutRewardModel(
        LogProbReadout(tiny_gpt2(seed=1), residual=True, train_lm=False).eval(), tokenizer
    )
    assert untrained.score(PROMPTS, OUTPUTS) == pytest.approx(
        zero_shot.score(PROMPTS, OUTPUTS), abs=1e-5
    )
    assert pair_metrics(zero_shot, heldout)["accuracy"] < 0.6

    model, _ = train_reward_model(spec, SMALL_TASK, train, base_dir, seed=0, progress=False)
    assert isinstance(model, LogProbReadoutRewardModel)
    assert pair_metrics(model, heldout)["accuracy"] > 0.9
    assert model.model.readout_state()["word_bias"] > 1.0
    for name, parameter in model.model.lm.state_dict().items():
        assert torch.equal(parameter, tiny_gpt2(seed=1).state_dict()[name]), name

    model.save(tmp_path / "readout")
    loaded = load_reward_model(tmp_path / "readout", SMALL_TASK)
    assert loaded.score(PROMPTS, OUTPUTS) == pytest.approx(model.score(PROMPTS, OUTPUTS), abs=1e-6)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "local", "readout": "logp"},
        {"kind": "oracle_features", "readout": "logp"},
        {"kind": "global", "capacity": "head", "residual": True},
    ],
)
def test_readout_options_without_a_readout_to_set_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="is for"):
        RewardModelSpec(**spec)


@pytest.mark.parametrize("kind", ["local", "dpo"])
def test_fitting_a_verifier_counts_its_tokens_and_seconds(
    base_dir: Path, tmp_path: Path, kind: str
) -> None:
    """`fit_verifier` counts the verifier's training, never the policy's: 4 epochs over every
    pair's non-padding chosen and rejected tokens (the `dpo` kind trains a DPO policy of its
    own, whose tokens are the verifier's too), and its wall seconds."""
    from bench.method_api import MethodContext
    from bench.run.cache import Cache
    from bench.tasks.base import MethodTask
    from bench.train.modeling import encode_pairs
    from bench.train.preference import fit_verifier

    ctx = MethodContext(
        task=MethodTask(SMALL_TASK),
        pairs=PAIRS,
        base_model_dir=base_dir,
        output_dir=tmp_path / "policy",
        seed=0,
        cache=Cache(tmp_path / "cache"),
        base_key="tiny-base",
        progress=False,
    )
    _, metrics = fit_verifier(ctx, RewardModelSpec(kind=kind, lr=0.05, epochs=4, batch_size=4))
    tokenizer = load_tokenizer(base_dir)
    pair_tokens = sum(int(encode_pairs(tokenizer, [p])["attention_mask"].sum()) for p in PAIRS)
    assert ctx.counters["verifier_tokens_trained"] == metrics["train_tokens"] == 4 * pair_tokens
    assert ctx.counters["verifier_fit_s"] > 0
    assert set(ctx.counters) == {"verifier_tokens_trained", "verifier_fit_s"}
