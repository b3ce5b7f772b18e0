"""The bucket browser, collection clearing and the upload refusals against real gRPC test doubles:
listing by prefix with pages, downloading one object as an attachment, refusing bad prefixes and
keys with a message a person understands, and clearing only what may be cleared."""

from __future__ import annotations

import io
import urllib.parse

import aiohttp

from tests.integration.test_gateway_doubles import Doubles, doubles, make_app

__all__ = ["doubles"]


def form(name: str, data: bytes, collection: str = "default") -> aiohttp.FormData:
    fd = aiohttp.FormData()
    fd.add_field("collection", collection)
    fd.add_field("file", io.BytesIO(data), filename=name, content_type="application/octet-stream")
    return fd


async def test_browse_pages_folders_and_download(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    for i in range(5):
        doubles.storage.objects[f"auto_ingest/a/{i}.txt"] = b"x" * (i + 1)
    doubles.storage.objects["auto_ingest/b/notes é.md"] = b"# hello world"
    doubles.storage.objects["other/z"] = b"z"

    first = await (await client.get("/api/objects?prefix=auto_ingest/&page_size=4")).json()
    assert [o["key"] for o in first["objects"]] == [f"auto_ingest/a/{i}.txt" for i in range(4)]
    assert first["objects"][2]["size_bytes"] == 3 and first["folders"] == ["auto_ingest/a/"]
    assert first["next_page_token"]
    q = urllib.parse.urlencode({"prefix": "auto_ingest/", "page_size": 4, "page_token": first["next_page_token"]})
    second = await (await client.get(f"/api/objects?{q}")).json()
    assert [o["key"] for o in second["objects"]] == ["auto_ingest/a/4.txt", "auto_ingest/b/notes é.md"]
    assert second["next_page_token"] == ""

    summary = await (await client.get("/api/objects/summary?prefix=auto_ingest/")).json()
    assert (summary["objects"], summary["size_bytes"], summary["complete"]) == (6, 1 + 2 + 3 + 4 + 5 + 13, True)

    resp = await client.get("/api/objects/download?" + urllib.parse.urlencode({"key": "auto_ingest/b/notes é.md"}))
    assert resp.status == 200
    assert await resp.read() == b"# hello world"
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="notes__.md"')
    assert "filename*=UTF-8''notes%20%C3%A9.md" in resp.headers["Content-Disposition"]


async def test_bad_keys_and_prefixes_are_refused_plainly(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    doubles.storage.objects["keep/me"] = b"1"
    cases = [
        ("GET", "/api/objects?prefix=../etc/", 400, "'..' segment"),
        ("GET", "/api/objects?prefix=a/../../b", 400, "'..' segment"),
        ("GET", "/api/objects?prefix=/abs/", 400, "absolute"),
        ("GET", "/api/objects?prefix=a%00b", 400, "control characters"),
        ("GET", "/api/objects/download?key=", 400, "one object"),
        ("GET", "/api/objects/download?key=keep/", 400, "one object"),
        ("GET", "/api/objects/download?key=../keep/me", 400, "'..' segment"),
        ("GET", "/api/objects/download?key=keep/missing", 404, "no object"),
        ("DELETE", "/api/objects", 400, "give a prefix"),
        ("DELETE", "/api/objects?prefix=./", 400, "'.' or '..'"),
        ("DELETE", "/api/objects?prefix=chunks/default/", 409, "Clear the collection instead"),
        ("DELETE", "/api/objects?prefix=doc", 409, "a collection's data"),
        ("DELETE", "/api/objects?prefix=jobs/", 409, "the platform's own state"),
        ("GET", "/api/objects?page_size=0", 400, "page_size"),
    ]
    for method, path, status, words in cases:
        resp = await client.request(method, path)
        body = await resp.json()
        assert resp.status == status, (path, body)
        assert words in body["error"]["message"], (path, body)
    assert doubles.storage.objects == {"keep/me": b"1"}  # nothing was deleted by a refusal


async def test_clear_prefix_deletes_only_under_it(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    doubles.storage.objects.update({"auto_ingest/a": b"1", "auto_ingest/b": b"2", "auto_ingested": b"3"})
    resp = await client.delete("/api/objects?prefix=auto_ingest/")
    assert resp.status == 200
    assert (await resp.json()) == {"prefix": "auto_ingest/", "deleted": 2}
    assert list(doubles.storage.objects) == ["auto_ingested"]


async def test_clear_collection_and_unknown_collection(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    await client.post("/api/documents", data=form("a.md", b"alpha"))
    info = await (await client.get("/api/collections/default")).json()
    assert info["collection"]["documents"] == 1
    resp = await client.delete("/api/collections/default")
    assert resp.status == 200
    assert (await resp.json())["documents"] == 1

    for method in ("GET", "DELETE"):
        resp = await client.request(method, "/api/collections/nope")
        body = await resp.json()
        assert resp.status == 404, body
        assert body["error"]["reason"] == "COLLECTION_NOT_FOUND"
        assert "'nope' does not exist" in body["error"]["message"]
    resp = await client.delete("/api/collections/Bad..Name")
    assert resp.status == 400
    assert (await resp.json())["error"]["reason"] == "INVALID_COLLECTION"


async def test_upload_with_clear_empties_the_collection_first(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    resp = await client.post("/api/documents?clear=1", data=form("b.md", b"beta", collection="fresh"))
    assert resp.status == 202, await resp.text()  # a collection that does not exist yet is fine
    assert doubles.retriever.deleted_collections == ["fresh"]
    assert doubles.retriever.started[-1].collection == "fresh"
    await client.post("/api/documents", data=form("c.md", b"gamma", collection="fresh"))
    assert doubles.retriever.deleted_collections == ["fresh"]  # without ?clear nothing is cleared


async def test_legacy_office_files_are_refused_naming_the_accepted_formats(aiohttp_client, doubles: Doubles) -> None:
    client = await aiohttp_client(make_app(doubles))
    for name, modern in (("report.doc", ".docx"), ("sheet.XLS", ".xlsx"), ("deck.ppt", ".pptx")):
        resp = await client.post("/api/documents", data=form(name, b"\xd0\xcf\x11\xe0legacy"))
        body = await resp.json()
        assert resp.status == 415, body
        msg = body["error"]["message"]
        assert f"save it as {modern}" in msg and "accepted: pdf, docx, pptx, xlsx" in msg, msg
    assert doubles.storage.objects == {}
