"""The gateway's admission of answer streams (gateway/admission.py) against the real-gRPC doubles:
a question seen answered from the cache is served while every answer permit is taken, anything
else is refused at once with 429 + Retry-After before any upstream call. Behaviour only: no
timing is asserted."""

from __future__ import annotations

from ddnrag.llm.v1 import llm_service_pb2 as lpb
from gateway.admission import admission_json
from gateway.routes.rag import Ask, ask_hint
from gateway.state import ADMISSION
from tests.integration.test_gateway_doubles import Doubles, doubles, make_app, parse_sse

__all__ = ["doubles"]


async def test_cache_hit_is_served_while_every_answer_permit_is_taken(aiohttp_client, doubles: Doubles) -> None:
    app = make_app(doubles, max_concurrent_answers=1)
    client = await aiohttp_client(app)
    learn = parse_sse(await (await client.get("/api/rag/stream", params={"q": "cached question"})).read())
    assert learn[0]["data"]["cache_hit"] is True and learn[-1]["event"] == "done"
    # `start` holds what the `retrieval` event holds (encoded once for both).
    assert learn[1]["event"] == "retrieval" and learn[0]["data"]["retrieval"] == learn[1]["data"]
    assert learn[1]["data"]["chunks"] and learn[1]["data"]["index_version"] == "v1"

    slow = await client.get("/api/rag/stream", params={"q": "slow question"})
    await slow.content.readuntil(b"\r\n\r\n")  # holds the only answer permit
    asked = len(doubles.llm.requests)

    refused = await client.get("/api/rag/stream", params={"q": "another question"})
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    err = (await refused.json())["error"]
    assert err["reason"] == "GATEWAY_BUSY" and err["retry_after_s"] >= 1
    assert len(doubles.llm.requests) == asked  # refused before any upstream call

    hit = await client.get("/api/rag/stream", params={"q": "cached question"})
    assert hit.status == 200
    events = parse_sse(await hit.read())
    assert events[0]["data"]["cache_hit"] is True and events[-1]["event"] == "done"

    # The same question skipping the cache is not a hit: it needs an answer permit.
    uncached = await client.get("/api/rag/stream", params={"q": "cached question", "no_cache": "1"})
    assert uncached.status == 429
    state = admission_json(app[ADMISSION])
    assert state is not None and state["full"]["refused"] == 2 and state["light"]["admitted"] == 1
    slow.close()


async def test_a_hint_that_misses_is_forgotten(aiohttp_client, doubles: Doubles) -> None:
    app = make_app(doubles, max_concurrent_answers=1)
    client = await aiohttp_client(app)
    adm = app[ADMISSION]
    assert adm is not None

    def key(q: str) -> str:
        return ask_hint(Ask(q, "default", "", 5, lpb.GenerationParams()))

    await (await client.get("/api/rag/stream", params={"q": "cached question"})).read()
    assert key("cached question") in adm.hints
    adm.hints.add(key("plain question"))  # as if it had been a hit once
    events = parse_sse(await (await client.get("/api/rag/stream", params={"q": "plain question"})).read())
    assert events[0]["data"]["cache_hit"] is False
    assert key("plain question") not in adm.hints and key("cached question") in adm.hints
