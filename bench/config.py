"""Suite configs: the YAML schema, `include:` inheritance, and validation against the registries.

A suite is one YAML file under `suites/` describing one experiment: a task, a base model, data
budgets, methods, generation, a judge, seeds and expectations. `load_suite` reads it, merges the
files it includes, validates it in two passes and returns a frozen `Suite`:

1. the schema below (pydantic, `extra="forbid"`, strict types: YAML `"0.1"` is not a number);
2. the free-form parameter blocks (`task.params`, each method entry's overrides,
   `generation.backend_params`, `judge.params`) against the config model that the named task,
   method, backend or judge registered in `bench.registry` (each a `StrictParams`);
then it builds the task from its params and checks the budgets against the pool size they fix
and what the configs ask of the task (`StrictParams.task_needs`) against what it declares.

Every issue of every pass is collected into one `ConfigError`; each names the file the value
came from (an included base file when it came from there), the key path, the value and what is
allowed. The validated parameter blocks are stored dumped with their defaults filled in, so
`Cell.resolved_config()` is the complete config that determines a cell's numbers.

Nothing here imports torch: the registries hold config models and factories only.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from bench import registry
from bench.errors import MISSING, NO_VALUE, ConfigError, ConfigIssue
from bench.tasks.base import TASK_CAPABILITIES, Task, build_task

_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
"""Suite and method-entry names: they appear in cell ids, file names and command lines."""

Loc = tuple[str | int, ...]
"""A key path into the YAML data, e.g. ("methods", 1, "beta")."""

TaskNeed = tuple[Loc, str]
"""(key path within a config, the Task capability it asks for: a flag of `TASK_CAPABILITIES`)."""


class StrictParams(BaseModel):
    """The base of every registered config model: a method's, task's, judge's and generation
    backend's parameters, and the blocks nested in them (a reward-model spec, a price table).

    - strict: an unknown key, a wrong type and a string for a number are errors (YAML `"0.1"` is
      a string, `true` is not 1); an int is still accepted for a float field, since YAML writes
      `lr: 1` as an int, and it is stored as a float, so `1` and `1.0` resolve alike;
    - frozen: a config is a value (it enters the cache keys);
    - a docstring under every field: it becomes the field's description (a contract test
      checks that every registered config has one on each field).

    A tuple field takes `Field(strict=False)`: YAML gives a list, and strict mode accepts only a
    tuple (its items stay strict).
    """

    model_config = _MODEL_CONFIG

    def task_needs(self) -> list[TaskNeed]:
        """What this config asks of its suite's task: (key path within it, capability) pairs,
        the key path being the key that asks (`()`: the config as a whole). `pftbench validate`
        refuses a suite whose task lacks one. The default gathers the needs of nested configs;
        override it (calling super) where a value of a field asks for something."""
        needs: list[TaskNeed] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, StrictParams):
                needs += [((name, *loc), capability) for loc, capability in value.task_needs()]
        return needs


_BUDGET_FORMS = (
    "expected a count >= 1 (int), a fraction in (0, 1] (float), 'n=<count>' or 'frac=<fraction>'"
)


def _parse_budget(raw: Any) -> dict[str, Any]:
    """YAML budget -> {"count": int} or {"fraction": float}; ValueError says what is allowed.

    A YAML int is a count and a YAML float a fraction, so `1` is one pair and `1.0` the pool.
    """
    if isinstance(raw, dict):
        parsed = dict(raw)
    elif isinstance(raw, bool):
        raise ValueError(_BUDGET_FORMS)
    elif isinstance(raw, int):
        parsed = {"count": raw}
    elif isinstance(raw, float):
        parsed = {"fraction": raw}
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            if text.startswith("n="):
                parsed = {"count": int(text[2:])}
            elif text.startswith("frac="):
                parsed = {"fraction": float(text[5:])}
            elif text.lstrip("+-").isdigit():
                parsed = {"count": int(text)}
            else:
                parsed = {"fraction": float(text)}
        except ValueError:
            raise ValueError(_BUDGET_FORMS) from None
    else:
        raise ValueError(_BUDGET_FORMS)
    count, fraction = parsed.get("count"), parsed.get("fraction")
    if (count is None) == (fraction is None):
        raise ValueError(f"give a count or a fraction, not both; {_BUDGET_FORMS}")
    if (
        isinstance(count, int)
        and count < 1
        or isinstance(fraction, float)
        and not 0 < fraction <= 1
    ):
        raise ValueError(_BUDGET_FORMS)
    return parsed


class Budget(BaseModel):
    """How many labelled preference pairs a method may learn from.

    Every method of a suite sees the same pairs at the same budget, so that "same data, different
    route" stays a controlled comparison (PAPER.md, "What this means for the suite", 1).
    Written in YAML as `250` (a count), `0.5` (a fraction of the pool), `"n=250"` or `"frac=0.5"`;
    dumped as its label.
    """

    model_config = _MODEL_CONFIG

    count: int | None = None
    """A number of pairs (>= 1); a count larger than the pool fails at validate (when the
    task's params fix the pool's size) or when the pool is drawn."""
    fraction: float | None = None
    """A fraction of the pair pool in (0, 1]; the number of pairs rounds down, at least 1."""

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        return data if isinstance(data, Budget) else _parse_budget(data)

    @model_serializer
    def _as_label(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        """`n=250` or `frac=0.5`: the budget in cell ids, results and filters."""
        return f"n={self.count}" if self.count is not None else f"frac={self.fraction!r}"

    def matches(self, text: str) -> bool:
        """Whether a command-line budget (`n=250`, `250`, `frac=0.5` or `0.5`) names this one."""
        try:
            return budget_filter(text).label == self.label
        except ValueError:
            return False

    def check_pool(self, pool_size: int) -> None:
        """Raise ValueError when this budget cannot be drawn from a pool of `pool_size` pairs."""
        if pool_size < 1:
            raise ValueError(f"budget {self.label}: the pair pool is empty (pool size {pool_size})")
        if self.count is not None and self.count > pool_size:
            raise ValueError(
                f"budget {self.label} asks for {self.count} pairs, more than the pool size "
                f"{pool_size}"
            )

    def n_pairs(self, pool_size: int) -> int:
        """Number of pairs this budget takes from a pool of `pool_size` pairs."""
        self.check_pool(pool_size)
        if self.count is not None:
            return self.count
        # The decimal the user wrote, not its binary float: 0.29 of 100 pairs is 29, not 28.
        return max(1, math.floor(Fraction(repr(self.fraction)) * pool_size))


def budget_filter(text: str) -> Budget:
    """The budget a command-line filter names; ValueError says which forms are accepted."""
    try:
        return Budget.model_validate(text)
    except ValidationError:
        raise ValueError(
            "expected a count (250 or n=250) or a fraction of the pool in (0, 1] (0.5 or frac=0.5)"
        ) from None


class TaskSpec(BaseModel):
    """The task: prompts, references, the preference-pair pool and its gold reward."""

    model_config = _MODEL_CONFIG

    name: str
    """A registered task (bench.registry.TASKS)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The task's parameters, validated against its config model; stored with defaults filled."""


