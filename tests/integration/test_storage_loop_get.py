"""BatchGet through each GET path of the storage service (the event-loop client, fastget.py's
pooled urllib3, boto3) against the real SeaweedFS: the same bytes, object info, per-item errors
and measured transfers, whichever path served them."""

from __future__ import annotations

import os

from clients.storage import StorageClient
from services.storage.aioget import AsyncGetter
from services.storage.errors import map_error
from services.storage.model import BackendSpec, Credentials, Kind
from services.storage.server import create_server

from .test_storage_grpc import storage_cfg

KEYS = ["lg/big", "lg/empty", "lg/sp ace/ä~+=&?.txt", "lg/missing"]


async def test_batch_get_paths_agree(seaweed, s3_bucket, tmp_path) -> None:
    big = os.urandom(70_000)
    s3 = seaweed.boto3_client()
    s3.put_object(Bucket=s3_bucket, Key=KEYS[0], Body=big, ContentType="text/x", Metadata={"m": "v"})
    s3.put_object(Bucket=s3_bucket, Key=KEYS[1], Body=b"")
    s3.put_object(Bucket=s3_bucket, Key=KEYS[2], Body=b"special")
    seen = []
    for name, overrides in (("loop", {}), ("fast", {"loop_get": False}), ("boto3", {"fast_get": False})):
        app, port = await create_server(storage_cfg(seaweed, s3_bucket, tmp_path / name, **overrides))
        try:
            store = await app.core.backends.store("")  # type: ignore[attr-defined]
            assert (store.aio is not None) is (name == "loop") and (store.fast is not None) is (name != "boto3")
            async with StorageClient(f"127.0.0.1:{port}") as c:
                for _ in range(2):  # the second time over kept-alive connections
                    resp = await c.batch_get(KEYS)
            rows = []
            for r in resp.results:
                i = r.info
                rows.append((r.key, r.status.code, r.data, i.size_bytes, i.etag, i.content_type, dict(i.metadata)))
                if r.status.code == 0:
                    assert r.transfer.bytes == len(r.data)
                    assert 0 < r.transfer.ttfb_ns <= r.transfer.total_ns
                    assert abs(i.last_modified_unix_ns - resp.results[0].info.last_modified_unix_ns) < 600e9
            seen.append(rows)
        finally:
            await app.stop(0)
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][0][2] == big and seen[0][0][5] == "text/x" and seen[0][0][6] == {"m": "v"}
    assert seen[0][1][2] == b"" and seen[0][2][2] == b"special"
    assert seen[0][3][1] == 5  # NOT_FOUND, as its own item's status


async def test_wrong_credentials_are_unauthenticated(seaweed, s3_bucket) -> None:
    seaweed.boto3_client().put_object(Bucket=s3_bucket, Key="lg/x", Body=b"x")
    spec = BackendSpec("t", Kind.S3_COMPATIBLE, endpoint=seaweed.endpoint, bucket=s3_bucket)
    good = AsyncGetter(spec, Credentials(seaweed.access_key_id, seaweed.secret_access_key), seaweed.endpoint, 2, 3, 10)
    bad = AsyncGetter(spec, Credentials(seaweed.access_key_id, "not-the-secret"), seaweed.endpoint, 2, 3, 10)
    try:
        assert (await good.get(s3_bucket, "lg/x")).body == b"x"
        try:
            await bad.get(s3_bucket, "lg/x")
        except Exception as exc:  # noqa: BLE001 - checked below
            err = map_error(exc, "t", s3_bucket, "lg/x")
        else:
            raise AssertionError("a wrong secret was accepted")
    finally:
        good.close()
        bad.close()
    assert err.reason == "BACKEND_UNAUTHENTICATED" and "not-the-secret" not in err.message
