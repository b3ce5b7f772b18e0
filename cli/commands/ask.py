"""`rag ask "question"`: a cited answer streamed into the terminal, then where the time went.

One `LlmService.Answer` call does retrieve-then-generate. `--backend` picks the storage backend the
chunk texts are read from; `--compare B1,B2` asks the same question through each backend in turn
and puts their timings side by side. `--conversation ID` continues a conversation (see
`rag conversations`): the question may lean on earlier turns ("And how does it compare?"), the
standalone question that was searched is shown, and the turn is stored in the conversation.
Every answer is recorded in the session log for `rag export`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from rich import box
from rich.markup import escape
from rich.table import Table

from clients import RagClient
from clients.base import ServiceCallError

from . import session
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    UsageError,
    add_common,
    console,
    data_dir,
    emit_json,
    err_console,
    failure_of,
    ms,
    rag_client,
    run,
    split_csv,
    to_dict,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ask", help="ask a question; the answer streams in with citations and timings")
    p.add_argument("question", help="the question, in quotes")
    p.add_argument("--collection", default="default", help="the collection to search (default: default)")
    p.add_argument("--backend", default="", help="storage backend the chunks are read from (default: the default)")
    p.add_argument(
        "--compare",
        metavar="B1,B2",
        help="ask through each of these storage backends (answer cache skipped) and compare",
    )
    p.add_argument("--llm-backend", default="", help="LLM backend (default: the first healthy one)")
    p.add_argument("--model", default="", help="model (default: the backend's default)")
    p.add_argument("--top-k", type=int, default=5, help="chunks to retrieve, 1..20 (default 5)")
    p.add_argument("--max-tokens", type=int, default=0, help="most tokens to generate (default: the service's)")
    p.add_argument("--no-cache", action="store_true", help="skip the answer cache")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="document metadata filter")
    p.add_argument(
        "--conversation",
        default="",
        metavar="ID",
        help="continue this conversation (`rag conversations new` makes one; `new` here makes one and prints its id)",
    )
    p.add_argument("--session", help=f"session log to record into (env {session.SESSION_ENV}; default: default)")
    p.add_argument("--no-record", action="store_true", help="do not record this answer in the session log")
    add_common(p, services=("llm_gateway",))
    p.set_defaults(func=cmd_ask)


@dataclass
class Outcome:
    """Everything one Answer stream produced."""

    backend: str
    answer: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    retrieval: dict[str, Any] | None = None
    start: dict[str, Any] | None = None
    done: dict[str, Any] | None = None
    error: str = ""
    wall_ns: int = 0
    first_token_ns: int = 0

    def timings(self) -> dict[str, Any]:
        d = self.done or {}
        return {
            "wall_ns": self.wall_ns,
            "client_first_token_ns": self.first_token_ns,
            "rag_ttft_ns": d.get("rag_ttft_ns", 0),
            "ttft_ns": d.get("ttft_ns", 0),
            "generation_ns": d.get("generation_ns", 0),
            "tokens_per_s": d.get("tokens_per_s", 0.0),
            "inter_token_p50_ns": d.get("inter_token_p50_ns", 0),
            "inter_token_p99_ns": d.get("inter_token_p99_ns", 0),
            "retrieval": (self.retrieval or {}).get("timings"),
            "answer": d.get("timings"),
        }

    def record(self, args: argparse.Namespace) -> dict[str, Any]:
        start = self.start or {}
        return {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "question": args.question,
            "collection": args.collection,
            "storage_backend": self.backend,
            "llm_backend": start.get("backend", ""),
            "model": start.get("model", ""),
            "cache_hit": bool(start.get("cache_hit")),
            "answer": self.answer,
            "finish_reason": (self.done or {}).get("finish_reason", ""),
            "citations": self.citations,
            "usage": (self.done or {}).get("usage"),
            "retrieved_chunks": len((self.retrieval or {}).get("chunks") or []),
            "index_version": (self.retrieval or {}).get("index_version", ""),
            "search_query": (self.retrieval or {}).get("search_query", ""),
            "conversation_id": (self.done or {}).get("conversation_id", ""),
            "error": self.error,
            "timings": self.timings(),
        }


def _filters(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--filter {item!r} must be KEY=VALUE")
        out[key] = value
    return out


def cmd_ask(args: argparse.Namespace) -> int:
    if not args.question.strip():
        err_console.print("[red]error:[/red] the question is empty; ask something, in quotes")
        return 2
    return run(args, lambda: _ask(args))


async def _ask(args: argparse.Namespace) -> int:
    try:
        name = session.session_name(args.session)
    except ValueError as err:
        raise UsageError(str(err)) from None
    backends = split_csv(args.compare) if args.compare else [args.backend]
    if args.compare and len(backends) < 2:
        raise UsageError("--compare needs at least two backends, for example --compare default,infinia")
    filters = _filters(args.filter)
    if args.conversation and args.compare:
        raise UsageError("--conversation and --compare do not go together: compare asks one question twice")
    outcomes: list[Outcome] = []
    async with rag_client(args) as rag:
        if args.conversation == "new":
            created = (await rag.llm.create_conversation(collection=args.collection)).conversation
            args.conversation = created.id
            if not args.json:
                err_console.print(f"[dim]new conversation {created.id}[/dim]")
        if args.compare:
            # Connect first, so the first backend's wall clock does not carry the connection set-up.
            # A service that is down fails the first call below with the usual message.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_connect(rag.llm.channel), 5)
        for backend in backends:
            if args.compare and not args.json:
                console.rule(f"[bold]storage backend: {backend}[/bold]")
            try:
                outcome = await _one(rag, args, backend, filters, stream=not args.json)
            except ServiceCallError as err:
                failure = failure_of(err)
                if not args.compare or failure.exit_code == EXIT_UNAVAILABLE:
                    raise
                outcome = Outcome(backend=backend, error=failure.message)
            outcomes.append(outcome)
            if not args.json:
                _show_outcome(outcome, full=not args.compare)
    if not args.no_record:
        path = session.session_path(data_dir(args), name)
        for o in outcomes:
            if not o.error:
                await asyncio.to_thread(session.append, path, {"session": name, **o.record(args)})
    if args.json:
        records = [o.record(args) for o in outcomes]
        emit_json({"question": args.question, "results": records} if args.compare else records[0])
    elif args.compare:
        _show_comparison(outcomes)
    return EXIT_FAILED if any(o.error for o in outcomes) else EXIT_OK


async def _connect(channel: grpc.aio.Channel) -> None:
    """Waits until the channel is connected or has failed to connect (never longer)."""
    settled = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE)
    state = channel.get_state(try_to_connect=True)
    while state not in (*settled, grpc.ChannelConnectivity.SHUTDOWN):
        await channel.wait_for_state_change(state)
        state = channel.get_state(try_to_connect=True)


async def _one(
    rag: RagClient, args: argparse.Namespace, backend: str, filters: dict[str, str], *, stream: bool
) -> Outcome:
    out = Outcome(backend=backend)
    t0 = time.perf_counter_ns()
    pieces: list[str] = []
    events = rag.answer(
        args.question,
        collection=args.collection,
        storage_backend=backend,
        top_k=args.top_k,
        llm_backend=args.llm_backend,
        model=args.model,
        max_tokens=args.max_tokens,
        # Compared backends must all generate: an answer-cache hit would hide the difference.
        no_cache=args.no_cache or bool(args.compare),
        filters=filters,
        conversation_id=getattr(args, "conversation", ""),
    )
    async for ev in events:
        kind = ev.WhichOneof("event")
        if kind == "retrieval":
            out.retrieval = to_dict(ev.retrieval)
            if stream and ev.retrieval.rewrite not in ("", "none"):
                console.print(f"[dim]searched: {escape(ev.retrieval.search_query)} ({ev.retrieval.rewrite})[/dim]")
            if stream and ev.retrieval.history_turns_trimmed:
                console.print(
                    f"[dim]history: the {ev.retrieval.history_turns_trimmed} oldest turns were left out"
                    " to stay within the history token budget[/dim]"
                )
        elif kind == "start":
            out.start = to_dict(ev.start)
            if stream:
                hit = " · from the answer cache" if ev.start.cache_hit else ""
                console.print(f"[dim]{ev.start.backend} · {ev.start.model}{hit}[/dim]")
        elif kind == "token":
            if not out.first_token_ns:
                out.first_token_ns = time.perf_counter_ns() - t0
            pieces.append(ev.token.text)
            if stream:
                console.print(ev.token.text, end="", markup=False)
        elif kind == "done":
            out.done = to_dict(ev.done)
            out.citations = [{k: v for k, v in c.items()} for c in out.done["citations"]]
            if stream and ev.done.conversation_id:
                console.print(f"\n[dim]turn {ev.done.turn_index + 1} of conversation {ev.done.conversation_id}[/dim]")
        elif kind == "verify" and stream:  # groundedness: each sentence against its passages
            c = ev.verify.check
            ok = sum(x.supported for x in c.sentences)
            console.print(
                f"\n[dim]groundedness {c.answer_score:.0%}: {ok} of {len(c.sentences)} sentences supported ({c.method})[/dim]"
            )
            for x in c.sentences:
                if not x.supported:
                    console.print(f"[yellow]  unsupported ({x.score:.2f}): {escape(x.text)}[/yellow]")
            if ev.verify.HasField("repair"):
                console.print(f"[dim]repaired ({ev.verify.repair.kind}): {escape(ev.verify.repair.text)}[/dim]")
        elif kind == "refused":
            r = ev.refused
            out.error = f"refused by the {r.guard} guard ({r.reason}): {r.message}"
        elif kind == "error":
            out.error = ev.error.message or "the answer failed"
    out.wall_ns = time.perf_counter_ns() - t0
    out.answer = (out.done or {}).get("text") or "".join(pieces)
    if stream and pieces:
        console.print()
    if out.error and stream:
        err_console.print(f"[red]error:[/red] the answer stopped: {out.error}")
    return out


def _show_outcome(o: Outcome, *, full: bool) -> None:
    if o.error:
        return
    if o.citations:
        console.print("\n[bold]Citations[/bold]")
        for c in o.citations:
            console.print(
                f"  [{c['number']}] {c['document_name']}  [dim]{c['object_key']} · score {c['score']:.4f}[/dim]",
                markup=True,
            )
    elif o.done is not None:
        console.print("\n[yellow]no citations: nothing relevant was found in the collection[/yellow]")
    if full:
        console.print(timing_table(o))


def timing_table(o: Outcome) -> Table:
    """Where the time went: retrieval stages, generation, and the sum beside the total."""
    t = Table(title="Timing breakdown", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False)
    t.add_column("stage")
    t.add_column("time", justify="right")
    t.add_column("detail", style="dim")
    r = (o.retrieval or {}).get("timings") or {}
    for s in r.get("stages", []):
        detail = []
        if s.get("backend"):
            detail.append(f"backend {s['backend']}")
        if s.get("ttfb_ns"):
            detail.append(f"TTFB {ms(s['ttfb_ns'])}")
        if s.get("count"):
            detail.append(f"{s['count']} objects")
        if s.get("bytes"):
            detail.append(f"{s['bytes']} bytes")
        t.add_row(f"retrieval: {s['name']}", ms(s["duration_ns"]), ", ".join(detail))
    if r:
        hit = " · retrieval cache hit" if (o.retrieval or {}).get("cache_hit") else ""
        t.add_row("retrieval total", ms(r.get("total_ns", 0)), f"sum of stages {ms(r.get('stages_sum_ns', 0))}{hit}")
    d = o.done or {}
    a = d.get("timings") or {}
    for s in a.get("stages", []):
        t.add_row(f"answer: {s['name']}", ms(s["duration_ns"]), s.get("backend", ""))
    if d:
        t.add_row("time to first token (LLM)", ms(d.get("ttft_ns", 0)), "request to the LLM -> first token")
        t.add_row(
            "time to first token (RAG)", ms(d.get("rag_ttft_ns", 0)), "question -> first token, retrieval included"
        )
        usage = d.get("usage") or {}
        t.add_row(
            "generation",
            ms(d.get("generation_ns", 0)),
            f"{usage.get('completion_tokens', 0)} tokens, {d.get('tokens_per_s', 0):.1f} tokens/s",
        )
        t.add_row(
            "server total", ms(a.get("total_ns", 0)), f"sum of stages {ms(a.get('stages_sum_ns', 0))}", style="bold"
        )
    t.add_row("wall clock (this command)", ms(o.wall_ns), f"first token after {ms(o.first_token_ns)}", style="bold")
    return t


def _fetch_stage(o: Outcome) -> dict[str, Any]:
    stages = ((o.retrieval or {}).get("timings") or {}).get("stages", [])
    return next((s for s in stages if s["name"] == "fetch"), {})


def _show_comparison(outcomes: list[Outcome]) -> None:
    t = Table(title="Storage backends compared", title_justify="left")
    t.add_column("metric")
    for o in outcomes:
        t.add_column(o.backend or "(default)", justify="right")

    def row(label: str, fn: Any) -> None:
        t.add_row(label, *[("[red]failed[/red]" if o.error else fn(o)) for o in outcomes])

    row("chunks fetched", lambda o: str(_fetch_stage(o).get("count", len((o.retrieval or {}).get("chunks") or []))))
    row("fetch TTFB", lambda o: ms(_fetch_stage(o).get("ttfb_ns", 0)))
    row("fetch time", lambda o: ms(_fetch_stage(o).get("duration_ns", 0)))
    row("retrieval total", lambda o: ms(((o.retrieval or {}).get("timings") or {}).get("total_ns", 0)))
    row("time to first token (RAG)", lambda o: ms((o.done or {}).get("rag_ttft_ns", 0)))
    row("wall clock", lambda o: ms(o.wall_ns))
    row("citations", lambda o: str(len(o.citations)))
    console.print(t)
    for o in outcomes:
        if o.error:
            err_console.print(f"[red]error:[/red] backend {o.backend or '(default)'}: {o.error}")
