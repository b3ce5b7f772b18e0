"""One long ingestion job, watched with `rag ingest` as a user would, through real disconnects
(issue 17's `stream_drops_long_jobs`; run by `make soak-stream`, ~25-35 minutes).

How the job is made long without making it heavy: the corpus (`files` one- or two-chunk markdown
files) is put into the stack's bucket, and a second storage backend is added with
`rag config backends add soak-emulated --rtt-ms RTT` -- the product's own emulated link, the same
bucket behind a shaping proxy that adds RTT to every S3 round trip. `rag ingest --prefix ...
--source-backend soak-emulated` then reads every source object over that slow link: the retriever
fetches 4 at a time in windows of 8, so a window takes about two RTTs and the job runs at about
8 files per 2 x RTT (40 files a minute at 6 s), a few dozen chunks a minute: the point is
duration, not volume.

The watcher (`rag ingest ... --json`) reaches the retriever through a loopback `FaultProxy`, and
every `every_s` seconds one disruption hits it, in turn:
- `cut`: every TCP connection through the proxy is reset (RST) mid-stream;
- `restart_watcher`: the `rag ingest` process is SIGKILLed and the same command started again
  (it must join the running job, not start a second one);
- `blackhole`: the proxy swallows every byte both ways for `blackhole_s` (a partition: the TCP
  connection stays open, nothing arrives), then forwards again. Nothing resets the connection:
  the client has to notice the dead connection itself (its keepalive ping times out; measured
  here at about 85 s after the partition began) and reconnect, through the partition's end;
and once, half way, the retriever itself is SIGKILLed (the supervisor restarts it and the job
resumes from its last committed batch). The servers' own connection recycling (max connection age
300 s) cuts the stream a few more times on its own.

A drop is any of: a watcher that exits (not killed by us) with a failure or without the job's
terminal state while the job was still alive; a watcher that does not end within `settle_s` after
the job ended; a second job started for the collection. The job must run at least `min_job_s`,
or the run does not count (`long_enough` false).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.retriever import RetrieverClient
from ddnrag.retriever.v1 import retriever_service_pb2 as pb
from testkit.faultproxy import FaultProxy
from testkit.faults import harness
from testkit.stack import RunningStack

ROOT = Path(__file__).resolve().parents[2]
RAG = str(Path(sys.executable).parent / "rag")
COLLECTION = "soak-stream"
BACKEND = "soak-emulated"
ROTATION = ("cut", "restart_watcher", "blackhole")


@dataclass(frozen=True)
class SoakSettings:
    files: int = 900
    rtt_ms: float = 6000.0
    min_job_s: float = 1200.0  # the figure needs a job of at least 20 minutes
    every_s: float = 90.0  # one disruption this often
    blackhole_s: float = 120.0  # > the client's detection of a dead connection (~85 s; keepalive ping timeout)
    settle_s: float = 150.0  # how long a watcher may take to report after the job ended
    max_s: float = 3600.0  # give up (and say so) after an hour


class Watcher:
    """One `rag ingest` process and what it printed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self.killed = False
        self.proc: asyncio.subprocess.Process | None = None
        self._io: asyncio.Task[tuple[bytes, bytes]] | None = None

    async def start(self) -> Watcher:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._io = asyncio.create_task(self.proc.communicate())
        return self

    @property
    def done(self) -> bool:
        return self._io is not None and self._io.done()

    def kill(self) -> None:
        self.killed = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def result(self, timeout_s: float) -> dict[str, Any] | None:
        """Exit code, the JSON report and stderr's tail; None if it did not end in time."""
        assert self._io is not None and self.proc is not None
        try:
            out, err = await asyncio.wait_for(asyncio.shield(self._io), timeout_s)
        except TimeoutError:
            return None
        report: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            report = json.loads(out.decode(errors="replace") or "{}")
        return {"rc": self.proc.returncode, "report": report, "stderr": err.decode(errors="replace")[-800:]}


