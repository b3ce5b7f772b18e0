"""Storing a conversation's turn: the last stage of Answer, after the guardrails and the
groundedness check, so the stored turn holds the text as it was sent (redacted, guarded) and its
verify score.

The turn is stored before `done` reaches the caller (`done` names its index). An output refusal
stores the question with the refusal's message (nothing the guard refused is kept); an input
refusal arrives before retrieval and stores nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

from kernel.errors import ServiceError

from .checks import RefusedEvent, VerifyEvent
from .conversations import ConversationStore, Turn
from .domain import DoneEvent, ErrorEvent, RetrievalEvent, StartEvent


def verify_score(ev: VerifyEvent | None) -> float | None:
    """The answer score of the check of the text as sent; None when no check ran or it failed."""
    if ev is None or not ev.verification.sentences:
        return None
    return ev.verification.answer_score


async def recorded(
    store: ConversationStore | None, question: str, stream: AsyncIterator[object]
) -> AsyncIterator[object]:
    """`stream` unchanged, except that when its `retrieval` event names a conversation, the turn
    is appended to it when `done` (or an output `refused`) arrives, before that event is passed on;
    `done` then carries the conversation id and the turn's index. A failed store ends the stream
    with an `error` event instead."""
    retrieval: RetrievalEvent | None = None
    start: StartEvent | None = None
    verify: VerifyEvent | None = None
    async with contextlib.aclosing(stream) as events:  # type: ignore[type-var]
        async for ev in events:
            if isinstance(ev, RetrievalEvent):
                retrieval = ev
            elif isinstance(ev, StartEvent):
                start = ev
            elif isinstance(ev, VerifyEvent):
                verify = ev
            elif isinstance(ev, DoneEvent | RefusedEvent) and store is not None and retrieval is not None:
                cid = retrieval.conversation_id
                if cid:
                    done = ev if isinstance(ev, DoneEvent) else None
                    turn = Turn(
                        question=question.strip(),
                        search_query=retrieval.search_query,
                        answer=done.text if done else ev.verdict.message,  # type: ignore[union-attr]
                        citations=done.citations if done else (),
                        backend=start.backend if start else "",
                        model=start.model if start else "",
                        finish_reason=done.finish_reason if done else "refused",
                        created_unix_ns=time.time_ns(),
                        verify_score=verify_score(verify) if done else None,
                        verification=verify.verification if done and verify else None,
                        verify_threshold=verify.threshold if done and verify else 0.0,
                    )
                    try:
                        _, index = await store.append(cid, turn)
                    except ServiceError as err:
                        yield ErrorEvent(err)
                        return
                    if done is not None:
                        ev = dataclasses.replace(done, conversation_id=cid, turn_index=index)
            yield ev
