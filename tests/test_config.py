"""Suite configs: every error names the file, the key, the value and what is allowed, in one line.

The registries are filled with small `test_*` entries here and `discover()` is switched off, so
these tests depend neither on the real tasks, methods, judges and backends nor on torch.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench import registry
from bench.config import (
    Budget,
    Cell,
    MicroBaseModel,
    PretrainedBaseModel,
    StrictParams,
    Suite,
    TaskNeed,
    is_suite_file,
    load_suite,
    n_pairs_by_budget,
    validate_suite,
)
from bench.errors import MISSING, ConfigError, ConfigIssue
from bench.tasks.base import Example, Task

REPO = Path(__file__).resolve().parents[1]


class KeywordsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vocab_size: int = 64
    doc_len: int = 24


class DpoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    beta: float = 0.1
    epochs: int = 1
    loss: Literal["sigmoid", "ipo"] = "sigmoid"


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclasses.dataclass
class BestOfNParams:
    """A stdlib dataclass config: pydantic alone would drop unknown keys silently."""

    n: int = 4


class PoolParams(StrictParams):
    pool_size: int = 1000
    """Pairs in the pool."""


class VerifierParams(StrictParams):
    capacity: Literal["full", "linear"] = "full"
    """`linear` reads the task's features."""

    def task_needs(self) -> list[TaskNeed]:
        return [(("capacity",), "has_features")] if self.capacity == "linear" else []


class OnlineParams(StrictParams):
    rounds: int = 1
    """Rounds."""
    verifier: VerifierParams = VerifierParams()
    """A nested config: its needs are the method's."""


class StubTask(Task):
    """What validation builds: a task of no data, declaring what the micro base model asks."""

    has_gold = True
    builds_tokenizer = True

    def __init__(self, name: str, pool_size_limit: int | None = None) -> None:
        self.name, self._pool_size_limit = name, pool_size_limit

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        raise NotImplementedError

    def pool_size(self) -> int:
        raise NotImplementedError

    def pool_size_limit(self) -> int | None:
        return self._pool_size_limit

    def preference_pool(self, size: int, seed: int, sample: Any, split: str = "train") -> list:
        raise NotImplementedError


class BareTask(StubTask):
    """A task that declares no capability at all."""

    has_gold = False
    builds_tokenizer = False


def broken_task(params: NoParams) -> Task:
    """A task whose params are each valid but do not fit together (its constructor says so)."""
    raise ValueError("n_salient * salient_repeats = 12 does not fit in doc_len = 8")


def ignore(*args: Any) -> None:
    """The factory of a method, judge or backend that validation never calls."""


for register, name, config, factory in [
    (registry.register_task, "test_keywords", KeywordsParams, lambda p: StubTask("test_keywords")),
    (registry.register_task, "test_pool", PoolParams, lambda p: StubTask("test_pool", p.pool_size)),
    (registry.register_task, "test_bare", NoParams, lambda p: BareTask("test_bare")),
    (registry.register_task, "test_broken", NoParams, broken_task),
    (registry.register_method, "test_sft", NoParams, ignore),
    (registry.register_method, "test_dpo", DpoParams, ignore),
    (registry.register_method, "test_best_of_n", BestOfNParams, ignore),
    (registry.register_method, "test_online", OnlineParams, ignore),
    (registry.register_judge, "test_gold", NoParams, ignore),
    (registry.register_backend, "test_hf", NoParams, ignore),
]:
    register(name, config)(factory)


