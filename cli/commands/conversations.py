"""`rag conversations list|new|show|rename|delete|export`: the conversations the llm_gateway
keeps in object storage. Continue one with `rag ask --conversation ID "..."`."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from .common import EXIT_OK, add_common, console, emit_json, rag_client, run, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("conversations", help="list, start, show, rename, export or delete conversations")
    csub = p.add_subparsers(dest="conversations_command", required=True, metavar="ACTION")
    q = csub.add_parser("list", help="conversations, most recently updated first")
    q.add_argument("--limit", type=int, default=50, help="at most this many, 1..200 (default 50)")
    q.add_argument("--page-token", default="", help="the next page, as the previous listing printed it")
    q.set_defaults(func=cmd_list)
    q = csub.add_parser("new", help="start a conversation and print its id")
    q.add_argument("--title", default="", help="a title (default: the first question)")
    q.add_argument("--collection", default="", help="the collection it searches by default")
    q.set_defaults(func=cmd_new)
    q = csub.add_parser("show", help="every turn of a conversation")
    q.add_argument("id")
    q.set_defaults(func=cmd_show)
    q = csub.add_parser("rename", help="give a conversation a new title")
    q.add_argument("id")
    q.add_argument("title")
    q.set_defaults(func=cmd_rename)
    q = csub.add_parser("delete", help="delete a conversation")
    q.add_argument("id")
    q.set_defaults(func=cmd_delete)
    q = csub.add_parser("export", help="write a conversation as JSON (to a file, or stdout)")
    q.add_argument("id")
    q.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    q.set_defaults(func=cmd_export)
    for action in csub.choices.values():
        add_common(action, services=("llm_gateway",))


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S") if ns else "-"


def _summary(c: Any) -> dict[str, Any]:
    d = to_dict(c)
    d.pop("turns", None)
    return d


def cmd_list(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            resp = await rag.llm.list_conversations(args.limit, args.page_token)
        items, token = resp.conversations, resp.next_page_token
        if args.json:
            emit_json({"conversations": [_summary(c) for c in items], "next_page_token": token})
            return EXIT_OK
        if not items:
            console.print('No conversations yet. Start one with `rag ask --conversation new "..."`.')
            return EXIT_OK
        t = Table(title="Conversations", title_justify="left")
        for col in ("id", "title", "turns", "updated (UTC)"):
            t.add_column(col, justify="right" if col == "turns" else "left")
        for c in items:
            t.add_row(c.id, escape(c.title or "(untitled)"), str(c.turn_count), _when(c.updated_unix_ns))
        console.print(t)
        if token:
            console.print(f"More: rag conversations list --limit {args.limit} --page-token {token}")
        return EXIT_OK

    return run(args, work)


def cmd_new(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            c = (await rag.llm.create_conversation(args.title, args.collection)).conversation
        if args.json:
            emit_json(_summary(c))
        else:
            console.print(c.id)
        return EXIT_OK

    return run(args, work)


def cmd_show(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            c = (await rag.llm.get_conversation(args.id)).conversation
        if args.json:
            emit_json(to_dict(c))
            return EXIT_OK
        console.print(f"[bold]{escape(c.title or '(untitled)')}[/bold]  [dim]{c.id} · {c.turn_count} turns[/dim]")
        for i, t in enumerate(c.turns, start=1):
            console.print(f"\n[bold]{i}. {escape(t.question)}[/bold]")
            if t.search_query and t.search_query != t.question:
                console.print(f"[dim]searched: {escape(t.search_query)}[/dim]")
            console.print(t.answer, markup=False)
            if t.HasField("verify_score"):
                console.print(f"[dim]groundedness {t.verify_score:.2f}[/dim]")
            for sc in t.verify.check.sentences if t.HasField("verify") else ():
                if not sc.supported:  # as the answer showed it: the sentences its passages do not support
                    console.print(f"[dim]  ✗ {escape(sc.text)} ({sc.score:.2f}, not supported by its passages)[/dim]")
            for x in t.citations:
                console.print(f"  [{x.number}] {escape(x.document_name)}  [dim]{escape(x.object_key)}[/dim]")
        return EXIT_OK

    return run(args, work)


def cmd_rename(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            c = (await rag.llm.update_conversation(args.id, args.title)).conversation
        if args.json:
            emit_json(_summary(c))
        else:
            console.print(f"renamed {c.id}: {escape(c.title)}")
        return EXIT_OK

    return run(args, work)


def cmd_delete(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            await rag.llm.delete_conversation(args.id)
        if args.json:
            emit_json({"deleted": args.id})
        else:
            console.print(f"deleted {args.id}")
        return EXIT_OK

    return run(args, work)


def cmd_export(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            c = (await rag.llm.get_conversation(args.id)).conversation
        text = json.dumps(to_dict(c), indent=2, ensure_ascii=False)
        if args.output:
            args.output.write_text(text + "\n", encoding="utf-8")
            console.print(f"wrote {args.output} ({c.turn_count} turns)")
        else:
            print(text)
        return EXIT_OK

    return run(args, work)
