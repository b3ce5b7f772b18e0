"""`rag up`, `rag status`, `rag down`: the local stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.stack_config import PortInUseError, StackConfig, load_config, pidfile, replica_name, write_pidfile
from cli.supervisor import Supervisor, grpc_serving, http_ok
from kernel.ids import document_id, document_key

console = Console(soft_wrap=True)
SAMPLE_COLLECTION = "default"
SAMPLE_TYPES = {".md": "text/markdown", ".txt": "text/plain"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start the whole local stack (SeaweedFS, services, gateway)")
    p.add_argument("--data-dir", help="data directory (default ./data, or DDNRAG_DATA_DIR)")
    p.add_argument("--no-sample", action="store_true", help="do not ingest the sample corpus")
    p.add_argument(
        "--replicas",
        type=int,
        help="run N storage and N retriever processes behind client-side round robin (default 1, or DDNRAG_REPLICAS)",
    )
    p.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus on loopback scraping every service (DDNRAG_PROMETHEUS_PORT, default 9090)",
    )
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("status", help="show the health of every service of the local stack")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("down", help="stop the local stack started by `rag up`")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_down)


def _config(args: argparse.Namespace) -> StackConfig:
    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    if getattr(args, "no_sample", False):
        overrides["sample_corpus"] = ""
    if getattr(args, "monitoring", False):
        overrides["monitoring"] = True
    if getattr(args, "replicas", None) is not None:
        if not 1 <= args.replicas <= 8:
            raise SystemExit(f"--replicas takes 1 to 8; got {args.replicas}")
        overrides["replicas"] = args.replicas
    elif getattr(args, "func", None) is not cmd_up:
        # status/down: the running stack's replica count, from its pid file
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            overrides["replicas"] = int(json.loads(pidfile(load_config(**overrides)).read_text())["replicas"])
    return load_config(**overrides)


def cmd_up(args: argparse.Namespace) -> int:
    cfg = _config(args)
    logging.basicConfig(level=logging.WARNING)
    try:
        return asyncio.run(_up(cfg))
    except PortInUseError as err:
        console.print(f"[red]{err}[/red]")
        return 2


async def _up(cfg: StackConfig) -> int:
    sup = Supervisor(cfg, out=console.print)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, sup.stopping.set)
    scaled = f" ({cfg.replicas} storage and {cfg.replicas} retriever replicas)" if cfg.replicas > 1 else ""
    console.print(f"[bold]Build.DDN.RAG[/bold] starting the local stack in {cfg.data}{scaled}")
    t0 = time.monotonic()
    starter = asyncio.create_task(sup.start_all())
    stopper = asyncio.create_task(sup.stopping.wait())
    done, _ = await asyncio.wait({starter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if starter not in done:
        starter.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await starter
        console.print("interrupted; stopping")
        await sup.stop_all()
        return 130
    stopper.cancel()
    try:
        starter.result()
    except PortInUseError:
        raise
    except Exception as err:  # noqa: BLE001 - report the failure in words, then clean up
        console.print(f"[red]the stack did not start: {err}[/red]")
        await sup.stop_all()
        return 1
    write_pidfile(cfg)
    console.print(f"all services healthy in {time.monotonic() - t0:.1f}s")
    if cfg.sample_corpus:
        # Raced with the stop signal: Ctrl-C or SIGTERM during the sample ingestion stops the stack
        # now, instead of after the ingestion (or never, if it hangs).
        ingest = asyncio.create_task(ingest_sample_once(cfg))
        stopper = asyncio.create_task(sup.stopping.wait())
        await asyncio.wait({ingest, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not ingest.done():
            ingest.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await ingest
        elif ingest.exception() is not None:  # the stack still serves; say what failed
            console.print(f"[yellow]sample corpus ingestion failed: {ingest.exception()}[/yellow]")
    if not sup.stopping.is_set():
        console.print(f"\n[bold green]Build.DDN.RAG is up:[/bold green] {cfg.gateway_url}   (Ctrl-C stops it)\n")
        if cfg.monitoring:
            console.print(f"Prometheus: {cfg.prometheus_url}  (config: {cfg.data / 'prometheus' / 'prometheus.yml'})\n")
        if sup.gateway_open:
            console.print(
                "[yellow]the gateway runs without API keys (DDNRAG_GATEWAY_AUTH=open), on loopback only;[/yellow]\n"
                "[yellow]set DDNRAG_GATEWAY_API_KEYS_FILE before `rag up` to require keys[/yellow]\n"
            )
    monitor = asyncio.create_task(sup.monitor())
    await sup.stopping.wait()
    console.print("stopping…")
    monitor.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await monitor
    await sup.stop_all()
    with contextlib.suppress(FileNotFoundError):
        pidfile(cfg).unlink()
    console.print("stopped")
    return 0


def _corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix in SAMPLE_TYPES)


async def ingest_sample_once(cfg: StackConfig) -> None:
    """Uploads and ingests the sample corpus, once per data directory (and again if it changed)."""
    from clients.retriever import RetrieverClient
    from clients.storage import StorageClient
    from ddnrag.retriever.v1 import retriever_service_pb2 as rpb

    files = _corpus_files(Path(cfg.sample_corpus))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()
    marker = cfg.data / "state" / "stack" / "sample-corpus.json"
    if marker.exists() and json.loads(marker.read_text()).get("sha256") == digest:
        return
    storage = StorageClient(cfg.addrs(cfg.storage_port))
    retriever = RetrieverClient(cfg.addrs(cfg.retriever_port))
    try:
        sources = []
        for p in files:
            doc = document_id(SAMPLE_COLLECTION, p.name)
            key = document_key(SAMPLE_COLLECTION, doc, p.name)
            await storage.put(key, p.read_bytes(), content_type=SAMPLE_TYPES[p.suffix])
            sources.append(rpb.SourceObject(object_key=key, name=p.name, document_id=doc))
        columns = (
            TextColumn("ingesting sample corpus"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stage]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("ingest", total=len(files), stage="")
            last = None
            async for ev in retriever.ingest(SAMPLE_COLLECTION, sources):
                last = ev.job
                bar.update(
                    task,
                    completed=ev.job.documents_done,
                    total=max(ev.job.documents_total, 1),
                    stage=f"{ev.job.stage} · {ev.job.chunks_done} chunks",
                )
        if last is None or last.state not in (rpb.JOB_STATE_SUCCEEDED,):
            state = rpb.JobState.Name(last.state) if last else "no events"
            raise RuntimeError(f"sample ingestion ended as {state}: {last.error if last else ''}")
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"sha256": digest, "documents": len(files), "job_id": last.job_id}))
    finally:
        await storage.close()
        await retriever.close()


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    results = asyncio.run(_status(cfg))
    running = _supervisor_pid(cfg)
    if args.json:
        print(json.dumps({"supervisor_pid": running, "gateway_url": cfg.gateway_url, "services": results}))
    else:
        table = Table(
            title=f"Build.DDN.RAG local stack ({'running, pid ' + str(running) if running else 'no supervisor running'})"
        )
        for col in ("service", "address", "status"):
            table.add_column(col)
        for name, r in results.items():
            table.add_row(name, r["address"], "[green]serving[/green]" if r["serving"] else "[red]not serving[/red]")
        console.print(table)
    return 0 if all(r["serving"] for r in results.values()) else 1


async def _status(cfg: StackConfig) -> dict[str, dict[str, object]]:
    checks = {
        **{replica_name("storage", i): cfg.addr(p) for i, p in enumerate(cfg.replica_ports(cfg.storage_port))},
        "embedder": cfg.addr(cfg.embedder_port),
        **{replica_name("retriever", i): cfg.addr(p) for i, p in enumerate(cfg.replica_ports(cfg.retriever_port))},
        "llm_gateway": cfg.addr(cfg.llm_gateway_port),
    }
    names = list(checks)
    oks = await asyncio.gather(*(grpc_serving(a) for a in checks.values()), http_ok(f"{cfg.gateway_url}/api/health"))
    out = {n: {"address": checks[n], "serving": ok} for n, ok in zip(names, oks[:-1], strict=True)}
    out["gateway"] = {"address": cfg.gateway_url, "serving": oks[-1]}
    return out


def _alive(pid: int) -> bool:
    """True while `pid` runs. A zombie (exited, not yet reaped by whoever started it, as when a
    script or a test started `rag up`) has stopped, though `kill(pid, 0)` still finds it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: kill(pid, 0) is all we know
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _supervisor_pid(cfg: StackConfig) -> int | None:
    try:
        pid = int(json.loads(pidfile(cfg).read_text())["pid"])
        return pid if _alive(pid) else None
    except (FileNotFoundError, ProcessLookupError, ValueError, KeyError, PermissionError):
        return None


def cmd_down(args: argparse.Namespace) -> int:
    cfg = _config(args)
    pid = _supervisor_pid(cfg)
    as_json = getattr(args, "json", False)
    if pid is None:
        if as_json:
            print(json.dumps({"running": False, "stopped": False, "pid": None}))
        else:
            console.print("no local stack is running (nothing to stop)")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if not _alive(pid):
            if as_json:
                print(json.dumps({"running": True, "stopped": True, "pid": pid}))
            else:
                console.print("stopped")
            return 0
        time.sleep(0.2)
    if as_json:
        print(json.dumps({"running": True, "stopped": False, "pid": pid}))
    Console(stderr=True).print(f"[red]the supervisor (pid {pid}) did not stop in 90s[/red]")
    return 1
