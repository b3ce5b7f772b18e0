"""Signed S3 GETs over a bounded urllib3 pool, without botocore's per-call machinery.

A 4 KiB GET through boto3 spends most of its time in Python (parameter validation, endpoint
rules, events, response parsing), more than the store itself on a fast network. Small reads
are the hot path of RAG (the top-k chunks of every answer), so GETs of path-style backends go
through this lean client: botocore's own SigV4 signer, one urllib3 connection pool sized like
the executor, the same wire-level timing as every other call (wire.py), and errors turned into
botocore `ClientError`s so they map exactly as boto3's would. Everything else, and any backend
this does not cover (virtual-hosted addressing, AWS default credential chain, TLS opt-out,
CONNECT tunnels), goes through boto3.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import re
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.exceptions import ClientError
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from . import s3trace
from .model import BackendSpec, Credentials, Kind
from .wire import TimedConnectionMixin

_CODE_RE = re.compile(rb"<Code>([^<]{1,64})</Code>")


class _TimedHTTPConnection(TimedConnectionMixin, HTTPConnection):
    pass


class _TimedHTTPSConnection(TimedConnectionMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TimedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TimedHTTPSConnection


class Body:
    """A response body: `read(n)`, `close()`; the connection goes back to the pool once the
    body was read to its end, and is dropped otherwise."""

    def __init__(self, resp: Any, length: int) -> None:
        self._resp = resp
        self._left = length

    def read(self, n: int | None = None) -> bytes:
        data = self._resp.read(n) if n is not None else self._resp.read()
        self._left -= len(data)
        return data

    def iter_chunks(self, size: int) -> Any:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data

    def close(self) -> None:
        resp, self._resp = self._resp, None
        if resp is None:
            return
        if self._left > 0:
            resp.close()
        resp.release_conn()


def headers_to_resp(h: Any) -> dict[str, Any]:
    """The parts of a GET's headers boto3 would have parsed, under boto3's names."""
    lm = h.get("last-modified")
    out: dict[str, Any] = {
        "ContentLength": int(h.get("content-length", "0") or 0),
        "ETag": h.get("etag", ""),
        "ContentType": h.get("content-type", ""),
        "Metadata": {k[11:].lower(): v for k, v in h.items() if k.lower().startswith("x-amz-meta-")},
    }
    if lm and (when := _http_date(lm)) is not None:
        out["LastModified"] = when
    return out


@functools.lru_cache(maxsize=4096)
def _http_date(value: str) -> datetime.datetime | None:
    """An HTTP date header's instant (cached: the hot objects' Last-Modified values repeat)."""
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


class FastGetter:
    def __init__(
        self,
        spec: BackendSpec,
        creds: Credentials | None,
        endpoint: str,
        pool_size: int,
        connect_timeout_s: float,
        read_timeout_s: float,
    ) -> None:
        u = urlsplit(endpoint)
        self.spec = spec
        timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        if u.scheme == "https":
            self.pool: HTTPConnectionPool = _HTTPSPool(
                u.hostname,
                u.port or 443,
                maxsize=pool_size,
                block=True,
                timeout=timeout,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                ca_certs=spec.ca_bundle_path or None,
            )
        else:
            self.pool = _HTTPPool(
                u.hostname, u.port or 80, maxsize=pool_size, block=True, timeout=timeout, retries=False
            )
        self.base = f"{u.scheme}://{u.netloc}"
        self.signer = (
            S3SigV4Auth(
                BotoCredentials(creds.access_key_id, creds.secret_access_key, creds.session_token or None),
                "s3",
                spec.region or "us-east-1",
            )
            if creds is not None
            else None
        )

    @staticmethod
    def supports(spec: BackendSpec, creds: Credentials | None, endpoint: str, proxies: object) -> bool:
        return bool(
            endpoint
            and spec.effective_addressing == "path"
            and not spec.insecure_skip_verify
            and proxies is None
            and (creds is not None or spec.kind is not Kind.AWS_S3)
        )

    def open(self, bucket: str, key: str, rng: str = "", if_match: str = "") -> tuple[Body, dict[str, Any]]:
        """Sends a GET; returns the body and boto3-style response fields. Blocking."""
        path = "/" + quote(bucket, safe="") + "/" + quote(key, safe="/~")
        headers: dict[str, str] = {}
        if rng:
            headers["Range"] = rng
        if if_match:
            headers["If-Match"] = if_match
        if self.signer is not None:
            req = AWSRequest(method="GET", url=self.base + path, headers=headers)
            self.signer.add_auth(req)
            headers = {k: v if isinstance(v, str) else v.decode() for k, v in req.headers.items()}
        s3trace.add_traceparent(headers)  # after signing: unsigned, as for boto3 (s3trace.py)
        r = self.pool.urlopen("GET", path, headers=headers, preload_content=False, retries=False, redirect=False)
        s3trace.record_headers(r.headers, r.status)
        if r.status >= 300:
            try:
                raw = r.read()
            finally:
                r.release_conn()
            m = _CODE_RE.search(raw or b"")
            code = m.group(1).decode() if m else str(r.status)
            raise ClientError(
                {"Error": {"Code": code, "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": r.status}}, "GetObject"
            )
        resp = headers_to_resp(r.headers)
        return Body(r, resp["ContentLength"]), resp

    def close(self) -> None:
        self.pool.close()
