"""`python -m services.retriever.parse_worker MEMORY_MB`: one parser worker process (see sandbox.py).

It limits its own address space before reading any input, then answers requests on stdin/stdout:
a 4-byte length, a JSON header ({"name", "max_bytes", "max_unpacked_bytes", "cpu_s", caps}), a
4-byte length and the file's bytes; the answer is a 4-byte length and JSON {"ok": true, "text"}
or {"ok": false, "error"}. Before each file it moves its CPU-time limit to what it has used plus
`cpu_s`, so the kernel stops a file that spins.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys

_HEADER = struct.Struct(">I")


def _read_exact(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = os.read(fd, min(n - len(out), 1 << 20))
        if not chunk:
            raise EOFError
        out += chunk
    return bytes(out)


def _write(fd: int, obj: dict[str, object]) -> None:
    body = json.dumps(obj).encode()
    view = memoryview(_HEADER.pack(len(body)) + body)
    while view:
        view = view[os.write(fd, view) :]


def _cpu_used() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    memory_mb = int(sys.argv[1])
    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    from services.retriever.parsing import Caps, ParseError, parse_in_process

    fd_in, fd_out = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        try:
            head = json.loads(_read_exact(fd_in, _HEADER.unpack(_read_exact(fd_in, _HEADER.size))[0]))
            data = _read_exact(fd_in, _HEADER.unpack(_read_exact(fd_in, _HEADER.size))[0])
        except EOFError:
            return
        soft = int(_cpu_used()) + int(head["cpu_s"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))
        try:
            text = parse_in_process(
                head["name"],
                data,
                max_bytes=head["max_bytes"],
                max_unpacked_bytes=head["max_unpacked_bytes"],
                caps=Caps(**head["caps"]),
            )
            answer: dict[str, object] = {"ok": True, "text": text}
        except ParseError as err:
            answer = {"ok": False, "error": str(err)}
        except MemoryError:
            # The heap may be in any state now: answer, then let the pool start a fresh worker.
            answer = {"ok": False, "error": f"parsing needed more than {memory_mb} MiB of memory; the file was refused"}
            answer["restart"] = True
        del data
        _write(fd_out, answer)
        if answer.get("restart"):
            return


if __name__ == "__main__":
    main()
