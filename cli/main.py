"""`rag`: the command line of Build.DDN.RAG.

Each subcommand lives in a module of `cli.commands` with a `register(subparsers)` function.
Failures print a message for people (no stack trace) and exit non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rich.console import Console

from clients.base import ServiceCallError

# Modules under cli.commands, in help order.
COMMAND_MODULES = [
    "stack",
    "ingest",
    "ask",
    "conversations",
    "search",
    "bench",
    "ab",
    "jobs",
    "collections",
    "cache",
    "eval",
    "export",
    "config",
    "whoami",
]

err_console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description="Build.DDN.RAG: RAG on object storage")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cli.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ServiceCallError as err:
        err_console.print(f"[red]error:[/red] {err.describe()}")
        return 3 if err.http_status == 503 else 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