class MicroBaseModel(StrictParams):
    """A tiny GPT built from scratch by the harness: pretrained on the task's text, then SFT'd."""

    kind: Literal["micro"]
    """Discriminator: a model built from scratch."""
    n_embd: int = Field(ge=1)
    """Width of the residual stream."""
    n_layer: int = Field(ge=1)
    """Number of transformer blocks."""
    n_head: int = Field(ge=1)
    """Number of attention heads; must divide n_embd."""
    initializer_range: float = Field(gt=0.0)
    """Standard deviation of the normal initialisation of the weights."""
    pretrain_steps: int = Field(ge=0)
    """Language-modelling steps on the task's text before SFT."""
    sft_epochs: int = Field(ge=0)
    """Epochs of supervised fine-tuning on the task's references."""
    lr: float = Field(gt=0.0)
    """Learning rate of pretraining and SFT."""
    batch_size: int = Field(ge=1)
    """Batch size of pretraining and SFT."""
    seed: int = Field(ge=0)
    """Seed of the base model, shared by every cell (the cells' seeds vary the methods)."""

    @field_validator("n_head")
    @classmethod
    def _divides_width(cls, n_head: int, info: ValidationInfo) -> int:
        n_embd = info.data.get("n_embd")
        if n_embd is not None and n_embd % n_head:
            raise ValueError(f"n_head must divide n_embd ({n_embd})")
        return n_head

    def task_needs(self) -> list[TaskNeed]:
        # The build writes the task's own tokenizer, and reports the built policy's gold reward.
        return [(("kind",), "builds_tokenizer"), (("kind",), "has_gold")]


class PretrainedBaseModel(BaseModel):
    """A pretrained causal LM loaded with transformers (Hub id or local directory)."""

    model_config = _MODEL_CONFIG

    kind: Literal["pretrained"]
    """Discriminator: a model loaded from a checkpoint."""
    path: str = Field(min_length=1)
    """Hub id (e.g. EleutherAI/pythia-1b-deduped) or a local directory."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); pin a commit for reproducible numbers."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype of the weights while training and generating."""


BaseModelSpec = Annotated[MicroBaseModel | PretrainedBaseModel, Field(discriminator="kind")]
"""The base model every method starts from, picked by `kind`."""


def _method_entry_fields(data: Any) -> Any:
    """YAML method entry -> MethodEntry fields.

    Short form `dpo`; long form `{method: dpo, name: dpo_2x, epochs: 2}` where every key but
    `method` and `name` is an override. The dumped form (with an `overrides` mapping) passes as is.
    """
    if isinstance(data, MethodEntry):
        return data
    if isinstance(data, str):
        return {"name": data, "method": data}
    if not isinstance(data, dict):
        raise ValueError("expected a method id (str) or a mapping with a 'method' key")
    if isinstance(data.get("overrides"), dict) and set(data) <= set(MethodEntry.model_fields):
        fields = dict(data)
    else:
        fields = {key: data[key] for key in ("name", "method") if key in data}
        fields["overrides"] = {k: v for k, v in data.items() if k not in ("name", "method")}
    if "name" not in fields and isinstance(fields.get("method"), str):
        fields["name"] = fields["method"]
    return fields


class MethodEntry(BaseModel):
    """One method of a suite: a registered method id, the entry's name and its overrides."""

    model_config = _MODEL_CONFIG

    name: str = Field(default="", pattern=NAME_PATTERN)
    """Name of the entry in cell ids, results and filters; defaults to the method id; unique."""
    method: str
    """A registered method (bench.registry.METHODS)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """The method config keys this entry sets, as validated."""
    config: dict[str, Any] = Field(default_factory=dict)
    """The complete method config: the overrides on top of the method's defaults."""

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        return _method_entry_fields(data)


