"""`rag jobs list|status|show|cancel`: the retriever's ingestion jobs."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from rich.markup import escape
from rich.table import Table

from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

from .common import EXIT_FAILED, EXIT_OK, add_common, console, emit_json, enum_name, rag_client, run, to_dict
from .ingest import follow_job, show_job_summary

ENDED_BADLY = (rpb.JOB_STATE_FAILED, rpb.JOB_STATE_PARTIAL)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list, inspect, follow or cancel ingestion jobs")
    jsub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    q = jsub.add_parser("list", help="list jobs, newest first")
    q.add_argument("--collection", default="", help="only jobs of this collection")
    q.add_argument("--limit", type=int, default=20, help="most jobs to show (default 20)")
    add_common(q, services=("retriever",))
    q.set_defaults(func=cmd_list)
    q = jsub.add_parser("status", help="one job's state, files in error and write figures")
    q.add_argument("job_id")
    q.add_argument("--watch", action="store_true", help="follow the job's progress until it ends")
    add_common(q, services=("retriever",))
    q.set_defaults(func=cmd_status)
    q = jsub.add_parser(
        "show", help="one job's summary: files, bytes, chunks, time per stage, device, and every file's stage times"
    )
    q.add_argument("job_id")
    add_common(q, services=("retriever",))
    q.set_defaults(func=cmd_show)
    q = jsub.add_parser("cancel", help="cancel a running job (the index stays at its last committed version)")
    q.add_argument("job_id")
    add_common(q, services=("retriever",))
    q.set_defaults(func=cmd_cancel)


def state_name(state: int) -> str:
    return enum_name(rpb.JobState.DESCRIPTOR, state)


def _when(unix_ns: int) -> str:
    if not unix_ns:
        return "-"
    return datetime.fromtimestamp(unix_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_list(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            resp = await rag.retriever.list_jobs(args.collection, page_size=max(1, min(args.limit, 1000)))
        if args.json:
            emit_json({"jobs": [to_dict(j) for j in resp.jobs]})
            return EXIT_OK
        if not resp.jobs:
            console.print("no ingestion jobs yet" + (f" in {args.collection!r}" if args.collection else ""))
            return EXIT_OK
        t = Table(title="ingestion jobs (newest first)", title_justify="left")
        for col in ("job", "collection", "state", "stage", "documents", "chunks", "errors", "created (UTC)", "took"):
            t.add_column(
                col,
                justify="right" if col in ("documents", "chunks", "errors", "took") else "left",
                no_wrap=col in ("job", "created (UTC)"),
            )
        for j in resp.jobs:
            took = (j.updated_unix_ns - j.created_unix_ns) / 1e9 if j.updated_unix_ns else 0
            t.add_row(
                j.job_id,
                escape(j.collection),
                state_name(j.state),
                j.stage,
                f"{j.documents_done}/{j.documents_total}",
                str(j.chunks_done),
                str(len(j.file_errors)),
                _when(j.created_unix_ns),
                f"{took:.1f}s",
            )
        console.print(t)
        return EXIT_OK

    return run(args, work)


def cmd_status(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            if args.watch:
                job = await follow_job(
                    rag.retriever.watch_job(args.job_id),
                    None if args.json else console,
                    title=f"job {args.job_id}",
                )
                if job is None:
                    job = await rag.retriever.get_job(args.job_id)
            else:
                job = await rag.retriever.get_job(args.job_id)
        if args.json:
            emit_json({"job": to_dict(job)})
        else:
            show_job_summary(job)
            console.print(f"stage: {job.stage} · created {_when(job.created_unix_ns)} UTC")
            if job.eta_s > 0 and job.state in (rpb.JOB_STATE_QUEUED, rpb.JOB_STATE_RUNNING):
                console.print(f"about {job.eta_s:.0f}s left")
            for e in job.file_errors:
                console.print(f"  [red]✗[/red] {escape(e.name)}: {escape(e.reason)}")
        return EXIT_FAILED if job.state in ENDED_BADLY else EXIT_OK

    return run(args, work)


STAGES = ("fetch", "parse", "chunk", "embed", "write", "index")


def _ms(ns: int) -> str:
    return f"{ns / 1e6:,.1f} ms"


def cmd_show(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            job = await rag.retriever.get_job(args.job_id, include_files=True)
        if args.json:
            emit_json({"job": to_dict(job)})
            return EXIT_FAILED if job.state in ENDED_BADLY else EXIT_OK
        took = (job.updated_unix_ns - job.created_unix_ns) / 1e9 if job.updated_unix_ns else 0.0
        show_job_summary(job, took)
        rate = f"{job.bytes_total / took / 2**20:,.2f} MiB/s" if took else "-"
        console.print(
            f"{job.documents_total} file(s) · {job.bytes_total:,} bytes · {job.chunks_done} chunks · "
            f"embedded {job.embeddings_per_s:,.1f} chunks/s · ingested {rate} · "
            f"embedder device: {escape(job.embedder_device or 'unknown')}"
        )
        t = Table(title="time per stage", title_justify="left", show_edge=False)
        t.add_column("stage")
        t.add_column("time", justify="right")
        t.add_column("share of run", justify="right")
        t.add_column("what it counts")
        notes = {
            "fetch": "reading sources, summed over files",
            "parse": "text extraction, summed over files",
            "chunk": "splitting, summed over files",
            "embed": "wall time with an embedding call in flight",
            "write": "wall time writing chunks to the backends",
            "index": "the index commit",
        }
        for stage in STAGES:
            ns = getattr(job, f"{stage}_ns")
            t.add_row(stage, _ms(ns), f"{ns / job.run_ns:.0%}" if job.run_ns else "-", notes[stage])
        console.print(t)
        if job.run_ns:
            console.print(
                f"run {_ms(job.run_ns)} wall (stages overlap) · embedder idle {_ms(job.embed_idle_ns)} "
                "between its first and last request"
            )
        if job.files:
            ft = Table(title="files", title_justify="left", show_edge=False)
            for col in ("file", "status", "bytes", "chunks", *STAGES[:5], "error"):
                ft.add_column(col, justify="right" if col in ("bytes", "chunks", *STAGES) else "left", overflow="fold")
            for f in job.files:
                ft.add_row(
                    escape(f.name),
                    f.status,
                    f"{f.size_bytes:,}",
                    str(f.chunks),
                    *(_ms(getattr(f, f"{s}_ns")) for s in STAGES[:5]),
                    escape(f.reason),
                )
            console.print(ft)
        return EXIT_FAILED if job.state in ENDED_BADLY else EXIT_OK

    return run(args, work)


def cmd_cancel(args: argparse.Namespace) -> int:
    async def work() -> int:
        async with rag_client(args) as rag:
            job = await rag.retriever.cancel_job(args.job_id)
        if args.json:
            emit_json({"job": to_dict(job)})
        elif job.state == rpb.JOB_STATE_CANCELLED:
            console.print(f"job {job.job_id} cancelled; collection {job.collection} keeps its last committed index")
        else:
            console.print(f"job {job.job_id} had already ended: {state_name(job.state)}")
        return EXIT_OK

    return run(args, work)
