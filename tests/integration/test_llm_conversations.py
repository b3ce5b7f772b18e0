"""Conversations over real gRPC: two llm_gateway replicas keep them in real object storage
(SeaweedFS behind the storage service), so a conversation made on one is continued on the other;
and the LLM rewrite prompt against the OpenAI-protocol test server. The retriever is a fixed
test double here (retrieval over the real retriever is tests/integration/test_llm_stack.py)."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.base import ServiceCallError
from clients.llm import LlmClient
from clients.storage import StorageClient
from ddnrag.llm.v1 import llm_service_pb2 as pb
from embedding.local import LocalEncoder
from kernel.config import load_env
from services.llm_gateway.config import LlmGatewayConfig
from services.llm_gateway.domain import Passage, RetrievedChunk, SearchResult
from services.llm_gateway.server import create_server as create_llm
from services.storage.config import StorageConfig
from services.storage.server import create_server as create_storage
from testkit.openai_server import OpenAITestServer, split_tokens
from tests.conftest import S3Server

SAMPLE = Path(__file__).resolve().parents[2] / "sample_corpus"
Q1 = "What does time to first byte measure and why does it matter for RAG?"
Q2 = "And how does it compare with throughput?"


class SampleSearcher:
    """Test double of the retriever: the TTFB and Infinia documents, whatever the query; records
    the queries it was sent."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(self, collection: str, query: str, **_: Any) -> SearchResult:
        self.queries.append(query)
        names = ("ttfb-and-latency.md", "ddn-infinia.md")
        return SearchResult(
            tuple(
                RetrievedChunk(Passage((SAMPLE / n).read_text(), chunk_id=f"c{i}", document_name=n))
                for i, n in enumerate(names)
            )
        )


