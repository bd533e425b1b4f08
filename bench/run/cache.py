"""Content-addressed cache of the expensive artifacts: checkpoints, generations, judgments, cells.

Every entry is keyed by the content hash of what produced it (`bench.run.hashing.content_hash`), so
a rerun of an unchanged cell finds all its stages here and costs nothing. Layout under `root`::

    <root>/
      <kind>/                       one folder per artifact kind: models, generations, ...
        <key>                       a complete entry: a JSON file (write_json) or a folder
                                    (writing_dir); nothing else is ever named exactly <key>
        <key>.partial/              resumable scratch state of an entry being built (training
                                    checkpoints); survives a crash, removed once <key> commits
        .tmp-<key>-<pid>.<host>-<random>
                                    an entry being written; renamed to <key> when complete
      locks/
        <kind>-<key>.lock           flock target, so that two processes don't build one entry

Entries become visible only by an atomic rename of a finished temporary file or folder in the
same directory, so a process killed at any moment (kill -9, power loss after the fsyncs) leaves
either the whole entry or none of it. A leftover `.tmp-*` is never taken for an entry; the next
run removes those that a dead process of the same host left (`Cache.remove_stale_temps`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.run.hashing import to_jsonable

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]*")
"""What a kind or a key may look like: a single path component that is not hidden."""

PARTIAL_SUFFIX = ".partial"
TEMP_PREFIX = ".tmp-"
LOCKS_DIR = "locks"

_TEMP_NAME = re.compile(r"\.tmp-.+-(?P<pid>\d+)(?:\.(?P<host>[0-9a-f]{8}))?-[^-]+")
"""A temporary entry's name: `.tmp-<key>-<pid>.<host>-<random>` (older ones lack `.<host>`)."""
_TRASH_NAME = re.compile(r"\.tmp-.+-trash-[^-]+")
"""A scratch folder on its way out (`Cache._remove_scratch`): always safe to delete."""


class CacheMiss(KeyError):
    """The entry asked for is not in the cache (or not complete yet)."""

    def __str__(self) -> str:
        return str(self.args[0])


