"""A follow-up question in Answer: the history given with the request is checked, and the
standalone question retrieval searches is made from the (trimmed) history -- by the deterministic
rules when the built-in generator answers, by the rewrite prompt on an LLM backend otherwise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from kernel.errors import ServiceError, invalid, unavailable
from kernel.timing import Timer

from .backend import Backend
from .conversations import ConversationStore
from .domain import MAX_HISTORY_MESSAGE_CHARS, MAX_HISTORY_MESSAGES, GenParams
from .prompt import Prompt
from .rewrite import HistoryTurn, Trimmed, clean_rewrite, rewrite_messages, rules_rewrite, turns_from_messages
from .router import Router
from .tokens import TokenCounter

log = logging.getLogger(__name__)

# The rewrite is one short line.
REWRITE_MAX_TOKENS = 96


async def standalone_question(
    router: Router,
    counter: TokenCounter,
    question: str,
    trimmed: Trimmed,
    candidates: Sequence[Backend],
    params: GenParams,
    timer: Timer,
    timeout_s: float,
) -> tuple[str, str]:
    """(the question retrieval searches, how it was made: "none", "rules", "llm",
    "rules_fallback"). With no history: the question itself. When the first candidate is the
    built-in generator: the rules. Otherwise the rewrite prompt on the LLM backends (same
    failover as answers), falling back to the rules if none answers within `timeout_s`."""
    q = " ".join(question.split())
    if not trimmed.turns:
        return q, "none"
    with timer.stage("rewrite") as st:
        if candidates[0].kind == "extractive":
            out = rules_rewrite(q, trimmed.turns)
            return out, ("none" if out == q else "rules")
        messages = rewrite_messages(q, trimmed.turns)
        prompt = Prompt(q, (), messages, sum(counter.count(m["content"]) for m in messages), 0, 0)
        rp = GenParams(backend=params.backend, model=params.model, max_tokens=REWRITE_MAX_TOKENS, temperature=0.0)
        parts: list[str] = []
        try:
            async with asyncio.timeout(timeout_s):
                opened = await router.open(list(candidates), prompt, rp, Timer())
                try:
                    if opened.backend.kind == "extractive":  # every LLM failed over
                        raise unavailable("no LLM backend answered the rewrite", reason="REWRITE_FAILED")
                    st.backend = opened.backend.name
                    if opened.first is not None:
                        parts.append(opened.first.text)
                    while (d := await opened.next()) is not None:
                        parts.append(d.text)
                finally:
                    await opened.aclose()
        except (ServiceError, TimeoutError) as err:
            log.warning("question rewrite failed; using the rules", extra={"err": str(err)})
            return rules_rewrite(q, trimmed.turns), "rules_fallback"
        return clean_rewrite("".join(parts), q), "llm"


def check_history(history: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Validates history given with the request (roles, sizes)."""
    if len(history) > MAX_HISTORY_MESSAGES:
        raise invalid(
            f"history has {len(history)} messages; the limit is {MAX_HISTORY_MESSAGES}",
            reason="HISTORY_TOO_LONG",
        )
    out = []
    for i, (role, content) in enumerate(history):
        if role not in ("user", "assistant", "system"):
            raise invalid(f"history message {i} has role {role!r}; use user or assistant", reason="BAD_HISTORY_ROLE")
        if len(content) > MAX_HISTORY_MESSAGE_CHARS:
            raise invalid(
                f"history message {i} has {len(content)} characters; the limit is {MAX_HISTORY_MESSAGE_CHARS}",
                reason="HISTORY_MESSAGE_TOO_LONG",
            )
        out.append((role, content))
    return out


async def history_turns(
    conversations: ConversationStore | None,
    conversation_id: str,
    history: Sequence[tuple[str, str]],
    timer: Timer,
) -> tuple[str, list[HistoryTurn]]:
    """(the conversation's id, its turns) of a stored conversation when `conversation_id` is set,
    else ("", the turns of the checked `history` given with the request)."""
    if not conversation_id:
        return "", turns_from_messages(check_history(history))
    if conversations is None:
        raise unavailable(
            "conversations are not available: this llm_gateway has no storage service "
            "(set DDNRAG_LLM_GATEWAY_STORAGE_ADDR)",
            reason="NO_CONVERSATION_STORE",
        )
    with timer.stage("conversation_load"):
        conv = await conversations.get(conversation_id)
    return conv.id, [HistoryTurn(t.question, t.answer, t.search_query) for t in conv.turns]
