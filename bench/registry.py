"""Registries: a dict and a decorator each.

Methods, tasks, judges and generation backends register themselves by name when their module is
imported. `discover()` imports the built-in modules and the installed plugins (entry point group
`pftbench.methods`), so a new method is one decorated file in `methods/` or one installed package.

Nothing registered here may import torch at module import time: validating a suite and a fully
cached rerun must stay fast (torch alone takes seconds to import).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, get_args

T = TypeVar("T")

MethodFamily = Literal["offline", "online"]
"""What a method is, declared where it registers and recorded in each result line:

- `offline`: learns from the budget's labelled pairs alone (SFT, DPO);
- `online`: also learns from, or searches over, samples of its own policy ranked by a verifier
  it fits on those pairs (online DPO, filter, best-of-N): the online side of the leaderboard's
  online-minus-offline gap.

A plugin that declares nothing is `offline`."""
METHOD_FAMILIES: tuple[str, ...] = get_args(MethodFamily)


class UnknownNameError(KeyError):
    """A lookup of a name nobody registered; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0])


class Registry(Generic[T]):
    """Name -> entry, filled by decorators at import time."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> None:
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        discover()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        discover()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        discover()
        return name in self._entries


@dataclass(frozen=True)
class Entry:
    """What a decorator registers: a name, the pydantic model of its YAML params, the callable."""

    name: str
    config: type
    fn: Callable[..., Any]
    generate: Callable[..., Any] | None = None
    """Methods only: replaces plain generation from the saved policy (e.g. best-of-N reranking)."""
    replay: Callable[..., Any] | None = None
    """Judges only: `replay(params, line, task) -> bench.evaluate.judging.Replay`, the verdicts
    the judge's rule gives from what a result line records per prompt (`pftbench submit` checks
    them)."""
    family: MethodFamily | None = None
    """Methods only: `offline` or `online` (see MethodFamily)."""
    negative_gradient: bool | None = None
    """Methods only: whether training pushes the rejected side down (a contrastive loss: DPO,
    online DPO), False when it raises the likelihood of chosen or kept outputs only (SFT,
    filter), None when it trains no policy (best-of-N) or does not say. With `family` it places
    the method in Tajwar et al.'s 2x2 (`bench.report.views.quadrant_table`)."""


METHODS: Registry[Entry] = Registry("method")
TASKS: Registry[Entry] = Registry("task")
JUDGES: Registry[Entry] = Registry("judge")
BACKENDS: Registry[Entry] = Registry("generation backend")


def _decorator(
    registry: Registry[Entry],
    name: str,
    config: type,
    generate: Callable[..., Any] | None = None,
    replay: Callable[..., Any] | None = None,
    family: MethodFamily | None = None,
    negative_gradient: bool | None = None,
) -> Callable[[T], T]:
    def register(fn: T) -> T:
        entry = Entry(
            name=name,
            config=config,
            fn=fn,  # type: ignore[arg-type]
            generate=generate,
            replay=replay,
            family=family,
            negative_gradient=negative_gradient,
        )
        registry.add(name, entry)
        return fn

    return register


def register_method(
    name: str,
    config: type,
    generate: Callable[..., Any] | None = None,
    *,
    family: MethodFamily = "offline",
    negative_gradient: bool | None = None,
) -> Callable[[T], T]:
    """Register `fn(ctx: MethodContext, cfg: config) -> dict` as method `name`.

    `generate(gen: GenerationContext, cfg) -> {"main": samples, ...}` replaces plain generation
    from the saved policy when given; extra keys are variants judged too (e.g. BoN@N).
    `family` declares what the method is (see MethodFamily): the runner records it in every
    result line, and the leaderboard's online-minus-offline gap reads it. `negative_gradient`
    declares whether its loss pushes the rejected side down (see Entry)."""
    if family not in METHOD_FAMILIES:
        raise ValueError(
            f"method {name!r}: unknown family {family!r}; known: {', '.join(METHOD_FAMILIES)}"
        )
    return _decorator(
        METHODS, name, config, generate, family=family, negative_gradient=negative_gradient
    )


def register_task(name: str, config: type) -> Callable[[T], T]:
    """Register a task factory `fn(params: config) -> Task` as task `name`."""
    return _decorator(TASKS, name, config)


def register_judge(
    name: str, config: type, replay: Callable[..., Any] | None = None
) -> Callable[[T], T]:
    """Register a judge factory `fn(params: config, task: Task) -> Judge` as judge `name`.

    `replay(params, line, task) -> bench.evaluate.judging.Replay` recomputes each prompt's verdict
    from what a result line records (rewards, reference rewards, the answers of both orders); a
    judge without one cannot have its outcomes verified, and `pftbench submit` refuses its lines."""
    return _decorator(JUDGES, name, config, replay=replay)


def register_backend(name: str, config: type) -> Callable[[T], T]:
    """Register a generation backend factory `fn(params: config) -> GenerationBackend`."""
    return _decorator(BACKENDS, name, config)


_BUILTIN_PACKAGES = ("bench.tasks", "bench.evaluate.backends", "methods", "judges")
PLUGIN_GROUP = "pftbench.methods"
_discovered = False


def discover() -> None:
    """Import every built-in module that registers something, then the installed plugins."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in _BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{package_name}.{module.name}")
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        entry_point.load()