class Cache:
    """A content-addressed store of complete entries under `root` (layout in the module doc)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Cache({str(self.root)!r})"

    @classmethod
    def default(cls) -> Cache:
        """The cache of this user: `$PFTBENCH_CACHE_DIR` if set, else `$XDG_CACHE_HOME/pftbench`,
        else `~/.cache/pftbench`.

        The environment variable exists so that clusters can point the cache at a shared or
        scratch filesystem; it only says where artifacts live, never what is computed.
        """
        explicit = os.environ.get("PFTBENCH_CACHE_DIR")
        if explicit:
            return cls(Path(explicit).expanduser())
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        return cls(base / "pftbench")

    def path(self, kind: str, key: str) -> Path:
        """Where the complete entry `key` of `kind` lives (it may not exist yet)."""
        _check_name("kind", kind)
        _check_name("key", key)
        if kind == LOCKS_DIR:
            raise ValueError(f"cache kind {kind!r} is reserved for lock files")
        if key.endswith(PARTIAL_SUFFIX):
            raise ValueError(f"cache key {key!r} may not end in {PARTIAL_SUFFIX!r}")
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        """Whether the complete entry exists (temporary and scratch files never count)."""
        return self.path(kind, key).exists()

    def read_json(self, kind: str, key: str) -> Any:
        """The JSON value stored by `write_json`; raises CacheMiss if the entry is absent."""
        path = self.path(kind, key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CacheMiss(f"no {kind} entry {key} in the cache at {self.root}") from None
        return json.loads(text)

    def write_json(self, kind: str, key: str, obj: Any) -> Path:
        """Store `obj` (anything `bench.run.hashing.to_jsonable` accepts) as the entry, atomically.

        Returns the entry's path. An existing entry is replaced: under the same key it holds the
        same content, by construction of the key.
        """
        path = self.path(kind, key)
        text = json.dumps(to_jsonable(obj), ensure_ascii=False)
        atomic_write_text(path, text, temp_prefix=_temp_prefix(key))
        return path

    @contextmanager
    def writing_dir(self, kind: str, key: str) -> Iterator[Path]:
        """Yield a fresh empty folder to build the entry in; commit it when the block succeeds.

        On normal exit the folder's files are fsynced and the folder is renamed to
        `path(kind, key)` in one atomic step, then the entry's scratch folder is removed. If the
        entry appeared meanwhile (another process built it), the existing one is kept and the
        new folder discarded. If the block raises, the folder is removed and nothing is visible.
        """
        final = self.path(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=_temp_prefix(key), dir=final.parent))
        try:
            yield temp
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        _fsync_tree(temp)
        if final.exists():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            try:
                os.rename(temp, final)
            except OSError as error:
                # Lost a race: someone committed the same key between the check and the rename.
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                shutil.rmtree(temp, ignore_errors=True)
            else:
                _fsync_dir(final.parent)
        self._remove_scratch(kind, key)

    @contextmanager
    def discarded_dir(self) -> Iterator[Path]:
        """A fresh folder for output nobody keeps (what the other processes of a multi-process
        training build save), removed after the block."""
        parent = self.root / "tmp"
        parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=_temp_prefix("discarded"), dir=parent))
        try:
            yield temp
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def scratch_dir(self, kind: str, key: str) -> Path:
        """A persistent folder for the resumable state of an entry being built (created if absent).

        Unlike `writing_dir`'s folder it survives a crash, so a killed training run can resume
        from its last checkpoint; `writing_dir` removes it once the same key commits.
        """
        final = self.path(kind, key)
        scratch = final.with_name(key + PARTIAL_SUFFIX)
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    @contextmanager
    def lock(self, kind: str, key: str) -> Iterator[None]:
        """Hold an exclusive lock on entry `key` of `kind` for the block (blocks until free).

        Wrap check-build-commit in it so that two processes asked for the same artifact build it
        once: the second finds it with `has` once it gets the lock. The lock is an flock on
        `locks/<kind>-<key>.lock`, released by the kernel if the holder dies. Lock files are
        left in place: deleting them would let two processes lock two different files.
        """
        self.path(kind, key)  # validates the names
        lock_path = self.root / LOCKS_DIR / f"{kind}-{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # closing the last descriptor releases the flock

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary entries that no running process will finish; return their paths.

        A run killed mid-write (kill -9, a crash, a power loss) leaves its `.tmp-*` file or
        folder behind. One is stale when this host's process that made it (the pid and host in
        its name) is gone, or when it is a scratch folder already on its way out. Temporary
        entries of other hosts sharing the cache are left alone: their pids mean nothing here.
        """
        removed = []
        for kind_dir in self.root.glob("*/"):
            if kind_dir.name == LOCKS_DIR:
                continue
            for entry in kind_dir.glob(f"{TEMP_PREFIX}*"):
                if _is_stale_temp(entry.name):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(entry)
        return removed

    def _remove_scratch(self, kind: str, key: str) -> None:
        """Delete the scratch folder, first renaming it so that no half-deleted one is resumed."""
        scratch = self.path(kind, key).with_name(key + PARTIAL_SUFFIX)
        if not scratch.exists():
            return
        doomed = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{key}-trash-", dir=scratch.parent))
        # FileNotFoundError: removed meanwhile by another committer of the same key.
        with contextlib.suppress(FileNotFoundError):
            os.rename(scratch, doomed / "scratch")
        shutil.rmtree(doomed, ignore_errors=True)


def atomic_write_text(path: Path, text: str, *, temp_prefix: str = TEMP_PREFIX) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a mix.

    Writes a temporary file in the same folder (same filesystem, so the rename is atomic),
    fsyncs it, `os.replace`s it onto `path` and fsyncs the folder. The temporary name carries
    the pid and a random part, so concurrent writers never collide.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=temp_prefix, dir=path.parent)
    # mkstemp creates the file 0600; give it the mode a plain open() would (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(descriptor, 0o666 & ~umask)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _host_tag() -> str:
    """This host, as 8 hex digits (a hostname may hold any character)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _temp_prefix(key: str) -> str:
    """The start of a temporary entry's name: the key, then which process of which host wrote it."""
    return f"{TEMP_PREFIX}{key}-{os.getpid()}.{_host_tag()}-"


def _is_stale_temp(name: str) -> bool:
    """Whether a `.tmp-*` name is left over by a dead process of this host (or is trash)."""
    if _TRASH_NAME.fullmatch(name):
        return True
    match = _TEMP_NAME.fullmatch(name)
    if match is None or match["host"] not in (None, _host_tag()):
        return False
    return not _process_alive(int(match["pid"]))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid cache {what} {name!r}: use letters, digits, '_', '.', '=', '-', "
            "not starting with '.' or '-'"
        )


def _fsync_tree(root: Path) -> None:
    """Flush every file under `root` to disk, so a committed entry survives a power loss."""
    for folder, _, files in os.walk(root):
        for name in files:
            file_path = os.path.join(folder, name)
            if os.path.islink(file_path):
                continue
            descriptor = os.open(file_path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """Persist a folder's entries (a rename is durable only once its folder is synced)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