class GenerationSpec(BaseModel):
    """How the policies' outputs on the evaluation prompts are sampled."""

    model_config = _MODEL_CONFIG

    backend: str = "hf"
    """A registered generation backend (bench.registry.BACKENDS)."""
    backend_params: dict[str, Any] = Field(default_factory=dict)
    """The backend's parameters, validated against its config model; stored with defaults."""
    n_eval_prompts: int = Field(ge=1)
    """Number of evaluation prompts judged per cell."""
    max_new_tokens: int = Field(ge=1)
    """Maximum number of generated tokens per output."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature; 0 means greedy decoding."""
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus-sampling mass; 1 keeps the whole distribution."""


class JudgeSpec(BaseModel):
    """Who decides whether an output wins against its reference."""

    model_config = _MODEL_CONFIG

    kind: str
    """A registered judge (bench.registry.JUDGES)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The judge's parameters, validated against its config model; stored with defaults."""


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Expectation(BaseModel):
    """A prediction about a method's results, checked after the cells ran."""

    model_config = _MODEL_CONFIG

    method: str
    """Name of the method entry the expectation is about."""
    budget: Budget | None = None
    """The budget it applies to; omitted means every budget of the suite."""
    min_winrate: Probability | None = None
    """The winrate against the reference must be at least this."""
    max_winrate: Probability | None = None
    """The winrate against the reference must be at most this."""
    beats: str | None = None
    """Another method entry: the 95% CI of the paired winrate difference lies above 0 (and the
    interval is decidable: `bench.report.expectations`)."""
    equivalent_to: str | None = None
    """Another method entry: "no advantage either way", an equivalence claim; the whole 95% CI
    of the paired winrate difference lies inside +-`margin`."""
    margin: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    """The largest winrate difference that still counts as no advantage; needed with, and only
    with, `equivalent_to`."""
    not_beats: str | None = None
    """Removed (issue 10): it held whenever the CI included 0, so an underpowered run confirmed
    it. Refused with a pointer to `equivalent_to` and `margin`."""
    min_mean_reward: float | None = None
    """The mean gold reward of the outputs must be at least this."""
    note: str = ""
    """Free text shown in reports (e.g. when and where the behaviour was observed)."""

    @field_validator("max_winrate")
    @classmethod
    def _not_below_min(cls, max_winrate: float | None, info: ValidationInfo) -> float | None:
        min_winrate = info.data.get("min_winrate")
        if max_winrate is not None and min_winrate is not None and max_winrate < min_winrate:
            raise ValueError(f"max_winrate must be >= min_winrate ({min_winrate})")
        return max_winrate

    @field_validator("beats", "equivalent_to")
    @classmethod
    def _other_method(cls, other: str | None, info: ValidationInfo) -> str | None:
        if other is not None and other == info.data.get("method"):
            raise ValueError("expected another method entry than the expectation's own method")
        return other

    @field_validator("not_beats")
    @classmethod
    def _not_beats_is_gone(cls, other: str | None) -> str | None:
        if other is not None:
            raise ValueError(
                "not_beats is no longer a check: it held whenever the CI of the difference "
                "included 0, so an underpowered run confirmed it; write `equivalent_to: "
                f"{other}` with a `margin` (the largest winrate difference that still counts "
                "as no advantage, e.g. 0.03)"
            )
        return other

    @model_validator(mode="after")
    def _margin_goes_with_equivalent_to(self) -> Expectation:
        if self.equivalent_to is not None and self.margin is None:
            raise ValueError(
                "equivalent_to needs a margin: the largest winrate difference that still "
                "counts as no advantage (e.g. margin: 0.03)"
            )
        if self.margin is not None and self.equivalent_to is None:
            raise ValueError("margin is the equivalence margin of equivalent_to, which is not set")
        return self

    @model_validator(mode="after")
    def _has_a_check(self) -> Expectation:
        if all(getattr(self, check) is None for check in _EXPECTATION_CHECKS):
            raise ValueError(
                f"an expectation needs at least one of: {', '.join(_EXPECTATION_CHECKS)}"
            )
        return self


_EXPECTATION_CHECKS = ("min_winrate", "max_winrate", "beats", "equivalent_to", "min_mean_reward")