async def _cli(stack: RunningStack, *args: str, env: dict[str, str] | None = None) -> str:
    proc = await asyncio.create_subprocess_exec(
        RAG,
        *args,
        cwd=ROOT,
        env={**stack.env, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rag {' '.join(args)} exited {proc.returncode}: {out.decode(errors='replace')[-2000:]}")
    return out.decode(errors="replace")


async def add_slow_backend(stack: RunningStack, rtt_ms: float) -> None:
    """`rag config backends add`: the stack's own bucket behind the product's emulated link."""
    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    await _cli(
        stack,
        *("config", "backends", "add", BACKEND, "--kind", "s3-compatible", "--bucket", harness.BUCKET),
        *("--endpoint", f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}", "--region", "us-east-1"),
        *("--addressing", "path", "--rtt-ms", f"{rtt_ms:g}", "--storage-addr", stack.addr("DDNRAG_STORAGE_PORT")),
        env={
            "DDNRAG_CLI_ACCESS_KEY_ID": creds["access_key_id"],
            "DDNRAG_CLI_SECRET_ACCESS_KEY": creds["secret_access_key"],
        },
    )


async def _jobs(client: RetrieverClient) -> list[pb.Job] | None:
    try:
        return list((await client.list_jobs(COLLECTION, page_size=100, timeout=10)).jobs)
    except Exception:  # noqa: BLE001 - the retriever may be restarting: ask again later
        return None


async def long_stream(stack: RunningStack, s: SoakSettings = SoakSettings()) -> dict[str, Any]:
    load_before = os.getloadavg()
    t_start = time.monotonic()
    docs = harness.make_corpus(s.files, seed=COLLECTION, paragraphs=2)
    s3 = harness.s3_client(stack)
    prefix = await asyncio.to_thread(harness.put_corpus, s3, COLLECTION, docs)
    await add_slow_backend(stack, s.rtt_ms)
    proxy = await FaultProxy("127.0.0.1", stack.ports["DDNRAG_RETRIEVER_PORT"]).start()
    argv = [RAG, "ingest", "--prefix", prefix, "--source-backend", BACKEND, "--collection", COLLECTION, "--json"]
    argv += ["--retriever-addr", proxy.addr, "--storage-addr", stack.addr("DDNRAG_STORAGE_PORT")]
    client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"), retries=0)
    disruptions: dict[str, int] = dict.fromkeys((*ROTATION, "retriever_kill"), 0)
    drops: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    watchers = 1
    watcher = await Watcher(argv, stack.env).start()
    final: dict[str, Any] | None = None
    job: pb.Job | None = None
    try:
        end = time.monotonic() + 300
        while not (jobs := await _jobs(client)):
            if time.monotonic() > end:
                raise TimeoutError(f"no job appeared for {COLLECTION}: {await watcher.result(1)}")
            await asyncio.sleep(1)
        job_id, t_job = jobs[-1].job_id, time.monotonic()
        next_at, turn, killed_retriever = t_job + s.every_s, 0, False

        def note(kind: str, **extra: Any) -> None:
            timeline.append({"t_s": round(time.monotonic() - t_job, 1), "event": kind, **extra})

        while True:
            job = await harness.job_state(client, job_id) or job
            alive = job is not None and pb.JobState.Name(job.state) not in harness.TERMINAL
            if watcher.done and not watcher.killed:
                res = await watcher.result(5)
                job = await harness.job_state(client, job_id) or job
                alive = job is not None and pb.JobState.Name(job.state) not in harness.TERMINAL
                if alive:  # the watcher gave up on a live job: a drop; a user would run it again
                    drops.append(
                        {"t_s": round(time.monotonic() - t_job, 1), "why": "watcher ended early", **(res or {})}
                    )
                    note("drop", rc=(res or {}).get("rc"))
                    watcher, watchers = await Watcher(argv, stack.env).start(), watchers + 1
                else:
                    final = res
                    break
            if not alive:
                final = await watcher.result(s.settle_s)
                if final is None:
                    drops.append({"why": f"the watcher did not end within {s.settle_s:g} s of the job"})
                    watcher.kill()
                break
            now = time.monotonic()
            if now - t_job > s.max_s:
                drops.append({"why": f"the job did not end within {s.max_s:g} s"})
                break
            if not killed_retriever and now - t_job >= s.min_job_s / 2:
                killed_retriever = True
                old = harness.sigkill(stack, "retriever")
                disruptions["retriever_kill"] += 1
                note("retriever_kill")
                await asyncio.to_thread(harness.wait_restarted, stack, "retriever", old)
                next_at = time.monotonic() + s.every_s
            elif now >= next_at:
                kind = ROTATION[turn % len(ROTATION)]
                turn += 1
                disruptions[kind] += 1
                note(kind, proxied_connections=proxy.counters.connections)
                if kind == "cut":
                    proxy.cut_all()
                elif kind == "restart_watcher":
                    watcher.kill()
                    await watcher.result(30)
                    watcher, watchers = await Watcher(argv, stack.env).start(), watchers + 1
                else:
                    before = proxy.counters.connections
                    proxy.set(blackhole=True)
                    await asyncio.sleep(s.blackhole_s)
                    proxy.set()
                    # New connections the watcher opened during the partition: it noticed.
                    note("blackhole_end", connections_during=proxy.counters.connections - before)
                next_at = time.monotonic() + s.every_s
            await asyncio.sleep(2)
        job_s = time.monotonic() - t_job
        all_jobs = await _jobs(client) or []
        if len(all_jobs) > 1:
            drops.append({"why": "a second job was started", "jobs": [j.job_id for j in all_jobs]})
        report = (final or {}).get("report") or {}
        reported_job = (report.get("job") or {}).get("job_id", "")
        if final is not None and (final["rc"] != 0 or reported_job != job_id):
            drops.append({"why": "the last watcher did not report the job's success", **final})
        audit = await asyncio.to_thread(harness.audit, s3, COLLECTION, harness.expected_chunks(COLLECTION, docs))
    finally:
        watcher.kill()
        await proxy.stop()
        await client.close()
    return {
        "scenario": "long_ingestion_stream",
        "files": s.files,
        "source_rtt_ms": s.rtt_ms,
        "disruption_every_s": s.every_s,
        "job_id": job_id,
        "job_seconds": round(job_s, 1),
        "long_enough": job_s >= s.min_job_s,
        "final_state": pb.JobState.Name(job.state) if job is not None else "",
        "chunks_done": job.chunks_done if job is not None else 0,
        "jobs_started": len(all_jobs),
        "watcher_runs": watchers,
        "disruptions": disruptions,
        "proxied_connections": proxy.counters.connections,
        "drops": len(drops),
        "drop_details": drops,
        "timeline": timeline,
        "last_watcher": {k: v for k, v in (final or {}).items() if k != "report"}
        | {"state": report.get("state"), "ok": report.get("ok")},
        **audit.as_dict(),
        "wall_s": round(time.monotonic() - t_start, 1),
        "load_avg_1m_before": round(load_before[0], 2),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
