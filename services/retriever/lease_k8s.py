"""The ingestion lease as a Kubernetes `coordination.k8s.io/v1` Lease, through the API server.

Compare-and-swap rides on `metadata.resourceVersion`: a PUT naming a stale version gets 409
Conflict, a POST of an existing Lease gets 409 AlreadyExists. The fence token (generation) is
`spec.leaseTransitions`. Credentials are the pod's service-account token (re-read on every call,
since bound tokens rotate) and CA. RBAC: get, create and update on `leases` in the namespace.
"""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from kernel.errors import unavailable

from .lease import LeaseConflict, LeaseRecord

API = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


def _time(unix_ns: int) -> str | None:
    if not unix_ns:
        return None
    return datetime.fromtimestamp(unix_ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _unix_ns(value: str | None) -> int:
    if not value:
        return 0
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)


class KubeLeaseBackend:
    def __init__(self, name: str, *, api: str = "", sa_dir: str = "", namespace: str = "") -> None:
        sa = Path(sa_dir or "/var/run/secrets/kubernetes.io/serviceaccount")
        if not api:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST", ""), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise ValueError(
                    "DDNRAG_RETRIEVER_LEASE=kubernetes needs the API server: set DDNRAG_RETRIEVER_KUBE_API or run in a pod"
                )
            api = f"https://{host}:{port}"
        self.name = name
        self.api = api.rstrip("/")
        self.token_file = sa / "token"
        self.namespace = namespace or (sa / "namespace").read_text().strip()
        ca = sa / "ca.crt"
        self.ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca.exists() else True
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        token = self.token_file.read_text().strip() if self.token_file.exists() else ""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = self.api + API.format(ns=self.namespace) + path
        try:
            async with self._session.request(method, url, json=body, headers=headers, ssl=self.ssl) as resp:
                data = await resp.json(content_type=None) if resp.content_length != 0 else {}
                return resp.status, data or {}
        except (aiohttp.ClientError, TimeoutError) as err:
            raise unavailable(f"the Kubernetes API server at {self.api} did not answer: {err}") from None

    def _body(self, rec: LeaseRecord, version: str = "") -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if version:
            meta["resourceVersion"] = version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": {
                "holderIdentity": rec.holder or None,
                "leaseDurationSeconds": max(1, round(rec.duration_s)),
                "acquireTime": _time(rec.renewed_unix_ns),
                "renewTime": _time(rec.renewed_unix_ns),
                "leaseTransitions": rec.generation,
            },
        }

    def _check(self, status: int, data: dict[str, Any], what: str) -> None:
        if status == 409:
            raise LeaseConflict(self.name)
        if status >= 300:
            raise unavailable(
                f"the Kubernetes API server refused to {what} Lease {self.namespace}/{self.name}: {status} "
                f"{data.get('reason', '')} {data.get('message', '')[:200]} (does the retriever's service account have "
                "get/create/update on leases.coordination.k8s.io?)"
            )

    async def read(self) -> tuple[LeaseRecord | None, str]:
        status, data = await self._call("GET", f"/{self.name}")
        if status == 404:
            return None, ""
        self._check(status, data, "read")
        spec = data.get("spec", {})
        rec = LeaseRecord(
            spec.get("holderIdentity") or "",
            int(spec.get("leaseTransitions") or 0),
            float(spec.get("leaseDurationSeconds") or 0),
            _unix_ns(spec.get("renewTime")),
        )
        return rec, str(data["metadata"]["resourceVersion"])

    async def create(self, rec: LeaseRecord) -> str:
        status, data = await self._call("POST", "", self._body(rec))
        self._check(status, data, "create")
        return str(data["metadata"]["resourceVersion"])

    async def replace(self, rec: LeaseRecord, version: str) -> str:
        status, data = await self._call("PUT", f"/{self.name}", self._body(rec, version))
        self._check(status, data, "update")
        return str(data["metadata"]["resourceVersion"])
