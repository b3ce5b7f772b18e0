"""PutBackend / RemoveBackend fuzzed over gRPC against a throwaway storage service (its own
state dir and bucket on the session's SeaweedFS).

Random and hostile backends (bad names, endpoints, kinds, prefixes, credential sources, shaping)
are either stored whole or refused with a client-error code -- never INTERNAL, UNKNOWN or
UNAVAILABLE -- and a refused one is never listed. Calls cancelled at random moments, and a
restart in the middle of them, never leave a partly-written registry live: a fresh server over
the same state lists exactly what the first one listed, every entry complete and usable.
Only the gRPC API is used, so the test holds wherever the registry is kept.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clients.base import ServiceCallError
from clients.storage import StorageClient
from ddnrag.storage.v1 import storage_service_pb2 as pb
from kernel.config import load_env
from services.storage.config import StorageConfig
from services.storage.server import create_server
from testkit.faults import harness

pytestmark = [pytest.mark.e2e]

CASES = 300 if os.environ.get("DDNRAG_FUZZ_FULL") == "1" else 60
BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}
NAMES = ["ok1", "ok-2", "x" * 63, "default", "", "UPPER", "a/b", "../etc", "x" * 64, "sp ace", "nul\x00", "é", "-lead"]
KINDS = [pb.BACKEND_KIND_S3_COMPATIBLE, pb.BACKEND_KIND_AWS_S3, pb.BACKEND_KIND_DDN_INFINIA, 0, 99]
PREFIXES = [[], ["docs/"], ["../"], ["/abs"], [""], ["x" * 2000], ["a\x00b"]]


def cfg_for(seaweed, bucket: str, state: Path) -> StorageConfig:
    return load_env(
        StorageConfig,
        environ={},
        port=0,
        metrics_port=0,
        state_dir=str(state),
        default_endpoint=seaweed.endpoint,
        default_bucket=bucket,
        default_access_key_id=seaweed.access_key_id,
        default_secret_access_key=seaweed.secret_access_key,
        max_retries=1,
        retry_base_ms=5.0,
    )


@pytest.fixture
async def server(seaweed, s3_bucket, tmp_path) -> AsyncIterator[tuple[StorageClient, StorageConfig]]:
    cfg = cfg_for(seaweed, s3_bucket, tmp_path / "state")
    app, port = await create_server(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=20, retries=0)
    try:
        yield client, cfg
    finally:
        await client.close()
        await app.stop(0)


def random_backend(rng: random.Random, seaweed, bucket: str) -> pb.Backend:
    endpoint = rng.choice(
        [seaweed.endpoint, "http://127.0.0.1:1", "ftp://x", "http://[::1", "javascript:alert(1)", "", "x" * 3000]
    )
    b = pb.Backend(
        name=rng.choice(NAMES) if rng.random() < 0.5 else f"f{rng.randrange(40)}",
        kind=rng.choice(KINDS),
        endpoint=endpoint,
        region=rng.choice(["us-east-1", "", "x" * 500, "\x00"]),
        bucket=rng.choice([bucket, "", "UPPER_bad", "b" * 300, "../x"]),
        addressing_style=rng.choice([0, 1, 2, 77]),
        insecure_skip_verify=rng.random() < 0.2,
        ca_bundle_path=rng.choice(["", "", "/nonexistent.pem", "/etc/passwd"]),
        allowed_prefixes=rng.choice(PREFIXES),
    )
    creds = rng.randrange(5)
    if creds == 1:
        b.access_key_id, b.secret_access_key = seaweed.access_key_id, seaweed.secret_access_key
    elif creds == 2:
        b.credentials_env_prefix = rng.choice(["NOPE", "PATH", "x y", ""])
    elif creds == 3:
        b.credentials_file = rng.choice(["/etc/shadow", "/nonexistent", "../../x"])
    elif creds == 4:
        b.access_key_id = "only-the-id"
    if rng.random() < 0.2:
        b.shaping.CopyFrom(pb.Shaping(rtt_ms=rng.choice([-1, 0, 20, 10**9]), bandwidth_mbps=rng.choice([-5, 0, 100])))
    return b


def listed(resp: pb.ListBackendsResponse) -> dict[str, pb.Backend]:
    return {b.name: b for b in resp.backends}


async def test_put_and_remove_backend_fuzz(server, seaweed, s3_bucket) -> None:
    client, _ = server
    rng = random.Random(5)
    codes: dict[str, int] = {}
    crashes: list[str] = []
    for _ in range(CASES):
        before = listed(await client.list_backends())
        if rng.random() < 0.75:
            b = random_backend(rng, seaweed, s3_bucket)
            try:
                await client.put_backend(b)
                code = grpc.StatusCode.OK
            except ServiceCallError as err:
                code = err.code
            after = listed(await client.list_backends())
            if code != grpc.StatusCode.OK and b.name in after:
                # refused: the name is listed only if it was there before, unchanged
                assert before.get(b.name) == after[b.name], f"a refused PutBackend changed {b.name!r}"
        else:
            name = rng.choice(NAMES + list(before))
            try:
                await client.remove_backend(name)
                code = grpc.StatusCode.OK
            except ServiceCallError as err:
                code = err.code
            after = listed(await client.list_backends())
            if code == grpc.StatusCode.OK:
                assert name not in after
            else:
                assert set(after) == set(before)
        codes[code.name] = codes.get(code.name, 0) + 1
        if code in BAD:
            crashes.append(f"{code.name}")
    assert any(b.is_default for b in (await client.list_backends()).backends)  # the default stays
    harness.record("fuzz_backends", {"fuzz_cases": CASES, "grpc_internal": len(crashes), "codes": codes})
    assert crashes == [], crashes
    assert codes.get("OK", 0) > 0 and codes.get("INVALID_ARGUMENT", 0) > 0, codes


async def test_cancelled_and_interrupted_writes_never_leave_a_partial_registry(seaweed, s3_bucket, tmp_path) -> None:
    cfg = cfg_for(seaweed, s3_bucket, tmp_path / "state")
    rng = random.Random(11)
    app, port = await create_server(cfg)
    client = StorageClient(f"127.0.0.1:{port}", timeout_s=20, retries=0)

    def good(i: int) -> pb.Backend:
        return pb.Backend(
            name=f"c{i % 6}",
            kind=pb.BACKEND_KIND_S3_COMPATIBLE,
            endpoint=seaweed.endpoint,
            bucket=s3_bucket,
            region="us-east-1",
            access_key_id=seaweed.access_key_id,
            secret_access_key=seaweed.secret_access_key,
            allowed_prefixes=[f"p{i}/"],
        )

    async def cancelled(coro) -> None:
        task = asyncio.ensure_future(coro)
        await asyncio.sleep(rng.random() * 0.03)
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, ServiceCallError):
            pass

    try:
        for round_ in range(4):
            ops = [
                cancelled(client.put_backend(good(round_ * 10 + i)))
                if rng.random() < 0.7
                else cancelled(client.remove_backend(f"c{i % 6}"))
                for i in range(10)
            ]
            await asyncio.gather(*ops)
        await asyncio.sleep(0.5)  # writes the cancelled calls left running land by now
        first = listed(await client.list_backends())
        # and a stop in the middle of a burst of writes
        burst = [asyncio.ensure_future(client.put_backend(good(100 + i))) for i in range(6)]
        await asyncio.sleep(0.01)
        await app.stop(0)
        await asyncio.gather(*burst, return_exceptions=True)
    finally:
        await client.close()
    app2, port2 = await create_server(cfg)
    client2 = StorageClient(f"127.0.0.1:{port2}", timeout_s=20, retries=0)
    try:
        second = listed(await client2.list_backends())
        for name, b in second.items():
            assert b.kind and b.bucket and (b.is_default or b.has_credentials), f"incomplete backend {name!r}: {b}"
            if not b.is_default:
                assert (await client2.test_connection(name)).ok, name
        # Only the burst cut by the stop may differ: each of its backends is there whole or not at all.
        for name in set(first) | set(second):
            if name in first and name in second:
                assert first[name].allowed_prefixes == second[name].allowed_prefixes or name in {
                    f"c{i % 6}" for i in range(100, 106)
                }
    finally:
        await client2.close()
        await app2.stop(0)


@pytest.mark.parametrize(
    "change",
    [
        {"name": "UPPER"},
        {"name": "x" * 64},
        {"name": "../etc"},
        {"endpoint": "ftp://x"},
        {"endpoint": "javascript:alert(1)"},
        {"endpoint": "http://[::1"},
        {"bucket": ""},
        {"kind": 99},
        {"allowed_prefixes": ["../"]},
        {"allowed_prefixes": ["/abs"]},
    ],
)
async def test_invalid_backend_is_refused(server, seaweed, s3_bucket, change: dict) -> None:
    client, _ = server
    b = pb.Backend(name="valid", kind=pb.BACKEND_KIND_S3_COMPATIBLE, endpoint=seaweed.endpoint, bucket=s3_bucket)
    for field, value in change.items():
        if field == "allowed_prefixes":
            b.allowed_prefixes.extend(value)
        else:
            setattr(b, field, value)
    with pytest.raises(ServiceCallError) as err:
        await client.put_backend(b)
    assert err.value.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), err.value
    assert b.name not in listed(await client.list_backends())
