"""What every task provides: prompts with references, a preference-pair pool, and (if it has one)
an exact gold reward.

A task deals in strings only. The prompt string is fed to the tokenizer as is; an output is the
decoded continuation without special tokens. Tasks never import torch at module level.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Example:
    """One prompt with its reference output (the human summary in TL;DR)."""

    prompt: str
    reference: str


@dataclass(frozen=True)
class PreferencePair:
    """A labelled comparison: `chosen` was preferred to `rejected` for `prompt`.

    This is all a method ever sees of the labels: no gold scores travel with a pair.
    """

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class Sample:
    """One generated output. `finished` is False when generation stopped at the token limit."""

    text: str
    n_tokens: int
    finished: bool
    token_ids: list[int] | None = None
    """The generated tokens (EOS included when finished), when the backend reports them: exact
    log-probs of what was sampled need these, not a re-encoding of the text."""


SampleFn = Callable[[list[str], int, float, int], list[list[Sample]]]
"""sample(prompts, n_per_prompt, temperature, seed) -> n samples per prompt, from the SFT policy."""


TASK_CAPABILITIES: dict[str, str] = {
    "has_gold": "an exact gold reward (Task.gold_reward)",
    "has_features": "features of an output (Task.features)",
    "builds_tokenizer": "a tokenizer of its own for a model built from scratch "
    "(Task.write_tokenizer)",
}
"""What a method, verifier, judge or base model may ask of a task beyond its data: the flag on
`Task` that declares it -> what it provides. A config asks through `StrictParams.task_needs`,
and a suite asking its task for what the task does not declare fails at `pftbench validate`."""


class Task(ABC):
    """A benchmark task. Splits: `train` (SFT data and the pair pool's prompts), `valid` (for
    anything tuned by looking at numbers) and `eval` (held out, judged).

    Building a task must be cheap and read no data (read it lazily): `pftbench validate` builds
    the suite's task to check the budgets and the capabilities the suite asks of it."""

    name: str
    has_gold: bool = False
    """Whether `gold_reward` is implemented (the gold judge, a micro base model's report)."""
    has_features: bool = False
    """Whether `features` is implemented (the oracle verifier, `kind: oracle_features`)."""
    builds_tokenizer: bool = False
    """Whether `write_tokenizer` is implemented (a `kind: micro` base model)."""

    @abstractmethod
    def examples(self, split: str, n: int | None = None) -> list[Example]:
        """The first `n` examples of `split` (all when n is None), in a fixed order."""

    @abstractmethod
    def pool_size(self) -> int:
        """Pairs in the labelled pool; budgets are counts up to it or fractions of it."""

    def pool_size_limit(self) -> int | None:
        """The pool's size as the params fix it, read without any data: `pftbench validate`
        checks the suite's budgets against it. None when only the data tells (a budget beyond
        the data's pool then fails, in one line, when the pool is drawn)."""
        return None

    @abstractmethod
    def preference_pool(
        self, size: int, seed: int, sample: SampleFn, split: str = "train"
    ) -> list[PreferencePair]:
        """The labelled pair pool of `size` pairs for `seed`. Budgets are prefixes of it, so every
        method at a budget sees the same pairs. `sample` draws from the base (SFT) policy.
        `split="valid"` gives held-out pairs for evaluating verifiers, never for training."""

    def gold_reward(self, prompt: str, output: str) -> float | None:
        """The exact reward of `output`, or None when the output is invalid."""
        raise NotImplementedError(f"task {self.name!r} has no gold reward")

    def features(self, prompt: str, output: str) -> list[float] | None:
        """A fixed-length feature vector of `output`, or None when the output is invalid: the
        terms the gold reward is made of, so an oracle. Only the oracle verifier
        (`kind: oracle_features`) reads them, and a method reaches them only through it
        (`bench.method_api.MethodTask`)."""
        raise NotImplementedError(f"task {self.name!r} declares no features")

    def worst_gold_reward(self) -> float | None:
        """The lowest gold reward any valid output can get, the reward an invalid output counts
        as in the mean reward; None when the task has no such bound (or no gold reward)."""
        return None

    def max_new_tokens(self) -> int | None:
        """The output length the task is built for (None: the suite decides)."""
        return None

    def min_new_tokens(self) -> int:
        """Generation must not stop before this many tokens (0: no minimum)."""
        return 0

    def write_tokenizer(self, out_dir: Path) -> None:
        """Save a tokenizer for models built from scratch on this task (micro tier only)."""
        raise NotImplementedError(f"task {self.name!r} does not build its own tokenizer")

    def heldout_size(self) -> int:
        """Held-out pairs available to `preference_pool(..., split="valid")`. The default, one per
        `valid` example, fits tasks that label pairs on their own prompts."""
        return len(self.examples("valid"))

    def with_base_model(self, path: str, revision: str | None) -> Task:
        """This task for a pretrained base model at `path` (a local directory or a Hub id, at
        `revision`): a task that counts tokens (TL;DR's 512/53) uses that model's tokenizer
        unless its params name one. The default ignores the base model."""
        return self

    def data_fingerprint(self) -> str | None:
        """A content hash of the local data files the task reads, for the cache keys (their paths
        alone would let an edited file reuse stale artifacts); None when the params pin the data."""
        return None

    def pool_metrics(self, split: str = "train") -> dict[str, Any]:
        """What building the pairs of `split` did that the pairs alone do not show (e.g. pairs
        relabelled or dropped), recorded with the pool; called after `preference_pool`."""
        return {}

    def validity(self, outputs: Sequence[Sample]) -> list[bool]:
        """Whether each output can be judged at all (finished, well formed)."""
        return [sample.finished for sample in outputs]