class Suite(BaseModel):
    """One experiment: every (method, budget, seed) cell of it and what its results should show.

    Build it with `load_suite` (a YAML file) or `validate_suite` (a mapping): those also validate
    the parameter blocks against the registries and the cross-references; `Suite.model_validate`
    alone checks the schema only.
    """

    model_config = _MODEL_CONFIG

    name: str = Field(pattern=NAME_PATTERN)
    """Name of the suite in results and on the leaderboard."""
    version: int = Field(ge=1)
    """Bump when a change makes old results incomparable."""
    tier: Literal["micro", "small", "paper"]
    """micro: CPU in seconds; small: one GPU in minutes; paper: the real-scale experiments."""
    description: str = ""
    """What the suite measures, in a sentence or two."""
    requires: list[Literal["gpu", "api", "slow"]] = Field(default_factory=list)
    """Resources the suite needs; the runner skips it with a reason when one is missing."""
    task: TaskSpec
    """The task, its prompts and its pair pool."""
    base_model: BaseModelSpec
    """The model every method starts from."""
    budgets: list[Budget] = Field(min_length=1)
    """Labelled-pair budgets; every method runs at every budget."""
    methods: list[MethodEntry] = Field(min_length=1)
    """Method entries: a method id (short form) or a mapping with `method`, `name`, overrides."""
    generation: GenerationSpec
    """How outputs on the evaluation prompts are generated."""
    judge: JudgeSpec
    """Who judges the outputs against the references."""
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    """Seeds of the methods' training runs; every method runs at every seed."""
    expectations: list[Expectation] = Field(default_factory=list)
    """Predictions checked after the run (not part of any cell's config)."""
    source: str = Field(default="", exclude=True)
    """The file the suite was loaded from, as given; not part of any dump or hash."""

    def cells(
        self,
        methods: list[str] | None = None,
        budgets: list[str] | None = None,
        seeds: list[int] | None = None,
    ) -> list[Cell]:
        """Every (method entry, budget, seed) cell, in method, budget, seed order of the YAML.

        `methods` matches an entry's name or its method id; `budgets` matches labels (`n=250`)
        or the YAML form (`250`, `0.5`); None keeps all. A filter may leave no cell.
        """
        return [
            Cell(suite=self, method=entry, budget=budget, seed=seed)
            for entry in self.methods
            if methods is None or entry.name in methods or entry.method in methods
            for budget in self.budgets
            if budgets is None or any(budget.matches(text) for text in budgets)
            for seed in self.seeds
            if seeds is None or seed in seeds
        ]

    def expectations_for(self, cell: Cell) -> list[Expectation]:
        """The expectations about the cell's method entry at the cell's budget."""
        return [
            expectation
            for expectation in self.expectations
            if expectation.method == cell.method.name
            and (expectation.budget is None or expectation.budget.label == cell.budget.label)
        ]


@dataclass(frozen=True)
class Cell:
    """One training and evaluation run: a method entry of a suite at a budget and a seed."""

    suite: Suite
    """The suite the cell belongs to."""
    method: MethodEntry
    """The method entry it trains."""
    budget: Budget
    """The number of labelled pairs it learns from."""
    seed: int
    """The seed of its training run."""

    @property
    def id(self) -> str:
        """`dpo[n=250,seed=0]`: unique within its suite."""
        return f"{self.method.name}[{self.budget.label},seed={self.seed}]"

    def __hash__(self) -> int:
        return hash((self.suite.name, self.id))

    def resolved_config(self) -> dict[str, Any]:
        """The complete JSON-able config that determines the cell's numbers.

        It is what the cache hashes and what travels with every artifact, so it leaves out
        whatever does not change the numbers: the source path, the description, expectations.
        """
        suite = self.suite
        return {
            "suite": suite.name,
            "suite_version": suite.version,
            "tier": suite.tier,
            "task": suite.task.model_dump(mode="json"),
            "base_model": suite.base_model.model_dump(mode="json"),
            "method": {
                "name": self.method.name,
                "method": self.method.method,
                "config": copy.deepcopy(self.method.config),
            },
            "budget": self.budget.label,
            "seed": self.seed,
            "generation": suite.generation.model_dump(mode="json"),
            "judge": suite.judge.model_dump(mode="json"),
        }


def is_suite_file(path: str | Path) -> bool:
    """Whether a path is a runnable suite: a YAML file whose name does not start with `_`.

    `_*.yaml` files are include-only bases: incomplete on their own.
    """
    path = Path(path)
    return path.suffix in (".yaml", ".yml") and not path.name.startswith("_")


def load_suite(path: str | Path, shown: str | None = None) -> Suite:
    """Read, merge the includes of, and validate a suite file; raise ConfigError on any issue.

    `shown` is the file's name in messages and the suite's `source` (default: `path` as given).
    """
    shown = str(path) if shown is None else shown
    issues: list[ConfigIssue] = []
    loaded = _load_tree(Path(path), shown, (), issues)
    if issues or loaded is None:
        raise ConfigError(issues)
    data, provenance = loaded
    return _validate(data, provenance, source=shown)


def validate_suite(data: dict[str, Any], source: str = "<dict>") -> Suite:
    """Validate an already-merged suite mapping (no includes); issues name `source` as file."""
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(source, "", data, "expected a mapping at the top level")])
    return _validate(data, {(): source}, source=source)


# ---------------------------------------------------------------------------------------------
# Reading YAML and resolving `include:`, remembering which file each key came from.

Provenance = dict[Loc, str]
"""Key path -> the file that set it. A list's elements belong to whoever set the whole list."""


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _YAML_MERGE_TAG:
                key = self.construct_object(key_node)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"found duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


