"""What the fault scenarios share: a synthetic corpus, the stack's bucket seen through boto3, the
supervisor's child pids, and the exact-chunk-set check (0 lost, 0 duplicated).

Used by tests/faults/*.py (small corpora, CI) and bench/reliability.py (the 500-document runs).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from clients.base import ServiceCallError
from clients.retriever import RetrieverClient
from testkit.stack import RunningStack

BUCKET = "ddnrag"
TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIAL", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"}
WORDS = (
    "turbine valve glycol rack sensor pump manifold firmware ledger cohort protein enzyme granite basalt "
    "harbour freight invoice tariff orbit comet nebula quartz lattice cipher router beacon anchor meadow "
    "glacier canyon prairie summit delta estuary lagoon reef atoll tundra savanna steppe mesa butte"
).split()


def make_corpus(n: int, seed: str = "faults", paragraphs: int = 6) -> dict[str, bytes]:
    """`n` distinct markdown documents of ~1-2 KB each (several chunks at small chunk sizes)."""
    docs: dict[str, bytes] = {}
    for i in range(n):
        lines = [f"# Document {seed} {i}", ""]
        for p in range(paragraphs):
            h = hashlib.sha256(f"{seed}/{i}/{p}".encode()).digest()
            words = [WORDS[b % len(WORDS)] for b in h] + [f"item{i}x{p}"]
            lines.append(" ".join(words).capitalize() + ". " + f"Record {i}.{p} of the {seed} corpus.")
            lines.append("")
        docs[f"doc-{i:04d}.md"] = "\n".join(lines).encode()
    return docs


def s3_client(stack: RunningStack) -> Any:
    creds = json.loads((stack.data_dir / "secrets" / "s3-credentials.json").read_text())
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}",
        aws_access_key_id=creds["access_key_id"],
        aws_secret_access_key=creds["secret_access_key"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 10, "mode": "standard"}),
    )


def list_keys(s3: Any, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def put_corpus(s3: Any, collection: str, docs: dict[str, bytes]) -> str:
    """Stores the documents under `docs/<collection>/<doc id>/<name>`; returns the prefix."""
    for name, body in docs.items():
        s3.put_object(Bucket=BUCKET, Key=f"docs/{collection}/{name.rsplit('.', 1)[0]}/{name}", Body=body)
    return f"docs/{collection}/"


def child_pids(output: str) -> dict[str, int]:
    """The latest pid of each supervised child, from `rag up`'s output."""
    pids: dict[str, int] = {}
    for name, pid in re.findall(r"^\s+(\w+)\s+(?:healthy in .*|restarted .*)\(pid (\d+)\)", output, re.M):
        pids[name] = int(pid)
    return pids


def sigkill(stack: RunningStack, child: str) -> int:
    """SIGKILLs the supervised child (the whole of SeaweedFS is one `weed` process)."""
    pid = child_pids(stack.output())[child]
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_restarted(stack: RunningStack, child: str, old_pid: int, timeout_s: float = 180) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pid = child_pids(stack.output()).get(child)
        if pid and pid != old_pid:
            return pid
        time.sleep(0.3)
    raise TimeoutError(f"{child} was not restarted in {timeout_s}s:\n{stack.output()[-3000:]}")


async def job_state(client: RetrieverClient, job_id: str) -> Any | None:
    """The job, or None while the retriever cannot be reached (it may be restarting)."""
    try:
        return await client.get_job(job_id, timeout=5)
    except ServiceCallError:
        return None


async def wait_job(stack: RunningStack, job_id: str, timeout_s: float = 480) -> Any:
    """Polls the job until it ends (tolerating a restarting retriever); bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        client = RetrieverClient(stack.addr("DDNRAG_RETRIEVER_PORT"), retries=0)
        try:
            job = await job_state(client, job_id)
        finally:
            await client.close()
        if job is not None:
            last = job
            from ddnrag.retriever.v1 import retriever_service_pb2 as pb

            if pb.JobState.Name(job.state) in TERMINAL:
                return job
        await asyncio.sleep(0.5)
    raise TimeoutError(f"job {job_id} did not end in {timeout_s}s; last seen: {last}")


def expected_chunks(collection: str, docs: dict[str, bytes], size: int = 256, overlap: int = 32) -> dict[str, str]:
    """The exact chunk set (id -> text) the retriever must produce for `docs`, computed here with
    the retriever's own parser and chunker (ids are content-addressed)."""
    from services.retriever.chunking import Chunker
    from services.retriever.parsing import parse_document

    chunker = Chunker(size, overlap)
    out: dict[str, str] = {}
    for name, body in docs.items():
        for c in chunker.chunks(collection, name.rsplit(".", 1)[0], parse_document(name, body)):
            out[c.chunk_id] = c.text
    return out


