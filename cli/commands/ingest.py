"""`rag ingest PATH...`: upload files and directories and ingest them, with live progress.

Files go up through the storage service to `docs/<collection>/<document_id>/<name>` (ids from
`kernel.ids`, so ingesting a file of the same name again replaces it), then one
ingestion job parses, chunks, embeds and writes them. `--prefix` (with `--bucket` or
`--source-backend`) ingests objects already in a bucket instead. The progress bar shows documents,
chunks, chunks/s and each target backend's write rate; per-file errors are summed up at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clients import UploadedDocument
from clients.base import ServiceCallError
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from kernel.filetypes import ACCEPTED_TEXT, kind_of
from kernel.ids import NAME_PATTERN, valid_name

from .common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    UsageError,
    add_common,
    console,
    emit_json,
    enum_name,
    failure_of,
    human_bytes,
    rag_client,
    run,
    split_csv,
    to_dict,
)

OK_STATES = (rpb.JOB_STATE_SUCCEEDED,)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="upload files or directories (or a bucket prefix) and ingest them")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files and directories (directories are walked)")
    p.add_argument("--collection", default="default", help="the collection (created when missing; default: default)")
    p.add_argument(
        "--backend",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="storage backend(s) the chunks are written to (repeat or comma-separate; default: the default)",
    )
    p.add_argument("--source-backend", default="", help="backend the documents are uploaded to and read from")
    p.add_argument("--bucket", help="with --prefix: the bucket to read from (the backend configured for it)")
    p.add_argument("--prefix", default="", help="ingest every object under this key prefix of the source backend")
    p.add_argument("--detach", action="store_true", help="start the job and return its id (follow: rag jobs status)")
    add_common(p, services=("storage", "retriever"))
    p.set_defaults(func=cmd_ingest)


@dataclass
class Plan:
    """What to upload, and what was refused before anything was sent."""

    files: list[tuple[Path, str]] = field(default_factory=list)
    total_bytes: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan_files(paths: list[str]) -> Plan:
    """Expands directories (hidden entries and unsupported types are skipped and counted), refuses
    missing paths, unsupported explicit files and two files with the same name (one document id)."""
    plan = Plan()
    seen: dict[str, Path] = {}

    def add(path: Path, explicit: bool) -> None:
        if kind_of(path.name) is None:
            if explicit:
                plan.errors.append(
                    {
                        "name": path.name,
                        "path": str(path),
                        "reason": f"unsupported file type; {ACCEPTED_TEXT}",
                    }
                )
            else:
                plan.skipped.append(str(path))
            return
        if path.name in seen:
            plan.errors.append(
                {
                    "name": path.name,
                    "path": str(path),
                    "reason": f"same file name as {seen[path.name]}; one name is one document, rename one",
                }
            )
            return
        seen[path.name] = path
        plan.files.append((path, path.name))
        plan.total_bytes += path.stat().st_size

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p).parts
                if f.is_file() and not any(part.startswith(".") for part in rel):
                    add(f, explicit=False)
        elif p.is_file():
            add(p, explicit=True)
        else:
            plan.errors.append({"name": p.name, "path": raw, "reason": "no such file or directory"})
    return plan


def cmd_ingest(args: argparse.Namespace) -> int:
    return run(args, lambda: _ingest(args))


async def _ingest(args: argparse.Namespace) -> int:
    if not args.paths and not args.prefix:
        raise UsageError("give files or directories to ingest, or --prefix to ingest objects already stored")
    if args.bucket and not args.prefix:
        raise UsageError("--bucket needs --prefix (the key prefix to ingest from that bucket)")
    if args.bucket and args.source_backend:
        raise UsageError("give --bucket or --source-backend, not both")
    if not valid_name(args.collection):
        raise UsageError(f"collection name {args.collection!r} must match {NAME_PATTERN}")
    targets = [b for item in args.backend for b in split_csv(item)]
    plan = await asyncio.to_thread(plan_files, args.paths)
    quiet = bool(args.json)
    uploaded: list[UploadedDocument] = []
    async with rag_client(args) as rag:
        source_backend = args.source_backend
        if args.bucket:
            source_backend = await _backend_for_bucket(rag.storage, args.bucket)
        if plan.files:
            uploaded = await _upload(rag, args.collection, plan, source_backend, quiet=quiet)
        if not uploaded and not args.prefix:
            return _finish(args, None, plan, uploaded, 0.0)
        if args.detach:
            job = await rag.start_ingest(
                args.collection,
                uploaded,
                source_prefix=args.prefix,
                source_backend=source_backend,
                target_backends=targets,
            )
            return _detached(args, job, plan, uploaded)
        t0 = time.monotonic()
        events = rag.ingest(
            args.collection,
            uploaded,
            source_prefix=args.prefix,
            source_backend=source_backend,
            target_backends=targets,
        )
        job = await follow_job(events, None if quiet else console, title=f"ingesting into {args.collection}")
    return _finish(args, job, plan, uploaded, time.monotonic() - t0)


async def _backend_for_bucket(storage: Any, bucket: str) -> str:
    resp = await storage.list_backends()
    for b in resp.backends:
        if b.bucket == bucket:
            return b.name
    have = ", ".join(f"{b.name} ({b.bucket})" for b in resp.backends) or "none"
    raise UsageError(
        f"no configured backend uses bucket {bucket!r}; configured: {have}. Add one with `rag config backends add`"
    )


async def _upload(rag: Any, collection: str, plan: Plan, backend: str, *, quiet: bool) -> list[UploadedDocument]:
    total = plan.total_bytes
    done: list[UploadedDocument] = []
    columns = (
        TextColumn("uploading"),
        BarColumn(),
        TextColumn("{task.fields[files]}"),
        TextColumn("{task.fields[sent]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task("upload", total=max(total, 1), files=f"0/{len(plan.files)} files", sent="")
        sent = 0
        for i, (path, name) in enumerate(plan.files, 1):
            try:
                doc = await rag.upload_file(collection, path, name=name, backend=backend)
                done.append(doc)
                sent += doc.size_bytes
            except ServiceCallError as err:
                f = failure_of(err)
                if f.exit_code == EXIT_UNAVAILABLE:  # the storage service is down: nothing else will go up either
                    raise
                plan.errors.append({"name": name, "path": str(path), "reason": f"upload failed: {err.describe()}"})
            except OSError as err:
                plan.errors.append({"name": name, "path": str(path), "reason": f"cannot read: {err.strerror or err}"})
            bar.update(task, completed=sent, files=f"{i}/{len(plan.files)} files", sent=human_bytes(sent))
    return done


async def follow_job(
    events: AsyncIterator[rpb.IngestProgress], out: Console | None, *, title: str = "ingesting"
) -> rpb.Job | None:
    """Renders a job's progress events as a live bar until the terminal event; returns the last job."""
    columns = (
        TextColumn(escape(title)),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("docs ·"),
        TextColumn("{task.fields[stage]} ·"),
        TextColumn("{task.fields[chunks]}"),
        TextColumn("{task.fields[writes]}"),
        TimeElapsedColumn(),
    )
    last: rpb.Job | None = None
    first_chunk: tuple[float, int] | None = None
    with Progress(*columns, console=out or console, disable=out is None, transient=False) as bar:
        task = bar.add_task("job", total=None, stage="", chunks="", writes="")
        async for ev in events:
            job = last = ev.job
            now = time.monotonic()
            if first_chunk is None and job.chunks_done:
                first_chunk = (now, job.chunks_done)
            rate = 0.0
            if first_chunk is not None and now > first_chunk[0]:
                rate = (job.chunks_done - first_chunk[1]) / (now - first_chunk[0])
            rate = rate or job.embeddings_per_s
            writes = " ".join(f"{b.backend} {b.write_ops_per_s:.0f} w/s" for b in job.backends)
            bar.update(
                task,
                completed=job.documents_done,
                total=max(job.documents_total, 1) if job.documents_total else None,
                stage=job.stage,
                chunks=f"{job.chunks_done} chunks · {rate:.1f} chunks/s",
                writes=writes,
            )
            if ev.terminal:
                break
    return last


