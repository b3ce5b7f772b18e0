"""The index in object storage: immutable segments, delete sets, manifests and CURRENT.

Layout, under the default backend:
    index/<c>/segments/<seg>/chunks-00000.jsonl    chunk records (text, document, metadata)
    index/<c>/segments/<seg>/vectors-00000.npy     float32 vectors of the same chunks
    index/<c>/segments/<seg>/postings-00000.npz    their lexical statistics (terms, tf, lengths)
    index/<c>/segments/<seg>/documents.json        the documents whose chunks the segment holds
    index/<c>/deletes/<hash>.json                  documents deleted from live segments
    index/<c>/manifests/<generation>-<version>.json  live segments, SHA-256 per file, delete set
    index/<c>/CURRENT                              the live manifest's name, written last
    index-changed                                  rewritten after any CURRENT or the collection list changes
                                                   (outside index/: every index/ key is under a collection)

A commit writes one new segment (only the new chunks), a delete set when documents were replaced or
removed, a new manifest, then CURRENT; a merge publishes the same way. Files are sharded so each
stays well under the storage service's 8 MiB BatchPut item limit. Loading verifies every file's
SHA-256 against the manifest and refuses a mismatch with `CorruptSegment`, naming the file and how
to rebuild.

Indexes written before segments (format 1: `index/<c>/<version>/manifest.json` and a CURRENT
holding the bare version) load as they are, as one segment whose postings are built on load; the
first commit lists that directory as a segment of its manifest, and merges and garbage collection
retire it like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .index import ChunkRecord, DocumentInfo
from .lexical import Analyzer, Postings
from .ports import ObjectNotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

FORMAT = 2
SHARD_CHUNKS = 2048
_PUT_GROUP = 8  # files per BatchPut/BatchGet call: a few MiB per message, not the whole index

__all__ = ["CorruptSegment", "DocumentInfo", "Manifest", "SegmentEntry"]


class CorruptSegment(Exception):
    """A segment failed verification; the message names the file and the rebuild path."""


def prefix(collection: str) -> str:
    return f"index/{collection}/"


def rebuild_hint(collection: str) -> str:
    return (
        f"rebuild it by re-ingesting its raw documents: StartIngest(collection={collection!r}, "
        f"source_prefix='docs/{collection}/') (rag ingest --collection {collection} --prefix docs/{collection}/)"
    )


@dataclass
class SegmentEntry:
    """A segment as a manifest lists it: where its files are and their SHA-256."""

    id: str
    path: str  # relative to index/<c>/, ends with "/"
    chunks: int
    files: dict[str, dict[str, Any]]
    format: int = FORMAT
    created_unix_ns: int = 0

    @property
    def size_bytes(self) -> int:
        return sum(int(f["size_bytes"]) for f in self.files.values())


@dataclass
class Manifest:
    """One published state of a collection's index."""

    collection: str
    generation: int = 0
    segments: list[SegmentEntry] = field(default_factory=list)
    deleted: dict[str, list[str]] = field(default_factory=dict)  # segment id -> document ids
    deletes_file: dict[str, Any] | None = None  # {"path", "sha256", "size_bytes"}
    fence_token: int = 0
    dimension: int = 0
    chunks: int = 0
    documents: int = 0
    created_unix_ns: int = 0
    legacy_version: str = ""

    @property
    def version(self) -> str:
        """Content-addressed: the same segments and deletes give the same version."""
        if self.legacy_version:
            return self.legacy_version
        if not self.segments:
            return ""
        ident = {"s": [s.id for s in self.segments], "d": {k: sorted(v) for k, v in sorted(self.deleted.items()) if v}}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"manifests/{self.generation:012d}-{self.version or 'empty'}.json"

    def to_json(self) -> bytes:
        d = {
            "format": FORMAT,
            "collection": self.collection,
            "generation": self.generation,
            "version": self.version,
            "segments": [asdict(s) for s in self.segments],
            "deletes": self.deletes_file,
            "fence_token": self.fence_token,
            "dimension": self.dimension,
            "chunks": self.chunks,
            "documents": self.documents,
            "created_unix_ns": self.created_unix_ns,
        }
        return json.dumps(d, sort_keys=True).encode()


