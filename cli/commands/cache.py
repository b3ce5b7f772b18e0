"""`rag cache stats|purge`: the embedding (embedder), retrieval (retriever) and answer (llm_gateway)
caches. One service down does not hide the others: it is reported in its row, and the exit code
says so."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from clients.base import ServiceCallError

from .common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    UsageError,
    add_common,
    console,
    emit_json,
    err_console,
    failure_of,
    human_bytes,
    rag_client,
    run,
    unreachable_message,
)

CACHES = {"embedder": "embeddings", "retriever": "search results", "llm_gateway": "answers"}
ALIASES = {"embedder": "embedder", "retriever": "retriever", "llm": "llm_gateway", "llm_gateway": "llm_gateway"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="show or purge the embedder, retriever and LLM caches")
    csub = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    for action, text in (("stats", "entries, size, hits and misses of each cache"), ("purge", "empty caches")):
        q = csub.add_parser(action, help=text)
        q.add_argument(
            "caches",
            nargs="*",
            metavar="CACHE",
            help="embedder, retriever, llm (default: all three)",
        )
        add_common(q, services=("embedder", "retriever", "llm_gateway"))
        q.set_defaults(func=cmd_stats if action == "stats" else cmd_purge)


def _selected(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in ALIASES and n != "all"]
    if unknown:
        raise UsageError(f"unknown cache {unknown[0]!r}; choose embedder, retriever, llm or all")
    if not names or "all" in names:
        return list(CACHES)
    return list(dict.fromkeys(ALIASES[n] for n in names))


def cmd_stats(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            reports = await rag.cache_stats(_selected(args.caches))
        down = [r for r in reports if r.error]
        if args.json:
            emit_json({"caches": [r.__dict__ | {"holds": CACHES[r.service]} for r in reports]})
        else:
            t = Table(title="caches", title_justify="left")
            for col in ("service", "holds", "entries", "size", "limit", "hits", "misses", "hit rate"):
                t.add_column(col, justify="left" if col in ("service", "holds") else "right")
            for r in reports:
                if r.error:
                    t.add_row(r.service, CACHES[r.service], f"[red]unavailable at {r.address}[/red]", *[""] * 5)
                    continue
                looked = r.hits + r.misses
                rate = f"{100 * r.hits / looked:.0f}%" if looked else "-"
                t.add_row(
                    r.service,
                    CACHES[r.service],
                    str(r.entries),
                    human_bytes(r.size_bytes),
                    human_bytes(r.max_size_bytes) if r.max_size_bytes else "-",
                    str(r.hits),
                    str(r.misses),
                    rate,
                )
            console.print(t)
        for r in down:
            msg = r.error
            if r.error_code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                msg = unreachable_message(r.service, r.address, r.error_code)
            err_console.print(f"[red]error:[/red] {escape(msg)}")
        return EXIT_UNAVAILABLE if down else EXIT_OK

    return run(args, work)


def cmd_purge(args: argparse.Namespace) -> int:
    async def work() -> int:
        results: list[dict[str, object]] = []
        code = EXIT_OK
        async with rag_client(args) as rag:
            for svc in _selected(args.caches):
                try:
                    removed = await rag.purge_cache(svc)
                    results.append({"service": svc, "removed": removed, "error": ""})
                    if not args.json:
                        console.print(f"{svc}: removed {removed} cached {CACHES[svc]}")
                except ServiceCallError as err:
                    f = failure_of(err)
                    code = max(code, f.exit_code)
                    results.append({"service": svc, "removed": 0, "error": f.message})
                    err_console.print(f"[red]error:[/red] {f.message}")
        if args.json:
            emit_json({"purged": results})
        return code

    return run(args, work)