@pytest.fixture(autouse=True)
def no_discovery(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the test_* entries: the real modules are written concurrently and may be broken."""
    monkeypatch.setattr(registry, "_discovered", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "suites" / "micro").mkdir(parents=True)


VALID: dict[str, Any] = {
    "name": "micro-keywords",
    "version": 1,
    "tier": "micro",
    "description": "Keyword summaries with an exact gold reward.",
    "requires": [],
    "task": {"name": "test_keywords", "params": {"vocab_size": 32}},
    "base_model": {
        "kind": "micro",
        "n_embd": 128,
        "n_layer": 1,
        "n_head": 4,
        "initializer_range": 0.1,
        "pretrain_steps": 300,
        "sft_epochs": 4,
        "lr": 0.003,
        "batch_size": 64,
        "seed": 0,
    },
    "budgets": [250, 1000],
    "methods": [
        "test_sft",
        {"method": "test_dpo", "beta": 0.2},
        {"method": "test_dpo", "name": "dpo_2x", "epochs": 2},
    ],
    "generation": {
        "backend": "test_hf",
        "backend_params": {},
        "n_eval_prompts": 500,
        "max_new_tokens": 8,
        "temperature": 0.0,
        "top_p": 1.0,
    },
    "judge": {"kind": "test_gold", "params": {}},
    "seeds": [0, 1],
    "expectations": [
        {"method": "test_dpo", "budget": 1000, "min_winrate": 0.6},
        {"method": "test_dpo", "beats": "test_sft"},
        {
            "method": "dpo_2x",
            "equivalent_to": "test_dpo",
            "margin": 0.05,
            "note": "observed on 2026-11",
        },
    ],
}

FILE = "suites/micro/t.yaml"
ALLOWED_TOP = (
    "include, name, version, tier, description, requires, task, base_model, budgets, methods, "
    "generation, judge, seeds, expectations"
)
BUDGET_FORMS = (
    "expected a count >= 1 (int), a fraction in (0, 1] (float), 'n=<count>' or 'frac=<fraction>'"
)


def suite_data(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(VALID)
    data.update(changes)
    return data


def write(path: str, content: str | dict[str, Any]) -> str:
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    Path(path).write_text(textwrap.dedent(text))
    return path


def issues_of(path: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_suite(path)
    lines = str(caught.value).splitlines()
    assert lines == [str(issue) for issue in caught.value.issues]
    return lines


def only_issue(data: str | dict[str, Any]) -> str:
    lines = issues_of(write(FILE, data))
    assert len(lines) == 1, lines
    return lines[0]


# --- one line per error: file, key path, value, what is allowed --------------------------------


def test_valid_suite_loads() -> None:
    suite = load_suite(write(FILE, VALID))
    assert suite.name == "micro-keywords"
    assert suite.source == FILE
    assert isinstance(suite.base_model, MicroBaseModel)


def test_unknown_top_level_key_lists_allowed_keys() -> None:
    line = only_issue(suite_data(extra_key=1))
    assert line == f"{FILE}: extra_key: got 1 (int); unexpected key; allowed keys: {ALLOWED_TOP}"


def test_source_key_is_not_writable_from_yaml() -> None:
    line = only_issue(suite_data(source="elsewhere.yaml"))
    assert line.startswith(f"{FILE}: source: got 'elsewhere.yaml' (str); unexpected key")


def test_unknown_key_in_a_method_override_lists_the_method_config_keys() -> None:
    data = suite_data()
    data["methods"][1] = {"method": "test_dpo", "betta": 0.2}
    line = only_issue(data)
    assert line == (
        f"{FILE}: methods[1].betta: got 0.2 (float); unexpected key; "
        "allowed keys: beta, epochs, loss"
    )


def test_unknown_key_in_a_dataclass_config_is_an_error_too() -> None:
    data = suite_data()
    data["methods"].append({"method": "test_best_of_n", "m": 3})
    line = only_issue(data)
    assert line == f"{FILE}: methods[3].m: got 3 (int); unexpected key; allowed keys: n"


def test_wrong_type_in_a_method_override() -> None:
    data = suite_data()
    data["methods"][1]["beta"] = "abc"
    assert only_issue(data) == f"{FILE}: methods[1].beta: got 'abc' (str); expected a number"


def test_wrong_type_in_the_schema_is_strict() -> None:
    data = suite_data()
    data["generation"]["temperature"] = "0.5"  # a quoted YAML string is not a number
    assert only_issue(data) == f"{FILE}: generation.temperature: got '0.5' (str); expected a number"


def test_wrong_type_in_task_params() -> None:
    data = suite_data()
    data["task"]["params"]["vocab_size"] = "big"
    assert (
        only_issue(data) == f"{FILE}: task.params.vocab_size: got 'big' (str); expected an integer"
    )


def test_literal_in_a_registered_config_lists_the_allowed_values() -> None:
    data = suite_data()
    data["methods"][1]["loss"] = "hinge"
    assert only_issue(data) == (
        f"{FILE}: methods[1].loss: got 'hinge' (str); expected one of 'sigmoid' or 'ipo'"
    )


def test_missing_field() -> None:
    data = suite_data()
    del data["generation"]["n_eval_prompts"]
    assert only_issue(data) == f"{FILE}: generation.n_eval_prompts: missing; required key"


def test_missing_field_of_the_tagged_base_model() -> None:
    data = suite_data()
    del data["base_model"]["lr"]
    assert only_issue(data) == f"{FILE}: base_model.lr: missing; required key"


def test_bad_literal_lists_allowed_values() -> None:
    assert only_issue(suite_data(tier="huge")) == (
        f"{FILE}: tier: got 'huge' (str); expected one of 'micro', 'small' or 'paper'"
    )


def test_bad_base_model_kind_lists_the_kinds() -> None:
    data = suite_data()
    data["base_model"]["kind"] = "huge"
    assert only_issue(data) == (
        f"{FILE}: base_model.kind: got 'huge' (str); expected one of 'micro', 'pretrained'"
    )
    del data["base_model"]["kind"]
    assert only_issue(data) == (
        f"{FILE}: base_model.kind: missing; required key; expected one of 'micro', 'pretrained'"
    )


def test_unknown_key_in_the_base_model_lists_its_keys() -> None:
    data = suite_data()
    data["base_model"]["n_embed"] = 64
    assert only_issue(data) == (
        f"{FILE}: base_model.n_embed: got 64 (int); unexpected key; allowed keys: kind, n_embd, "
        "n_layer, n_head, initializer_range, pretrain_steps, sft_epochs, lr, batch_size, seed"
    )


def test_heads_must_divide_width() -> None:
    data = suite_data()
    data["base_model"]["n_head"] = 3
    assert only_issue(data) == (
        f"{FILE}: base_model.n_head: got 3 (int); n_head must divide n_embd (128)"
    )


@pytest.mark.parametrize(
    ("change", "key", "kind"),
    [
        (lambda d: d["task"].update(name="nope"), "task.name", "task"),
        (lambda d: d["methods"].__setitem__(0, "nope"), "methods[0]", "method"),
        (lambda d: d["methods"][1].update(method="nope"), "methods[1].method", "method"),
        (lambda d: d["judge"].update(kind="nope"), "judge.kind", "judge"),
        (
            lambda d: d["generation"].update(backend="nope"),
            "generation.backend",
            "generation backend",
        ),
    ],
)
def test_unknown_registered_name_lists_known_names(change: Any, key: str, kind: str) -> None:
    data = suite_data(expectations=[])
    change(data)
    line = only_issue(data)
    prefix = f"{FILE}: {key}: got 'nope' (str); unknown {kind}; known {kind}s: "
    assert line.startswith(prefix)
    known = line[len(prefix) :].split(", ")
    registry_of = {"task": registry.TASKS, "method": registry.METHODS, "judge": registry.JUDGES}
    assert known == registry_of.get(kind, registry.BACKENDS).names()
    assert any(name.startswith("test_") for name in known)


@pytest.mark.parametrize("budget", [0, -3, 1.5, "abc", True, 0.0])
def test_bad_budget(budget: Any) -> None:
    line = only_issue(suite_data(budgets=[250, budget], expectations=[]))
    assert line == f"{FILE}: budgets[1]: got {budget!r} ({type(budget).__name__}); {BUDGET_FORMS}"


def test_duplicate_budget_and_seed() -> None:
    lines = issues_of(write(FILE, suite_data(budgets=[250, "n=250", 1000], seeds=[0, 0])))
    assert lines == [
        f"{FILE}: budgets[1]: got 'n=250' (str); duplicate budget n=250 (also budgets[0])",
        f"{FILE}: seeds[1]: got 0 (int); duplicate seed 0 (also seeds[0])",
    ]


def test_duplicate_method_names() -> None:
    data = suite_data()
    data["methods"].append({"method": "test_dpo", "epochs": 3})
    assert only_issue(data) == (
        f"{FILE}: methods[3]: got {{'method': 'test_dpo', 'epochs': 3}} (mapping); "
        "duplicate method name test_dpo (also methods[1])"
    )


def test_expectation_naming_a_missing_method() -> None:
    data = suite_data(expectations=[{"method": "ppo", "min_winrate": 0.5}])
    assert only_issue(data) == (
        f"{FILE}: expectations[0].method: got 'ppo' (str); not a method entry of this suite; "
        "method entries: test_sft, test_dpo, dpo_2x"
    )


def test_expectation_comparing_with_a_missing_method() -> None:
    data = suite_data(
        expectations=[{"method": "test_dpo", "equivalent_to": "online_dpo", "margin": 0.05}]
    )
    assert only_issue(data).startswith(
        f"{FILE}: expectations[0].equivalent_to: got 'online_dpo' (str); not a method entry"
    )


def test_not_beats_is_refused_with_the_equivalence_that_replaces_it() -> None:
    data = suite_data(expectations=[{"method": "test_dpo", "not_beats": "test_sft"}])
    assert only_issue(data) == (
        f"{FILE}: expectations[0].not_beats: got 'test_sft' (str); not_beats is no longer a "
        "check: it held whenever the CI of the difference included 0, so an underpowered run "
        "confirmed it; write `equivalent_to: test_sft` with a `margin` (the largest winrate "
        "difference that still counts as no advantage, e.g. 0.03)"
    )


@pytest.mark.parametrize(
    ("expectation", "problem"),
    [
        ({"equivalent_to": "test_sft"}, "equivalent_to needs a margin"),
        ({"beats": "test_sft", "margin": 0.05}, "margin is the equivalence margin"),
        ({"equivalent_to": "test_sft", "margin": 0}, "got 0 (int); expected a value > 0"),
        ({"equivalent_to": "test_sft", "margin": 1.5}, "expected a value <= 1.0"),
    ],
)
def test_an_equivalence_needs_a_margin_in_range(expectation, problem) -> None:
    data = suite_data(expectations=[{"method": "test_dpo", **expectation}])
    assert problem in only_issue(data)


def test_expectation_naming_a_missing_budget() -> None:
    data = suite_data(expectations=[{"method": "test_dpo", "budget": 500, "min_winrate": 0.5}])
    assert only_issue(data) == (
        f"{FILE}: expectations[0].budget: got 500 (int); not a budget of this suite; "
        "budgets: n=250, n=1000"
    )


def test_expectation_needs_a_check() -> None:
    line = only_issue(suite_data(expectations=[{"method": "test_dpo", "note": "x"}]))
    assert line == (
        f"{FILE}: expectations[0]: got {{'method': 'test_dpo', 'note': 'x'}} (mapping); an "
        "expectation needs at least one of: min_winrate, max_winrate, beats, equivalent_to, "
        "min_mean_reward"
    )


def test_expectation_winrate_is_a_probability() -> None:
    line = only_issue(suite_data(expectations=[{"method": "test_dpo", "min_winrate": 60}]))
    assert line == f"{FILE}: expectations[0].min_winrate: got 60 (int); expected a value <= 1.0"


def test_all_issues_are_reported_at_once() -> None:
    data = suite_data(tier="huge", extra=1, budgets=[0])
    data["methods"][1]["beta"] = "abc"
    data["judge"]["kind"] = "nope"
    lines = issues_of(write(FILE, data))
    keys = sorted(line.split(": ")[1] for line in lines)
    assert keys == ["budgets[0]", "extra", "judge.kind", "methods[1].beta", "tier"]


# --- files: YAML errors and includes -----------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column() -> None:
    line = only_issue("name: x\nversion: 1\ntier: [micro\n")
    assert line.startswith(f"{FILE}:4:1: invalid YAML: ")
    assert "\n" not in line


def test_yaml_duplicate_key_is_an_error_with_its_line() -> None:
    line = only_issue("name: x\nversion: 1\nname: y\n")
    assert line == f"{FILE}:3:1: invalid YAML: found duplicate key 'name'"


def test_top_level_must_be_a_mapping() -> None:
    assert only_issue("- a\n- b\n") == (
        f"{FILE}: got ['a', 'b'] (list); expected a mapping of suite keys at the top level"
    )
    assert only_issue("") == (
        f"{FILE}: the file is empty; expected a mapping of suite keys at the top level"
    )


def test_missing_suite_file() -> None:
    assert issues_of("suites/micro/nope.yaml") == ["suites/micro/nope.yaml: file not found"]


BASE = {key: VALID[key] for key in ("tier", "base_model", "generation", "judge", "seeds")}


def test_missing_include_names_the_including_file() -> None:
    line = only_issue(dict(include="_nope.yaml", **VALID))
    assert line == f"{FILE}: include: got '_nope.yaml' (str); no such file: suites/micro/_nope.yaml"


def test_include_cycle_names_the_including_file() -> None:
    write("suites/micro/_a.yaml", dict(include="_b.yaml", **BASE))
    write("suites/micro/_b.yaml", {"include": ["_a.yaml"]})
    line = only_issue(dict(include="_a.yaml", **VALID))
    assert line == (
        "suites/micro/_b.yaml: include: got '_a.yaml' (str); include cycle: suites/micro/t.yaml "
        "-> suites/micro/_a.yaml -> suites/micro/_b.yaml -> suites/micro/_a.yaml"
    )


def test_value_from_an_included_file_names_the_included_file() -> None:
    base = copy.deepcopy(BASE)
    base["base_model"]["lr"] = "0.003"
    write("suites/micro/_micro_base.yaml", base)
    suite_part = {k: v for k, v in VALID.items() if k not in BASE}
    line = only_issue(dict(include="_micro_base.yaml", **suite_part))
    assert (
        line == "suites/micro/_micro_base.yaml: base_model.lr: got '0.003' (str); expected a number"
    )


def test_value_overridden_by_the_including_file_names_the_including_file() -> None:
    write("suites/micro/_micro_base.yaml", BASE)
    data = {k: v for k, v in VALID.items() if k not in BASE}
    data["base_model"] = {"lr": "fast"}
    line = only_issue(dict(include="_micro_base.yaml", **data))
    assert line == f"{FILE}: base_model.lr: got 'fast' (str); expected a number"


def test_yaml_error_in_an_included_file_names_it() -> None:
    write("suites/_shared.yaml", "tier: [micro\n")
    line = only_issue(dict(include="../_shared.yaml", **VALID))
    assert line.startswith("suites/_shared.yaml:2:1: invalid YAML: ")


def test_include_deep_merge() -> None:
    write(
        "suites/_root.yaml",
        """\
        description: from root
        seeds: [7, 8, 9]
        generation: {temperature: 0.7, top_p: 0.9}
        """,
    )
    base = copy.deepcopy(BASE)
    base["include"] = "../_root.yaml"  # relative to the including file
    base["generation"] = {**base["generation"], "temperature": 0.5}
    del base["generation"]["top_p"]
    base["base_model"] = {**base["base_model"], "n_layer": 3}
    write("suites/micro/_micro_base.yaml", base)
    write("suites/micro/_seeds.yaml", {"seeds": [4, 5]})
    data = {k: v for k, v in VALID.items() if k not in BASE and k != "description"}
    data["include"] = ["_micro_base.yaml", "_seeds.yaml"]  # later includes win
    data["base_model"] = {"n_embd": 64}
    data["task"] = {"name": "test_keywords"}
    suite = load_suite(write(FILE, data))
    assert suite.description == "from root"  # inherited through two levels
    assert suite.seeds == [4, 5]  # lists are replaced whole, the later include wins
    assert suite.generation.temperature == 0.5  # a mapping key: the including file wins
    assert suite.generation.top_p == 0.9  # ...and keys it does not set are kept
    assert suite.generation.n_eval_prompts == 500
    assert (suite.base_model.n_embd, suite.base_model.n_layer) == (64, 3)
    assert suite.task.params == {"vocab_size": 64, "doc_len": 24}


def test_include_only_bases_are_not_suites() -> None:
    assert is_suite_file("suites/micro/keywords.yaml")
    assert is_suite_file(Path("suites/micro/keywords.yml"))
    assert not is_suite_file("suites/micro/_micro_base.yaml")
    assert not is_suite_file("suites/micro/README.md")


# --- budgets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "label"),
    [(250, "n=250"), (1, "n=1"), (1.0, "frac=1.0"), (0.5, "frac=0.5"), ("n=250", "n=250")]
    + [("frac=0.25", "frac=0.25"), ("250", "n=250"), ("0.5", "frac=0.5")],
)
def test_budget_parsing_and_labels(raw: Any, label: str) -> None:
    budget = Budget.model_validate(raw)
    assert budget.label == label
    assert Budget.model_validate(budget.model_dump()) == budget  # dumped as its label


def test_budget_pairs() -> None:
    assert Budget.model_validate(250).n_pairs(1000) == 250
    assert Budget.model_validate(0.5).n_pairs(1001) == 500  # rounds down
    assert Budget.model_validate(0.29).n_pairs(100) == 29  # the decimal, not the binary float
    assert Budget.model_validate(0.001).n_pairs(10) == 1  # at least one
    assert Budget.model_validate(1.0).n_pairs(7) == 7
    with pytest.raises(
        ValueError, match=r"^budget n=250 asks for 250 pairs, more than the pool size 100$"
    ):
        Budget.model_validate(250).n_pairs(100)
    with pytest.raises(ValueError, match=r"budget frac=0.5: .*pool size 0"):
        Budget.model_validate(0.5).check_pool(0)


def test_budget_matches_command_line_forms() -> None:
    budget = Budget.model_validate(250)
    assert budget.matches("n=250") and budget.matches("250")
    assert not budget.matches("250.0") and not budget.matches("n=25") and not budget.matches("x")
    assert Budget.model_validate("frac=0.5").matches("0.5")

    assert Budget.model_validate("frac=0.5").matches("0.5")


def test_a_budget_beyond_the_pool_is_one_line_at_validate() -> None:
    data = suite_data(task={"name": "test_pool", "params": {"pool_size": 4000}})
    data["budgets"] = [250, 100000]
    data["expectations"] = []
    assert only_issue(data) == (
        f"{FILE}: budgets[1]: got 100000 (int); budget n=100000 asks for 100000 pairs, more "
        "than the pool size 4000 of task 'test_pool'"
    )
    data["budgets"] = [250, 0.5, 1.0, "frac=0.001"]  # fractions always fit
    assert [b.label for b in load_suite(write(FILE, data)).budgets][1:] == [
        "frac=0.5",
        "frac=1.0",
        "frac=0.001",
    ]


def test_the_pool_limit_may_come_from_an_included_file() -> None:
    base = copy.deepcopy(BASE)
    base["task"] = {"name": "test_pool", "params": {"pool_size": 500}}
    write("suites/micro/_pool.yaml", base)
    data = {k: v for k, v in VALID.items() if k not in BASE and k != "task"}
    line = only_issue(dict(include="_pool.yaml", **{**data, "expectations": []}))
    assert line == (
        f"{FILE}: budgets[1]: got 1000 (int); budget n=1000 asks for 1000 pairs, more than the "
        "pool size 500 of task 'test_pool'"
    )


def test_two_budgets_of_the_same_pairs_are_one_line() -> None:
    data = suite_data(task={"name": "test_pool", "params": {"pool_size": 4000}}, expectations=[])
    data["budgets"] = [0.5, 250, 2000]
    assert only_issue(data) == (
        f"{FILE}: budgets[2]: got 2000 (int); budget n=2000 is 2000 pairs of the pool of 4000, "
        "as is budgets[0] (frac=0.5): the same pairs twice"
    )


def test_a_task_whose_params_do_not_fit_together_is_one_line() -> None:
    data = suite_data(task={"name": "test_broken", "params": {}})
    assert only_issue(data) == (
        f"{FILE}: task.params: got {{}} (mapping); n_salient * salient_repeats = 12 does not fit "
        "in doc_len = 8"
    )


def test_a_pool_only_the_data_sizes_refuses_a_budget_in_one_line() -> None:
    suite = load_suite(write(FILE, suite_data(budgets=[250, 0.5, 1000], expectations=[])))
    assert n_pairs_by_budget(suite, 2000) == {"n=250": 250, "frac=0.5": 1000, "n=1000": 1000}
    with pytest.raises(ConfigError) as caught:
        n_pairs_by_budget(suite, 500)
    assert str(caught.value) == (
        f"{FILE}: budgets[2]: got 1000 (int); budget n=1000 asks for 1000 pairs, more than the "
        "pool size 500 of the data"
    )


# --- what a suite asks of its task --------------------------------------------------------------


def test_a_micro_base_model_needs_a_task_that_builds_it() -> None:
    data = suite_data(task={"name": "test_bare", "params": {}})
    assert only_issue(data) == (
        f"{FILE}: base_model.kind: got 'micro' (str); needs a tokenizer of its own for a model "
        "built from scratch (Task.write_tokenizer) and an exact gold reward (Task.gold_reward), "
        "which task 'test_bare' lacks"
    )
    data["base_model"] = {"kind": "pretrained", "path": "EleutherAI/pythia-1b-deduped"}
    assert load_suite(write(FILE, data)).task.name == "test_bare"


def test_a_nested_config_asking_for_features_the_task_lacks_is_one_line() -> None:
    data = suite_data(
        task={"name": "test_bare", "params": {}},
        base_model={"kind": "pretrained", "path": "EleutherAI/pythia-1b-deduped"},
        expectations=[],
    )
    data["methods"] = [{"method": "test_online", "verifier": {"capacity": "linear"}}]
    assert only_issue(data) == (
        f"{FILE}: methods[0].verifier.capacity: got 'linear' (str); needs features of an output "
        "(Task.features), which task 'test_bare' lacks"
    )
    data["methods"] = ["test_online"]  # the default verifier reads no features
    assert load_suite(write(FILE, data)).methods[0].config["verifier"] == {"capacity": "full"}


def test_a_task_that_declares_a_capability_satisfies_it() -> None:
    data = suite_data(expectations=[])
    data["methods"] = [{"method": "test_online", "verifier": {"capacity": "linear"}}]
    with pytest.raises(ConfigError, match="Task.features"):
        load_suite(write(FILE, data))
    StubTask.has_features = True
    try:
        assert load_suite(write(FILE, data)).methods[0].method == "test_online"
    finally:
        del StubTask.has_features


# --- strict parameter models ----------------------------------------------------------------------


class CurveParams(StrictParams):
    lr: float = 0.1
    """A float."""
    n: int | list[int] = 4
    """An int or a list of them."""
    steps: int = 1
    """An int."""
    greedy: bool = False
    """A bool."""
    span: tuple[int, int] = Field((2, 4), strict=False)
    """A pair, written in YAML as a list."""


registry.register_method("test_curve", CurveParams)(ignore)


def curve_issues(**overrides: Any) -> list[str]:
    data = suite_data(expectations=[])
    data["methods"] = [{"method": "test_curve", **overrides}]
    return issues_of(write(FILE, data))


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("lr", "0.1", "got '0.1' (str); expected a number"),
        ("lr", True, "got True (bool); expected a number"),
        ("steps", "3", "got '3' (str); expected an integer"),
        ("steps", 3.0, "got 3.0 (float); expected an integer"),
        ("steps", False, "got False (bool); expected an integer"),
        ("greedy", 1, "got 1 (int); expected true or false"),
        ("greedy", "yes", "got 'yes' (str); expected true or false"),
        ("n", "16", "got '16' (str); expected an integer or a list"),
        ("span", ["2", 4], None),
    ],
)
def test_a_strict_config_refuses_a_wrong_type_in_one_line(key, value, problem) -> None:
    (line,) = curve_issues(**{key: value})
    if problem is None:  # inside a list: the item's path
        assert line == f"{FILE}: methods[0].{key}[0]: got '2' (str); expected an integer"
    else:
        assert line == f"{FILE}: methods[0].{key}: {problem}"


def test_an_issue_inside_a_union_member_is_the_only_line() -> None:
    assert curve_issues(n=[1, "2"]) == [
        f"{FILE}: methods[0].n[1]: got '2' (str); expected an integer"
    ]


def test_a_strict_config_takes_an_int_for_a_float_and_a_list_for_a_tuple() -> None:
    data = suite_data(expectations=[])
    data["methods"] = [{"method": "test_curve", "lr": 1, "span": [1, 3]}]
    (entry,) = load_suite(write(FILE, data)).methods
    assert entry.config == {"lr": 1.0, "n": 4, "steps": 1, "greedy": False, "span": [1, 3]}
    assert isinstance(entry.config["lr"], float)  # `lr: 1` and `lr: 1.0` resolve (and hash) alike
    config = CurveParams.model_validate(entry.config)  # as the runner rebuilds it from the JSON
    assert config.span == (1, 3)
    with pytest.raises(ValidationError, match="frozen"):
        config.lr = 0.2  # type: ignore[misc]


# --- methods, cells, expectations, resolved configs ---------------------------------------------


def test_method_forms_and_stored_configs() -> None:
    data = suite_data()
    data["methods"].append({"method": "test_best_of_n"})
    suite = load_suite(write(FILE, data))
    sft, dpo, dpo_2x, best_of_n = suite.methods
    assert (sft.name, sft.method, sft.overrides, sft.config) == ("test_sft", "test_sft", {}, {})
    assert (dpo.name, dpo.method) == ("test_dpo", "test_dpo")
    assert dpo.overrides == {"beta": 0.2}
    assert dpo.config == {"beta": 0.2, "epochs": 1, "loss": "sigmoid"}  # defaults filled in
    assert (dpo_2x.name, dpo_2x.method, dpo_2x.overrides) == ("dpo_2x", "test_dpo", {"epochs": 2})
    assert dpo_2x.config == {"beta": 0.1, "epochs": 2, "loss": "sigmoid"}
    assert best_of_n.config == {"n": 4}
    assert suite.task.params == {"vocab_size": 32, "doc_len": 24}


def test_a_loaded_suite_round_trips_through_its_dump() -> None:
    suite = load_suite(write(FILE, VALID))
    again = Suite.model_validate_json(suite.model_dump_json())
    assert again.model_dump() == suite.model_dump()
    assert "source" not in suite.model_dump()


def test_pretrained_base_model_defaults() -> None:
    data = suite_data(base_model={"kind": "pretrained", "path": "EleutherAI/pythia-1b-deduped"})
    model = load_suite(write(FILE, data)).base_model
    assert isinstance(model, PretrainedBaseModel)
    assert (model.revision, model.dtype) == (None, "float32")


def test_cells_order_and_filters() -> None:
    suite = load_suite(write(FILE, VALID))
    assert [cell.id for cell in suite.cells()] == [
        f"{method}[{budget},seed={seed}]"
        for method in ("test_sft", "test_dpo", "dpo_2x")
        for budget in ("n=250", "n=1000")
        for seed in (0, 1)
    ]
    by_method_id = suite.cells(methods=["test_dpo"], budgets=["1000"], seeds=[1])
    assert [c.id for c in by_method_id] == ["test_dpo[n=1000,seed=1]", "dpo_2x[n=1000,seed=1]"]
    by_name = suite.cells(methods=["dpo_2x"], budgets=["n=250"])
    assert [c.id for c in by_name] == ["dpo_2x[n=250,seed=0]", "dpo_2x[n=250,seed=1]"]
    assert suite.cells(methods=["ppo"]) == []
    assert suite.cells(seeds=[5]) == []
    assert len({cell: None for cell in suite.cells()}) == 12  # cells are hashable


def test_expectations_for_a_cell() -> None:
    suite = load_suite(write(FILE, VALID))
    cell = suite.cells(methods=["test_dpo"], budgets=["250"], seeds=[0])[0]
    assert [e.beats for e in suite.expectations_for(cell)] == ["test_sft"]
    cell_1000 = suite.cells(methods=["test_dpo"], budgets=["1000"], seeds=[0])[0]
    assert [e.min_winrate for e in suite.expectations_for(cell_1000)] == [0.6, None]
    sft_cell = suite.cells(methods=["test_sft"])[0]
    assert suite.expectations_for(sft_cell) == []


def test_resolved_config_is_complete_and_json_able() -> None:
    suite = load_suite(write(FILE, VALID))
    cell = suite.cells(methods=["dpo_2x"], budgets=["n=250"], seeds=[1])[0]
    assert cell.resolved_config() == {
        "suite": "micro-keywords",
        "suite_version": 1,
        "tier": "micro",
        "task": {"name": "test_keywords", "params": {"vocab_size": 32, "doc_len": 24}},
        "base_model": VALID["base_model"],
        "method": {
            "name": "dpo_2x",
            "method": "test_dpo",
            "config": {"beta": 0.1, "epochs": 2, "loss": "sigmoid"},
        },
        "budget": "n=250",
        "seed": 1,
        "generation": VALID["generation"],
        "judge": {"kind": "test_gold", "params": {}},
    }
    assert yaml.safe_load(yaml.safe_dump(cell.resolved_config())) == cell.resolved_config()


def _resolved(data: dict[str, Any], path: str = FILE) -> dict[str, Any]:
    cell = load_suite(write(path, data)).cells(methods=["test_dpo"])[0]
    assert isinstance(cell, Cell)
    return cell.resolved_config()


def test_resolved_config_excludes_notes_description_expectations_and_source() -> None:
    original = _resolved(VALID)
    changed = suite_data(description="something else")
    changed["expectations"][2]["note"] = "observed elsewhere"
    changed["expectations"].pop(0)
    assert _resolved(changed, "suites/micro/other.yaml") == original
    assert "description" not in str(original) and "observed" not in str(original)


def test_resolved_config_changes_with_what_changes_the_numbers() -> None:
    original = _resolved(VALID)
    data = suite_data()
    data["methods"][1]["beta"] = 0.3
    assert _resolved(data)["method"]["config"]["beta"] == 0.3
    assert _resolved(suite_data(version=2)) != original
    data = suite_data()
    data["generation"]["max_new_tokens"] = 9
    assert _resolved(data) != original


def test_validate_suite_takes_a_mapping() -> None:
    suite = validate_suite(copy.deepcopy(VALID), source="inline")
    assert suite.source == "inline"
    with pytest.raises(ConfigError, match=r"^inline: tier: got 'huge'"):
        validate_suite(suite_data(tier="huge"), source="inline")


# --- errors -------------------------------------------------------------------------------------


def test_config_error_formatting() -> None:
    error = ConfigError(
        [
            ConfigIssue("a.yaml", "methods[0].beta", "x" * 100, "expected a number"),
            ConfigIssue("b.yaml", "task.name", MISSING, "required key"),
        ]
    )
    first, second = str(error).splitlines()
    assert first == f"a.yaml: methods[0].beta: got '{'x' * 56}... (str); expected a number"
    assert second == "b.yaml: task.name: missing; required key"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# --- no torch ---------------------------------------------------------------------------------

_NO_TORCH_SCRIPT = """
import sys
from pydantic import BaseModel
from bench import registry
from bench.tasks.base import Task
registry._discovered = True

class NoDataTask(Task):
    name, has_gold, builds_tokenizer = "test_keywords", True, True
    def examples(self, split, n=None): raise NotImplementedError
    def pool_size(self): raise NotImplementedError
    def preference_pool(self, size, seed, sample, split="train"): raise NotImplementedError

class NoParams(BaseModel):
    pass

registry.register_task("test_keywords", NoParams)(lambda params: NoDataTask())
for register, name in [(registry.register_method, "test_sft"),
                       (registry.register_method, "test_dpo"),
                       (registry.register_judge, "test_gold"),
                       (registry.register_backend, "test_hf")]:
    register(name, BaseModel)(print)
import bench.config
suite = bench.config.load_suite(sys.argv[1])
suite.cells()[0].resolved_config()
loaded = sorted(m for m in ("torch", "transformers", "numpy", "pandas") if m in sys.modules)
assert not loaded, loaded
"""

_REAL_REGISTRY_SCRIPT = """
import sys
from bench import registry
try:
    registry.discover()
except Exception as error:
    print(f"{type(error).__name__}: {error}")
    sys.exit(3)
assert "torch" not in sys.modules, "discovering the registries imported torch"
"""


def test_loading_a_suite_does_not_import_torch() -> None:
    data = suite_data()
    data["methods"][1] = {"method": "test_dpo"}
    data["methods"].pop(2)
    data["task"]["params"] = {}
    data["expectations"] = []
    path = Path(write(FILE, data)).resolve()
    result = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_discovering_the_real_registries_does_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _REAL_REGISTRY_SCRIPT],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    if result.returncode == 3:
        pytest.skip(f"the real registries do not import cleanly yet: {result.stdout.strip()}")
    assert result.returncode == 0, result.stderr
