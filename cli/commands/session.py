"""The question/answer session log behind `rag ask` and `rag export`.

Each answered question is one JSON line in `<data dir>/state/cli/sessions/<session>.jsonl`:
the question, the answer, its citations and its timings. `rag export` writes them back out.
The session name comes from `--session`, else `DDNRAG_CLI_SESSION`, else "default".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SESSION_ENV = "DDNRAG_CLI_SESSION"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def session_name(flag: str | None) -> str:
    name = flag or os.environ.get(SESSION_ENV) or "default"
    if not _NAME.match(name):
        raise ValueError(f"session name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    return name


def sessions_dir(data: Path) -> Path:
    return data / "state" / "cli" / "sessions"


def session_path(data: Path, name: str) -> Path:
    return sessions_dir(data) / f"{name}.jsonl"


def append(path: Path, record: dict[str, Any]) -> None:
    """Appends one record as a single line (one write, so concurrent `rag ask` never interleave)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a session, oldest first; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def list_sessions(data: Path) -> list[tuple[str, int]]:
    """(name, number of records) of every session, by name."""
    d = sessions_dir(data)
    if not d.is_dir():
        return []
    return [(p.stem, sum(1 for _ in read(p))) for p in sorted(d.glob("*.jsonl"))]
