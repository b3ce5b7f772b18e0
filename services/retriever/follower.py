"""Keeps a replica's indexes on what CURRENT names, and says when the replica is too stale to serve.

Every `follow_interval_s` the follower reads one small object, `index-changed`, which writers
rewrite after every change of a CURRENT or of the collection list. Only when its ETag moved (or a
manifest was refused and is retried, or FULL_POLL_S passed: a writer that died between CURRENT and
that note) does it list the collections' CURRENT objects and, for each whose ETag changed, read it
and load only the segments the replica lacks. A manifest
naming a missing or corrupt file is refused and retried on the next poll; the replica keeps the
version it has. When the store cannot be reached for longer than `max_staleness_s`, the replica
reports NOT_SERVING and refuses searches instead of serving stale results silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from . import segments
from .core import Retriever
from .segments import CorruptSegment

log = logging.getLogger(__name__)

FULL_POLL_S = 30.0  # list everything at least this often, whatever `index-changed` says


class Follower:
    """The poll loop of one replica; `on_health(serving)` is called when freshness changes."""

    def __init__(self, core: Retriever, on_health: Callable[[bool], Awaitable[None]] | None = None) -> None:
        self.core = core
        core.followed = True
        self.on_health = on_health
        self.etags: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._serving: bool | None = None
        self._changes: str | None = None  # index-changed's ETag at the last full poll
        self._full_at = 0.0

    def start(self) -> None:
        s = self.core.settings
        if s.persist_index and s.follow_interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = self.core.settings.follow_interval_s
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the store is unreachable: stay, count staleness
                log.warning("cannot read the index's CURRENT", extra={"error": str(err)})
            await self._report()
            await asyncio.sleep(interval)

    async def _report(self) -> None:
        serving = self.core.fresh()
        if serving != self._serving:
            self._serving = serving
            if not serving:
                log.error("index stale: not serving", extra={"max_staleness_s": self.core.settings.max_staleness_s})
            if self.on_health is not None:
                await self.on_health(serving)

    async def poll(self) -> None:
        """One round: read `index-changed`; when it moved, follow every collection whose CURRENT
        changed since the last round."""
        tag = await segments.changes_tag(self.core.store)
        now = time.monotonic()
        if tag and tag == self._changes and not self.errors and now - self._full_at < FULL_POLL_S:
            self.core.last_follow_ok = now
            return
        await self._full_poll()
        self._changes, self._full_at = tag, now

    async def _full_poll(self) -> None:
        started = time.time_ns()
        published = await self.core.published()
        names = set(await self.core.catalog.names())
        self.core.last_follow_ok = time.monotonic()
        for name in sorted(names - set(self.core.collections) - set(published)):
            await self.core.create_collection(name)  # created empty through another replica
        for name, etag in published.items():
            if self.etags.get(name) == etag:
                continue
            current = await segments.read_current(self.core.store, name)
            try:
                await self.core.follow(name, current)
            except CorruptSegment as err:
                if self.errors.get(name) != str(err):
                    self.core.metrics.refused(name)
                    log.error(
                        "refused a manifest; keeping the loaded version", extra={"collection": name, "reason": str(err)}
                    )
                self.errors[name] = str(err)
                continue
            self.errors.pop(name, None)
            self.etags[name] = etag
        for name in list(self.etags):
            if name not in published:  # deleted through another replica
                del self.etags[name]
                if name in self.core.collections:
                    await self.core.follow(name, "")
        for name in set(self.core.collections) - names - set(published):
            if self.core.collections[name].created_unix_ns < started:  # not one created meanwhile
                self.core.forget(name)  # deleted through another replica
