"""Saved A/B runs in the default backend, through the storage service: `bench/ab/<run_id>.csv`
(one row per sample) is written first and `bench/ab/<run_id>.json` (the whole run) last, so a
listed run always has its CSV. Any replica lists the same runs."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import grpc

from clients.base import ServiceCallError
from kernel.errors import invalid, not_found

from .model import RUN_ID_RE, brief, samples_csv

if TYPE_CHECKING:
    from clients.storage import StorageClient

PREFIX = "bench/ab/"


class AbRuns:
    def __init__(self, storage: StorageClient) -> None:
        self.storage = storage

    async def save(self, doc: dict[str, Any]) -> None:
        try:
            await self.storage.put(doc["csv_key"], samples_csv(doc).encode(), content_type="text/csv")
            await self.storage.put(doc["json_key"], json.dumps(doc).encode(), content_type="application/json")
        except ServiceCallError as err:
            raise err.to_service_error() from None

    async def _ids(self) -> list[str]:
        try:
            keys = [o.key async for o in self.storage.list_all(PREFIX)]
        except ServiceCallError as err:
            raise err.to_service_error() from None
        ids = [k[len(PREFIX) : -5] for k in keys if k.endswith(".json")]
        return sorted((i for i in ids if RUN_ID_RE.match(i)), reverse=True)

    async def list(self, page_size: int, page_token: str = "") -> tuple[list[dict[str, Any]], str]:
        """Newest first, without samples; the page token is the last run id of the page."""
        if page_token and not RUN_ID_RE.match(page_token):
            raise invalid("page_token is not a token this service returned", reason="INVALID_PAGE_TOKEN")
        page_size = page_size if 0 < page_size <= 100 else 20
        ids = await self._ids()
        if page_token:
            ids = [i for i in ids if i < page_token]
        page = ids[:page_size]
        docs = await asyncio.gather(*(self.get(i) for i in page))
        return [brief(d) for d in docs], (page[-1] if len(ids) > page_size else "")

    async def _read(self, key: str, run_id: str) -> bytes:
        if not RUN_ID_RE.match(run_id):
            raise invalid(f"{run_id[:60]!r} is not an A/B run id", reason="INVALID_RUN_ID")
        try:
            data, _, _ = await self.storage.get(key)
        except ServiceCallError as err:
            if err.code == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"A/B run {run_id!r} was not found", reason="RUN_NOT_FOUND") from None
            raise err.to_service_error() from None
        return data

    async def get(self, run_id: str) -> dict[str, Any]:
        return json.loads(await self._read(f"{PREFIX}{run_id}.json", run_id))

    async def csv(self, run_id: str) -> bytes:
        return await self._read(f"{PREFIX}{run_id}.csv", run_id)