@pytest.fixture
async def storage_addr(seaweed: S3Server, tmp_path: Path) -> AsyncIterator[str]:
    bucket = f"conv-{random.randrange(10**6)}"
    seaweed.boto3_client().create_bucket(Bucket=bucket)
    app, port = await create_storage(
        load_env(
            StorageConfig,
            environ={},
            port=0,
            metrics_port=0,
            state_dir=str(tmp_path / "s"),
            default_endpoint=seaweed.endpoint,
            default_bucket=bucket,
            default_access_key_id=seaweed.access_key_id,
            default_secret_access_key=seaweed.secret_access_key,
        )
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await app.stop(0)


async def _llm(tmp_path: Path, name: str, searcher: Any, **cfg: Any) -> tuple[Any, LlmClient]:
    config = load_env(LlmGatewayConfig, environ={}, port=0, metrics_port=0, state_dir=str(tmp_path / name), **cfg)
    app, port = await create_llm(config, searcher=searcher, encoder=LocalEncoder())
    return app, LlmClient(f"127.0.0.1:{port}", timeout_s=60)


async def test_two_replicas_share_conversations_in_object_storage(storage_addr: str, tmp_path: Path) -> None:
    searcher = SampleSearcher()
    a_app, a = await _llm(tmp_path, "a", searcher, storage_addr=storage_addr)
    b_app, b = await _llm(tmp_path, "b", searcher, storage_addr=storage_addr)
    try:
        conv = (await a.create_conversation()).conversation
        first = [e async for e in a.answer(Q1, conversation_id=conv.id)]
        assert first[-1].WhichOneof("event") == "done" and first[-1].done.turn_index == 0

        # The follow-up goes to the other replica, which reads the history from storage.
        second = [e async for e in b.answer(Q2, conversation_id=conv.id)]
        retrieval, done = second[0].retrieval, second[-1].done
        assert retrieval.search_query == "How does time to first byte compare with throughput?"
        assert retrieval.rewrite == "rules" and retrieval.history_turns == 1
        assert retrieval.search_query in searcher.queries
        assert done.conversation_id == conv.id and done.turn_index == 1
        assert "bandwidth dominates" in done.text
        assert [c.number for c in done.citations] == list(range(1, len(done.citations) + 1))

        got = (await a.get_conversation(conv.id)).conversation
        assert [t.question for t in got.turns] == [Q1, Q2]
        assert got.turns[1].search_query == retrieval.search_query and got.turns[1].answer == done.text
        # The groundedness check is kept with the turn as the verify event sent it.
        sent = next(e.verify for e in second if e.WhichOneof("event") == "verify")
        assert got.turns[1].verify.check == sent.check and got.turns[1].verify.threshold == sent.threshold
        if sent.check.sentences:  # on a loaded machine the check may time out: then no score is kept
            assert got.turns[1].verify_score == sent.check.answer_score
        else:
            assert not got.turns[1].HasField("verify_score") and "failed" in sent.check.method
        assert got.title.startswith("What does time to first byte")

        renamed = (await b.update_conversation(conv.id, "TTFB chat")).conversation
        assert renamed.title == "TTFB chat"
        listed = (await a.list_conversations()).conversations
        assert [(c.id, c.title, c.turn_count, len(c.turns)) for c in listed] == [(conv.id, "TTFB chat", 2, 0)]

        # It is one JSON object under conversations/, written through the storage service.
        async with StorageClient(storage_addr) as st:
            data, _, _ = await st.get(f"conversations/{conv.id}.json")
        assert json.loads(data)["title"] == "TTFB chat"

        await b.delete_conversation(conv.id)
        for call in (
            a.get_conversation(conv.id),
            a.delete_conversation(conv.id),
            anext(aiter(a.answer(Q2, conversation_id=conv.id))),
        ):
            with pytest.raises(ServiceCallError) as e:
                await call
            assert e.value.code == grpc.StatusCode.NOT_FOUND and e.value.reason == "CONVERSATION_NOT_FOUND"
        with pytest.raises(ServiceCallError) as e:
            await a.get_conversation("not-an-id")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        for c in (a, b):
            await c.close()
        for app in (a_app, b_app):
            await app.stop(0)


async def test_llm_backend_rewrites_with_the_rewrite_prompt(tmp_path: Path) -> None:
    async with OpenAITestServer(tokens=split_tokens("How does time to first byte compare with throughput?")) as srv:
        spec = {"name": "vllm", "kind": "openai", "base_url": srv.base_url, "model": srv.model, "retries": 0}
        searcher = SampleSearcher()
        app, client = await _llm(tmp_path, "l", searcher, backends=json.dumps([spec]), storage_addr="")
        history = [
            pb.ChatMessage(role="user", content=Q1),
            pb.ChatMessage(role="assistant", content="TTFB is ... [1]."),
        ]
        try:
            evs = [e async for e in client.answer(Q2, history=history, params=pb.GenerationParams(no_cache=True))]
            r = evs[0].retrieval
            assert r.rewrite == "llm" and r.search_query == "How does time to first byte compare with throughput?"
            assert searcher.queries[0] == r.search_query  # (a verify repair may search again after it)
            rewrite_req, answer_req = (rec.body for rec in srv.records[:2])  # (a verify repair may follow)
            assert rewrite_req["messages"][0]["content"].startswith("You rewrite the user's last question")
            assert f"Last question: {Q2}" in rewrite_req["messages"][-1]["content"]
            assert [m["role"] for m in answer_req["messages"]] == ["system", "user", "assistant", "user"]
            assert answer_req["messages"][1]["content"] == Q1

            # The rewrite fails (HTTP 500 once, no retries): the rules stand in, and the answer goes on.
            srv.status, srv.fail_first, srv.records = 500, 1, []
            evs = [e async for e in client.answer(Q2, history=history, params=pb.GenerationParams(no_cache=True))]
            assert evs[0].retrieval.rewrite == "rules_fallback"
            assert evs[0].retrieval.search_query == "How does time to first byte compare with throughput?"
            assert evs[-1].WhichOneof("event") == "done"

            # Conversations need a storage service; this replica has none.
            with pytest.raises(ServiceCallError) as e:
                await client.create_conversation()
            assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.reason == "NO_CONVERSATION_STORE"
        finally:
            await client.close()
            await app.stop(0)


async def test_gateway_routes_for_conversations(aiohttp_client, storage_addr: str, tmp_path: Path) -> None:
    """The HTTP API over a real llm_gateway: create, ask twice in the conversation (SSE),
    get with turns, rename, list, export, delete; an unknown id is 404 everywhere."""
    from gateway.app import create_app
    from gateway.config import GatewayConfig
    from tests.integration.test_gateway_doubles import parse_sse

    app, llm = await _llm(tmp_path, "g", SampleSearcher(), storage_addr=storage_addr)
    await llm.close()
    try:
        cfg = load_env(
            GatewayConfig,
            {},
            port=0,
            auth="open",
            storage_addr=storage_addr,
            retriever_addr="127.0.0.1:9",  # not used by these routes
            embedder_addr="127.0.0.1:9",
            llm_gateway_addr=f"127.0.0.1:{app.port}",
        )
        client = await aiohttp_client(create_app(cfg))
        resp = await client.post("/api/conversations", json={})
        assert resp.status == 201
        cid = (await resp.json())["id"]
        for q in (Q1, Q2):
            resp = await client.get("/api/rag/stream", params={"q": q, "conversation": cid})
            assert resp.status == 200
            events = parse_sse(await resp.read())
            names = [e["event"] for e in events]
            assert names[:2] == ["start", "retrieval"] and names[-1] == "done", names
        retrieval, done = events[1]["data"], events[-1]["data"]
        assert retrieval["search_query"] == "How does time to first byte compare with throughput?"
        assert retrieval["rewrite"] == "rules" and retrieval["conversation_id"] == cid
        assert done["conversation_id"] == cid and done["turn_index"] == 1

        got = await (await client.get(f"/api/conversations/{cid}")).json()
        assert [t["question"] for t in got["turns"]] == [Q1, Q2] and got["turn_count"] == 2
        assert got["turns"][1]["search_query"] == retrieval["search_query"]
        assert got["turns"][1]["citations"][0]["number"] == 1
        assert 0.0 <= got["turns"][1]["verify_score"] <= 1.0  # stored with the turn (the default check)

        resp = await client.patch(f"/api/conversations/{cid}", json={"title": "TTFB"})
        assert resp.status == 200 and (await resp.json())["title"] == "TTFB"
        assert (await client.patch(f"/api/conversations/{cid}", json={"title": " "})).status == 400
        listed = (await (await client.get("/api/conversations")).json())["conversations"]
        assert [(c["id"], c["title"], c["turn_count"]) for c in listed] == [(cid, "TTFB", 2)]
        other = (await (await client.post("/api/conversations", json={"title": "other"})).json())["id"]
        first = await (await client.get("/api/conversations", params={"page_size": "1"})).json()
        assert len(first["conversations"]) == 1 and first["next_page_token"]
        rest = await (
            await client.get("/api/conversations", params={"page_size": "1", "page_token": first["next_page_token"]})
        ).json()
        assert len(rest["conversations"]) == 1 and "next_page_token" not in rest
        # The store's modification times may tie (whole seconds): the key breaks the tie, so the
        # two pages hold both conversations, once each, in whichever order.
        assert {first["conversations"][0]["id"], rest["conversations"][0]["id"]} == {cid, other}
        bad = await client.get("/api/conversations", params={"page_token": "nope"})
        assert bad.status == 400 and (await bad.json())["error"]["reason"] == "BAD_PAGE_TOKEN"
        assert (await client.delete(f"/api/conversations/{other}")).status == 200
        resp = await client.get(f"/api/conversations/{cid}", params={"download": "1"})
        assert resp.headers["Content-Disposition"] == f'attachment; filename="conversation-{cid}.json"'

        assert (await client.delete(f"/api/conversations/{cid}")).status == 200
        for method, path in (
            ("GET", f"/api/conversations/{cid}"),
            ("DELETE", f"/api/conversations/{cid}"),
            ("PATCH", f"/api/conversations/{cid}"),
            ("GET", f"/api/rag/stream?q=hi&conversation={cid}"),
        ):
            resp = await client.request(method, path, json={"title": "x"} if method == "PATCH" else None)
            assert resp.status == 404, (method, path)
            body = await resp.json()
            assert body["error"]["reason"] == "CONVERSATION_NOT_FOUND" and cid in body["error"]["message"]
        assert (await client.get("/api/conversations/zzz")).status == 400
    finally:
        await app.stop(0)


async def test_cli_continues_a_conversation(storage_addr: str, tmp_path: Path) -> None:
    """`rag conversations new`, `rag ask --conversation ID` twice, `show`, `export`, `delete`, as
    processes against a real llm_gateway (`list` is the same RPC the gateway test covers)."""
    import asyncio
    import os
    import sys

    app, llm = await _llm(tmp_path, "c", SampleSearcher(), storage_addr=storage_addr)
    await llm.close()
    addr = f"127.0.0.1:{app.port}"

    async def rag(*argv: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            *argv,
            "--llm-gateway-addr",
            addr,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode()

    try:
        rc, out = await rag("conversations", "new", "--title", "cli chat")
        assert rc == 0, out
        cid = out.strip()
        rc, out = await rag("ask", Q1, "--conversation", cid, "--no-record")
        assert rc == 0 and "turn 1 of conversation " + cid in out, out
        rc, out = await rag("ask", Q2, "--conversation", cid, "--no-record", "--json")
        assert rc == 0, out
        record = json.loads(out)
        assert record["search_query"] == "How does time to first byte compare with throughput?"
        assert record["conversation_id"] == cid
        rc, out = await rag("conversations", "show", cid)
        assert rc == 0 and "searched: How does time to first byte compare with throughput?" in out, out
        reader = LlmClient(addr)  # each turn's check is kept with it and shown
        try:
            turns = (await reader.get_conversation(cid)).conversation.turns
        finally:
            await reader.close()
        scored = sum(t.HasField("verify_score") for t in turns)
        assert out.count("groundedness ") == scored, out
        rc, out = await rag("conversations", "export", cid, "-o", str(tmp_path / "c.json"))
        assert rc == 0 and len(json.loads((tmp_path / "c.json").read_text())["turns"]) == 2
        assert (await rag("conversations", "delete", cid))[0] == 0
        rc, out = await rag("ask", "hi", "--conversation", cid, "--no-record")
        assert rc == 1 and "does not exist" in out, out
    finally:
        await app.stop(0)
