"""Conversations and follow-ups in the LLM gateway core, without network: citation renumbering
on the token stream, the deterministic rewriter, history trimming, the conversation store (over
an in-memory object store, a test double of the storage port) and Answer with a conversation."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.errors import ErrorKind, ServiceError
from services.llm_gateway.backend import BackendLimits, BackendRequest, Delta
from services.llm_gateway.checks import AnswerChecks, RefusedEvent, VerifyEvent
from services.llm_gateway.citations import Renumberer
from services.llm_gateway.conversations import ConversationStore, ObjectNotFoundError, Turn, from_bytes, to_bytes
from services.llm_gateway.core import LlmGateway
from services.llm_gateway.domain import (
    Citation,
    DoneEvent,
    ErrorEvent,
    Passage,
    RetrievalEvent,
    RetrievedChunk,
    SearchResult,
    TokenEvent,
)
from services.llm_gateway.guards.config import build_guardrails
from services.llm_gateway.rewrite import (
    HistoryTurn,
    clean_rewrite,
    rules_rewrite,
    subject_of,
    trim_history,
    turns_from_messages,
)
from services.llm_gateway.tokens import TokenCounter, default_counter, pieces
from services.llm_gateway.verify.grounding import Verifier

Q1 = "What does time to first byte measure and why does it matter for RAG?"
A1 = (
    "Time to first byte (TTFB) is the time from sending a request to receiving the first byte of the "
    "response body [1]. A store with a lower time to first byte shortens the time to the first token [2]."
)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return default_counter()


# ---- renumbering ---------------------------------------------------------------------------------
def test_renumber_orders_citations_by_first_appearance() -> None:
    r = Renumberer(5)
    assert r.renumber("A [4]. B [1, 5]. C [4][2]. D [9].") == "A [1]. B [2, 3]. C [1][4]. D [9]."
    assert r.order == [4, 1, 5, 2]


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_renumber_is_independent_of_how_the_text_is_split(cuts: list[int]) -> None:
    text = "Alpha [3]. Beta [1, 2] and [3][12]. Gamma [ not one]. Delta [2]"
    r = Renumberer(3)
    out, pos = [], 0
    for c in cuts:
        out.append(r.feed(text[pos : pos + c]))
        pos += c
    out.append(r.feed(text[pos:]))
    out.append(r.flush())
    assert "".join(out) == "Alpha [1]. Beta [2, 3] and [1][12]. Gamma [ not one]. Delta [3]"
    assert r.order == [3, 1, 2]


# ---- the rewriter ----------------------------------------------------------------------------------
def test_subject_is_the_phrase_the_answer_repeats() -> None:
    assert subject_of(HistoryTurn(Q1, A1)) == "time to first byte"


@pytest.mark.parametrize(
    ("question", "standalone"),
    [
        ("And how does it compare with throughput?", "How does time to first byte compare with throughput?"),
        ("What about throughput?", "What about throughput in relation to time to first byte?"),
        ("Why does its p99 matter?", "Why does time to first byte's p99 matter?"),
        ("What is BM25?", "What is BM25?"),  # names its own subject
        ("Is time to first byte the same as latency?", "Is time to first byte the same as latency?"),
    ],
)
def test_rules_carry_the_subject_into_a_follow_up_that_lacks_one(question: str, standalone: str) -> None:
    assert rules_rewrite(question, [HistoryTurn(Q1, A1)]) == standalone
    assert rules_rewrite(question, []) == question


def test_rules_use_the_newest_turn_and_its_standalone_question() -> None:
    history = [
        HistoryTurn(Q1, A1),
        HistoryTurn(
            "And how does it compare with throughput?",
            "Bandwidth dominates for large objects [1].",
            "How does time to first byte compare with throughput?",
        ),
    ]
    assert rules_rewrite("Why does it matter?", history).startswith("Why does time to first byte")


def test_trim_keeps_the_newest_turns_within_the_budget(counter: TokenCounter) -> None:
    turns = [HistoryTurn(f"question {i} " + "word " * 50, "answer " * 50) for i in range(10)]
    t = trim_history(turns, counter, 450)
    assert t.dropped > 0 and t.turns == tuple(turns[t.dropped :]) and t.tokens <= 450
    assert trim_history(turns, counter, 10**6).dropped == 0


def test_turns_from_messages_pairs_questions_and_answers() -> None:
    msgs = [("system", "be nice"), ("assistant", "hi"), ("user", "q1"), ("assistant", "a1"), ("user", "q2")]
    assert turns_from_messages(msgs) == [HistoryTurn("q1", "a1"), HistoryTurn("q2", "")]


def test_clean_rewrite_takes_the_first_line() -> None:
    assert clean_rewrite('Standalone question: "How fast is TTFB?"\nmore', "x") == "How fast is TTFB?"
    assert clean_rewrite("  \n ", "fallback") == "fallback"


# ---- the store -------------------------------------------------------------------------------------
class MemoryObjects:
    """Test double of the storage port: a dict, with modification stamps."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.clock = 0

    async def get(self, key: str) -> bytes:
        if key not in self.data:
            raise ObjectNotFoundError(key)
        return self.data[key][0]

    async def put(self, key: str, data: bytes) -> None:
        self.clock += 1
        self.data[key] = (data, self.clock)

    async def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        return [(k, v[1]) for k, v in self.data.items() if k.startswith(prefix)]

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [self.data[k][0] if k in self.data else None for k in keys]

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


