"""Secrets scan: the whole e2e flow on the real stack with distinctive fake secrets configured,
then every log line, every HTTP and gRPC response and every file of the data directory is
searched for them. Allowed only in the secret stores: `data/secrets/` (the embedded store's
credentials and the file a backend was pointed at, 0600). Inline PutBackend secrets are sealed
(AES-256-GCM) inside the shared registry object in the store, so the SeaweedFS volumes are scanned
too; the registry's data key (`state/storage/registry.key`) must be 0600.

The secrets: the embedded store's access key id and secret key (the stack's credentials file,
written before `rag up` so the whole stack runs on them), a second backend's inline secret key
(write-only in the API), and a third backend reading its keys from a credentials file.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as spb
from testkit.faults import harness
from testkit.otlp import OtlpReceiver
from testkit.sse import iter_sse
from testkit.stack import RunningStack, start_stack

pytestmark = [pytest.mark.e2e]

TAG = secrets.token_hex(4)
STORE_KEY_ID = f"AKIADDNRAGSCAN{TAG.upper()}"
STORE_SECRET = f"FAKE-store-secret-{TAG}-x9Qz"
INLINE_SECRET = f"FAKE-inline-secret-{TAG}-p7Lm"
FILE_SECRET = f"FAKE-file-secret-{TAG}-k2Vb"
SECRETS = [STORE_KEY_ID, STORE_SECRET, INLINE_SECRET, FILE_SECRET]
DOC = b"# Aurora heat exchanger\n\nThe Aurora heat exchanger moves 4 megawatts of heat into the district grid.\n"


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp: OtlpReceiver) -> Iterator[RunningStack]:
    data = tmp_path_factory.mktemp("secrets") / "data"
    store = data / "secrets"
    store.mkdir(parents=True, mode=0o700)
    creds = store / "s3-credentials.json"
    creds.write_text(json.dumps({"access_key_id": STORE_KEY_ID, "secret_access_key": STORE_SECRET}))
    creds.chmod(0o600)
    (store / "extra-backend.json").write_text(
        json.dumps({"access_key_id": "AKIAEXTRA" + TAG.upper(), "secret_access_key": FILE_SECRET})
    )
    s = start_stack(data, extra_env=otlp.env)  # traced: the exported spans are scanned too
    try:
        yield s
    finally:
        s.stop()


def _hits(blob: bytes) -> list[str]:
    return [s for s in SECRETS if s.encode() in blob]


async def _record(resp: aiohttp.ClientResponse, seen: list[bytes]) -> bytes:
    body = await resp.read()
    seen.append(json.dumps(dict(resp.headers)).encode() + b"\n" + body)
    return body


async def _flow(stack: RunningStack) -> list[bytes]:
    """Everything a user does, with every response kept."""
    seen: list[bytes] = []
    url = stack.url
    s3_endpoint = f"http://127.0.0.1:{stack.ports['DDNRAG_S3_PORT']}"
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("file", DOC, filename="aurora.md", content_type="text/markdown")
        async with session.post(f"{url}/api/documents", data=form) as r:
            job = json.loads(await _record(r, seen))["job_id"]
        async with session.get(f"{url}/api/ingestion/stream", params={"job_id": job}) as r:
            async for ev in iter_sse(r):
                seen.append(ev.data.encode())
                if ev.event in ("done", "error"):
                    break
        async with session.get(f"{url}/api/rag/stream", params={"q": "How much heat does Aurora move?"}) as r:
            async for ev in iter_sse(r):
                seen.append(ev.data.encode())
        backends = [
            {"name": "inline", "kind": "s3_compatible", "endpoint": s3_endpoint, "bucket": "ddnrag",
             "region": "us-east-1", "addressing_style": "path", "access_key_id": STORE_KEY_ID,
             "secret_access_key": INLINE_SECRET},
            {"name": "fromfile", "kind": "s3_compatible", "endpoint": s3_endpoint, "bucket": "ddnrag",
             "region": "us-east-1", "addressing_style": "path",
             "credentials_file": str(stack.data_dir / "secrets" / "extra-backend.json")},
            {"name": "good", "kind": "s3_compatible", "endpoint": s3_endpoint, "bucket": "ddnrag",
             "region": "us-east-1", "addressing_style": "path", "access_key_id": STORE_KEY_ID,
             "secret_access_key": STORE_SECRET},
        ]  # fmt: skip
        for b in backends:
            if "credentials_file" in b:  # an operator-only field: refused over HTTP, set over gRPC
                async with session.post(f"{url}/api/config/backends", json=b) as r:
                    await _record(r, seen)
                    assert r.status == 400, await r.text()
                operator = StorageClient(stack.addr("DDNRAG_STORAGE_PORT"))
                try:
                    fields = {k: v for k, v in b.items() if k not in ("kind", "addressing_style")}
                    saved = await operator.put_backend(
                        spb.Backend(
                            kind=spb.BACKEND_KIND_S3_COMPATIBLE, addressing_style=spb.ADDRESSING_STYLE_PATH, **fields
                        )
                    )
                    seen.append(str(saved).encode())
                finally:
                    await operator.close()
                continue
            async with session.post(f"{url}/api/config/backends", json=b) as r:
                await _record(r, seen)
                assert r.status in (200, 201), await r.text()
            async with session.post(f"{url}/api/config/backends/{b['name']}/test") as r:
                await _record(r, seen)
        for path in (
            "/api/config/backends",
            "/api/documents",
            "/api/ingestion/jobs",
            f"/api/ingestion/jobs/{job}",
            "/api/collections",
            "/api/cache",
            "/api/models",
            "/api/embedder",
            "/api/metrics/summary",
            "/api/health",
            "/metrics",
            "/v1/models",
            "/api/benchmarks",
        ):
            async with session.get(url + path) as r:
                await _record(r, seen)
        async with session.post(f"{url}/api/rag/query", json={"q": "What is Aurora?"}) as r:
            await _record(r, seen)
        chat = {"model": "ddnrag", "messages": [{"role": "user", "content": "What is Aurora?"}]}
        async with session.post(f"{url}/v1/chat/completions", json=chat) as r:
            await _record(r, seen)
    # gRPC, straight to the storage service (the only holder of store credentials).
    client = StorageClient(stack.addr("DDNRAG_STORAGE_PORT"))
    try:
        seen.append(str(await client.list_backends()).encode())
        for name in ("", "inline", "fromfile", "good"):
            try:
                seen.append(str(await client.test_connection(name, timeout=30)).encode())
            except Exception as err:  # noqa: BLE001 - an error's text is a response too
                seen.append(str(err).encode())
        try:
            await client.put_backend(spb.Backend(name="bad name!", secret_access_key=INLINE_SECRET, bucket="b"))
        except Exception as err:  # noqa: BLE001
            seen.append(str(err).encode())
    finally:
        await client.close()
    # The CLI's view.
    rag = str(Path(sys.executable).parent / "rag")
    for args in (["status", "--json"], ["backends", "--json"]):
        out = await asyncio.to_thread(subprocess.run, [rag, *args], env=stack.env, capture_output=True, timeout=60)
        seen.append(out.stdout + out.stderr)
    return seen


def test_no_secret_in_any_response_log_span_or_state_file(stack: RunningStack, otlp: OtlpReceiver) -> None:
    responses = asyncio.run(_flow(stack))
    assert len(responses) > 30
    response_hits = [(i, _hits(b)) for i, b in enumerate(responses) if _hits(b)]
    stack.stop()  # flush every log, and every process's last spans
    # Every span every service exported (names, attributes, resource), as sent on the wire.
    spans = otlp.snapshot()
    span_hits = [(s.service, s.name, _hits(s.raw)) for s in spans if _hits(s.raw)]
    allowed = stack.data_dir / "secrets"
    # The data key that seals inline PutBackend secrets in the shared registry (0600, never returned).
    registry_key = stack.data_dir / "state" / "storage" / "registry.key"
    assert registry_key.stat().st_mode & 0o077 == 0, oct(registry_key.stat().st_mode)
    file_hits: list[tuple[str, list[str]]] = []
    scanned = 0
    for root, _dirs, files in os.walk(stack.data_dir):
        for f in files:
            p = Path(root) / f
            if p.is_relative_to(allowed) or not p.is_file():
                continue
            scanned += 1
            found = _hits(p.read_bytes())
            if found:
                file_hits.append((str(p.relative_to(stack.data_dir)), found))
    log_lines = sum(len(p.read_bytes().splitlines()) for p in (stack.data_dir / "logs").glob("*.log")) + len(
        stack.output().splitlines()
    )
    hits = len(response_hits) + len(file_hits) + len(span_hits)
    harness.record(
        "secrets_scan",
        {"secret_hits": hits, "responses_scanned": len(responses), "files_scanned": scanned, "log_lines": log_lines,
         "scenarios": 1},
    )  # fmt: skip
    assert scanned > 10 and log_lines > 50
    assert {s.service for s in spans} >= {"gateway", "llm_gateway", "retriever", "embedder", "storage"}
    assert any(s.name.startswith("S3.") for s in spans)  # the store's requests, with keys and ids
    assert not span_hits, span_hits
    assert not response_hits, [(i, h, responses[i][:300]) for i, h in response_hits]
    assert not file_hits, file_hits