def _shards(n: int) -> list[tuple[int, int]]:
    return [(i, min(i + SHARD_CHUNKS, n)) for i in range(0, max(n, 1), SHARD_CHUNKS)]


def encode_segment(
    records: Sequence[ChunkRecord], vectors: np.ndarray, documents: Mapping[str, DocumentInfo], postings: Postings
) -> dict[str, bytes]:
    """A segment's files: records, vectors and postings per shard of 2048 chunks, and its documents."""
    files: dict[str, bytes] = {}
    bounds = _shards(len(records))
    for s, (a, b) in enumerate(bounds):
        files[f"chunks-{s:05d}.jsonl"] = "".join(
            json.dumps(
                {
                    "chunk_id": r.chunk_id,
                    "document_id": r.document_id,
                    "document_name": r.document_name,
                    "position": r.position,
                    "text": r.text,
                    "metadata": dict(r.metadata),
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in records[a:b]
        ).encode()
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(vectors[a:b], dtype=np.float32), allow_pickle=False)
        files[f"vectors-{s:05d}.npy"] = buf.getvalue()
    for s, part in enumerate(postings.split([a for a, _ in bounds] + [len(records)])):
        files[f"postings-{s:05d}.npz"] = part.to_bytes()
    files["documents.json"] = json.dumps(
        {k: asdict(v) for k, v in sorted(documents.items())}, ensure_ascii=False, sort_keys=True
    ).encode()
    return files


async def put_files(store: ObjectStore, items: Sequence[tuple[str, bytes]]) -> int:
    """Writes the files (a few per call); returns the bytes written; raises OSError on a failure."""
    total = 0
    for i in range(0, len(items), _PUT_GROUP):
        part = list(items[i : i + _PUT_GROUP])
        bad = [o for o in await store.put_many(part) if not o.ok]
        if bad:
            raise OSError(f"could not write index file {bad[0].key}: {bad[0].error}")
        total += sum(len(d) for _, d in part)
    return total


def segment_entry(seg_id: str, files: Mapping[str, bytes], chunks: int) -> SegmentEntry:
    return SegmentEntry(
        seg_id,
        f"segments/{seg_id}/",
        chunks,
        {n: {"sha256": hashlib.sha256(d).hexdigest(), "size_bytes": len(d)} for n, d in sorted(files.items())},
        FORMAT,
        time.time_ns(),
    )


def new_segment_id(generation: int, files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return f"{generation:08d}-{h.hexdigest()[:12]}"


def encode_deletes(collection: str, deleted: Mapping[str, Sequence[str]]) -> tuple[str, bytes] | None:
    """The delete set's file (path relative to index/<c>/, bytes); None when nothing is deleted."""
    body = {k: sorted(v) for k, v in sorted(deleted.items()) if v}
    if not body:
        return None
    data = json.dumps(body, sort_keys=True).encode()
    return f"deletes/{hashlib.sha256(data).hexdigest()[:16]}.json", data


async def publish(store: ObjectStore, manifest: Manifest, expect_etag: str) -> int:
    """Writes the manifest, then CURRENT naming it (last), as a compare-and-swap: only while
    CURRENT still has ETag `expect_etag` ("": while there is none). Returns the bytes written;
    raises `PreconditionFailed` when another writer published first (the manifest written is
    then an orphan that garbage collection removes)."""
    base = prefix(manifest.collection)
    body = manifest.to_json()
    await put_files(store, [(base + manifest.name, body)])
    name = manifest.name.encode()
    try:
        if expect_etag:
            await store.put_if(base + "CURRENT", name, if_match=expect_etag)
        else:
            await store.put_if(base + "CURRENT", name, if_none_match=True)
    except PreconditionFailed:
        # A write retried below us (the store's client after a lost reply) finds its own change:
        # when CURRENT names this very manifest (its name holds the generation and the content
        # version), the publish landed. Anything else is another writer's.
        if (await read_current_tagged(store, manifest.collection))[0] != manifest.name:
            raise
    await note_change(store)
    return len(body) + len(name)


CHANGED = "index-changed"


async def note_change(store: ObjectStore) -> None:
    """Rewrites `index-changed` (a new ETag every time) after a CURRENT or the collection list
    changed, so that followers read this one small object per poll and list only when it moved.
    Best effort: the change itself is already published, and followers also list now and then."""
    try:
        await store.put_many([(CHANGED, f"{time.time_ns()} {os.urandom(8).hex()}".encode())])
    except Exception as err:  # noqa: BLE001 - see above
        log.warning("could not note an index change", extra={"error": str(err)})


async def changes_tag(store: ObjectStore) -> str:
    """`index-changed`'s ETag ("" when no writer has noted a change yet)."""
    try:
        return (await store.read(CHANGED))[1]
    except ObjectNotFound:
        return ""


async def read_current(store: ObjectStore, collection: str) -> str:
    """CURRENT's content: a manifest name, a format-1 version, or "" when there is none."""
    return (await read_current_tagged(store, collection))[0]


async def read_current_tagged(store: ObjectStore, collection: str) -> tuple[str, str]:
    """CURRENT's content and ETag; ("", "") when there is none."""
    try:
        data, etag = await store.read(prefix(collection) + "CURRENT")
    except ObjectNotFound:
        return "", ""
    return data.decode().strip(), etag


def _corrupt(collection: str, what: str) -> CorruptSegment:
    return CorruptSegment(f"collection {collection!r}: {what}; " + rebuild_hint(collection))


async def _json(store: ObjectStore, collection: str, key: str, what: str) -> Any:
    try:
        return json.loads(await store.get(key))
    except ObjectNotFound:
        raise _corrupt(collection, f"the {what} {key} is missing") from None
    except ValueError:
        raise _corrupt(collection, f"the {what} {key} is not valid JSON") from None


async def read_manifest(store: ObjectStore, collection: str, current: str) -> Manifest:
    """The manifest CURRENT names (format 2), or a format-1 version seen as one segment."""
    base = prefix(collection)
    if not current.startswith("manifests/"):
        old = await _json(store, collection, f"{base}{current}/manifest.json", "manifest of index version")
        entry = SegmentEntry(
            current, f"{current}/", int(old.get("chunks", 0)), old.get("files", {}), 1, int(old["created_unix_ns"])
        )
        return Manifest(
            collection,
            0,
            [entry],
            dimension=int(old.get("dimension", 0)),
            chunks=entry.chunks,
            documents=int(old.get("documents", 0)),
            created_unix_ns=entry.created_unix_ns,
            legacy_version=current,
        )
    d = await _json(store, collection, base + current, "manifest")
    m = Manifest(
        collection,
        int(d["generation"]),
        [SegmentEntry(**s) for s in d["segments"]],
        deletes_file=d.get("deletes"),
        fence_token=int(d.get("fence_token", 0)),
        dimension=int(d.get("dimension", 0)),
        chunks=int(d.get("chunks", 0)),
        documents=int(d.get("documents", 0)),
        created_unix_ns=int(d.get("created_unix_ns", 0)),
    )
    if m.deletes_file:
        f = m.deletes_file
        data = (await _verified(store, collection, [(base + f["path"], f["sha256"])]))[0]
        m.deleted = {k: list(v) for k, v in json.loads(data).items()}
    if m.version != d.get("version"):
        raise _corrupt(collection, f"the manifest {base}{current} does not match its own version")
    return m


async def _verified(store: ObjectStore, collection: str, wanted: Sequence[tuple[str, str]]) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(wanted), _PUT_GROUP):
        part = wanted[i : i + _PUT_GROUP]
        got = await store.get_many([k for k, _ in part])
        sums = await asyncio.to_thread(lambda got=got: [hashlib.sha256(o.data).hexdigest() for o in got])
        for (key, sha), o, digest in zip(part, got, sums, strict=True):
            if not o.ok:
                raise _corrupt(collection, f"index file {key} cannot be read ({o.error})")
            if digest != sha:
                raise _corrupt(collection, f"index file {key} fails its SHA-256 check (corrupt segment, not loaded)")
            out.append(o.data)
    return out


@dataclass
class SegmentData:
    """A segment's decoded contents."""

    records: list[ChunkRecord]
    vectors: np.ndarray
    documents: dict[str, DocumentInfo]
    postings: Postings


async def read_segment(
    store: ObjectStore, collection: str, entry: SegmentEntry, dim: int, analyzer: Analyzer
) -> SegmentData:
    """Reads and verifies a segment's files; raises CorruptSegment on any mismatch or missing file."""
    base = prefix(collection) + entry.path
    names = sorted(entry.files)
    blobs = await _verified(store, collection, [(base + n, entry.files[n]["sha256"]) for n in names])
    data = dict(zip(names, blobs, strict=True))
    # Decoding a large segment (JSON, postings) takes CPU seconds: never on the event loop.
    return await asyncio.to_thread(decode_segment, data, dim, analyzer)


async def read_documents(store: ObjectStore, collection: str, entry: SegmentEntry) -> dict[str, DocumentInfo]:
    """A segment's document list alone (verified), for replicas that keep no chunks (Milvus mode)."""
    name = "documents.json"
    (blob,) = await _verified(
        store, collection, [(prefix(collection) + entry.path + name, entry.files[name]["sha256"])]
    )
    return {k: DocumentInfo(**v) for k, v in json.loads(blob).items()}


def decode_segment(data: Mapping[str, bytes], dim: int, analyzer: Analyzer) -> SegmentData:
    """CPU work of loading (JSON, numpy, postings): callers run it in a thread."""
    records: list[ChunkRecord] = []
    vecs: list[np.ndarray] = []
    posts: list[tuple[Postings, np.ndarray]] = []
    for name in sorted(data):
        if name.startswith("chunks-"):
            for line in data[name].decode().splitlines():
                d = json.loads(line)
                records.append(
                    ChunkRecord(
                        d["chunk_id"], d["document_id"], d["document_name"], d["position"], d["text"], d["metadata"]
                    )
                )
            vecs.append(np.load(io.BytesIO(data[name.replace("chunks-", "vectors-").replace(".jsonl", ".npy")])))
        elif name.startswith("postings-"):
            p = Postings.from_bytes(data[name])
            posts.append((p, np.ones(len(p.lengths), bool)))
    vectors = np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    vectors = vectors.reshape(len(records), -1) if len(records) else np.zeros((0, dim), np.float32)
    # Format 1 stored no postings: build them from the text once, on load.
    postings = Postings.merge(posts) if posts else Postings.build(analyzer.many([r.text for r in records]))
    docs = {k: DocumentInfo(**v) for k, v in json.loads(data["documents.json"]).items()}
    return SegmentData(records, vectors, docs, postings)


async def collect_garbage(store: ObjectStore, collection: str, current: Manifest, grace_s: float) -> int:
    """Deletes segment, delete-set and manifest files that neither the live manifest nor any
    manifest published within `grace_s` names, and that are themselves older than `grace_s` (so a
    commit still writing its segment is never touched). Returns the objects deleted."""
    base = prefix(collection)
    now = time.time_ns()
    cutoff = now - int(grace_s * 1e9)
    objs = await store.list(base)
    keep: set[str] = {current.name}
    named_by = [current]
    for o in objs:
        rel = o.key[len(base) :]
        if rel.startswith("manifests/") and rel != current.name and o.last_modified_unix_ns >= cutoff:
            keep.add(rel)
            try:
                named_by.append(await read_manifest(store, collection, rel))
            except CorruptSegment:
                continue
    for m in named_by:
        keep.update(s.path for s in m.segments)
        if m.deletes_file:
            keep.add(m.deletes_file["path"])
    doomed = []
    for o in objs:
        rel = o.key[len(base) :]
        if rel == "CURRENT" or o.last_modified_unix_ns >= cutoff or rel in keep:
            continue
        top = rel.split("/", 1)[0]
        seg_dir = "/".join(rel.split("/", 2)[:2]) + "/" if top == "segments" else f"{top}/"
        if seg_dir in keep:
            continue
        doomed.append(o.key)
    if doomed:
        await store.delete(doomed)
    return len(doomed)
