"""The hot-path SigV4 signer (services/storage/sigv4.py) writes botocore's exact Authorization
header for the same GET at the same instant: with and without a session token, Range and
If-Match headers, and keys that need encoding."""

from __future__ import annotations

import datetime

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from services.storage.sigv4 import GetSigner, object_path

NOW = 1_796_000_000.0


@pytest.mark.parametrize("token", ["", "session-token/xyz="])
@pytest.mark.parametrize("extra", [{}, {"Range": "bytes=0-9"}, {"If-Match": '"abc"'}])
@pytest.mark.parametrize("key", ["chunks/c/0a1b", "docs/a b/ä~x+y=z&q?.txt"])
@pytest.mark.parametrize("host", ["127.0.0.1:8333", "s3.example.com"])
def test_signature_is_botocores(monkeypatch, token: str, extra: dict[str, str], key: str, host: str) -> None:
    at = datetime.datetime.fromtimestamp(NOW, datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
    path = object_path("bucket-1", key)
    ref = AWSRequest(method="GET", url=f"http://{host}{path}", headers=dict(extra))
    botocore.auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", "se/cr+et", token or None), "s3", "eu-west-1").add_auth(ref)

    mine = GetSigner("AKIDEXAMPLE", "se/cr+et", token, "eu-west-1").headers(host, path, extra, now=NOW)

    assert mine["Authorization"] == ref.headers["Authorization"]
    for name in ("X-Amz-Date", "X-Amz-Content-SHA256", *extra):
        assert mine[name] == ref.headers[name]
    assert mine.get("X-Amz-Security-Token", "") == (ref.headers.get("X-Amz-Security-Token") or "")


def test_the_signing_key_follows_the_day() -> None:
    s = GetSigner("AK", "SK", region="us-east-1")
    a = s.headers("h", "/b/k", now=NOW)
    b = s.headers("h", "/b/k", now=NOW + 86_400)
    assert a["X-Amz-Date"][:8] != b["X-Amz-Date"][:8]
    assert a["Authorization"].split("Credential=")[1][:20] != b["Authorization"].split("Credential=")[1][:20]
    # The cached key of the second day signs as a fresh signer would.
    assert (
        b["Authorization"]
        == GetSigner("AK", "SK", region="us-east-1").headers("h", "/b/k", now=NOW + 86_400)["Authorization"]
    )