class OracleAccessError(AttributeError):
    """A method reached for what only the judge may read: the gold reward, the reward's
    features, the pool's labels or the evaluation split."""


class MethodTask:
    """What a method sees of its task: the task without its oracles.

    Everything a method needs to train and sample (the train and valid splits, length limits,
    validity, the tokenizer of a micro task) passes through; the gold reward and its features,
    the labelling of the pair pool, anything private and the `eval` split raise
    `OracleAccessError`. `oracle_task` is the one way through, used by the verifier named an
    oracle (`kind: oracle_features`); it records that it was used (`oracles_used`)."""

    ALLOWED = frozenset(
        {
            "name",
            "has_gold",
            "has_features",
            "builds_tokenizer",
            "pool_size",
            "pool_size_limit",
            "max_new_tokens",
            "min_new_tokens",
            "write_tokenizer",
            "heldout_size",
            "validity",
        }
    )
    """Task members a method may use as they are (`examples` is allowed but for `eval`)."""
    METHOD_SPLITS = frozenset({"train", "valid", "pretrain"})
    """Splits a method may read: training data, tuning data, a micro base model's warm-up."""

    __slots__ = ("oracles_used", "__weakref__")

    def __init__(self, task: Task) -> None:
        _VIEWED_TASKS[self] = task  # not an attribute of the view: `view._task` is refused too
        object.__setattr__(self, "oracles_used", [])

    def examples(self, split: str, n: int | None = None) -> list[Any]:
        if split not in self.METHOD_SPLITS:
            raise OracleAccessError(
                f"a method may read the splits {sorted(self.METHOD_SPLITS)}, not {split!r}: the "
                "evaluation prompts and their references are the judge's"
            )
        return _VIEWED_TASKS[self].examples(split, n)

    def __getattr__(self, name: str) -> Any:
        if name in self.ALLOWED:
            return getattr(_VIEWED_TASKS[self], name)
        raise OracleAccessError(
            f"a method cannot read the task's {name!r}: methods learn only from the budget's "
            "pairs (ctx.pairs); a verifier that reads the gold reward's own features is the "
            "oracle `reward_model: {kind: oracle_features}`, reported as an oracle"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a method's view of its task is read-only (set {name!r})")

    def __repr__(self) -> str:
        return f"MethodTask({_VIEWED_TASKS[self].name!r})"


def oracle_task(task: Task | MethodTask, oracle: str) -> Task:
    """The task behind a method's view, for the oracle named `oracle` alone: the use is recorded
    on the view, and the runner lists it in the cell's `metrics["oracles"]`. Given the task
    itself (the runner's own code: diagnostics), returns it."""
    if isinstance(task, MethodTask):
        if oracle not in task.oracles_used:
            task.oracles_used.append(oracle)
        return _VIEWED_TASKS[task]
    return task


_VIEWED_TASKS: weakref.WeakKeyDictionary[MethodTask, Task] = weakref.WeakKeyDictionary()
"""The task behind each view, kept off the view so that only `oracle_task` hands it out."""


def build_task(name: str, params: Mapping[str, Any], base_model: Mapping[str, Any]) -> Task:
    """The registered task `name` built from its params, as a suite (or a result line's config)
    states them; a task that counts tokens counts them with a pretrained base model's."""
    from bench.registry import TASKS

    entry = TASKS.get(name)
    task = entry.fn(entry.config(**params))
    if base_model.get("kind") == "pretrained":
        task = task.with_base_model(base_model["path"], base_model.get("revision"))
    return task