def _read_yaml(path: Path, shown: str) -> Any:
    """The YAML document of a file; a ConfigError naming the line and column if it is invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(shown, "", NO_VALUE, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([ConfigIssue(shown, "", NO_VALUE, f"cannot read: {error}")]) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        problem = f"invalid YAML: {error.problem or error.context}"
        if error.problem and error.context:
            problem += f" ({error.context})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        issue = ConfigIssue(shown, "", NO_VALUE, problem, line=line, column=column)
        raise ConfigError([issue]) from None
    except yaml.YAMLError as error:
        raise ConfigError([ConfigIssue(shown, "", NO_VALUE, f"invalid YAML: {error}")]) from None


def _load_tree(
    path: Path, shown: str, stack: tuple[tuple[Path, str], ...], issues: list[ConfigIssue]
) -> tuple[dict[Any, Any], Provenance] | None:
    """A file merged over its includes (in order, later ones winning), and where each key is from.

    `shown` is the file's name in messages; `stack` the files including it, to catch cycles.
    """
    try:
        data = _read_yaml(path, shown)
    except ConfigError as error:
        issues.extend(error.issues)
        return None
    if not isinstance(data, dict):
        value, problem = (NO_VALUE, "the file is empty") if data is None else (data, "")
        problem += "; " * bool(problem) + "expected a mapping of suite keys at the top level"
        issues.append(ConfigIssue(shown, "", value, problem))
        return None
    stack = (*stack, (path.resolve(), shown))
    merged: dict[Any, Any] = {}
    provenance: Provenance = {(): shown}
    for include in _include_list(data.get("include"), shown, issues):
        target, target_shown = path.parent / include, _include_shown(shown, include)
        if any(target.resolve() == including for including, _ in stack):
            cycle = " -> ".join([including for _, including in stack] + [target_shown])
            issues.append(ConfigIssue(shown, "include", include, f"include cycle: {cycle}"))
        elif not target.is_file():
            issues.append(ConfigIssue(shown, "include", include, f"no such file: {target_shown}"))
        elif (loaded := _load_tree(target, target_shown, stack, issues)) is not None:
            merged = _merge(merged, loaded[0], (), provenance, loaded[1])
    own = {key: value for key, value in data.items() if key != "include"}
    return _merge(merged, own, (), provenance, _provenance_of(own, (), shown)), provenance


def _include_list(value: Any, shown: str, issues: list[ConfigIssue]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    issues.append(ConfigIssue(shown, "include", value, "expected a file name or a list of them"))
    return []


def _include_shown(shown: str, include: str) -> str:
    """An included file's name in messages: relative to the including file, as it was given."""
    if os.path.isabs(include):
        return include
    return os.path.normpath(os.path.join(os.path.dirname(shown), include))


def _provenance_of(data: Any, loc: Loc, file: str) -> Provenance:
    provenance = {loc: file}
    if isinstance(data, dict):
        for key, value in data.items():
            provenance.update(_provenance_of(value, (*loc, key), file))
    return provenance


def _merge(
    base: dict[Any, Any],
    over: dict[Any, Any],
    loc: Loc,
    provenance: Provenance,
    over_provenance: Provenance,
) -> dict[Any, Any]:
    """Deep merge: mappings merge key by key and `over` wins; lists and scalars are replaced whole.

    `provenance` describes `base` and is updated in place to describe the result.
    """
    merged = dict(base)
    for key, value in over.items():
        key_loc = (*loc, key)
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value, key_loc, provenance, over_provenance)
            provenance[key_loc] = over_provenance[key_loc]
            continue
        merged[key] = value
        for replaced in [p for p in provenance if p[: len(key_loc)] == key_loc]:
            del provenance[replaced]
        provenance.update(
            {p: f for p, f in over_provenance.items() if p[: len(key_loc)] == key_loc}
        )
    return merged


def _file_of(loc: Loc, provenance: Provenance) -> str:
    """The file that set the value at `loc`: the one of the longest key-path prefix it knows."""
    while loc not in provenance:
        loc = loc[:-1]
    return provenance[loc]


