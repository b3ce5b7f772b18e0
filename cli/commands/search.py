"""`rag search "query"`: the ranked chunks of a hybrid search, with scores and timings."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    add_common,
    console,
    emit_json,
    ms,
    rag_client,
    run,
    to_dict,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="show the ranked chunks a query retrieves, with scores")
    p.add_argument("query", help="the query, in quotes")
    p.add_argument("--collection", default="default", help="the collection (default: default)")
    p.add_argument("--top-k", type=int, default=5, help="chunks to return, 1..100 (default 5)")
    p.add_argument("--backend", default="", help="storage backend the chunk texts are read from")
    p.add_argument("--mode", choices=("hybrid", "dense", "bm25"), default="hybrid", help="retrievers (default hybrid)")
    p.add_argument("--fusion", choices=("rrf", "weighted"), default="", help="fusion method (default: the service's)")
    p.add_argument("--no-cache", action="store_true", help="skip the retrieval cache")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="document metadata filter")
    p.add_argument("--full", action="store_true", help="print each chunk's whole text instead of a preview")
    add_common(p, services=("retriever",))
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    return run(args, lambda: _search(args))


def _preview(text: str, width: int = 110) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


async def _search(args: argparse.Namespace) -> int:
    if not args.query.strip():
        raise UsageError("the query is empty; search for something, in quotes")
    filters = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--filter {item!r} must be KEY=VALUE")
        filters[key] = value
    async with rag_client(args) as rag:
        resp = await rag.retriever.search(
            args.collection,
            args.query,
            top_k=args.top_k,
            backend=args.backend,
            mode=args.mode,
            fusion=args.fusion,
            filters=filters,
            no_cache=args.no_cache,
        )
    failed = [c for c in resp.chunks if c.status.code != 0]
    if args.json:
        emit_json(
            {
                "query": args.query,
                "collection": args.collection,
                "index_version": resp.index_version,
                "cache_hit": resp.cache_hit,
                "chunks": [to_dict(c) for c in resp.chunks],
                "timings": to_dict(resp.timings),
                "rerank": to_dict(resp.rerank) if resp.HasField("rerank") else None,
            }
        )
        return EXIT_FAILED if failed else EXIT_OK
    if not resp.chunks:
        console.print(
            f"no chunks matched in collection {args.collection!r} (index version {resp.index_version or '-'})"
        )
        return EXIT_OK
    t = Table(title=f"{len(resp.chunks)} chunks for {args.query!r} in {args.collection}", title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("score", justify="right")
    t.add_column("bm25", justify="right")
    t.add_column("dense", justify="right")
    reranked = resp.HasField("rerank")
    if reranked:
        t.add_column("rerank", justify="right")
    t.add_column("document")
    t.add_column("text", overflow="fold")
    for i, c in enumerate(resp.chunks, 1):
        text = c.text if args.full else _preview(c.text)
        if c.status.code != 0:
            text = f"[red]text unavailable: {c.status.message}[/red]"
        extra = [f"{c.rerank_score:.4f}" if c.HasField("rerank_score") else "-"] if reranked else []
        t.add_row(
            str(i),
            f"{c.score:.4f}",
            str(c.bm25_rank or "-"),
            str(c.dense_rank or "-"),
            *extra,
            f"{c.document_name}\n[dim]{c.chunk_id[:12]} · pos {c.position}[/dim]",
            text,
        )
    console.print(t)
    if reranked and resp.rerank.status != "ok":  # the reranker failed: fusion order, and why
        console.print(f"[yellow]rerank {resp.rerank.status}: {escape(resp.rerank.message)}[/yellow]")
    stages = ", ".join(
        f"{s.name} {ms(s.duration_ns)}" + (f" (TTFB {ms(s.ttfb_ns)}, {s.backend})" if s.ttfb_ns else "")
        for s in resp.timings.stages
    )
    hit = " · retrieval cache hit" if resp.cache_hit else ""
    console.print(
        f"[dim]{stages} · total {ms(resp.timings.total_ns)} (stages sum {ms(resp.timings.stages_sum_ns)})"
        f" · index {resp.index_version[:12]}{hit}[/dim]"
    )
    return EXIT_FAILED if failed else EXIT_OK
