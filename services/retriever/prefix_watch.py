"""Continuous ingestion: bucket-prefix watches that ingest new or changed objects.

(A "prefix watch" watches a bucket prefix; following a job's progress is `JobManager.follow`.)

Each watch lists its prefix every `interval_s` seconds and starts one ingestion job for the
objects whose ETag it has not ingested yet. Ingestion is idempotent (content-addressed chunk ids
and unchanged-document detection), so seeing an object twice changes nothing. Watches and the
ETags they processed live in the object store (`catalog.py`), so every replica lists and stops
them; only the holder of the ingestion lease polls them, and a new holder takes them over.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import Any

from kernel.errors import ErrorKind, ServiceError, invalid, not_found

from .catalog import Catalog
from .core import check_name
from .job_model import SourceSpec
from .jobs import JobManager

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 10.0
MIN_INTERVAL_S = 1.0  # each poll lists a prefix: a shorter interval is load, not freshness
MAX_WATCHES = 32  # active watches (each one is a polling task on the lease holder)
SYNC_S = 2.0  # how often the lease holder rereads the list of watches


class PrefixWatchManager:
    def __init__(self, jobs: JobManager, catalog: Catalog) -> None:
        self.jobs = jobs
        self.catalog = catalog
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._sync: asyncio.Task[None] | None = None
        jobs.lease_listeners.append(self._lease_changed)

    async def stop(self) -> None:
        await self._lease_changed(False)

    async def _lease_changed(self, held: bool) -> None:
        if held and self._sync is None:
            self._sync = asyncio.create_task(self._sync_loop(), name="prefix-watch-sync")
            return
        if not held:
            tasks = [t for t in [self._sync, *self.tasks.values()] if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._sync = None
            self.tasks.clear()

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync()
            except (ServiceError, OSError) as err:
                log.warning("could not read the prefix watches", extra={"error": str(err)[:300]})
            await asyncio.sleep(SYNC_S)

    async def sync(self) -> None:
        """Runs a poll loop for every active watch and none for the others."""
        active = {w["watch_id"]: w for w in await self.catalog.prefix_watches() if w["active"]}
        for wid in list(self.tasks):
            if wid not in active:
                self.tasks.pop(wid).cancel()
        for wid, w in active.items():
            if wid not in self.tasks or self.tasks[wid].done():
                self.tasks[wid] = asyncio.create_task(self._loop(w), name=f"prefix-watch-{wid}")

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
        existing = await self.catalog.prefix_watches()
        for w in existing:
            if w["active"] and (w["collection"], w["prefix"], w["backend"]) == (collection, prefix, backend):
                return w
        if sum(1 for w in existing if w["active"]) >= MAX_WATCHES:
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
        await self.catalog.update_prefix_watch(w["watch_id"], lambda old: w if old is None else None)
        if self._sync is not None:  # the lease holder starts polling at once
            self.tasks[w["watch_id"]] = asyncio.create_task(self._loop(w), name=f"prefix-watch-{w['watch_id']}")
        return w

    async def stop_watch(self, watch_id: str) -> dict[str, Any]:
        def stop(old: dict[str, Any] | None) -> dict[str, Any] | None:
            return {**old, "active": False} if old is not None and old["active"] else None

        w = await self.catalog.update_prefix_watch(watch_id, stop) if _plausible(watch_id) else None
        if w is None:
            raise not_found(f"watch {watch_id!r} does not exist", reason="WATCH_NOT_FOUND")
        task = self.tasks.pop(watch_id, None)
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return {**w, "active": False}

    async def list(self) -> list[dict[str, Any]]:
        return await self.catalog.prefix_watches()

    async def _loop(self, w: dict[str, Any]) -> None:
        while True:
            try:
                current = await self.catalog.prefix_watch(w["watch_id"])
                if current is None or not current["active"]:
                    return
                await self.poll(current)
                self.jobs.r.metrics.watch_polled(w["watch_id"], w["collection"])
            except (ServiceError, OSError) as err:
                log.warning("prefix watch poll failed", extra={"watch_id": w["watch_id"], "error": str(err)[:300]})
            await asyncio.sleep(w["interval_s"])

    async def _record(self, w: dict[str, Any], changes: dict[str, dict[str, Any]]) -> None:
        def merge(old: dict[str, Any] | None) -> dict[str, Any] | None:
            if old is None:
                return None
            return {**old, "files": {**old["files"], **changes}}

        await self.catalog.update_prefix_watch(w["watch_id"], merge)

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
            w["collection"], [SourceSpec(o.key) for o in todo], source_backend=w["backend"]
        )
        now = time.time_ns()
        pending = {
            o.key: {"etag": o.etag, "status": "pending", "job_id": job.job_id, "error": "", "updated_unix_ns": now}
            for o in todo
        }
        await self._record(w, pending)
        async for _seq, view, terminal in self.jobs.follow(job.job_id):
            if terminal:
                errors = {e.object_key: e.reason for e in view.file_errors}
                for o in todo:
                    f = pending[o.key]
                    failed = o.key in errors or view.state in ("failed", "cancelled")
                    f["status"] = "failed" if failed else "ingested"
                    f["error"] = errors.get(o.key, view.error if failed else "")
                    f["updated_unix_ns"] = time.time_ns()
        await self._record(w, pending)
        return job.job_id


def _plausible(watch_id: str) -> bool:
    return 0 < len(watch_id) <= 64 and all(c.isalnum() or c in "-_" for c in watch_id)
