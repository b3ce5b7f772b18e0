"""The ingestion lease and its fence: one holder at a time, take-over only after expiry, a stale
holder's writes refused; the Kubernetes backend against a local server speaking the Lease API
(GET/POST/PUT with resourceVersion, 409 on a stale version or an existing object)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from kernel.errors import ServiceError
from services.retriever.job_model import JobRecord
from services.retriever.job_state import JobStore
from services.retriever.lease import LeaseKeeper, StoreLeaseBackend
from services.retriever.lease_k8s import KubeLeaseBackend
from services.retriever.ports import PreconditionFailed
from tests.support.retriever_doubles import DictStore

pytestmark = pytest.mark.asyncio

D = 0.3  # lease duration in these tests, seconds


async def wait_until(cond: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_holder_takeover_after_expiry_and_fence() -> None:
    store = DictStore()
    a = LeaseKeeper(StoreLeaseBackend(store), "a", D)
    b = LeaseKeeper(StoreLeaseBackend(store), "b", D)
    await a.start()
    await b.start()
    try:
        assert a.held and a.token == 1 and not b.held
        await asyncio.sleep(3 * D)  # A renews: B never takes it
        assert a.held and not b.held and b.held_by == "a"
        with pytest.raises(ServiceError) as err:
            await b.check()
        assert err.value.reason == "FENCED_WRITE" and "holder is a" in err.value.message

        # A "dies": it stops renewing without releasing (as SIGKILL would).
        assert a._task is not None
        a._task.cancel()
        t0 = time.monotonic()
        await wait_until(lambda: b.held)
        assert time.monotonic() - t0 >= 0.5 * D  # not before A's lease could have run out
        assert b.token == 2
        # A's own clock has run past its renew deadline: its writes are refused.
        assert not a.held
        with pytest.raises(ServiceError) as err:
            await a.check()
        assert err.value.reason == "FENCED_WRITE" and "no longer holds" in err.value.message
    finally:
        await a.stop(release=False)
        await b.stop()


async def test_a_renewal_that_landed_but_reported_a_conflict_keeps_the_lease() -> None:
    """A store write retried after a lost response sees its own change and reports a conflict."""
    store = DictStore()
    a = LeaseKeeper(StoreLeaseBackend(store), "a", 30.0)
    await a.step()
    real = store.put_if

    async def lands_then_conflicts(key: str, data: bytes, **kw: object) -> str:
        await real(key, data, **kw)  # type: ignore[arg-type]
        raise PreconditionFailed(key)

    store.put_if = lands_then_conflicts  # type: ignore[method-assign]
    await a.step()
    store.put_if = real  # type: ignore[method-assign]
    assert a.held and a.token == 1
    await a.step()
    assert a.held


async def test_graceful_stop_hands_over_at_once() -> None:
    store = DictStore()
    a = LeaseKeeper(StoreLeaseBackend(store), "a", 30.0)
    b = LeaseKeeper(StoreLeaseBackend(store), "b", 30.0)
    await a.start()
    await b.start()
    await a.stop()  # releases
    await b.step()
    assert b.held and b.token == 2
    await b.stop()


async def test_a_stale_holders_job_write_is_refused() -> None:
    store = DictStore()
    old, new = JobStore(store), JobStore(store)
    rec = JobRecord("j1", "kb", "running", "write", {}, 1, 1, fence=1, holder="a")
    await old.create(rec, [])
    adopted = await new.take("j1")
    assert adopted is not None
    adopted.fence, adopted.holder = 2, "b"
    await new.write(adopted)  # the new holder's adoption
    rec.batches = ["jobs/j1/batches/000001-g1"]
    with pytest.raises(ServiceError) as err:
        await old.write(rec)  # the old holder's next commit
    assert err.value.reason == "FENCED_WRITE" and "taken over" in err.value.message
    stored = await new.read("j1")
    assert stored is not None and stored.holder == "b" and stored.batches == []


async def test_a_job_write_that_landed_unacknowledged_is_not_a_take_over() -> None:
    store = DictStore()
    js = JobStore(store)
    rec = JobRecord("j2", "kb", "running", "write", {}, 1, 1, fence=1, holder="a")
    await js.create(rec, [])
    real = store.put_if

    async def lands_then_fails(key: str, data: bytes, **kw: object) -> str:
        await real(key, data, **kw)  # type: ignore[arg-type]
        raise OSError("connection reset after the write")

    store.put_if = lands_then_fails  # type: ignore[method-assign]
    rec.stage = "index"
    with pytest.raises(OSError):
        await js.write(rec)  # applied by the store, never acknowledged
    store.put_if = real  # type: ignore[method-assign]
    rec.state, rec.stage = "cancelled", "done"
    await js.write(rec)  # goes on from the unacknowledged write instead of reporting a take-over
    stored = await js.read("j2")
    assert stored is not None and stored.state == "cancelled"


class FakeApiServer:
    """The coordination.k8s.io/v1 Lease endpoints of an API server, with its concurrency rules:
    resourceVersion changes on every write, PUT with a stale one is 409 Conflict, POST of an
    existing name is 409 AlreadyExists, and a missing or wrong bearer token is 401."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.versions = itertools.count(100)
        self.requests: list[tuple[str, int]] = []

    def app(self) -> web.Application:
        app = web.Application()
        base = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
        app.router.add_get(base + "/{name}", self.get)
        app.router.add_post(base, self.post)
        app.router.add_put(base + "/{name}", self.put)
        return app

    def _status(self, code: int, reason: str, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message}
        return web.json_response(body, status=code)

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._status(401, "Unauthorized", "Unauthorized")
        return None

    def _validate(self, body: dict[str, Any], ns: str) -> str:
        assert body["apiVersion"] == "coordination.k8s.io/v1" and body["kind"] == "Lease"
        assert body["metadata"]["namespace"] == ns
        allowed = {"holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime", "leaseTransitions"}
        assert set(body["spec"]) <= allowed, body["spec"]
        assert isinstance(body["spec"]["leaseDurationSeconds"], int)
        assert isinstance(body["spec"]["leaseTransitions"], int)
        return str(body["metadata"]["name"])

    async def get(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        key = (request.match_info["ns"], request.match_info["name"])
        self.requests.append(("GET", 200 if key in self.leases else 404))
        if key not in self.leases:
            return self._status(404, "NotFound", f'leases.coordination.k8s.io "{key[1]}" not found')
        return web.json_response(self.leases[key])

    async def post(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        ns = request.match_info["ns"]
        body = await request.json()
        key = (ns, self._validate(body, ns))
        if key in self.leases:
            self.requests.append(("POST", 409))
            return self._status(409, "AlreadyExists", f'leases.coordination.k8s.io "{key[1]}" already exists')
        body["metadata"]["resourceVersion"] = str(next(self.versions))
        self.leases[key] = body
        self.requests.append(("POST", 201))
        return web.json_response(body, status=201)

    async def put(self, request: web.Request) -> web.Response:
        if (denied := self._auth(request)) is not None:
            return denied
        ns = request.match_info["ns"]
        body = await request.json()
        key = (ns, self._validate(body, ns))
        have = self.leases.get(key)
        if have is None:
            return self._status(404, "NotFound", "not found")
        if body["metadata"].get("resourceVersion") != have["metadata"]["resourceVersion"]:
            self.requests.append(("PUT", 409))
            return self._status(
                409,
                "Conflict",
                "Operation cannot be fulfilled on leases.coordination.k8s.io: the object has been modified",
            )
        body["metadata"]["resourceVersion"] = str(next(self.versions))
        self.leases[key] = body
        self.requests.append(("PUT", 200))
        return web.json_response(body)


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[FakeApiServer, str, Path]]:
    server = FakeApiServer("tok-123")
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("tok-123\n")
    (sa / "namespace").write_text("ddnrag\n")
    try:
        yield server, f"http://127.0.0.1:{port}", sa
    finally:
        await runner.cleanup()


async def test_kubernetes_lease_backend(api: tuple[FakeApiServer, str, Path]) -> None:
    server, url, sa = api
    ba = KubeLeaseBackend("ddnrag-retriever-ingest", api=url, sa_dir=str(sa))
    bb = KubeLeaseBackend("ddnrag-retriever-ingest", api=url, sa_dir=str(sa))
    a, b = LeaseKeeper(ba, "pod-a", 1.0), LeaseKeeper(bb, "pod-b", 1.0)
    try:
        await a.step()
        await b.step()
        assert a.held and a.token == 1 and not b.held
        lease = server.leases[("ddnrag", "ddnrag-retriever-ingest")]
        assert lease["spec"]["holderIdentity"] == "pod-a" and lease["spec"]["leaseTransitions"] == 1
        assert lease["spec"]["renewTime"].endswith("Z")
        # Two replicas racing on one version: the API server's 409 lets exactly one win.
        rec, version = await bb.read()
        assert rec is not None and rec.holder == "pod-a"
        await a.step()  # A renews: the version B read is now stale
        await b._take(version, rec.generation + 1, time.monotonic())
        assert not b.held and ("PUT", 409) in server.requests
        # A dies; after B has seen the lease unchanged for a whole duration it takes over.
        await b.step()
        await asyncio.sleep(1.1)
        await b.step()
        assert b.held and b.token == 2
        assert server.leases[("ddnrag", "ddnrag-retriever-ingest")]["spec"]["holderIdentity"] == "pod-b"
        await a.step()  # A comes back: it sees it was taken over and stops
        assert not a.held
        (sa / "token").write_text("wrong")
        with pytest.raises(ServiceError) as err:
            await bb.read()
        assert "401" in err.value.message and "leases" in err.value.message
    finally:
        await ba.close()
        await bb.close()
