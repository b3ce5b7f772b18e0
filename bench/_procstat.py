"""The processes of a running stack, their CPU time from /proc, and py-spy profiles of them.

`stack_processes(root)` walks /proc from the `rag up` supervisor (or a gateway's pid) down and
names each process by what it runs: `gateway`, `llm_gateway`, `retriever`, `embedder`,
`storage`, `seaweedfs` (the `weed` binary) or `supervisor`; a process a service started (a parser
pool, a merge) is named after that service. `cpu_seconds` reads utime + stime of each one.

`listening_pid`, `stack_root`, `gateway_pid` and `rss_mb` find the processes of a running stack
and read their memory.

`profile(procs, seconds, out_dir)` runs `py-spy record --format raw` on each Python process at
once and `summarize` turns the collapsed stacks into a short text table: per process, the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
# Frames under every sample of a process (the event loop, thread start-up): left out of "inclusive".
BOILERPLATE = (
    "(<frozen runpy>)",
    "(asyncio/runners.py)",
    "(asyncio/base_events.py)",
    "(asyncio/events.py)",
    "(threading.py)",
    "(futures/thread.py)",
    "(llm_gateway/server.py)",
    "(gateway/server.py)",
    "(embedder/server.py)",
    "(retriever/server.py)",
    "(storage/server.py)",
)
SERVICES = ("gateway", "llm_gateway", "retriever", "embedder", "storage")


@dataclass(frozen=True)
class Proc:
    pid: int
    name: str


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for t in tasks:
        try:
            out += [int(p) for p in (t / "children").read_text().split()]
        except OSError:
            continue
    return out


def _label(pid: int, parent: str) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return parent
    words = [c.decode(errors="replace") for c in cmd if c]
    if words and Path(words[0]).name == "weed":
        return "seaweedfs"
    for w in words:
        if w == "gateway.server":
            return "gateway"
        if w.startswith("services.") and w.endswith(".server"):
            return w.split(".")[1]
        if (w.endswith("/rag") or w == "cli.main") and "up" in words:
            return "supervisor"
    return parent or "other"


def stack_processes(root: int) -> list[Proc]:
    """`root` and every process below it, each with its service's name."""
    out: list[Proc] = []
    todo = [(root, "")]
    while todo:
        pid, parent = todo.pop()
        name = _label(pid, parent)
        out.append(Proc(pid, name))
        todo.extend((c, name) for c in _children(pid))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def cpu_by_name(procs: list[Proc]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in procs:
        out[p.name] = out.get(p.name, 0.0) + cpu_seconds(p.pid)
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per service between two `cpu_by_name` readings (a process that ended in
    between has its time counted up to the first reading only: the stack starts none under load)."""
    return {k: round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in sorted(set(before) | set(after))}


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def profile(procs: list[Proc], seconds: float, out_dir: Path, rate: int = 25) -> list[subprocess.Popen[bytes]]:
    """Starts one `py-spy record` per Python service process (the caller waits on them)."""
    exe = py_spy()
    if exe is None:
        raise FileNotFoundError("py-spy is not installed: .venv/bin/pip install py-spy (dev extra)")
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for p in procs:
        if p.name not in SERVICES:
            continue
        cmd = [exe, "record", "--pid", str(p.pid), "--rate", str(rate), "--duration", str(int(seconds))]
        cmd += ["--format", "raw", "--nonblocking", "--output", str(out_dir / f"{p.name}-{p.pid}.txt")]
        runs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return runs


def _frame(f: str) -> str:
    """`func (path/to/mod.py:12)` -> `func (mod.py)`: the line dropped, so a function counts once."""
    name, _, where = f.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = (
        "/".join(parts[-2:]) if "site-packages" not in parts else "/".join(parts[parts.index("site-packages") + 1 :])
    )
    return f"{name} ({short})"


def summarize(out_dir: Path, top: int = 12) -> dict[str, dict[str, object]]:
    """Per service: samples, and the `top` functions by self and by inclusive share of samples."""
    result: dict[str, dict[str, object]] = {}
    files: dict[str, list[Path]] = {}
    for f in sorted(out_dir.glob("*.txt")):
        files.setdefault(f.stem.rsplit("-", 1)[0], []).append(f)  # a service's processes together
    for name, group in files.items():
        self_c: Counter[str] = Counter()
        incl: Counter[str] = Counter()
        total = 0
        lines = [line for f in group for line in f.read_text(errors="replace").splitlines()]
        for line in lines:
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            frames = [_frame(x) for x in stack.split(";") if x and not x.startswith("process ")]
            frames = [x for x in frames if not x.startswith("thread ")]
            if not frames:
                continue
            total += count
            self_c[frames[-1]] += count
            for fr in set(frames):
                if not fr.endswith(BOILERPLATE):
                    incl[fr] += count
        if not total:
            continue

        def share(c: Counter[str]) -> list[str]:
            return [f"{100 * n / total:5.1f}%  {fn}" for fn, n in c.most_common(top)]  # noqa: B023

        result[name] = {"samples": total, "self": share(self_c), "inclusive": share(incl)}
    return result


def summary_text(summary: dict[str, dict[str, object]], header: str) -> str:
    lines = [header, ""]
    for name, s in summary.items():
        lines.append(f"== {name}: {s['samples']} samples (py-spy --nonblocking, idle threads excluded)")
        lines.append("  self (on top of the stack):")
        lines += [f"    {x}" for x in s["self"]]  # type: ignore[attr-defined]
        lines.append("  inclusive (anywhere in the stack):")
        lines += [f"    {x}" for x in s["inclusive"]]  # type: ignore[attr-defined]
        lines.append("")
    return "\n".join(lines)


def gateway_pid(procs: list[Proc]) -> int | None:
    return next((p.pid for p in procs if p.name == "gateway"), None)


def stack_root(gw_pid: int) -> int:
    """For --url: the `rag up` supervisor above the gateway when there is one, else the gateway."""
    try:
        ppid = int(Path(f"/proc/{gw_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return gw_pid
    procs = stack_processes(ppid)
    return ppid if any(p.name == "supervisor" and p.pid == ppid for p in procs) else gw_pid


def listening_pid(port: int) -> int | None:
    """The process holding a listening TCP socket on `port` (for --url)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    return None


def rss_mb(pid: int | None) -> tuple[float | None, float | None]:
    """(current RSS, peak RSS) in MiB from /proc/<pid>/status."""
    if pid is None:
        return None, None
    vals: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) / 1024
    return vals.get("VmRSS"), vals.get("VmHWM")