async def test_store_create_append_list_rename_delete() -> None:
    objects = MemoryObjects()
    store = ConversationStore(objects)
    a = await store.create()
    b = await store.create("Second", "docs")
    assert f"conversations/{a.id}.json" in objects.data
    turn = Turn(
        Q1, Q1, A1, (Citation(1, Passage("p", chunk_id="c1", document_name="d.md")),), "extractive", "m", "stop", 5
    )
    conv, index = await store.append(a.id, turn)
    assert index == 0 and conv.title.startswith("What does time to first byte")
    got = await store.get(a.id.upper())  # ids are case-insensitive
    assert got.turns == (turn,) and from_bytes(to_bytes(got)) == got
    listed, token = await store.list()
    assert [c.id for c in listed] == [a.id, b.id] and listed[0].count == 1 and listed[0].turns == ()
    assert token == ""  # one page
    assert (await store.rename(b.id, "  Renamed   chat ")).title == "Renamed chat"
    assert (await store.list())[0][0].id == b.id
    await store.delete(a.id)
    with pytest.raises(ServiceError) as e:
        await store.get(a.id)
    assert e.value.kind == ErrorKind.NOT_FOUND and e.value.reason == "CONVERSATION_NOT_FOUND"
    with pytest.raises(ServiceError) as e:
        await store.delete(a.id)
    assert e.value.kind == ErrorKind.NOT_FOUND


@pytest.mark.parametrize("bad", ["", "nope", "../../etc/passwd", "g" * 32])
async def test_store_rejects_malformed_ids_and_titles(bad: str) -> None:
    store = ConversationStore(MemoryObjects())
    with pytest.raises(ServiceError) as e:
        await store.get(bad)
    assert e.value.kind == ErrorKind.INVALID_ARGUMENT
    c = await store.create()
    for title in ("", "x" * 201):
        with pytest.raises(ServiceError) as e:
            await store.rename(c.id, title)
        assert e.value.kind == ErrorKind.INVALID_ARGUMENT