def _format_loc(loc: Loc) -> str:
    """("methods", 1, "beta") -> "methods[1].beta"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


# ---------------------------------------------------------------------------------------------
# Validation: the schema, the registered parameter blocks, the cross-references.

RawIssue = tuple[Loc, Any, str]
"""(key path, value, problem): an issue before the file it came from is looked up."""


def _validate(data: dict[Any, Any], provenance: Provenance, source: str) -> Suite:
    issues: list[RawIssue] = []
    data = dict(data)
    if "source" in data:  # the loader sets it; a file must not
        issues.append((("source",), data.pop("source"), _unexpected_key(Suite, ())))
    suite = None
    try:
        suite = Suite.model_validate({**data, "source": source})
    except ValidationError as error:
        issues += _issues_from_validation(error, Suite, data)
    blocks = _validate_registered_params(data, issues)
    issues += _cross_reference_issues(data)
    if suite is not None and blocks["task"] is not None:
        issues += _task_issues(data, suite, blocks)
    if issues or suite is None:
        raise ConfigError(
            [
                ConfigIssue(_file_of(loc, provenance), _format_loc(loc), value, problem)
                for loc, value, problem in issues
            ]
        )
    resolved = {
        key: [_dump(block.config) for block in value] if key == "methods" else _dump(value.config)
        for key, value in blocks.items()
    }
    methods = [
        entry.model_copy(
            update={
                "overrides": {
                    key: config.get(key, value) for key, value in entry.overrides.items()
                },
                "config": config,
            }
        )
        for entry, config in zip(suite.methods, resolved["methods"], strict=True)
    ]
    return suite.model_copy(
        update={
            "task": suite.task.model_copy(update={"params": resolved["task"]}),
            "methods": methods,
            "generation": suite.generation.model_copy(
                update={"backend_params": resolved["generation"]}
            ),
            "judge": suite.judge.model_copy(update={"params": resolved["judge"]}),
        }
    )


_NAMED_BLOCKS = (
    # (block, its schema, the key naming a registered entry, the key of its params, registry)
    ("task", TaskSpec, "name", "params", registry.TASKS),
    ("generation", GenerationSpec, "backend", "backend_params", registry.BACKENDS),
    ("judge", JudgeSpec, "kind", "params", registry.JUDGES),
)


@dataclass(frozen=True)
class _Params:
    """A parameter block validated against the config model of the entry it names."""

    name: str
    """The registered entry (a task, method, backend or judge)."""
    name_loc: Loc
    """The key path of that name in the YAML (`judge.kind`, `methods[1].method`, ...)."""
    loc: Loc
    """The key path of the parameters."""
    config: Any
    """The validated config model instance."""


def _validate_registered_params(data: dict[Any, Any], issues: list[RawIssue]) -> dict[str, Any]:
    """Check that each named task, method, backend and judge exists; validate its parameters.

    Returns each block's `_Params` (None where the block did not validate; a list for the
    methods). Blocks of the wrong shape are skipped here: the schema pass reports them.
    """
    blocks: dict[str, Any] = {}
    for block, spec, name_key, params_key, names in _NAMED_BLOCKS:
        blocks[block] = None
        if isinstance(data.get(block), dict):
            name = data[block].get(name_key, spec.model_fields[name_key].default)
            params = data[block].get(params_key, {})
            blocks[block] = _validate_params(
                names, (block, name_key), name, (block, params_key), params, issues
            )
    blocks["methods"] = []
    methods = data.get("methods")
    for index, item in enumerate(methods if isinstance(methods, list) else []):
        fields = _method_entry_or_none(item)
        if fields is not None:
            name_loc = ("methods", index) if isinstance(item, str) else ("methods", index, "method")
            overrides = fields.get("overrides", {})
            blocks["methods"].append(
                _validate_params(
                    registry.METHODS,
                    name_loc,
                    fields.get("method"),
                    ("methods", index),
                    overrides,
                    issues,
                )
            )
    return blocks


def _validate_params(
    names: registry.Registry[registry.Entry],
    name_loc: Loc,
    name: Any,
    params_loc: Loc,
    params: Any,
    issues: list[RawIssue],
) -> _Params | None:
    """Validate `params` against the config model registered as `name`.

    Unknown keys are checked here for every kind of config model (a stdlib dataclass would
    silently drop them), then the rest is validated by pydantic.
    """
    if not isinstance(name, str) or not isinstance(params, dict):
        return None
    if name not in names:
        known = ", ".join(names.names()) or "(none registered)"
        issues.append((name_loc, name, f"unknown {names.kind}; known {names.kind}s: {known}"))
        return None
    config = names.get(name).config
    allowed = _allowed_keys(config, ())
    for key in params:
        if key not in allowed:
            issues.append(((*params_loc, key), params[key], _unexpected_key(config, ())))
    known_params = {key: value for key, value in params.items() if key in allowed}
    try:
        validated = _adapter(config).validate_python(known_params)
    except ValidationError as error:
        for loc, value, problem in _issues_from_validation(error, config, known_params):
            issues.append(((*params_loc, *loc), value, problem))
        return None
    return _Params(name, name_loc, params_loc, validated)


def _dump(config: Any) -> dict[str, Any]:
    """A validated config as the JSON its cell's resolved config stores, defaults filled in."""
    return _adapter(type(config)).dump_python(config, mode="json")


def _task_issues(data: dict[Any, Any], suite: Suite, blocks: dict[str, Any]) -> list[RawIssue]:
    """What the suite asks of its task, checked on the task built from its validated params:
    each budget against the pool the params fix, each capability a config needs against the
    capabilities the task declares."""
    task_block = blocks["task"]
    base_model = suite.base_model.model_dump(mode="json")
    try:
        task = build_task(task_block.name, _dump(task_block.config), base_model)
    except ValueError as error:
        return [(task_block.loc, data["task"].get("params", {}), str(error))]
    issues = _budget_issues(data["budgets"], suite.budgets, task)
    asking = [_Params("base_model", ("base_model",), ("base_model",), suite.base_model)]
    asking += [b for b in [*blocks["methods"], blocks["generation"], blocks["judge"]] if b]
    for block in asking:
        missing: dict[Loc, list[str]] = {}
        for loc, capability in _task_needs(block.config):
            if not getattr(task, capability):
                missing.setdefault(loc, []).append(capability)
        for loc, capabilities in missing.items():
            where = (*block.loc, *loc) if loc else block.name_loc
            value = _value_at(block.config, loc) if loc else block.name
            provides = " and ".join(TASK_CAPABILITIES[c] for c in capabilities)
            issues.append((where, value, f"needs {provides}, which task {task.name!r} lacks"))
    return issues


def _task_needs(config: Any) -> list[TaskNeed]:
    """A config's needs; a config model that is not a `StrictParams` (a plugin's) states none."""
    return config.task_needs() if isinstance(config, StrictParams) else []


def _value_at(config: Any, loc: Loc) -> Any:
    for part in loc:
        config = getattr(config, str(part))
    return config


