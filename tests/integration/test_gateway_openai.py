"""The OpenAI-compatible endpoints, driven by the official `openai` Python client."""

from __future__ import annotations

import openai
import pytest

from tests.integration.test_gateway_doubles import TOKENS, Doubles, doubles, make_app

__all__ = ["doubles"]


async def _client(aiohttp_client, d: Doubles, **overrides: object) -> openai.AsyncOpenAI:
    server = await aiohttp_client(make_app(d, **overrides))
    return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="k-1", max_retries=0)


async def test_chat_completion_grounded_with_citations(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles)
    resp = await oa.chat.completions.create(
        model="ddnrag:kb",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "what keeps chunks?"}],
        extra_body={"backend": "ddn", "top_k": 3},
    )
    assert resp.choices[0].message.content == "".join(TOKENS)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens == 45
    extra = resp.model_extra or {}
    assert extra["citations"][0]["document_name"] == "storage.md"
    assert extra["ddnrag"]["ttft_ms"] == 6.0
    req = doubles.llm.requests[0]
    assert (req.question, req.collection, req.storage_backend, req.top_k) == ("what keeps chunks?", "kb", "ddn", 3)
    await oa.close()


async def test_chat_completion_sends_the_whole_conversation(aiohttp_client, doubles: Doubles) -> None:
    """Every earlier user and assistant message travels as history; the last user message is the
    question, and what was searched comes back in `ddnrag.search_query`."""
    oa = await _client(aiohttp_client, doubles)
    resp = await oa.chat.completions.create(
        model="ddnrag",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "What does time to first byte measure?"},
            {"role": "assistant", "content": "The delay to the first byte [1]."},
            {"role": "user", "content": [{"type": "text", "text": "And how does it compare with throughput?"}]},
        ],
    )
    req = doubles.llm.requests[0]
    assert req.question == "And how does it compare with throughput?"
    assert [(m.role, m.content) for m in req.history] == [
        ("user", "What does time to first byte measure?"),
        ("assistant", "The delay to the first byte [1]."),
    ]
    assert (resp.model_extra or {})["ddnrag"]["search_query"] == req.question  # the double searches it as is
    with pytest.raises(openai.BadRequestError):
        await oa.chat.completions.create(
            model="ddnrag",
            messages=[{"role": "assistant", "content": 5}, {"role": "user", "content": "q"}],  # type: ignore[list-item]
        )
    await oa.close()


async def test_chat_completion_collection_by_extra_field(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles)
    await oa.chat.completions.create(
        model="ddnrag", messages=[{"role": "user", "content": "q"}], extra_body={"collection": "other"}
    )
    assert doubles.llm.requests[0].collection == "other"
    await oa.close()


async def test_chat_completion_stream(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles)
    stream = await oa.chat.completions.create(
        model="ddnrag",
        messages=[{"role": "user", "content": "what keeps chunks?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, finish, citations, usage = [], None, None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
                citations = (chunk.model_extra or {}).get("citations")
    assert "".join(parts) == "".join(TOKENS)
    assert finish == "stop"
    assert citations is not None and citations[0]["chunk_id"] == "c1"
    assert usage is not None and usage.completion_tokens == 5
    await oa.close()


async def test_chat_completion_errors(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles)
    with pytest.raises(openai.BadRequestError) as err:
        await oa.chat.completions.create(model="ddnrag", messages=[{"role": "assistant", "content": "hi"}])
    assert "no user message" in str(err.value)
    with pytest.raises(openai.BadRequestError) as err:
        await oa.chat.completions.create(model="ddnrag", messages=[{"role": "user", "content": "refuse it"}])
    assert "no index yet" in str(err.value)
    await oa.close()


async def test_chat_completion_requires_key_when_configured(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles, api_keys=("other",))
    with pytest.raises(openai.AuthenticationError):
        await oa.chat.completions.create(model="ddnrag", messages=[{"role": "user", "content": "q"}])
    await oa.close()


async def test_embeddings_float_and_base64(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles)
    default = await oa.embeddings.create(model="double", input=["abc", "hello world"])  # base64 on the wire
    assert [list(d.embedding) for d in default.data] == [[3.0, 1.0, 0.0, 0.5], [11.0, 1.0, 0.0, 0.5]]
    assert default.usage.prompt_tokens == 3 + 4
    floats = await oa.embeddings.create(model="double", input="abc", encoding_format="float")
    assert floats.data[0].embedding == [3.0, 1.0, 0.0, 0.5]
    assert floats.model == "double"
    await oa.close()


async def test_models(aiohttp_client, doubles: Doubles) -> None:
    oa = await _client(aiohttp_client, doubles)
    ids = [m.id async for m in oa.models.list()]
    assert ids == ["ddnrag", "ddnrag:default", "extractive-v1", "double"]
    await oa.close()
