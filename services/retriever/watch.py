"""Continuous ingestion: poll a bucket prefix and ingest new or changed objects.

Each watch lists its prefix every `interval_s` seconds and starts one ingestion job for the
objects whose ETag it has not ingested yet. Ingestion is idempotent (content-addressed chunk ids
and unchanged-document detection), so seeing an object twice changes nothing. Watches and the
ETags they have processed persist in the job database and restart with the service.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import Any

from services.common.errors import ErrorKind, ServiceError, invalid, not_found

from .core import check_name
from .ingest import JobManager, SourceSpec

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S = 1.0  # each poll lists a prefix: a shorter interval is load, not freshness
MAX_WATCHES = 32  # active watches per retriever (each one is a polling task)


class WatchManager:
    def __init__(self, jobs: JobManager) -> None:
        self.jobs = jobs
        self.db = jobs.db
        self.watches: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self) -> None:
        for w in await self.db.run(self.db.watches):
            self.watches[w["watch_id"]] = w
            if w["active"]:
                self._launch(w)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks.clear()

    async def start_watch(
        self, collection: str, prefix: str, backend: str = "", interval_s: float = 0
    ) -> dict[str, Any]:
        check_name(collection)
        if not prefix:
            raise invalid("a watch needs a prefix, for example 'auto_ingest/'", reason="NO_PREFIX")
        if not math.isfinite(interval_s) or interval_s < 0 or interval_s > 86_400 or 0 < interval_s < MIN_INTERVAL_S:
            raise invalid(
                f"interval_s must be 0 (the default, {DEFAULT_INTERVAL_S:g} s) or between {MIN_INTERVAL_S:g} and "
                f"86400 seconds, got {interval_s}",
                reason="BAD_INTERVAL",
            )
        for w in self.watches.values():
            if w["active"] and (w["collection"], w["prefix"], w["backend"]) == (collection, prefix, backend):
                return w
        if sum(1 for w in self.watches.values() if w["active"]) >= MAX_WATCHES:
            raise ServiceError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"{MAX_WATCHES} watches are already active; stop one before starting another",
                reason="TOO_MANY_WATCHES",
            )
        await self.jobs.r.ensure_collection(collection)
        w = {
            "watch_id": uuid.uuid4().hex[:16],
            "collection": collection,
            "backend": backend,
            "prefix": prefix,
            "interval_s": interval_s or DEFAULT_INTERVAL_S,
            "active": True,
            "files": {},
        }
        await self.db.run(self.db.save_watch, w)
        self.watches[w["watch_id"]] = w
        self._launch(w)
        return w

    async def stop_watch(self, watch_id: str) -> dict[str, Any]:
        w = self.watches.get(watch_id)
        if w is None:
            raise not_found(f"watch {watch_id!r} does not exist", reason="WATCH_NOT_FOUND")
        w["active"] = False
        task = self.tasks.pop(watch_id, None)
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.db.run(self.db.save_watch, w)
        return w

    def list(self) -> list[dict[str, Any]]:
        return list(self.watches.values())

    def _launch(self, w: dict[str, Any]) -> None:
        self.tasks[w["watch_id"]] = asyncio.create_task(self._loop(w), name=f"watch-{w['watch_id']}")

    async def _loop(self, w: dict[str, Any]) -> None:
        while w["active"]:
            try:
                await self.poll(w)
            except ServiceError as err:
                log.warning("watch poll failed", extra={"watch_id": w["watch_id"], "error": err.message})
            await asyncio.sleep(w["interval_s"])

    async def poll(self, w: dict[str, Any]) -> str:
        """One pass: ingests new or changed objects and waits for the job. Returns its id or ""."""
        objs = await self.jobs.r.store.list(w["prefix"], backend=w["backend"])
        files: dict[str, Any] = w["files"]
        todo = [
            o
            for o in objs
            if not o.key.endswith("/")
            and (files.get(o.key, {}).get("etag") != o.etag or files[o.key].get("status") == "pending")
        ]
        if not todo:
            return ""
        job = await self.jobs.start_ingest(
            w["collection"],
            [SourceSpec(o.key) for o in todo],
            source_backend=w["backend"],
        )
        now = time.time_ns()
        for o in todo:
            files[o.key] = {
                "etag": o.etag,
                "status": "pending",
                "job_id": job.job_id,
                "error": "",
                "updated_unix_ns": now,
            }
        await self.db.run(self.db.save_watch, w)
        async for _seq, view, terminal in self.jobs.watch(job.job_id):
            if terminal:
                errors = {e.object_key: e.reason for e in view.file_errors}
                for o in todo:
                    f = files[o.key]
                    failed = o.key in errors or view.state in ("failed", "cancelled")
                    f["status"] = "failed" if failed else "ingested"
                    f["error"] = errors.get(o.key, view.error if failed else "")
                    f["updated_unix_ns"] = time.time_ns()
        await self.db.run(self.db.save_watch, w)
        return job.job_id
