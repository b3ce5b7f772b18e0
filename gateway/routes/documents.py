"""Documents: streamed multi-file upload into storage, then one ingestion job; list, count, delete."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from clients.base import ServiceCallError
from ddnrag.retriever.v1 import retriever_service_pb2 as rpb
from kernel.filetypes import ACCEPTED_TEXT, KINDS

from ..convert import to_dict
from ..errors import ApiError
from ..state import BACKGROUND, CONFIG, UPSTREAMS
from ..uploads import (
    CONTENT_TYPES,
    CheckedStream,
    check_collection,
    clean_filename,
    document_id,
    file_kind,
    object_key,
)
from ..views import query_bool, query_int

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PARAMS = {
    ("POST", "/api/documents"): {
        "collection": "the target collection (default: the gateway's default collection)",
        "backends": "comma-separated backends the chunks are written to (default: the default backend)",
        "clear": "1 to clear the collection before the files are stored (documents, chunks, index, jobs)",
    },
}

READ_CHUNK = 256 * 1024
STAGING_PREFIX = "uploads/staging/"


@dataclass
class Stored:
    name: str
    document_id: str
    object_key: str
    size_bytes: int
    etag: str


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        data = await part.read_chunk(READ_CHUNK)
        if not data:
            return
        yield data


def _backends_param(request: web.Request) -> list[str]:
    raw = request.query.get("backends", "") or request.query.get("backend", "")
    return [b.strip() for b in raw.split(",") if b.strip()]


async def _next_part(reader: MultipartReader) -> BodyPartReader | MultipartReader | None:
    try:
        return await reader.next()
    except (ValueError, HttpProcessingError) as err:  # e.g. a NUL in a part's header (file name)
        raise ApiError(400, f"malformed multipart body: {str(err)[:200]}", "BAD_MULTIPART") from None


@routes.post("/api/documents")
async def upload(request: web.Request) -> web.Response:
    """Uploads files (multipart/form-data) and starts one ingestion job over them.

    Fields: `collection` (optional, before the files), then one or more `file` parts. With
    `?clear=1` the collection is cleared first (its documents, chunks, index and jobs go).

    Each file streams straight into storage at docs/<collection>/<doc_id>/<name>; then one
    ingestion job covers them all. On any failure the objects written so far are deleted."""
    cfg = request.app[CONFIG]
    up = request.app[UPSTREAMS]
    if not request.content_type.startswith("multipart/"):
        raise ApiError(415, f"send the files as multipart/form-data in field 'file'; {ACCEPTED_TEXT}", "NOT_MULTIPART")
    limit = cfg.max_upload_bytes * cfg.max_upload_files + 1024 * 1024
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"the upload is larger than the limit of {limit} bytes", "TOO_LARGE")
    collection = check_collection(request.query.get("collection", "") or cfg.default_collection)
    targets = _backends_param(request)
    clear_first = query_bool(request, "clear")
    stored: list[Stored] = []
    try:
        try:
            reader = await request.multipart()
        except (ValueError, AssertionError) as err:
            raise ApiError(400, f"malformed multipart body: {err}", "BAD_MULTIPART") from None
        while (part := await _next_part(reader)) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "nested multipart bodies are not supported")
            if part.name == "collection":
                value = (await part.text()).strip()
                if stored:
                    raise ApiError(400, "send the 'collection' field before the files (or use ?collection=)")
                collection = check_collection(value or cfg.default_collection)
            elif part.name in ("file", "files"):
                if len(stored) >= cfg.max_upload_files:
                    raise ApiError(413, f"at most {cfg.max_upload_files} files per upload", "TOO_MANY_FILES")
                if clear_first and not stored:
                    await _clear(request, collection)
                stored.append(await _store(request, part, collection))
            else:
                await part.release()
        if not stored:
            raise ApiError(422, f"no file in the upload: send it in the multipart field 'file'; {ACCEPTED_TEXT}")
        sources = [rpb.SourceObject(object_key=s.object_key, name=s.name, document_id=s.document_id) for s in stored]
        job = await up.retriever.start_ingest(collection, sources, target_backends=targets)
    except BaseException:
        if stored:
            # Shielded so a client that went away still leaves nothing half-written.
            await asyncio.shield(_delete_stored(request, stored))
        raise
    docs = [s.__dict__ for s in stored]
    return web.json_response(
        {
            "job_id": job.job_id,
            "collection": collection,
            "document_id": stored[0].document_id,
            "documents": docs,
            "job": to_dict(job),
        },
        status=202,
    )


async def _clear(request: web.Request, collection: str) -> None:
    """`?clear=1`: the collection is emptied before the first file is stored (a missing one is fine)."""
    try:
        await request.app[UPSTREAMS].retriever.delete_collection(collection)
    except ServiceCallError as err:
        if err.http_status != 404:
            raise


async def _store(request: web.Request, part: BodyPartReader, collection: str) -> Stored:
    """Streams one part to a unique staging key, then copies it to its final key.

    Staging keeps a refused or interrupted upload from ever touching the final key (so a bad
    re-upload leaves the previous document intact), and makes the cleanup of a refusal safe: the
    staging key belongs to this request alone. It is deleted right away and once more a little
    later, because a cancelled client stream can look like a normal end to the server, which may
    then still commit what it received."""
    cfg = request.app[CONFIG]
    up = request.app[UPSTREAMS]
    name = clean_filename(part.filename)
    kind = file_kind(name)
    doc_id = document_id(collection, name)
    key = object_key(collection, doc_id, name)
    staging = f"{STAGING_PREFIX}{uuid.uuid4().hex}/{name}"
    put_task: asyncio.Task[Any] | None = None

    def refuse() -> None:
        if put_task is not None:
            put_task.cancel()  # cancels the Put call while its request stream is still open

    checked = CheckedStream(name, kind, _part_chunks(part), cfg.max_upload_bytes, on_error=refuse)
    put_task = asyncio.create_task(
        up.storage.put_stream(
            staging,
            checked,
            content_type=CONTENT_TYPES[kind],
            metadata={"collection": collection, "document_id": doc_id, "name": name},
        )
    )
    try:
        try:
            resp = await asyncio.shield(put_task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if checked.error is not None and not (current is not None and current.cancelling()):
                raise checked.error from None
            put_task.cancel()  # the client went away: cancel the upload too
            with contextlib.suppress(BaseException):
                await put_task
            raise
        except Exception:
            if checked.error is not None:
                raise checked.error from None
            raise
        await up.storage.copy(staging, key)
    except BaseException:
        await asyncio.shield(_forget_staging(request, staging, late=True))
        raise
    await _forget_staging(request, staging, late=False)
    return Stored(name, doc_id, key, resp.size_bytes or checked.size, resp.etag)


async def _forget_staging(request: web.Request, staging: str, *, late: bool) -> None:
    """Deletes a staging object now and, when `late`, once more a second later in the background."""
    storage = request.app[UPSTREAMS].storage

    async def delete() -> None:
        try:
            await storage.delete(keys=[staging])
        except Exception:  # noqa: BLE001 - best effort; logged, the late retry follows
            log.warning("could not delete a staging object", extra={"key": staging})

    await delete()
    if late:

        async def again() -> None:
            await asyncio.sleep(1.0)
            await delete()

        tasks = request.app[BACKGROUND]
        task = asyncio.create_task(again())
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def _delete_stored(request: web.Request, stored: list[Stored]) -> None:
    try:
        await request.app[UPSTREAMS].storage.delete(keys=[s.object_key for s in stored])
    except Exception:
        log.exception("could not remove the objects of a failed upload", extra={"keys": len(stored)})


@routes.get("/api/documents")
async def list_documents(request: web.Request) -> web.Response:
    """Lists a collection's documents (`?collection=`, `page_size`, `page_token`): name, chunks, size, ingest time."""
    cfg = request.app[CONFIG]
    collection = check_collection(request.query.get("collection", "") or cfg.default_collection)
    page_size = query_int(request, "page_size", 100, 1, 1000)
    resp = await request.app[UPSTREAMS].retriever.list_documents(
        collection, page_size=page_size, page_token=request.query.get("page_token", "")
    )
    return web.json_response(
        {
            "collection": collection,
            "documents": [to_dict(d) for d in resp.documents],
            "total": resp.total,
            "next_page_token": resp.next_page_token,
        }
    )


@routes.get("/api/documents/count")
async def count_documents(request: web.Request) -> web.Response:
    """The number of documents in a collection (`?collection=`)."""
    cfg = request.app[CONFIG]
    collection = check_collection(request.query.get("collection", "") or cfg.default_collection)
    resp = await request.app[UPSTREAMS].retriever.list_documents(collection, page_size=1)
    return web.json_response({"collection": collection, "count": resp.total})


@routes.delete("/api/documents/{document_id}")
async def delete_document(request: web.Request) -> web.Response:
    """Deletes one document and its chunks from a collection (`?collection=`)."""
    cfg = request.app[CONFIG]
    collection = check_collection(request.query.get("collection", "") or cfg.default_collection)
    doc_id = request.match_info["document_id"]
    await request.app[UPSTREAMS].retriever.delete_document(collection, doc_id)
    return web.json_response({"deleted": doc_id, "collection": collection})


@routes.get("/api/documents/formats")
async def formats(request: web.Request) -> web.Response:
    """The accepted upload formats (file extensions) and the size limit per file."""
    data: dict[str, Any] = {"accepted": list(KINDS), "max_upload_bytes": request.app[CONFIG].max_upload_bytes}
    return web.json_response(data)
