"""Compute once, under a lock or a barrier: the one protocol every cached artifact is built by.

One process: a file lock per (kind, key), so two runs sharing a cache build each artifact once
and the second reads what the first wrote. Under `accelerate launch` (several processes, outside
any build): a barrier before and after; the main process builds and writes, the others read.
A build that trains (`every_process=True`) is run by every process together, since training
splits its batches over them; the main process commits its output, the others' is thrown away.
A stage reached from inside another's build is built there and then, by whichever processes
build the outer one (`depth`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run.cache import Cache, atomic_write_text
from bench.train import distributed

METADATA_FILE = "pftbench.json"
"""What produced a model directory (config, metrics, wall time), written beside its files."""


class StageStore:
    """Builds and reads the cache's artifacts by the protocol above; logs each build."""

    def __init__(self, cache: Cache, log: Callable[[str], None] = print) -> None:
        self.cache = cache
        self.log = log
        self.depth = 0
        """Builds in progress: a stage reached from inside another's build is built there."""

    def together(self) -> bool:
        """Several processes, outside any build: the stages synchronise them."""
        return distributed.is_distributed() and self.depth == 0

    def json(
        self,
        kind: str,
        key: str,
        build: Callable[[], Any],
        what: str | None = None,
        *,
        every_process: bool = False,
    ) -> Any:
        """The JSON artifact (kind, key), built by `build()` if missing.

        With `what`, the build is logged and timed: the value (a dict) gains `wall_s`.
        `every_process`: under accelerate every process calls `build()` (which may split its
        work with `bench.train.distributed.map_shards`) and the main process writes the result."""
        if self.together():
            distributed.barrier()
            if every_process:
                if self.cache.has(kind, key):
                    return self.cache.read_json(kind, key)
                # Not nested: the stages inside this build still synchronise the processes.
                value = self._built(build, what, nested=False)
                if distributed.is_main():
                    self.cache.write_json(kind, key, value)
                return value
            if distributed.is_main() and not self.cache.has(kind, key):
                self.cache.write_json(kind, key, self._built(build, what))
            distributed.barrier()
            return self.cache.read_json(kind, key)
        with self.cache.lock(kind, key):
            if self.cache.has(kind, key):
                return self.cache.read_json(kind, key)
            value = self._built(build, what)
            self.cache.write_json(kind, key, value)
            return value

    def directory(
        self,
        kind: str,
        key: str,
        build: Callable[[Path], dict[str, Any]],
        what: str,
        *,
        every_process: bool = False,
    ) -> dict[str, Any]:
        """A directory artifact (a model), built by `build(out)` if missing; returns its
        metadata, kept in METADATA_FILE inside it. `every_process`: the build trains (above)."""
        if self.together():
            distributed.barrier()
            # A build that trains cannot commit before every process has joined it, so all of
            # them see the same answer here; any other build is the main process's alone.
            if not self.cache.has(kind, key):
                if distributed.is_main():
                    with self.cache.lock(kind, key):
                        self._build_directory(kind, key, build, what)
                elif every_process:
                    with self.cache.discarded_dir() as out:
                        self.depth += 1
                        try:
                            build(out)
                        finally:
                            self.depth -= 1
            distributed.barrier()
            return self.metadata(kind, key)
        with self.cache.lock(kind, key):
            if self.cache.has(kind, key):
                return self.metadata(kind, key)
            return self._build_directory(kind, key, build, what)

    def metadata(self, kind: str, key: str) -> dict[str, Any]:
        return json.loads((self.cache.path(kind, key) / METADATA_FILE).read_text())

    def _built(self, build: Callable[[], Any], what: str | None, nested: bool = True) -> Any:
        """`build()`, logged and timed with `what`. `nested`: stages reached from inside it are
        built there and then (the main process's build); a build every process runs together
        is not nested, so its stages keep synchronising them."""
        if what is not None:
            self.log(f"  {what} ...")
        start = time.perf_counter()
        self.depth += nested
        try:
            value = build()
        finally:
            self.depth -= nested
        if what is not None:
            value["wall_s"] = round(time.perf_counter() - start, 3)
        return value

    def _build_directory(
        self, kind: str, key: str, build: Callable[[Path], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        self.log(f"  {what} ...")
        start = time.perf_counter()
        self.depth += 1
        try:
            with self.cache.writing_dir(kind, key) as out:
                meta = build(out)
                meta["wall_s"] = round(time.perf_counter() - start, 3)
                # Replace, never write in place: a method may have hard-linked files into `out`.
                atomic_write_text(out / METADATA_FILE, json.dumps(meta, indent=1, default=str))
        finally:
            self.depth -= 1
        return meta