def _detached(args: argparse.Namespace, job: rpb.Job, plan: Plan, uploaded: list) -> int:
    if args.json:
        emit_json(
            {
                "job": to_dict(job),
                "uploaded": [d.__dict__ for d in uploaded],
                "errors": plan.errors,
                "skipped": plan.skipped,
            }
        )
    else:
        n = len(uploaded)
        console.print(f"job {job.job_id} started: {n} document{'' if n == 1 else 's'} into {escape(job.collection)}")
        console.print(f"follow it with: rag jobs status {job.job_id} --watch")
        for e in plan.errors:
            console.print(f"  [red]✗[/red] {escape(e['path'])}: {escape(e['reason'])}")
    return EXIT_FAILED if plan.errors else EXIT_OK


def _finish(args: argparse.Namespace, job: rpb.Job | None, plan: Plan, uploaded: list, elapsed: float) -> int:
    local = {name: str(path) for path, name in plan.files}
    job_errors = [
        {"name": e.name, "path": local.get(e.name, e.object_key), "object_key": e.object_key, "reason": e.reason}
        for e in (job.file_errors if job else [])
    ]
    errors = plan.errors + job_errors
    state = enum_name(rpb.JobState.DESCRIPTOR, job.state) if job else "not_started"
    ok = job is not None and job.state in OK_STATES and not errors
    if args.json:
        emit_json(
            {
                "ok": ok,
                "state": state,
                "job": to_dict(job) if job else None,
                "uploaded": [d.__dict__ for d in uploaded],
                "errors": errors,
                "skipped": plan.skipped,
                "elapsed_s": round(elapsed, 3),
            }
        )
        return EXIT_OK if ok else EXIT_FAILED
    if job is not None:
        show_job_summary(job, elapsed)
    if plan.skipped:
        n = len(plan.skipped)
        console.print(
            f"[dim]skipped {n} file{'' if n == 1 else 's'} of unsupported type (see --json for the list)[/dim]"
        )
    if errors:
        t = Table(title=f"{len(errors)} file(s) not ingested", title_justify="left", title_style="bold red")
        t.add_column("file")
        t.add_column("reason", overflow="fold")
        for e in errors:
            t.add_row(escape(e["path"] or e["name"]), escape(e["reason"]))
        console.print(t)
    if job is None:
        console.print("[red]nothing was ingested[/red]")
    return EXIT_OK if ok else EXIT_FAILED


def show_job_summary(job: rpb.Job, elapsed: float = 0.0) -> None:
    state = enum_name(rpb.JobState.DESCRIPTOR, job.state)
    color = {"succeeded": "green", "partial": "yellow"}.get(state, "red")
    took = f" in {elapsed:.1f}s" if elapsed else ""
    console.print(
        f"[bold {color}]{state}[/bold {color}]: job {job.job_id} · {job.documents_done}/{job.documents_total} documents"
        f" · {job.chunks_done} chunks into [bold]{escape(job.collection)}[/bold]{took}"
        + (f" · index {job.index_version[:12]}" if job.index_version else "")
    )
    if job.error:
        console.print(f"[red]{escape(job.error)}[/red]")
    if job.backends:
        t = Table(title="writes per backend", title_justify="left", show_edge=False)
        for col in ("backend", "objects", "writes/s", "p50", "avg"):
            t.add_column(col, justify="left" if col == "backend" else "right")
        for b in job.backends:
            t.add_row(
                escape(b.backend),
                str(b.objects_written),
                f"{b.write_ops_per_s:.1f}",
                f"{b.write_p50_ns / 1e6:.1f} ms",
                f"{b.write_avg_ns / 1e6:.1f} ms",
            )
        console.print(t)