@dataclass
class ChunkAudit:
    """The chunk set of one collection: in the bucket (boto3 listing), in the live index, expected."""

    collection: str
    bucket_ids: list[str]
    index_ids: list[str]
    expected: dict[str, str]
    text_mismatch: int = 0

    @property
    def lost(self) -> int:
        """Expected chunks missing from the bucket or from the index."""
        want = set(self.expected)
        return len(want - set(self.bucket_ids)) + len(want - set(self.index_ids))

    @property
    def duplicated(self) -> int:
        """Index rows repeated, and chunks in the bucket or index that the corpus does not produce."""
        dup_rows = sum(c - 1 for c in Counter(self.index_ids).values() if c > 1)
        want = set(self.expected)
        return dup_rows + len(set(self.bucket_ids) - want) + len(set(self.index_ids) - want)

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "chunks_expected": len(self.expected),
            "chunks_in_bucket": len(self.bucket_ids),
            "chunks_in_index": len(self.index_ids),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "text_mismatch": self.text_mismatch,
        }


def live_manifest(s3: Any, collection: str) -> dict[str, Any] | None:
    """The manifest CURRENT names (segments with their files, and the delete set), or None."""
    root = f"index/{collection}/"
    try:
        current = s3.get_object(Bucket=BUCKET, Key=root + "CURRENT")["Body"].read().decode().strip()
    except s3.exceptions.NoSuchKey:
        return None
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=root + current)["Body"].read())
    deleted: dict[str, list[str]] = {}
    if manifest.get("deletes"):
        deleted = json.loads(s3.get_object(Bucket=BUCKET, Key=root + manifest["deletes"]["path"])["Body"].read())
    manifest["deleted"] = deleted
    return manifest


def read_index(s3: Any, collection: str) -> list[dict[str, Any]]:
    """The live chunk records of the collection (every segment minus its deleted documents),
    each file verified against the manifest."""
    manifest = live_manifest(s3, collection)
    if manifest is None:
        return []  # no version published: every expected chunk counts as lost
    records: list[dict[str, Any]] = []
    for seg in manifest["segments"]:
        base = f"index/{collection}/{seg['path']}"
        gone = set(manifest["deleted"].get(seg["id"], ()))
        for name, meta in sorted(seg["files"].items()):
            data = s3.get_object(Bucket=BUCKET, Key=base + name)["Body"].read()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"], f"{base}{name} fails its manifest hash"
            if name.startswith("chunks-"):
                rows = (json.loads(line) for line in data.decode().splitlines())
                records.extend(r for r in rows if r["document_id"] not in gone)
    return records


def audit(s3: Any, collection: str, expected: dict[str, str]) -> ChunkAudit:
    """Lists the bucket with boto3 and compares it with the live index and the expected set; every
    chunk object's body must equal its expected text."""
    bucket_ids = [k.rsplit("/", 1)[1] for k in list_keys(s3, f"chunks/{collection}/")]
    records = read_index(s3, collection)
    a = ChunkAudit(collection, bucket_ids, [r["chunk_id"] for r in records], expected)
    for r in records:
        if expected.get(r["chunk_id"]) != r["text"]:
            a.text_mismatch += 1
    for cid in set(bucket_ids) & set(expected):
        body = s3.get_object(Bucket=BUCKET, Key=f"chunks/{collection}/{cid}")["Body"].read()
        if body.decode("utf-8", "replace") != expected[cid]:
            a.text_mismatch += 1
    return a


def record(name: str, figures: dict[str, Any]) -> None:
    """Writes a test's figures to $DDNRAG_RELIABILITY_DIR/<name>.json when bench/reliability.py
    runs the suites (a no-op otherwise)."""
    out = os.environ.get("DDNRAG_RELIABILITY_DIR")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"name": name, **figures}, f)
