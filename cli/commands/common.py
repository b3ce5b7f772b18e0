"""What every client-side `rag` subcommand shares: service addresses, `--json`, running a
coroutine, turning failures into one line for people and an exit code; `to_dict` (protobuf -> plain
dicts, enums as "get", bytes as their length) is `clients/protodict.py`'s, the gateway's too.

Addresses: `--<service>-addr` wins, then `DDNRAG_CLI_<SERVICE>_ADDR`, then the local stack's port
(`cli.stack_config.StackConfig`, which reads `DDNRAG_<SERVICE>_PORT` and `DDNRAG_STACK_HOST`), so every
command works against `rag up` with no flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from rich.console import Console
from rich.markup import escape

from cli.stack_config import StackConfig, load_config
from clients import RagClient
from clients.base import ServiceCallError

# The one protobuf -> dict walker, shared with the gateway (re-exported for every subcommand).
from clients.protodict import enum_name as enum_name
from clients.protodict import to_dict as to_dict

# Exit codes shared by every subcommand.
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran but the work failed (a job failed, a test did not pass)
EXIT_USAGE = 2  # bad arguments or input
EXIT_UNAVAILABLE = 3  # a service could not be reached

SERVICES = ("storage", "embedder", "retriever", "llm_gateway")
PORT_FIELD = {
    "storage": "storage_port",
    "embedder": "embedder_port",
    "retriever": "retriever_port",
    "llm_gateway": "llm_gateway_port",
}

console = Console(soft_wrap=True, highlight=False)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)


class UsageError(Exception):
    """Bad arguments or input; the message says what to change."""


def addr_env(service: str) -> str:
    return f"DDNRAG_CLI_{service.upper()}_ADDR"


def add_common(p: argparse.ArgumentParser, services: tuple[str, ...] = SERVICES) -> None:
    """`--json`, `--timeout`, `--data-dir` and one `--<service>-addr` per service the command calls."""
    p.add_argument("--json", action="store_true", help="print one machine-readable JSON document on stdout")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline of each call in seconds (default 60)")
    p.add_argument("--data-dir", help="the local stack's data directory (default ./data, or DDNRAG_DATA_DIR)")
    for svc in services:
        flag = "--" + svc.replace("_", "-") + "-addr"
        p.add_argument(
            flag,
            dest=f"{svc}_addr",
            metavar="HOST:PORT",
            help=f"the {svc} service (env {addr_env(svc)}; default: the local stack's {svc} port)",
        )


def stack_config(args: argparse.Namespace) -> StackConfig:
    data_dir = getattr(args, "data_dir", None)
    return load_config(data_dir=data_dir) if data_dir else load_config()


def resolve_addr(service: str, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    flag = getattr(args, f"{service}_addr", None)
    if flag:
        return str(flag)
    env = environ.get(addr_env(service))
    if env:
        return env
    cfg = stack_config(args)
    return cfg.addr(getattr(cfg, PORT_FIELD[service]))


def rag_client(args: argparse.Namespace) -> RagClient:
    return RagClient(
        storage=resolve_addr("storage", args),
        embedder=resolve_addr("embedder", args),
        retriever=resolve_addr("retriever", args),
        llm_gateway=resolve_addr("llm_gateway", args),
        timeout_s=float(getattr(args, "timeout", 60.0) or 60.0),
    )


def data_dir(args: argparse.Namespace) -> Path:
    return stack_config(args).data


@dataclass
class Failure:
    """A failure reported to the user: one line, and a JSON object for `--json`."""

    message: str
    exit_code: int
    detail: dict[str, Any]


def unreachable_message(service: str, address: str, code: str = "UNAVAILABLE") -> str:
    what = "did not answer in time" if code == "DEADLINE_EXCEEDED" else "is not reachable"
    return f"the {service} service at {address} {what} (is the stack running? try `rag status`)"


def failure_of(exc: BaseException) -> Failure:
    if isinstance(exc, ServiceCallError):
        unreachable = exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and exc.reason in (
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
            "",
        )
        if unreachable:
            msg = unreachable_message(exc.service, exc.address, exc.code.name)
            code = EXIT_UNAVAILABLE
        else:
            msg = f"{exc.service} service at {exc.address}: {exc.describe()}"
            code = EXIT_UNAVAILABLE if exc.http_status == 503 else EXIT_FAILED
        detail = {
            "service": exc.service,
            "address": exc.address,
            "code": exc.code.name,
            "reason": exc.reason,
            "message": msg,
        }
        return Failure(msg, code, detail)
    if isinstance(exc, UsageError):
        return Failure(str(exc), EXIT_USAGE, {"code": "INVALID_ARGUMENT", "message": str(exc)})
    if isinstance(exc, OSError):
        name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        msg = f"cannot use{name}: {exc.strerror or exc}"
        return Failure(msg, EXIT_FAILED, {"code": "OS_ERROR", "message": msg})
    raise exc


def fit_width() -> None:
    """Tables keep their columns when the output goes to a pipe or a file: rich would wrap them to
    80 columns there, so the width comes from COLUMNS or is 160."""
    raw = os.environ.get("COLUMNS", "")
    columns = int(raw) if raw.isdigit() else 0
    for c in (console, err_console):
        c.width = columns or (c.size.width if c.is_terminal else 160)


def run(args: argparse.Namespace, work: Callable[[], Awaitable[int]]) -> int:
    """Runs `work()` on a fresh event loop; failures become one line (and `{"error": ...}` on
    stdout with `--json`) and an exit code, never a traceback."""
    fit_width()
    try:
        return asyncio.run(_guarded(work))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except (ServiceCallError, UsageError, OSError) as exc:
        return report(args, exc)


def report(args: argparse.Namespace, exc: BaseException) -> int:
    """Prints a failure as one line on stderr (and `{"error": ...}` on stdout with `--json`);
    returns its exit code."""
    f = failure_of(exc)
    if getattr(args, "json", False):
        emit_json({"error": f.detail})
    err_console.print(f"[red]error:[/red] {escape(f.message)}")
    return f.exit_code


async def _guarded(work: Callable[[], Awaitable[int]]) -> int:
    return await work()


def emit_json(obj: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# ---- formatting ---------------------------------------------------------------------------------
def ms(ns: int | float) -> str:
    """Nanoseconds as milliseconds for people."""
    v = ns / 1e6
    return f"{v:.1f} ms" if v < 100 else f"{v:.0f} ms"


def human_bytes(n: int | float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2}
_SIZE_UNITS |= {"g": 1000**3, "gb": 1000**3, "gib": 1024**3}


def parse_size(text: str) -> int:
    """'4KiB', '1MiB', '512', '64k' -> bytes."""
    t = text.strip().lower().replace(" ", "")
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num) :]
    if not num or unit not in _SIZE_UNITS:
        raise UsageError(f"{text!r} is not a size; use for example 4KiB, 1MiB or 65536")
    try:
        return int(float(num) * _SIZE_UNITS[unit])
    except ValueError:
        raise UsageError(f"{text!r} is not a size; use for example 4KiB, 1MiB or 65536") from None


def split_csv(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]
