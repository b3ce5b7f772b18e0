"""`rag export`: the session's questions, answers, citations and timings as JSONL.

`rag ask` records every answer in `<data dir>/state/cli/sessions/<session>.jsonl`; this writes the
records of one session to stdout or a file (`--json` gives one JSON array instead of lines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import session
from .common import EXIT_OK, UsageError, add_common, console, data_dir, emit_json, err_console, report


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the session's questions, answers, citations and timings as JSONL")
    p.add_argument("--session", help=f"the session (env {session.SESSION_ENV}; default: default)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--list", action="store_true", help="list the recorded sessions instead")
    p.add_argument("--clear", action="store_true", help="after exporting, empty the session")
    add_common(p, services=())
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except ValueError as err:
        return report(args, UsageError(str(err)))
    except OSError as err:
        return report(args, err)


def _export(args: argparse.Namespace) -> int:
    data = data_dir(args)
    if args.list:
        sessions = session.list_sessions(data)
        if args.json:
            emit_json({"sessions": [{"session": n, "records": c} for n, c in sessions]})
        elif not sessions:
            console.print(f"no sessions recorded under {session.sessions_dir(data)} yet; `rag ask` records them")
        else:
            for name, count in sessions:
                console.print(f"{name}\t{count} answers")
        return EXIT_OK
    name = session.session_name(args.session)
    path = session.session_path(data, name)
    records = list(session.read(path))
    if args.json:
        text = json.dumps(records, ensure_ascii=False) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        err_console.print(f"wrote {len(records)} answers of session {name!r} to {args.output}")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if not records:
        err_console.print(f"session {name!r} has no answers yet ({path}); `rag ask` records them")
    if args.clear and path.exists():
        path.unlink()
        err_console.print(f"session {name!r} cleared")
    return EXIT_OK