def _budget_issues(raw_budgets: list[Any], budgets: list[Budget], task: Task) -> list[RawIssue]:
    """Budgets the pool cannot serve, and budgets that take as many pairs as an earlier one
    (the same pairs twice), when the task's params fix its pool size."""
    pool_size = task.pool_size_limit()
    if pool_size is None:
        return []
    issues: list[RawIssue] = []
    first_of: dict[int, int] = {}
    for index, (raw, budget) in enumerate(zip(raw_budgets, budgets, strict=True)):
        try:
            n_pairs = budget.n_pairs(pool_size)
        except ValueError as error:
            issues.append((("budgets", index), raw, f"{error} of task {task.name!r}"))
            continue
        earlier = first_of.setdefault(n_pairs, index)
        if earlier != index and budgets[earlier].label != budget.label:  # else a duplicate
            issues.append(
                (
                    ("budgets", index),
                    raw,
                    f"budget {budget.label} is {n_pairs} pairs of the pool of {pool_size}, as "
                    f"is budgets[{earlier}] ({budgets[earlier].label}): the same pairs twice",
                )
            )
    return issues


def n_pairs_by_budget(suite: Suite, pool_size: int) -> dict[str, int]:
    """Each budget's number of pairs in a pool of `pool_size`: for a pool only its data sizes,
    which `pftbench validate` cannot check. A budget the pool cannot serve is a ConfigError
    naming the suite file and the budget, one line each."""
    counts, issues = {}, []
    for index, budget in enumerate(suite.budgets):
        try:
            counts[budget.label] = budget.n_pairs(pool_size)
        except ValueError as error:
            value = budget.count if budget.count is not None else budget.fraction
            issues.append(
                ConfigIssue(suite.source, f"budgets[{index}]", value, f"{error} of the data")
            )
    if issues:
        raise ConfigError(issues)
    return counts


@functools.cache
def _adapter(config: type) -> TypeAdapter[Any]:
    return TypeAdapter(config)


def _method_entry_or_none(item: Any) -> dict[str, Any] | None:
    try:
        fields = _method_entry_fields(item)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def _cross_reference_issues(data: dict[Any, Any]) -> list[RawIssue]:
    """Unique method names, budgets and seeds; expectations naming the suite's methods, budgets."""
    issues: list[RawIssue] = []
    method_names = _unique(data.get("methods"), "methods", "method name", _entry_name, issues)
    budget_labels = _unique(data.get("budgets"), "budgets", "budget", _budget_label, issues)
    _unique(data.get("seeds"), "seeds", "seed", _seed, issues)
    expectations = data.get("expectations")
    for index, expectation in enumerate(expectations if isinstance(expectations, list) else []):
        if not isinstance(expectation, dict):
            continue
        for key in ("method", "beats", "equivalent_to"):
            name = expectation.get(key)
            if method_names is not None and isinstance(name, str) and name not in method_names:
                entries = ", ".join(method_names)
                problem = f"not a method entry of this suite; method entries: {entries}"
                issues.append((("expectations", index, key), name, problem))
        label = _budget_label(expectation.get("budget"))
        if budget_labels is not None and label is not None and label not in budget_labels:
            problem = f"not a budget of this suite; budgets: {', '.join(budget_labels)}"
            issues.append((("expectations", index, "budget"), expectation["budget"], problem))
    return issues


def _unique(
    items: Any, key: str, what: str, identify: Callable[[Any], Any], issues: list[RawIssue]
) -> list[Any] | None:
    """The items' identities, each reported once if repeated; None if some item has none."""
    if not isinstance(items, list):
        return None
    identities = [identify(item) for item in items]
    first: dict[Any, int] = {}
    for index, (item, identity) in enumerate(zip(items, identities, strict=True)):
        if identity in first:
            problem = f"duplicate {what} {identity} (also {key}[{first[identity]}])"
            issues.append(((key, index), item, problem))
        elif identity is not None:
            first[identity] = index
    return None if None in identities else list(first)


def _entry_name(item: Any) -> str | None:
    fields = _method_entry_or_none(item)
    name = fields.get("name") if fields else None
    return name if isinstance(name, str) else None


def _budget_label(raw: Any) -> str | None:
    try:
        return Budget.model_validate(raw).label
    except ValidationError:
        return None


def _seed(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


# ---------------------------------------------------------------------------------------------
# Turning pydantic's errors into key paths, values and what is allowed.

_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dataclass_type": "expected a mapping",
    "dataclass_exact_type": "expected a mapping",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "set_type": "expected a list",
    "none_required": "expected null",
}

_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
_BOUND_KEYS = {
    "greater_than": "gt",
    "greater_than_equal": "ge",
    "less_than": "lt",
    "less_than_equal": "le",
}


