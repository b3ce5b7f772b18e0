"""Conversations: a titled list of turns, stored as one JSON object per conversation,
`conversations/<id>.json`, in object storage through the storage service, so every llm_gateway
replica reads and writes the same ones and they outlive pods.

Writes are whole-object PUTs. Inside one replica a lock per conversation serialises the
read-modify-write of a new turn; across replicas two turns added to the same conversation at the
same instant are last-writer-wins (one person types into one conversation at a time, so this is
accepted and written down rather than fenced).

Listings are paged by object modification time, newest first: a page token names the last
(modified, key) pair served, so the next page starts after it. A conversation updated while a
client pages moves to the first page rather than appearing twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from kernel.errors import invalid, not_found

from .domain import Citation, Passage
from .verify.result import Verification

PREFIX = "conversations/"
MAX_TITLE_CHARS = 200
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# A conversation keeps at most this many turns; older ones are dropped from the stored object.
MAX_TURNS = 500
_ID = re.compile(r"^[0-9a-f]{32}$")


class ObjectNotFoundError(Exception):
    """The object store has no object under the key."""


class ObjectStore(Protocol):
    """The storage service as conversations need it (implemented in adapters.py)."""

    async def get(self, key: str) -> bytes: ...  # raises ObjectNotFoundError

    async def put(self, key: str, data: bytes) -> None: ...

    async def list_keys(self, prefix: str) -> list[tuple[str, int]]: ...  # (key, last_modified_unix_ns)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...  # None: missing

    async def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class Turn:
    question: str
    search_query: str
    answer: str
    citations: tuple[Citation, ...] = ()
    backend: str = ""
    model: str = ""
    finish_reason: str = ""
    created_unix_ns: int = 0
    # The groundedness check's answer score (0..1); None when no check ran.
    verify_score: float | None = None
    # The check itself (per-sentence scores) and the threshold it was held to, as the `verify`
    # event sent them, so a reloaded conversation shows what the live answer showed; None when no
    # check ran (the repair pass, off by default, is not kept).
    verification: Verification | None = None
    verify_threshold: float = 0.0


@dataclass(frozen=True)
class Conversation:
    id: str
    title: str = ""
    collection: str = ""
    created_unix_ns: int = 0
    updated_unix_ns: int = 0
    turns: tuple[Turn, ...] = field(default_factory=tuple)
    # Set on listings (which do not read the turns): how many turns the conversation holds.
    turn_count: int = -1

    @property
    def count(self) -> int:
        return len(self.turns) if self.turn_count < 0 else self.turn_count


def key_for(conversation_id: str) -> str:
    return f"{PREFIX}{conversation_id}.json"


def check_id(conversation_id: str) -> str:
    cid = conversation_id.strip().lower()
    if not _ID.match(cid):
        raise invalid(
            f"{conversation_id!r} is not a conversation id (32 hexadecimal characters, as CreateConversation returns)",
            reason="BAD_CONVERSATION_ID",
        )
    return cid


def check_title(title: str, *, required: bool) -> str:
    t = " ".join(title.split())
    if required and not t:
        raise invalid("the title is empty; send 1 to 200 characters", reason="EMPTY_TITLE")
    if len(t) > MAX_TITLE_CHARS:
        raise invalid(f"the title has {len(t)} characters; the limit is {MAX_TITLE_CHARS}", reason="TITLE_TOO_LONG")
    return t


def title_from(question: str) -> str:
    q = " ".join(question.split())
    return q if len(q) <= 80 else q[:77].rstrip() + "..."


# ---- JSON ---------------------------------------------------------------------------------------
# The passage fields a stored citation keeps.
_CITED = ("text", "chunk_id", "document_id", "document_name", "collection", "object_key", "score")


def _turn_json(t: Turn) -> dict[str, Any]:
    d = asdict(t)
    d["citations"] = [{"number": c.number, **{k: getattr(c.passage, k) for k in _CITED}} for c in t.citations]
    d["verification"] = None if t.verification is None else t.verification.as_json()
    return d


def _turn_from(d: dict[str, Any]) -> Turn:
    cites = []
    for c in d.get("citations") or []:
        c = dict(c)
        number = int(c.pop("number", 0))
        cites.append(Citation(number, Passage(**{k: v for k, v in c.items() if k in _CITED})))
    return Turn(
        question=str(d.get("question", "")),
        search_query=str(d.get("search_query", "")),
        answer=str(d.get("answer", "")),
        citations=tuple(cites),
        backend=str(d.get("backend", "")),
        model=str(d.get("model", "")),
        finish_reason=str(d.get("finish_reason", "")),
        created_unix_ns=int(d.get("created_unix_ns", 0)),
        verify_score=None if d.get("verify_score") is None else float(d["verify_score"]),
        verification=None if not d.get("verification") else Verification.from_json(d["verification"]),
        verify_threshold=float(d.get("verify_threshold") or 0.0),
    )


def to_bytes(c: Conversation) -> bytes:
    doc = {
        "version": 1,
        "id": c.id,
        "title": c.title,
        "collection": c.collection,
        "created_unix_ns": c.created_unix_ns,
        "updated_unix_ns": c.updated_unix_ns,
        "turns": [_turn_json(t) for t in c.turns],
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def from_bytes(data: bytes) -> Conversation:
    d = json.loads(data)
    return Conversation(
        id=str(d["id"]),
        title=str(d.get("title", "")),
        collection=str(d.get("collection", "")),
        created_unix_ns=int(d.get("created_unix_ns", 0)),
        updated_unix_ns=int(d.get("updated_unix_ns", 0)),
        turns=tuple(_turn_from(t) for t in d.get("turns") or []),
    )


def _make_token(last: tuple[str, int]) -> str:
    raw = json.dumps([last[0][len(PREFIX) :], last[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str) -> tuple[str, int]:
    """(key, modified ns) of the last conversation served; INVALID_ARGUMENT for a token this
    service did not make."""
    try:
        name, modified = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(name, str) or not isinstance(modified, int) or not _ID.match(name.removesuffix(".json")):
            raise ValueError(name)
    except (ValueError, TypeError, binascii.Error):
        raise invalid(
            "page_token is not a token from a previous ListConversations; omit it for the first page",
            reason="BAD_PAGE_TOKEN",
        ) from None
    return PREFIX + name, modified


class ConversationStore:
    """Create, list, get, rename, delete and append turns, over an `ObjectStore`."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, cid: str) -> asyncio.Lock:
        lock = self._locks.get(cid)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[cid] = lock
        return lock

    async def create(self, title: str = "", collection: str = "") -> Conversation:
        now = time.time_ns()
        c = Conversation(
            id=uuid.uuid4().hex,
            title=check_title(title, required=False),
            collection=collection.strip(),
            created_unix_ns=now,
            updated_unix_ns=now,
        )
        await self.objects.put(key_for(c.id), to_bytes(c))
        return c

    async def get(self, conversation_id: str) -> Conversation:
        cid = check_id(conversation_id)
        try:
            data = await self.objects.get(key_for(cid))
        except ObjectNotFoundError:
            raise not_found(
                f"conversation {cid} does not exist (deleted, or never created); list them with ListConversations",
                reason="CONVERSATION_NOT_FOUND",
                conversation_id=cid,
            ) from None
        return from_bytes(data)

    async def list(self, page_size: int = 0, page_token: str = "") -> tuple[list[Conversation], str]:
        """One page, most recently modified first, and the token of the next ("" on the last)."""
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise invalid(f"page_size must be within 1..{MAX_PAGE_SIZE} (0 means 50), got {page_size}")
        after = _read_token(page_token) if page_token else None
        keys = await self.objects.list_keys(PREFIX)
        keys = [k for k in keys if _ID.match(k[0][len(PREFIX) : -len(".json")] if k[0].endswith(".json") else "")]
        keys.sort(key=lambda k: (-k[1], k[0]))
        if after is not None:
            keys = [k for k in keys if (-k[1], k[0]) > (-after[1], after[0])]
        size = page_size or DEFAULT_PAGE_SIZE
        token = _make_token(keys[size - 1]) if len(keys) > size else ""
        keys = keys[:size]
        out = []
        for data in await self.objects.get_many([k for k, _ in keys]):
            if data is None:
                continue  # deleted since the listing
            c = from_bytes(data)
            out.append(replace(c, turns=(), turn_count=len(c.turns)))
        out.sort(key=lambda c: -c.updated_unix_ns)
        return out, token

    async def rename(self, conversation_id: str, title: str) -> Conversation:
        title = check_title(title, required=True)
        async with self._lock(check_id(conversation_id)):
            c = await self.get(conversation_id)
            c = replace(c, title=title, updated_unix_ns=time.time_ns())
            await self.objects.put(key_for(c.id), to_bytes(c))
        return c

    async def delete(self, conversation_id: str) -> None:
        c = await self.get(conversation_id)  # NOT_FOUND for an unknown id
        await self.objects.delete(key_for(c.id))

    async def append(self, conversation_id: str, turn: Turn) -> tuple[Conversation, int]:
        """Adds `turn`; (the conversation, the new turn's index)."""
        async with self._lock(check_id(conversation_id)):
            c = await self.get(conversation_id)
            turns = (*c.turns, turn)[-MAX_TURNS:]
            c = replace(c, turns=turns, title=c.title or title_from(turn.question), updated_unix_ns=time.time_ns())
            await self.objects.put(key_for(c.id), to_bytes(c))
        return c, len(c.turns) - 1
