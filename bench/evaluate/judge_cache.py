"""SQLite cache of a remote judge's answers: every request answered once is never sent again.

A pairwise LLM judge sends one request per (item, order). Each answer is written here the moment
it arrives, in its own transaction, so a run that dies halfway (the server went away, Ctrl-C,
kill -9) keeps every answer it received, and the rerun sends only the requests still missing.

A row is keyed by `answer_key(judge_hash, prompt, output_a, output_b, order)`: the hash of
everything that decides the answer. `judge_hash` covers the endpoint, the model, the prompt
template's text and the decoding settings (see `judges.llm_pairwise.LlmPairwiseParams`), never
the API key. The row keeps the raw answer text (parsed again on every read, so a parser fix needs
no new requests), the top log-probs when they were asked for, and the token counts the endpoint
reported, from which a rerun still knows what its judgments cost.

The file lives at `<cache root>/sqlite/judge_answers.sqlite` (`default_path`). It uses SQLite's
write-ahead log, so readers never block the writer and several processes may share it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run.hashing import content_hash

FILE_NAME = "judge_answers.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    judge_hash TEXT NOT NULL,
    answer TEXT NOT NULL,
    logprobs TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CachedAnswer:
    """One answer of the endpoint, as stored."""

    answer: str
    """The raw text of the answer (the verdict is parsed from it on every read)."""
    logprobs: list[Any] | None
    """Per answer token `[token, [[candidate, logprob], ...]]`, when log-probs were asked for."""
    input_tokens: int
    output_tokens: int


def answer_key(judge_hash: str, prompt: str, output_a: str, output_b: str, order: str) -> str:
    """The row key: the hash of everything that decides one answer.

    `order` names which side the policy's output takes ("policy_first" when it is A).
    """
    return content_hash(
        {
            "judge": judge_hash,
            "prompt": prompt,
            "output_a": output_a,
            "output_b": output_b,
            "order": order,
        }
    )


def default_path(cache_root: Path) -> Path:
    """Where the answers of every judge live under a pftbench cache root."""
    return Path(cache_root) / "sqlite" / FILE_NAME


class JudgeCache:
    """Answers by key, in one SQLite file; safe to share between threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # One connection guarded by a lock, opened on first use (building a judge touches no
        # file); autocommit mode, so each put is its own committed transaction.
        self._lock = threading.Lock()
        self._open: sqlite3.Connection | None = None

    @property
    def _connection(self) -> sqlite3.Connection:
        """The connection (call with the lock held)."""
        if self._open is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(
                self.path, timeout=60, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a committed row survives a crash of the process; only a power
            # loss can drop the last few commits.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            self._open = connection
        return self._open

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r})"

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        """The stored answers among `keys` (absent keys are simply missing from the result)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, CachedAnswer] = {}
        # SQLite caps the number of bound parameters; 500 stays far below every build's limit.
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._connection.execute(
                    "SELECT key, answer, logprobs, input_tokens, output_tokens "
                    f"FROM answers WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
            for key, answer, logprobs, input_tokens, output_tokens in rows:
                found[key] = CachedAnswer(
                    answer=answer,
                    logprobs=json.loads(logprobs) if logprobs is not None else None,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                )
        return found

    def put(self, key: str, judge_hash: str, answer: CachedAnswer) -> None:
        """Store one answer and commit it at once (a later crash cannot lose it)."""
        logprobs = json.dumps(answer.logprobs) if answer.logprobs is not None else None
        with self._lock:
            self._connection.execute(
                "INSERT OR REPLACE INTO answers "
                "(key, judge_hash, answer, logprobs, input_tokens, output_tokens, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    judge_hash,
                    answer.answer,
                    logprobs,
                    answer.input_tokens,
                    answer.output_tokens,
                    time.time(),
                ),
            )

    def count(self, judge_hash: str | None = None) -> int:
        """Rows stored (for one judge configuration when `judge_hash` is given)."""
        with self._lock:
            if judge_hash is None:
                return self._connection.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
            return self._connection.execute(
                "SELECT COUNT(*) FROM answers WHERE judge_hash = ?", (judge_hash,)
            ).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._open is not None:
                self._open.close()
                self._open = None
