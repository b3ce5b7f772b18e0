"""The built-in deterministic guard: length limits and a configurable deny-list on the question
and the answer. (Redaction of e-mail addresses and phone numbers is `redact.py`; passages that
try to instruct the model are `injection.py`.)"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Verdict


class BuiltinGuard:
    """`deny` terms match whole words, case-insensitively; a term may be a phrase."""

    name = "builtin"

    def __init__(
        self,
        *,
        max_question_chars: int = 4096,
        max_answer_chars: int = 0,
        deny: Sequence[str] = (),
        stages: tuple[str, ...] = ("input", "output"),
    ) -> None:
        self.max_question_chars = max_question_chars
        self.max_answer_chars = max_answer_chars
        self.stages = stages
        terms = [t.strip() for t in deny if t.strip()]
        self._deny = (
            re.compile(r"(?<!\w)(?:" + "|".join(re.escape(t) for t in terms) + r")(?!\w)", re.IGNORECASE)
            if terms
            else None
        )

    async def check(self, stage: str, question: str, answer: str) -> Verdict:
        text, limit = (question, self.max_question_chars) if stage == "input" else (answer, self.max_answer_chars)
        what = "question" if stage == "input" else "answer"
        if limit and len(text) > limit:
            return Verdict(
                self.name, stage, "refused", "TOO_LONG", f"the {what} has {len(text)} characters; the limit is {limit}"
            )
        if self._deny is not None:
            m = self._deny.search(text)
            if m:
                return Verdict(
                    self.name, stage, "refused", "DENIED_TERM", f"the {what} contains a denied term ({m.group(0)!r})"
                )
        return Verdict(self.name, stage, "allowed")

    async def close(self) -> None:
        return None
