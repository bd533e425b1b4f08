"""Content hashes: the key under which every expensive artifact is cached.

An artifact (checkpoint, generations, judgments, result cell) is keyed by the hash of *what
produced it*: the resolved config plus the keys of its inputs. Two runs that would compute the
same thing get the same key and the second one reuses the first's output; change anything that
matters and the key changes. For that the serialisation must be canonical: the same value always
gives the same bytes, whatever the dict insertion order, tuple-or-list, Path-or-str.

Changing `canonical_json` changes every key and so invalidates every cache; the test suite pins
one literal hash so that such a change is never accidental.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from enum import Enum
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel

SHORT_LENGTH = 12
"""Hex digits kept by `short`: enough to tell artifacts apart in names and logs."""


def to_jsonable(obj: Any) -> Any:
    """Convert `obj` into plain JSON types (dict with str keys, list, str, int, float, bool, None).

    Accepted: pydantic models (their `model_dump(mode="json")`), dataclass instances (field by
    field), enums (their value), paths (as str), tuples and lists (as lists), mappings with str
    keys, and JSON scalars. Anything else raises TypeError naming its type, rather than being
    stringified into a hash that silently depends on a repr.
    """
    if isinstance(obj, Enum):
        return to_jsonable(obj.value)
    if obj is None:
        return None
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, BaseModel):
        return to_jsonable(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            field.name: to_jsonable(getattr(obj, field.name)) for field in dataclasses.fields(obj)
        }
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        return {_key(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(item) for item in obj]
    raise TypeError(f"cannot serialise an object of type {type(obj).__qualname__} to JSON")


def _key(key: Any) -> str:
    """Dict keys must be strings: coercing 1 and "1" to the same key would merge two configs."""
    if isinstance(key, Enum):
        key = key.value
    if not isinstance(key, str):
        raise TypeError(f"dict keys must be str, got a key of type {type(key).__qualname__}")
    return str(key)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON text of `obj`: sorted keys, no whitespace, UTF-8 characters kept.

    Floats are written with Python's shortest round-tripping repr, so a float always has one
    spelling. NaN and infinity are rejected (ValueError): they are not JSON and a config holding
    one is almost always a bug.
    """
    plain = to_jsonable(obj)
    _reject_non_finite(plain)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reject_non_finite(plain: Any, where: str = "$") -> None:
    if isinstance(plain, float) and not math.isfinite(plain):
        raise ValueError(f"canonical_json: non-finite float {plain} at {where}")
    if isinstance(plain, dict):
        for key, value in plain.items():
            _reject_non_finite(value, f"{where}.{key}")
    elif isinstance(plain, list):
        for index, value in enumerate(plain):
            _reject_non_finite(value, f"{where}[{index}]")


def content_hash(obj: Any) -> str:
    """SHA-256 (64 hex digits) of `canonical_json(obj)`: the cache key of what `obj` describes."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def short(digest: str) -> str:
    """First 12 hex digits of a hash, for file names and log lines."""
    return digest[:SHORT_LENGTH]
