"""Index snapshots kept in object storage as immutable, versioned segments.

Layout, under the default backend:
    index/<collection>/<version>/chunks-00000.jsonl   chunk records (text, document, metadata)
    index/<collection>/<version>/vectors-00000.npy    float32 vectors of the same chunks
    index/<collection>/<version>/documents.json       per-document info
    index/<collection>/<version>/manifest.json        version, corpus version, SHA-256 per file
    index/<collection>/CURRENT                        the live version, written last

Files are sharded so each stays well under the storage service's 8 MiB BatchPut item limit. A
version is content-addressed (the hash of its files' hashes), so writing the same corpus twice
writes the same version. Loading verifies every file's SHA-256 against the manifest and refuses
a mismatch with `CorruptSegment`, naming the file and how to rebuild.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .index import ChunkRecord, corpus_version
from .ports import ObjectNotFound, ObjectStore

FORMAT = 1
SHARD_CHUNKS = 2048


class CorruptSegment(Exception):
    """A segment failed verification; the message names the file and the rebuild path."""


@dataclass
class DocumentInfo:
    document_id: str
    name: str
    object_key: str
    size_bytes: int
    sha256: str
    chunks: int
    metadata: dict[str, str] = field(default_factory=dict)
    ingested_unix_ns: int = 0
    # The chunking the document was cut with ("size/overlap"); a change re-chunks it.
    chunking: str = ""


@dataclass
class Snapshot:
    """What a version holds: chunk records, their vectors and document infos."""

    records: list[ChunkRecord]
    vectors: np.ndarray
    documents: dict[str, DocumentInfo]
    version: str = ""
    updated_unix_ns: int = 0


def prefix(collection: str) -> str:
    return f"index/{collection}/"


def rebuild_hint(collection: str) -> str:
    return (
        f"rebuild it by re-ingesting its raw documents: StartIngest(collection={collection!r}, "
        f"source_prefix='docs/{collection}/') (rag ingest --collection {collection} --prefix docs/{collection}/)"
    )


def encode_snapshot(collection: str, snap: Snapshot) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    """Serialises `snap`; returns (version, {file name: bytes}, manifest)."""
    files: dict[str, bytes] = {}
    n = len(snap.records)
    for s, i in enumerate(range(0, max(n, 1), SHARD_CHUNKS)):
        recs = snap.records[i : i + SHARD_CHUNKS]
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
            for r in recs
        ).encode()
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(snap.vectors[i : i + SHARD_CHUNKS], dtype=np.float32), allow_pickle=False)
        files[f"vectors-{s:05d}.npy"] = buf.getvalue()
    files["documents.json"] = json.dumps(
        {k: asdict(v) for k, v in sorted(snap.documents.items())}, ensure_ascii=False, sort_keys=True
    ).encode()
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    version = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    manifest = {
        "format": FORMAT,
        "collection": collection,
        "version": version,
        "corpus_version": corpus_version([r.chunk_id for r in snap.records]),
        "chunks": n,
        "documents": len(snap.documents),
        "dimension": int(snap.vectors.shape[1]) if snap.vectors.ndim == 2 else 0,
        "created_unix_ns": time.time_ns(),
        "files": {name: {"sha256": h, "size_bytes": len(files[name])} for name, h in hashes.items()},
    }
    return version, files, manifest


async def write_snapshot(store: ObjectStore, collection: str, snap: Snapshot) -> str:
    """Writes the version's files, then its manifest, then CURRENT (last). Returns the version."""
    version, files, manifest = encode_snapshot(collection, snap)
    base = f"{prefix(collection)}{version}/"
    items = [(base + name, data) for name, data in files.items()]
    # Keep each BatchPut call modest: vectors shards are up to ~3 MiB each.
    for i in range(0, len(items), 8):
        _check(await store.put_many(items[i : i + 8]))
    _check(await store.put_many([(base + "manifest.json", json.dumps(manifest, sort_keys=True).encode())]))
    _check(await store.put_many([(prefix(collection) + "CURRENT", version.encode())]))
    return version


def _check(outcomes: Sequence[Any]) -> None:
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise OSError(f"could not write index file {bad[0].key}: {bad[0].error}")


async def read_current(store: ObjectStore, collection: str) -> str:
    try:
        return (await store.get(prefix(collection) + "CURRENT")).decode().strip()
    except ObjectNotFound:
        return ""


async def load_snapshot(store: ObjectStore, collection: str, version: str) -> Snapshot:
    """Reads and verifies a version; raises CorruptSegment on any mismatch or missing file."""
    base = f"{prefix(collection)}{version}/"
    try:
        manifest = json.loads(await store.get(base + "manifest.json"))
    except ObjectNotFound:
        raise CorruptSegment(
            f"collection {collection!r}: the manifest of index version {version} is missing; "
            + rebuild_hint(collection)
        ) from None
    except ValueError:
        raise CorruptSegment(
            f"collection {collection!r}: the manifest of index version {version} is not valid JSON; "
            + rebuild_hint(collection)
        ) from None
    names = sorted(manifest.get("files", {}))
    got = []
    for i in range(0, len(names), 8):  # a few MiB per call, not the whole index in one message
        got.extend(await store.get_many([base + n for n in names[i : i + 8]]))
    data: dict[str, bytes] = {}
    for name, o in zip(names, got, strict=True):
        want = manifest["files"][name]["sha256"]
        if not o.ok:
            raise CorruptSegment(
                f"collection {collection!r}: index file {base}{name} cannot be read ({o.error}); "
                + rebuild_hint(collection)
            )
        if hashlib.sha256(o.data).hexdigest() != want:
            raise CorruptSegment(
                f"collection {collection!r}: index file {base}{name} fails its SHA-256 check (corrupt segment,"
                " not loaded); " + rebuild_hint(collection)
            )
        data[name] = o.data
    records: list[ChunkRecord] = []
    vecs: list[np.ndarray] = []
    for name in names:
        if name.startswith("chunks-"):
            for line in data[name].decode().splitlines():
                d = json.loads(line)
                records.append(
                    ChunkRecord(
                        d["chunk_id"], d["document_id"], d["document_name"], d["position"], d["text"], d["metadata"]
                    )
                )
            vecs.append(np.load(io.BytesIO(data[name.replace("chunks-", "vectors-").replace(".jsonl", ".npy")])))
    dim = int(manifest.get("dimension", 0))
    vectors = np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    vectors = vectors.reshape(len(records), -1) if len(records) else np.zeros((0, dim), np.float32)
    docs = {k: DocumentInfo(**v) for k, v in json.loads(data["documents.json"]).items()}
    return Snapshot(records, vectors, docs, version, int(manifest.get("created_unix_ns", 0)))


async def old_versions(store: ObjectStore, collection: str, keep: set[str]) -> list[str]:
    """Versions under the collection's prefix other than `keep`."""
    objs = await store.list(prefix(collection))
    versions = {o.key[len(prefix(collection)) :].split("/", 1)[0] for o in objs if o.key.count("/") >= 3}
    return sorted(versions - keep)