# ---- Answer with a conversation ------------------------------------------------------------------------
class RecordingSearcher:
    """Test double of the retriever: records the queries, returns fixed chunks."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(
        self,
        collection: str,
        query: str,
        *,
        top_k: int,
        backend: str,
        filters: Mapping[str, str],
        timeout: float | None,
    ) -> SearchResult:
        self.queries.append(query)
        ps = [Passage(f"Passage {i} text.", chunk_id=f"c{i}", document_name=f"d{i}.md") for i in (1, 2, 3)]
        return SearchResult(tuple(RetrievedChunk(p) for p in ps))


class TextBackend:
    """Test double of a backend: streams a fixed text word by word; records the prompts."""

    default_model = "t-1"

    def __init__(self, text: str, kind: str = "scripted", name: str = "t") -> None:
        self.name, self.kind, self.text = name, kind, text
        self.limits = BackendLimits(retries=0)
        self.prompts: list[BackendRequest] = []

    def models(self) -> list[str]:
        return [self.default_model]

    async def close(self) -> None:
        return None

    async def stream(self, request: BackendRequest) -> AsyncIterator[Delta]:
        self.prompts.append(request)
        text = "How fast is time to first byte?" if request.max_tokens == 96 else self.text
        for p in pieces(text):
            yield Delta(text=p)
        yield Delta(finish_reason="stop")


async def _run(gw: LlmGateway, q: str, **kw: object) -> list[object]:
    return [ev async for ev in gw.answer(q, **kw)]  # type: ignore[arg-type]


async def test_answer_renumbers_citations_in_order_of_appearance(counter: TokenCounter) -> None:
    gw = LlmGateway([TextBackend("First [3]. Second [1]. Again [3].")], counter, searcher=RecordingSearcher())
    evs = await _run(gw, "q?")
    done = evs[-1]
    assert isinstance(done, DoneEvent)
    assert done.text == "First [1]. Second [2]. Again [1]."
    assert [(c.number, c.passage.chunk_id) for c in done.citations] == [(1, "c3"), (2, "c1")]
    toks = [e for e in evs if isinstance(e, TokenEvent)]
    assert "".join(t.text for t in toks) == done.text
    assert all(b.index == a.index + a.count for a, b in itertools.pairwise(toks))


async def test_answer_in_a_conversation_rewrites_stores_and_trims(counter: TokenCounter) -> None:
    store = ConversationStore(MemoryObjects())
    searcher = RecordingSearcher()
    gw = LlmGateway(
        [TextBackend(A1, kind="extractive")], counter, searcher=searcher, conversations=store, history_budget_tokens=80
    )
    conv = await store.create()
    first = await _run(gw, Q1, conversation_id=conv.id)
    r1, d1 = first[0], first[-1]
    assert isinstance(r1, RetrievalEvent) and r1.rewrite == "none" and r1.search_query == Q1
    assert isinstance(d1, DoneEvent) and d1.conversation_id == conv.id and d1.turn_index == 0
    assert len((await store.get(conv.id)).turns) == 1  # stored before `done` reached the caller

    second = await _run(gw, "And how does it compare with throughput?", conversation_id=conv.id)
    r2 = second[0]
    assert isinstance(r2, RetrievalEvent)
    assert r2.search_query == "How does time to first byte compare with throughput?" and r2.rewrite == "rules"
    assert searcher.queries[-1] == r2.search_query and r2.history_turns == 1 and r2.history_turns_trimmed == 0
    stored = await store.get(conv.id)
    assert [t.search_query for t in stored.turns] == [Q1, r2.search_query]

    third = await _run(gw, "Why?", conversation_id=conv.id)
    r3 = third[0]
    assert isinstance(r3, RetrievalEvent) and r3.history_turns_trimmed == 1 and r3.history_turns == 1


async def test_answer_with_an_unknown_conversation_is_not_found(counter: TokenCounter) -> None:
    gw = LlmGateway(
        [TextBackend("x [1].")], counter, searcher=RecordingSearcher(), conversations=ConversationStore(MemoryObjects())
    )
    with pytest.raises(ServiceError) as e:
        await _run(gw, "q?", conversation_id="0" * 32)
    assert e.value.kind == ErrorKind.NOT_FOUND


async def test_answer_with_llm_rewrites_through_the_backend(counter: TokenCounter) -> None:
    llm = TextBackend("Answer [1].", kind="openai")
    gw = LlmGateway([llm], counter, searcher=RecordingSearcher())
    evs = await _run(gw, "And how fast is it?", history=[("user", Q1), ("assistant", A1)])
    r = evs[0]
    assert isinstance(r, RetrievalEvent) and r.rewrite == "llm" and r.search_query == "How fast is time to first byte?"
    rewrite_prompt, answer_prompt = llm.prompts
    assert "Last question: And how fast is it?" in rewrite_prompt.prompt.messages[-1]["content"]
    roles = [m["role"] for m in answer_prompt.prompt.messages]
    assert roles == ["system", "user", "assistant", "user"]  # the history goes to the LLM too


async def test_answer_rejects_bad_history(counter: TokenCounter) -> None:
    gw = LlmGateway([TextBackend("x")], counter, searcher=RecordingSearcher())
    with pytest.raises(ServiceError) as e:
        await _run(gw, "q?", history=[("robot", "hi")])
    assert e.value.kind == ErrorKind.INVALID_ARGUMENT


async def test_answer_store_failure_is_an_error_event(counter: TokenCounter) -> None:
    class Failing(MemoryObjects):
        async def put(self, key: str, data: bytes) -> None:
            if self.data:
                raise ServiceError(ErrorKind.UNAVAILABLE, "storage down", reason="PEER_UNAVAILABLE")
            await super().put(key, data)

    store = ConversationStore(Failing())
    conv = await store.create()
    gw = LlmGateway([TextBackend("x [1].")], counter, searcher=RecordingSearcher(), conversations=store)
    evs = await _run(gw, "q?", conversation_id=conv.id)
    assert isinstance(evs[-1], ErrorEvent) and "storage down" in evs[-1].error.message


class FixedScorer:
    """A groundedness scorer that finds every claim supported with one score."""

    method = "fixed"

    async def score(self, claims: Sequence[object]) -> list[float]:
        return [0.9] * len(claims)

    async def close(self) -> None:
        return None


def _checked(backend_text: str, counter: TokenCounter, store: ConversationStore) -> LlmGateway:
    gw = LlmGateway([TextBackend(backend_text)], counter, searcher=RecordingSearcher(), conversations=store)
    gw.checks = AnswerChecks(build_guardrails("", deny=("zorg",)), Verifier(FixedScorer()), redact_pii=True)
    return gw


async def test_the_stored_turn_is_the_checked_text_with_its_verify_score(counter: TokenCounter) -> None:
    store = ConversationStore(MemoryObjects())
    gw = _checked("Write to alice@example.com about the object store layout [1].", counter, store)
    conv = await store.create()
    evs = await _run(gw, "Where do I write?", conversation_id=conv.id)
    verify, done = evs[-2], evs[-1]
    assert isinstance(verify, VerifyEvent) and isinstance(done, DoneEvent) and done.turn_index == 0
    assert "alice@example.com" not in done.text
    turn = (await store.get(conv.id)).turns[0]
    assert turn.answer == done.text  # redacted, as sent; the raw text was stored before
    assert turn.verify_score is not None and turn.verify_score == verify.verification.answer_score
    assert from_bytes(to_bytes(await store.get(conv.id))).turns[0].verify_score == turn.verify_score


async def test_an_output_refusal_stores_the_refusal_never_the_refused_text(counter: TokenCounter) -> None:
    store = ConversationStore(MemoryObjects())
    gw = _checked("The zorg protocol moves objects [1].", counter, store)
    conv = await store.create()
    evs = await _run(gw, "How are objects moved?", conversation_id=conv.id)
    assert isinstance(evs[-1], RefusedEvent) and evs[-1].verdict.stage == "output"
    (turn,) = (await store.get(conv.id)).turns
    assert "protocol moves" not in turn.answer and turn.finish_reason == "refused" and turn.verify_score is None
    assert turn.answer == evs[-1].verdict.message
    refused_input = await _run(gw, "Tell me about zorg", conversation_id=conv.id)
    assert isinstance(refused_input[-1], RefusedEvent)
    assert len((await store.get(conv.id)).turns) == 1  # an input refusal stores nothing


async def test_conversation_listings_page_with_a_token() -> None:
    objects = MemoryObjects()
    store = ConversationStore(objects)
    made = {(await store.create(f"c{i}")).id for i in range(5)}
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page, token = await store.list(2, token)
        assert len(page) <= 2
        seen += [c.id for c in page]
        if not token:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5
    with pytest.raises(ServiceError) as e:
        await store.list(2, "not-a-token")
    assert e.value.kind == ErrorKind.INVALID_ARGUMENT and e.value.reason == "BAD_PAGE_TOKEN"
