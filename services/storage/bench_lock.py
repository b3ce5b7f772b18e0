"""One benchmark at a time per backend, across every storage replica.

A replica's own set of busy backends covers only the runs it serves; with several replicas (the
Deployment scales 2-8) each could start one on the same backend. So a run also holds a lock
object per backend in the default backend's bucket, beside the shared registry
(`<dirname of DDNRAG_STORAGE_REGISTRY_KEY>/bench-locks/<backend>.json`), written with a
conditional PUT (If-None-Match) and renewed while the run lasts. A lock whose holder stopped
renewing it (a replica that died mid-run) expires after `TTL_S` and is taken over with If-Match,
so a crash never blocks a backend for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import socket
import time

from kernel.errors import ErrorKind, ServiceError

from .core import StorageCore

log = logging.getLogger(__name__)

TTL_S = 60.0  # a lock not renewed for this long belongs to a holder that is gone
RENEW_S = 15.0


def busy_error(backends: list[str], holder: str = "") -> ServiceError:
    by = f" (held by {holder})" if holder else ""
    return ServiceError(
        ErrorKind.RESOURCE_EXHAUSTED,
        f"a benchmark is already running on {backends}{by}; one runs at a time per backend, retry when it ends",
        reason="BENCHMARK_BUSY",
    )


class BenchLocks:
    """The store-held locks of the runs one replica serves."""

    def __init__(self, core: StorageCore) -> None:
        self.core = core
        self.prefix = posixpath.join(posixpath.dirname(core.cfg.registry_key), "bench-locks") + "/"
        self.holder = f"{socket.gethostname()}:{os.getpid()}"

    def key(self, backend: str) -> str:
        return f"{self.prefix}{backend}.json"

    def _body(self, run_id: str) -> bytes:
        return json.dumps({"holder": self.holder, "run_id": run_id, "expires_unix": time.time() + TTL_S}).encode()

    async def acquire(self, backends: list[str], run_id: str) -> dict[str, str]:
        """Takes every backend's lock (all or none); returns their ETags. BENCHMARK_BUSY when
        another live run holds one."""
        held: dict[str, str] = {}
        try:
            for b in backends:
                held[b] = await self._take(b, run_id)
        except ServiceError as err:
            await self.release(held)
            if err.reason == "BENCHMARK_BUSY":
                raise
            # The default backend refused the lock object (a prefix rule, an outage): this
            # replica's own one-run-per-backend rule still holds; say that the wider one did not.
            log.warning(
                "benchmark locks unavailable; one run per backend is enforced on this replica only",
                extra={"error": err.message[:200]},
            )
            return {}
        except BaseException:
            await self.release(held)
            raise
        return held

    async def _take(self, backend: str, run_id: str) -> str:
        key = self.key(backend)
        for _ in range(3):
            try:
                return (await self.core.put_conditional("", key, self._body(run_id), if_none_match=True)).etag
            except ServiceError as err:
                if err.reason != "CONDITION_NOT_MET":
                    raise
            try:
                data, meta, _ = await self.core.get("", key)
            except ServiceError as err:
                if err.kind == ErrorKind.NOT_FOUND:
                    continue  # released meanwhile: try again
                raise
            try:
                info = json.loads(data)
                expires, holder = float(info["expires_unix"]), str(info.get("holder", ""))
            except (ValueError, KeyError, TypeError):
                expires, holder = 0.0, ""  # unreadable: treat as expired
            if expires > time.time():
                raise busy_error([backend], holder)
            log.warning("taking over an expired benchmark lock", extra={"backend": backend, "holder": holder})
            try:
                return (await self.core.put_conditional("", key, self._body(run_id), if_match=meta.etag)).etag
            except ServiceError as err:
                if err.reason != "CONDITION_NOT_MET":
                    raise
        raise busy_error([backend])

    async def keep(self, held: dict[str, str], run_id: str) -> None:
        """Renews the locks every RENEW_S until cancelled."""
        while True:
            await asyncio.sleep(RENEW_S)
            for b, etag in list(held.items()):
                try:
                    held[b] = (await self.core.put_conditional("", self.key(b), self._body(run_id), if_match=etag)).etag
                except ServiceError as err:
                    log.warning("could not renew a benchmark lock", extra={"backend": b, "error": err.message[:200]})

    async def release(self, held: dict[str, str]) -> None:
        """Deletes the locks (best effort: an unreleased one expires after TTL_S)."""
        for b in held:
            with contextlib.suppress(ServiceError):
                await self.core.delete("", [self.key(b)])
