"""Config errors that name the file, the key, the value and what is allowed, one line each.

A suite that fails to load raises one `ConfigError` holding every issue found, so a user fixes
them all in one pass instead of one per run. The CLI prints `str(error)` and exits with code 2.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

MAX_VALUE_CHARS = 60
"""A bad value's repr is cut to this many characters so that each issue stays one line."""


class _Marker:
    """A named stand-in for 'no value' (a sentinel that prints as its name)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name  # unpickles as the module-level constant of that name


MISSING: Any = _Marker("MISSING")
"""The value of an issue about a required key that is absent."""

NO_VALUE: Any = _Marker("NO_VALUE")
"""The value of an issue that is about the file, not a value in it (a YAML syntax error)."""

_TYPE_NAMES = {dict: "mapping", list: "list", type(None): "null", bool: "bool", str: "str"}


def describe_value(value: Any) -> str:
    """`'abc' (str)`: the value's repr, cut to MAX_VALUE_CHARS, and its YAML-ish type."""
    text = repr(value).replace("\n", "\\n")
    if len(text) > MAX_VALUE_CHARS:
        text = text[: MAX_VALUE_CHARS - 3] + "..."
    type_name = _TYPE_NAMES.get(type(value), type(value).__name__)
    return f"{text} ({type_name})"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in one config file, printed as one line."""

    file: str
    """The file the bad value came from (an included base file when it came from there)."""
    key: str
    """Dotted key path with list indices, e.g. `methods[1].beta`; empty for a whole-file issue."""
    value: Any
    """The offending value; MISSING for an absent required key, NO_VALUE for a file issue."""
    problem: str
    """What is wrong and what is allowed, e.g. `expected a number`."""
    line: int | None = None
    """1-based line of the problem, when known (YAML syntax errors)."""
    column: int | None = None
    """1-based column of the problem, when known."""

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        parts = [where]
        if self.key:
            parts.append(self.key)
        if self.value is MISSING:
            parts.append(f"missing; {self.problem}")
        elif self.value is NO_VALUE:
            parts.append(self.problem)
        else:
            parts.append(f"got {describe_value(self.value)}; {self.problem}")
        return ": ".join(parts).replace("\n", " ")


def format_issues(issues: Iterable[ConfigIssue]) -> str:
    """One line per issue, in the order found."""
    return "\n".join(str(issue) for issue in issues)


class ConfigError(Exception):
    """A suite (or another config) failed to load; `issues` lists every problem found."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        if not issues:
            raise ValueError("a ConfigError needs at least one issue")
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(format_issues(self.issues))

    def __str__(self) -> str:
        return format_issues(self.issues)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[list[ConfigIssue]]]:
        return (ConfigError, (self.issues,))
