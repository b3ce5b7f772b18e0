"""Ingestion job state, shared by every retriever replica through the object store.

Layout (all through the storage service, default backend):
- `jobs/<job_id>/job.json`: the `JobRecord`, the commit point. The lease holder writes it with
  If-Match on the ETag it wrote last, so a replica that lost the job to a newer holder has its
  next write refused (`FENCED_WRITE`) instead of overwriting the new holder's progress.
- `jobs/<job_id>/files.json`: the job's files, as requested (or as listed from a prefix).
- `jobs/<job_id>/batches/<n>-g<generation>.json` + `.f32`: one committed batch: the files it
  finished (done, failed or unchanged) and its chunks with their vectors. A batch counts only once
  job.json names it, so a batch written by a fenced-off holder is never read.
- `jobs/<job_id>/cancel`: a cancel request, written by whichever replica got CancelJob.
- `jobs/active/<job_id>`: one marker per queued or running job (what a new holder resumes).
- `jobs/requests/<fingerprint>`: the running job of one request (created with If-None-Match), so
  a second identical request joins it instead of starting a twin.
- `jobindex/<created_ns>_<job_id>`: the listing order for ListJobs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .job_model import ChunkRow, FileRow, JobRecord
from .lease import fenced
from .ports import ObjectNotFound, ObjectStore, PreconditionFailed

ACTIVE = "jobs/active/"
REQUESTS = "jobs/requests/"
INDEX = "jobindex/"


def job_key(job_id: str) -> str:
    return f"jobs/{job_id}/job.json"


class JobStore:
    """Reads and writes the shared job state; remembers the ETag of each job record it wrote."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._etags: dict[str, str] = {}
        self._unsure: dict[str, bytes] = {}

    # Records -----------------------------------------------------------------------------------
    async def read(self, job_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(await self.store.get(job_key(job_id)))
        except ObjectNotFound:
            return None

    async def take(self, job_id: str) -> JobRecord | None:
        """Reads a record to write it next (its ETag becomes the condition of that write)."""
        try:
            data, etag = await self.store.read(job_key(job_id))
        except ObjectNotFound:
            return None
        self._etags[job_id] = etag
        return JobRecord.from_json(data)

    async def write(self, rec: JobRecord) -> None:
        """Writes a record taken or created here; refused (FENCED_WRITE) when another replica
        wrote it meanwhile."""
        key, body = job_key(rec.job_id), rec.to_json()
        # A write whose call was cancelled (or failed after the store applied it) may have
        # landed unacknowledged: then the stored record is byte for byte the one we sent.
        unsure = self._unsure.get(rec.job_id)
        for _ in range(2):
            self._unsure[rec.job_id] = body
            try:
                self._etags[rec.job_id] = await self.store.put_if(key, body, if_match=self._etags.get(rec.job_id, ""))
                self._unsure.pop(rec.job_id, None)
                return
            except PreconditionFailed:
                pass
            try:
                data, now = await self.store.read(key)
            except ObjectNotFound:
                data, now = b"", ""
            if data == body:
                self._etags[rec.job_id] = now
                self._unsure.pop(rec.job_id, None)
                return
            if unsure is None or data != unsure:
                break
            self._etags[rec.job_id], unsure = now, None  # our lost write: go on from it
        self._etags.pop(rec.job_id, None)
        self._unsure.pop(rec.job_id, None)
        raise fenced(
            f"job {rec.job_id} was taken over by another replica (this one wrote it as lease generation"
            f" {rec.fence}); this replica stops working on it",
            job_id=rec.job_id,
        ) from None

    def forget(self, job_id: str) -> None:
        self._etags.pop(job_id, None)
        self._unsure.pop(job_id, None)

    async def create(self, rec: JobRecord, files: Sequence[FileRow]) -> JobRecord:
        """Stores a new job, or returns the running job of the same request (which it joins)."""
        while rec.fingerprint:
            try:
                await self.store.put_if(REQUESTS + rec.fingerprint, rec.job_id.encode(), if_none_match=True)
                break
            except PreconditionFailed:
                pass
            try:
                data, etag = await self.store.read(REQUESTS + rec.fingerprint)
            except ObjectNotFound:
                continue
            running = await self.read(data.decode())
            if running is not None and running.active:
                return running
            try:  # a finished job's marker left behind: take it over
                await self.store.put_if(REQUESTS + rec.fingerprint, rec.job_id.encode(), if_match=etag)
                break
            except PreconditionFailed:
                continue
        await self.put_files(rec.job_id, files)
        self._etags[rec.job_id] = await self.store.put_if(job_key(rec.job_id), rec.to_json(), if_none_match=True)
        await self.store.put_many([(ACTIVE + rec.job_id, b""), (f"{INDEX}{rec.created_ns:020d}_{rec.job_id}", b"")])
        return rec

    async def finished(self, rec: JobRecord) -> None:
        """Clears what only a live job needs (after its terminal record was written)."""
        await self.store.delete([ACTIVE + rec.job_id, f"jobs/{rec.job_id}/cancel"])
        await self.store.delete(prefix=f"jobs/{rec.job_id}/batches/")
        if rec.fingerprint:
            try:
                data, _ = await self.store.read(REQUESTS + rec.fingerprint)
                if data.decode() == rec.job_id:
                    await self.store.delete([REQUESTS + rec.fingerprint])
            except ObjectNotFound:
                pass
        self.forget(rec.job_id)

    async def remove(self, rec: JobRecord) -> int:
        """Deletes a job's record and everything under it: its listing entry first (so ListJobs
        stops showing it), then its files. Returns the objects deleted."""
        n = await self.store.delete([f"{INDEX}{rec.created_ns:020d}_{rec.job_id}", ACTIVE + rec.job_id])
        if rec.fingerprint:
            try:
                data, _ = await self.store.read(REQUESTS + rec.fingerprint)
                if data.decode() == rec.job_id:
                    n += await self.store.delete([REQUESTS + rec.fingerprint])
            except ObjectNotFound:
                pass
        n += await self.store.delete(prefix=f"jobs/{rec.job_id}/")
        self.forget(rec.job_id)
        return n

    async def active_ids(self) -> list[str]:
        return [o.key[len(ACTIVE) :] for o in await self.store.list(ACTIVE)]

    async def listing(self) -> list[tuple[int, str]]:
        """(created_ns, job_id) of every job, newest first."""
        out = []
        for o in await self.store.list(INDEX):
            created, _, job_id = o.key[len(INDEX) :].partition("_")
            if created.isdigit() and job_id:
                out.append((int(created), job_id))
        return sorted(out, reverse=True)

    async def read_many(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        got = await self.store.get_many([job_key(j) for j in job_ids])
        return {j: JobRecord.from_json(o.data) for j, o in zip(job_ids, got, strict=True) if o.ok}

    # Files and batches -------------------------------------------------------------------------
    async def put_files(self, job_id: str, files: Sequence[FileRow]) -> None:
        body = json.dumps([f.to_dict() for f in files], separators=(",", ":")).encode()
        await self._put(f"jobs/{job_id}/files.json", body)

    async def files(self, job_id: str) -> list[FileRow]:
        try:
            data = await self.store.get(f"jobs/{job_id}/files.json")
        except ObjectNotFound:
            return []
        return [FileRow.from_dict(d) for d in json.loads(data)]

    async def put_batch(self, job_id: str, name: str, files: Sequence[FileRow], chunks: Sequence[ChunkRow]) -> str:
        """Writes a batch's objects (not yet committed: job.json must name it). Returns its key."""
        key = f"jobs/{job_id}/batches/{name}"
        vectors = np.stack([np.asarray(c.vector, np.float32) for c in chunks]) if chunks else np.zeros((0, 0))
        meta: dict[str, Any] = {
            "files": [f.to_dict() for f in files],
            "chunks": [[c.chunk_id, c.document_id, c.position, c.text] for c in chunks],
            "dim": int(vectors.shape[1]) if chunks else 0,
        }
        if chunks:
            await self._put(key + ".f32", vectors.astype(np.float32).tobytes())
        await self._put(key + ".json", json.dumps(meta, separators=(",", ":")).encode())
        return key

    async def batches(self, keys: Sequence[str]) -> tuple[list[FileRow], list[ChunkRow]]:
        """The files and chunks of the committed batches `keys`, in commit order."""
        files: list[FileRow] = []
        chunks: list[ChunkRow] = []

        async def one(key: str) -> tuple[dict[str, Any], bytes]:
            meta = json.loads(await self.store.get(key + ".json"))
            vec = await self.store.get(key + ".f32") if meta["chunks"] else b""
            return meta, vec

        for meta, vec in await asyncio.gather(*(one(k) for k in keys)):
            files.extend(FileRow.from_dict(d) for d in meta["files"])
            if meta["chunks"]:
                arr = np.frombuffer(vec, np.float32).reshape(len(meta["chunks"]), meta["dim"])
                chunks.extend(ChunkRow(c[0], c[1], c[2], c[3], arr[i]) for i, c in enumerate(meta["chunks"]))
        return files, chunks

    # Cancel requests ---------------------------------------------------------------------------
    async def request_cancel(self, job_id: str) -> None:
        await self._put(f"jobs/{job_id}/cancel", b"1")

    async def cancel_requested(self, job_id: str) -> bool:
        return bool(await self.store.list(f"jobs/{job_id}/cancel"))

    async def _put(self, key: str, data: bytes) -> None:
        out = await self.store.put_many([(key, data)])
        if not out[0].ok:
            raise OSError(f"writing {key} failed: {out[0].error}")
