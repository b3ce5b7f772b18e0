"""The core's ports implemented over the storage and embedder gRPC clients.

A peer's failure reaches the caller with the peer's own code and reason
(`ServiceCallError.to_service_error`, the one mapping): the embedder's RESOURCE_EXHAUSTED or a
storage DEADLINE_EXCEEDED is not this service being unavailable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from clients.base import ServiceCallError
from clients.embedder import EmbedderClient
from clients.storage import StorageClient

from .ports import GetOutcome, ObjectMeta, ObjectNotFound, ObjectTooLarge, PreconditionFailed, PutOutcome

# BatchPut/BatchGet carry at most this many objects per call.
BATCH_LIMIT = 1000


@dataclass(frozen=True)
class StorageStoreFactory:
    """Opens a `StorageStore` on `addr` in the calling process: the merge process reads and writes
    segments through its own channel (picklable, unlike a channel)."""

    addr: str

    def __call__(self) -> StorageStore:
        return StorageStore(StorageClient(self.addr, timeout_s=120))


def _too_large(max_bytes: int) -> bytes:
    raise ObjectTooLarge(f"the file is over the {max_bytes}-byte limit (stopped reading it there)")


class StorageStore:
    """`ObjectStore` over `StorageClient`."""

    def __init__(self, client: StorageClient) -> None:
        self.client = client

    async def close(self) -> None:
        await self.client.close()

    async def put_many(self, items: Sequence[tuple[str, bytes]], *, backend: str = "") -> list[PutOutcome]:
        out: list[PutOutcome] = []
        for i in range(0, len(items), BATCH_LIMIT):
            part = list(items[i : i + BATCH_LIMIT])
            try:
                resp = await self.client.batch_put(part, backend=backend)
            except ServiceCallError as err:
                raise err.to_service_error() from None
            for r in resp.results:
                ok = r.status.code == 0
                out.append(PutOutcome(r.key, ok, "" if ok else r.status.message, r.transfer.total_ns))
        return out

    async def get_many(self, keys: Sequence[str], *, backend: str = "") -> list[GetOutcome]:
        out: list[GetOutcome] = []
        for i in range(0, len(keys), BATCH_LIMIT):
            try:
                resp = await self.client.batch_get(list(keys[i : i + BATCH_LIMIT]), backend=backend)
            except ServiceCallError as err:
                raise err.to_service_error() from None
            for r in resp.results:
                ok = r.status.code == 0
                out.append(
                    GetOutcome(
                        r.key,
                        r.data if ok else b"",
                        ok=ok,
                        missing=r.status.code == grpc.StatusCode.NOT_FOUND.value[0],
                        error="" if ok else r.status.message,
                        ttfb_ns=r.transfer.ttfb_ns,
                        total_ns=r.transfer.total_ns,
                    )
                )
        return out

    async def get(self, key: str, *, backend: str = "", max_bytes: int = 0) -> bytes:
        try:
            if max_bytes <= 0:
                data, _info, _transfer = await self.client.get(key, backend=backend)
                return data
            return await self._get_capped(key, backend, max_bytes)
        except ServiceCallError as err:
            if err.code == grpc.StatusCode.NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise err.to_service_error() from None

    async def _get_capped(self, key: str, backend: str, max_bytes: int) -> bytes:
        """Reads the stream, stopping (and cancelling the call) as soon as the declared size or
        the running total passes `max_bytes`: an oversize object is never held whole."""
        parts: list[bytes] = []
        total = 0
        async for msg in self.client.get_stream(key, backend=backend):
            which = msg.WhichOneof("part")
            if which == "info" and msg.info.size_bytes > max_bytes:
                raise ObjectTooLarge(f"the file is {msg.info.size_bytes} bytes, over the {max_bytes}-byte limit")
            if which == "whole":
                return msg.whole.data if len(msg.whole.data) <= max_bytes else _too_large(max_bytes)
            if which == "data":
                total += len(msg.data)
                if total > max_bytes:
                    _too_large(max_bytes)
                parts.append(msg.data)
        return b"".join(parts)

    async def read(self, key: str, *, backend: str = "") -> tuple[bytes, str]:
        try:
            data, info, _transfer = await self.client.get(key, backend=backend)
        except ServiceCallError as err:
            if err.code == grpc.StatusCode.NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise err.to_service_error() from None
        return data, info.etag.strip('"')

    async def put_if(
        self, key: str, data: bytes, *, if_match: str = "", if_none_match: bool = False, backend: str = ""
    ) -> str:
        try:
            resp = await self.client.put_if(key, data, if_match=if_match, if_none_match=if_none_match, backend=backend)
        except ServiceCallError as err:
            if err.code == grpc.StatusCode.FAILED_PRECONDITION and err.reason == "CONDITION_NOT_MET":
                raise PreconditionFailed(key) from None
            raise err.to_service_error() from None
        return resp.etag.strip('"')

    async def list(self, prefix: str, *, backend: str = "") -> list[ObjectMeta]:
        out = []
        try:
            async for o in self.client.list_all(prefix, backend=backend):
                out.append(ObjectMeta(o.key, o.size_bytes, o.etag, o.last_modified_unix_ns, dict(o.metadata)))
        except ServiceCallError as err:
            raise err.to_service_error() from None
        return out

    async def delete(self, keys: Sequence[str] = (), *, prefix: str = "", backend: str = "") -> int:
        deleted = 0
        try:
            keys = list(keys)
            for i in range(0, len(keys), BATCH_LIMIT):
                deleted += (await self.client.delete(keys[i : i + BATCH_LIMIT], backend=backend)).deleted
            if prefix:
                deleted += (await self.client.delete((), prefix=prefix, backend=backend)).deleted
        except ServiceCallError as err:
            raise err.to_service_error() from None
        return deleted


class EmbedderEncoder:
    """`Encoder` over `EmbedderClient`."""

    def __init__(self, client: EmbedderClient) -> None:
        self.client = client
        self._dim = 0
        self._model = ""

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> np.ndarray:
        try:
            arr = await self.client.embed_array(list(texts), truncate=True, timeout=timeout)
        except ServiceCallError as err:
            raise err.to_service_error() from None
        return np.asarray(arr, dtype=np.float32)

    async def device(self) -> str:
        """The embedder's device, e.g. "cuda:0 (NVIDIA H200)" or "cpu (AMD EPYC 7763)"."""
        try:
            info = await self.client.info()
        except ServiceCallError as err:
            raise err.to_service_error() from None
        return f"{info.device} ({info.device_name})" if info.device_name else info.device

    async def model_id(self) -> str:
        """The embedder's model id (asked once), recorded with stored sentence vectors."""
        if not self._model:
            try:
                self._model = (await self.client.info()).model_id
            except ServiceCallError as err:
                raise err.to_service_error() from None
        return self._model

    async def dimension(self) -> int:
        if not self._dim:
            try:
                self._dim = int((await self.client.info()).dimension)
            except ServiceCallError as err:
                raise err.to_service_error() from None
        return self._dim