def _issues_from_validation(error: ValidationError, root: Any, data: Any) -> list[RawIssue]:
    """One (key path, value, problem) per pydantic error, key paths as written in the YAML."""
    issues: list[RawIssue] = []
    for detail in error.errors(include_url=False):
        kind, ctx, raw_loc = detail["type"], detail.get("ctx", {}), detail["loc"]
        loc = _yaml_loc(raw_loc, data)
        value = MISSING if kind == "missing" else detail["input"]
        if kind == "missing":
            problem = "required key"
        elif kind == "extra_forbidden":
            problem = _unexpected_key(root, raw_loc[:-1])
        elif kind == "union_tag_invalid":
            loc, value = (*loc, ctx["discriminator"].strip("'")), ctx["tag"]
            problem = f"expected one of {ctx['expected_tags']}"
        elif kind == "union_tag_not_found":
            discriminator = ctx["discriminator"].strip("'")
            loc, value = (*loc, discriminator), MISSING
            tags = _union_tags(_type_at(root, raw_loc), discriminator)
            problem = f"required key; expected one of {tags}"
        elif kind in ("literal_error", "enum"):
            problem = f"expected one of {ctx['expected']}"
        elif kind in _BOUNDS:
            problem = f"expected a value {_BOUNDS[kind]} {ctx[_BOUND_KEYS[kind]]}"
        elif kind == "too_short":
            problem = f"expected at least {ctx['min_length']} item(s)"
        elif kind == "too_long":
            problem = f"expected at most {ctx['max_length']} item(s)"
        elif kind == "string_pattern_mismatch":
            problem = f"expected a name matching {ctx['pattern']}"
        elif kind in ("value_error", "assertion_error"):
            problem = str(ctx["error"])
        else:
            problem = _EXPECTED.get(kind) or detail["msg"][:1].lower() + detail["msg"][1:]
        issues.append((loc, value, problem))
    return _merge_alternatives(issues)


def _merge_alternatives(issues: list[RawIssue]) -> list[RawIssue]:
    """One line for a value that no member of a union accepts: `n: "16"` against
    `int | list[int]` is "expected an integer or a list", not one issue per member; and
    `n: [1, "2"]` is only `n[1]`'s issue, since the list member got further than the int one
    (a value's wrong type and an issue inside it can only both arise from a union)."""
    deeper = {loc[:depth] for loc, _, _ in issues for depth in range(len(loc))}
    merged: list[RawIssue] = []
    for loc, value, problem in issues:
        if loc in deeper and problem.startswith("expected "):
            continue
        if (
            merged
            and merged[-1][0] == loc
            and merged[-1][1] is value
            and merged[-1][2].startswith("expected ")
            and problem.startswith("expected ")
        ):
            merged[-1] = (loc, value, f"{merged[-1][2]} or {problem.removeprefix('expected ')}")
        else:
            merged.append((loc, value, problem))
    return merged


def _yaml_loc(raw_loc: tuple[Any, ...], data: Any) -> Loc:
    """Drop the parts of a pydantic location that are not keys of the data (union tags); the
    last part stays when it names a key missing from a mapping."""
    loc: list[Any] = []
    current = data
    for position, part in enumerate(raw_loc):
        if _has_key(current, part):
            current = current[part]
        elif position < len(raw_loc) - 1 or not isinstance(current, dict):
            continue
        loc.append(part)
    return tuple(loc)


def _has_key(data: Any, part: Any) -> bool:
    if isinstance(data, dict):
        return part in data
    return isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)


def _fields_of(annotation: Any) -> dict[str, Any] | None:
    """Field name -> annotation of a pydantic model or a dataclass; None for anything else."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {name: field.annotation for name, field in annotation.model_fields.items()}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        try:
            hints = typing.get_type_hints(annotation, include_extras=True)
        except (NameError, TypeError):
            hints = {}
        return {field.name: hints.get(field.name, Any) for field in dataclasses.fields(annotation)}
    return None


def _allowed_keys(annotation: Any, loc: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at `loc` (a pydantic location) under `annotation` may hold."""
    target = _type_at(annotation, loc)
    if target is Suite:
        return ["include"] + [name for name in Suite.model_fields if name != "source"]
    fields = _fields_of(target) or {}
    keys = list(fields)
    if isinstance(target, type) and issubclass(target, BaseModel):
        keys += [
            field.alias
            for field in target.model_fields.values()
            if field.alias and field.alias not in keys
        ]
    return keys


def _unexpected_key(annotation: Any, loc: tuple[Any, ...]) -> str:
    return f"unexpected key; allowed keys: {', '.join(_allowed_keys(annotation, loc))}"


def _strip(annotation: Any) -> Any:
    """Unwrap Annotated[...] and Optional[...] down to the type that holds the fields."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif _is_union(annotation):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_at(annotation: Any, loc: tuple[Any, ...]) -> Any:
    """Follow a pydantic location through models, lists, dicts and tagged unions."""
    for part in loc:
        annotation = _strip(annotation)
        fields = _fields_of(annotation)
        origin = typing.get_origin(annotation)
        if fields is not None:
            annotation = fields.get(part)
        elif origin in (list, tuple, set, frozenset):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        elif _is_union(annotation):
            annotation = next(
                (
                    m
                    for m in typing.get_args(annotation)
                    if part in _member_tags(m) or part == getattr(m, "__name__", None)
                ),
                None,
            )
        else:
            return None
        if annotation is None:
            return None
    return _strip(annotation)


def _member_tags(member: Any, discriminator: str | None = None) -> list[Any]:
    """Values of the Literal fields (or of the one `discriminator` field) of a union member."""
    tags: list[Any] = []
    for name, annotation in (_fields_of(member) or {}).items():
        if discriminator in (None, name) and typing.get_origin(annotation) is Literal:
            tags += typing.get_args(annotation)
    return tags


def _union_tags(union: Any, discriminator: str) -> str:
    members = typing.get_args(union)
    return ", ".join(repr(tag) for member in members for tag in _member_tags(member, discriminator))
