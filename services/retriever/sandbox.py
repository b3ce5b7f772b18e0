"""Untrusted files are parsed in worker processes with hard limits, so one bad file costs one
worker, never the retriever.

Each worker is `python -m services.retriever.parse_worker`, started with an address-space limit
(`RLIMIT_AS`) it sets on itself before it reads any input. For each file it also sets a CPU-time
limit (`RLIMIT_CPU`, the kernel stops it with SIGXCPU) and the parent waits at most a wall-clock
timeout, then kills it. A worker that dies, for any reason, is replaced; the file gets a
`ParseError` naming what happened ("used more than 60 s of CPU", "ran out of its 2048 MiB
memory", "took longer than 120 s"), so the ingestion job marks it failed, with that reason, and
goes on; it is never retried.

Workers are reused (one spawn per worker, not per file) and at most `workers` run at once; a
caller beyond that waits for a free one. The pool is thread-safe: the ingestion pipeline parses
from worker threads.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kernel.config import env_field, load_env

log = logging.getLogger(__name__)

P = "DDNRAG_RETRIEVER_PARSER_"
ROOT = Path(__file__).resolve().parents[2]
_HEADER = struct.Struct(">I")


@dataclass(frozen=True)
class ParserLimits:
    """Limits of the parser workers; each field names its variable."""

    workers: int = env_field(P + "WORKERS", 2, "parser worker processes (files parsed at once)")
    memory_mb: int = env_field(P + "MEMORY_MB", 2048, "address-space limit of a parser worker (RLIMIT_AS), MiB")
    cpu_s: int = env_field(P + "CPU_S", 60, "CPU seconds one file may take (RLIMIT_CPU)")
    wall_s: float = env_field(P + "WALL_S", 120.0, "wall-clock seconds one file may take before its worker is killed")
    max_part_bytes: int = env_field(
        P + "MAX_PART_BYTES", 64 * 1024 * 1024, "largest uncompressed XML part of a docx/pptx/xlsx"
    )
    max_cells: int = env_field(P + "MAX_CELLS", 2_000_000, "most table or sheet cells read from one file")
    max_rows: int = env_field(P + "MAX_ROWS", 250_000, "most table or sheet rows read from one file")


class WorkerDied(Exception):
    """The worker ended without an answer; the message says why, for people."""


class _Worker:
    def __init__(self, limits: ParserLimits) -> None:
        # A bare environment: the worker needs no credential, address or setting of the service.
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.retriever.parse_worker", str(limits.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
            close_fds=True,
        )
        self.files = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()

    def call(self, request: dict[str, object], data: bytes, wall_s: float) -> dict[str, object]:
        head = json.dumps(request).encode()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(_HEADER.pack(len(head)) + head + _HEADER.pack(len(data)))
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self._death(wall_s)) from None
        deadline = time.monotonic() + wall_s
        size = _HEADER.unpack(self._read(_HEADER.size, deadline, wall_s))[0]
        self.files += 1
        return json.loads(self._read(size, deadline, wall_s))

    def _read(self, n: int, deadline: float, wall_s: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        out = bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.kill()
                raise WorkerDied(f"parsing took longer than {wall_s:g} s; the file was refused")
            chunk = os.read(fd, min(n - len(out), 1 << 20))
            if not chunk:
                raise WorkerDied(self._death(wall_s))
            out += chunk
        return bytes(out)

    def _death(self, wall_s: float) -> str:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.returncode
        if code == -signal.SIGXCPU:
            return "parsing used more CPU time than allowed; the file was refused"
        if code == -signal.SIGKILL:
            return "the parser was killed (out of memory); the file was refused"
        if code is not None and code < 0:
            return f"the parser crashed on this file (signal {signal.Signals(-code).name}); the file was refused"
        return f"the parser exited on this file (code {code}); the file was refused"


class ParserPool:
    """At most `limits.workers` worker processes, started on demand and replaced when they die."""

    def __init__(self, limits: ParserLimits) -> None:
        self.limits = limits
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.deaths = 0  # workers lost to a file (killed, crashed, over a limit)

    def parse(self, request: dict[str, object], data: bytes) -> dict[str, object]:
        """The worker's answer for one file: {"ok": True, "text"} or {"ok": False, "error"}."""
        worker = self._take()
        healthy = False
        try:
            answer = worker.call({**request, "cpu_s": self.limits.cpu_s}, data, self.limits.wall_s)
            healthy = worker.alive() and not answer.get("restart")
            return answer
        except WorkerDied as err:
            self.deaths += 1
            log.warning("parser worker lost", extra={"file": request.get("name", ""), "reason": str(err)})
            return {"ok": False, "error": str(err)}
        finally:
            self._give(worker, healthy)

    def _take(self) -> _Worker:
        with self._cond:
            while not self._idle and self._count >= max(1, self.limits.workers):
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker(self.limits)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give(self, worker: _Worker, healthy: bool) -> None:
        if not healthy:
            worker.kill()
        with self._cond:
            if healthy:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.kill()


# One pool per process: `parse_document` keeps its plain signature (callers need not carry a
# pool), and the workers are an OS resource of this process, closed at exit.
_pool: ParserPool | None = None
_pool_lock = threading.Lock()


def default_pool() -> ParserPool:
    """The process's pool, configured from `DDNRAG_RETRIEVER_PARSER_*` on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ParserPool(load_env(ParserLimits))
            atexit.register(_pool.close)
        return _pool
