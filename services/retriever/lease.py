"""The ingestion lease: exactly one retriever replica runs ingestion jobs, and its writes are fenced.

Every replica runs a `LeaseKeeper`. The lease record names a holder, a `generation` (the fence
token, raised by one at every change of holder) and a duration. The holder renews it every third
of the duration; another replica takes it over only after it has seen the record unchanged for a
whole duration (time measured on its own monotonic clock, as client-go's leader election does,
so clocks need not agree). The holder stops writing at `renew start + 0.9 * duration` unless a
renewal landed, so it has stopped before anyone can take over.

Two backends keep the record, with the same compare-and-swap semantics:
- `StoreLeaseBackend`: an object in the store written with conditional PUTs (If-None-Match: * to
  create, If-Match: <ETag> to change); SeaweedFS 4.48 and AWS S3 honour both. Local runs and
  tests use it.
- `lease_k8s.KubeLeaseBackend`: a `coordination.k8s.io/v1` Lease through the API server, with
  `metadata.resourceVersion` as the version (409 Conflict on a stale one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from kernel.errors import ErrorKind, ServiceError

from .ports import ObjectNotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

LEASE_KEY = "leases/retriever-ingest.json"


def fenced(message: str, **metadata: str) -> ServiceError:
    """The error of a write refused because the writer no longer holds the ingestion lease."""
    return ServiceError(ErrorKind.FAILED_PRECONDITION, message, reason="FENCED_WRITE", metadata=metadata)


def is_fenced(err: BaseException) -> bool:
    return isinstance(err, ServiceError) and err.kind == ErrorKind.FAILED_PRECONDITION and err.reason == "FENCED_WRITE"


class LeaseConflict(Exception):
    """Another replica changed the lease record first."""


@dataclass
class LeaseRecord:
    holder: str
    generation: int
    duration_s: float
    renewed_unix_ns: int = 0
    nonce: str = ""


class LeaseBackend(Protocol):
    """Where the lease record lives, with compare-and-swap on an opaque version."""

    async def read(self) -> tuple[LeaseRecord | None, str]: ...

    async def create(self, rec: LeaseRecord) -> str:
        """Creates the record; raises `LeaseConflict` when one exists. Returns its version."""
        ...

    async def replace(self, rec: LeaseRecord, version: str) -> str:
        """Replaces the record at `version`; raises `LeaseConflict` when it changed."""
        ...


class Fence(Protocol):
    """What a fenced writer hands to the code that writes for it."""

    token: int

    async def check(self) -> None:
        """Raises FAILED_PRECONDITION / FENCED_WRITE when the writer no longer holds the lease."""
        ...


class StoreLeaseBackend:
    """The lease as one JSON object in the store, changed only by conditional PUTs."""

    def __init__(self, store: ObjectStore, key: str = LEASE_KEY) -> None:
        self.store = store
        self.key = key

    async def read(self) -> tuple[LeaseRecord | None, str]:
        try:
            data, etag = await self.store.read(self.key)
        except ObjectNotFound:
            return None, ""
        return LeaseRecord(**json.loads(data)), etag

    async def create(self, rec: LeaseRecord) -> str:
        try:
            return await self.store.put_if(self.key, json.dumps(asdict(rec)).encode(), if_none_match=True)
        except PreconditionFailed:
            raise LeaseConflict(self.key) from None

    async def replace(self, rec: LeaseRecord, version: str) -> str:
        try:
            return await self.store.put_if(self.key, json.dumps(asdict(rec)).encode(), if_match=version)
        except PreconditionFailed:
            raise LeaseConflict(self.key) from None


class LeaseKeeper:
    """Campaigns for the lease, renews it while held, and says when it is lost.

    `on_change(held)` runs (awaited, in the keeper's task) whenever this replica gains or loses
    the lease. `check()` is the fence every job write goes through."""

    def __init__(
        self,
        backend: LeaseBackend,
        replica_id: str,
        duration_s: float = 10.0,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        if duration_s <= 0:
            raise ValueError("the lease duration must be positive")
        self.backend = backend
        self.replica_id = replica_id
        self.duration_s = duration_s
        self.on_change = on_change
        self.token = 0
        self.held_by = ""
        self._held = False
        self._valid_until = 0.0
        self._version = ""
        self._seen: tuple[str, float] = ("", 0.0)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def held(self) -> bool:
        return self._held and time.monotonic() < self._valid_until

    async def check(self) -> None:
        if not self.held:
            who = f"; the holder is {self.held_by}" if self.held_by and self.held_by != self.replica_id else ""
            raise fenced(
                f"replica {self.replica_id} no longer holds the ingestion lease (its generation was {self.token})"
                f"{who}; the write was refused so that only the holder writes",
                replica=self.replica_id,
                generation=str(self.token),
            )

    async def start(self) -> None:
        """Takes one campaign step now (a lone replica holds the lease once this returns), then
        keeps campaigning and renewing in the background."""
        try:
            await self.step()
        except Exception as err:  # noqa: BLE001 - the loop retries
            log.warning("ingestion lease step failed", extra={"error": str(err)[:300]})
        self._task = asyncio.create_task(self._loop(), name="ingest-lease")

    async def stop(self, release: bool = True) -> None:
        """Stops campaigning; a held lease is released so another replica takes over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        was_held = self.held
        await self._set(False)  # stops this replica's writers before anyone else may start
        if release and was_held:
            rec = LeaseRecord("", self.token, self.duration_s, 0, uuid.uuid4().hex)
            try:
                await self.backend.replace(rec, self._version)
            except Exception as err:  # noqa: BLE001 - expiry frees it anyway
                log.warning("could not release the ingestion lease", extra={"error": str(err)[:200]})

    async def _set(self, held: bool) -> None:
        if held == self._held:
            return
        self._held = held
        if not held:
            self._valid_until = 0.0
        log.info("ingestion lease " + ("acquired" if held else "lost"), extra={"generation": self.token})
        if self.on_change is not None:
            await self.on_change(held)

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - the store may be away; expiry decides
                log.warning("ingestion lease step failed", extra={"error": str(err)[:300]})
                if self._held and time.monotonic() >= self._valid_until:
                    await self._set(False)
            period = self.duration_s / 3 if self._held else self.duration_s / 4
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=period)
            except TimeoutError:
                pass
            self._wake.clear()

    async def step(self) -> None:
        """One campaign or renewal step (the loop calls it; tests may call it directly)."""
        started = time.monotonic()
        rec, version = await self.backend.read()
        self.held_by = rec.holder if rec else ""
        if rec is None:
            await self._take(None, 1, started)
            return
        mine = self._held and rec.holder == self.replica_id and rec.generation == self.token
        if mine:
            new = LeaseRecord(self.replica_id, self.token, self.duration_s, time.time_ns(), uuid.uuid4().hex)
            try:
                self._version = await self.backend.replace(new, version)
            except LeaseConflict:
                # A retried write may have landed the first time: then the record is ours.
                again, again_version = await self.backend.read()
                if again is None or again.nonce != new.nonce:
                    await self._set(False)
                    return
                self._version = again_version
            self._valid_until = started + 0.9 * self.duration_s
            return
        if self._held:  # the record names someone else: we were taken over
            await self._set(False)
        if version != self._seen[0]:
            self._seen = (version, started)
        free = not rec.holder or started - self._seen[1] >= rec.duration_s
        if free:
            await self._take(version, rec.generation + 1, started)

    async def _take(self, version: str | None, generation: int, started: float) -> None:
        new = LeaseRecord(self.replica_id, generation, self.duration_s, time.time_ns(), uuid.uuid4().hex)
        try:
            if version is None:
                self._version = await self.backend.create(new)
            else:
                self._version = await self.backend.replace(new, version)
        except LeaseConflict:
            return
        self.token = generation
        self.held_by = self.replica_id
        self._valid_until = started + 0.9 * self.duration_s
        await self._set(True)
