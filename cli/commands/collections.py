"""`rag collections list|delete`: the retriever's collections; delete clears one for good.

`delete` names what goes (documents and chunks) and asks before it deletes, unless `--yes`; the
retriever cancels the collection's running jobs, stops every replica serving it, then deletes its
index, chunks, raw documents and job records."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime

from rich.markup import escape
from rich.table import Table

from .common import EXIT_FAILED, EXIT_OK, add_common, console, emit_json, err_console, rag_client, run, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("collections", help="list collections, or delete (clear) one")
    csub = p.add_subparsers(dest="collections_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="every collection with its documents, chunks and index version")
    add_common(q, services=("retriever",))
    q.set_defaults(func=cmd_list)
    q = csub.add_parser(
        "delete",
        help="clear a collection: its documents, chunks, index and job records are deleted (asks first)",
    )
    q.add_argument("name", help="the collection to delete")
    q.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    add_common(q, services=("retriever",))
    q.set_defaults(func=cmd_delete)


def _when(unix_ns: int) -> str:
    return datetime.fromtimestamp(unix_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S") if unix_ns else "-"


def cmd_list(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            cols = await rag.retriever.list_collections()
        if args.json:
            emit_json({"collections": [to_dict(c) for c in cols]})
            return EXIT_OK
        t = Table(title="collections", title_justify="left")
        for col in ("name", "documents", "chunks", "index version", "updated (UTC)"):
            t.add_column(col, justify="right" if col in ("documents", "chunks") else "left")
        for c in cols:
            t.add_row(escape(c.name), str(c.documents), str(c.chunks), c.version[:16] or "-", _when(c.updated_unix_ns))
        console.print(t)
        return EXIT_OK

    return run(args, work)


def cmd_delete(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            cols = {c.name: c for c in await rag.retriever.list_collections()}
            c = cols.get(args.name)
            if not args.yes:
                what = (
                    f"{c.documents} document(s) and {c.chunks} chunk(s)"
                    if c is not None
                    else "its leftover objects (it is not listed)"
                )
                if not sys.stdin.isatty():
                    err_console.print(f"refusing to delete {args.name!r} without confirmation: pass --yes")
                    return EXIT_FAILED
                console.print(
                    f"This deletes collection [bold]{escape(args.name)}[/bold]: {what}, their stored files,"
                    " the index and the collection's job records. It cannot be undone."
                )
                answer = await asyncio.to_thread(input, f"Type the collection's name ({args.name}) to confirm: ")
                if answer.strip() != args.name:
                    console.print("not confirmed; nothing was deleted")
                    return EXIT_FAILED
            out = await rag.retriever.delete_collection(args.name)
        if args.json:
            emit_json({"cleared": args.name, **to_dict(out)})
        else:
            console.print(
                f"deleted collection [bold]{escape(args.name)}[/bold]: {out.documents} document(s),"
                f" {out.chunks} chunk(s), {out.objects_deleted} object(s)"
                + (f", {out.jobs_cancelled} running job(s) cancelled" if out.jobs_cancelled else "")
            )
        return EXIT_OK

    return run(args, work)
