"""Redaction of e-mail addresses and phone numbers in streamed answers.

Tokens arrive in pieces, and an address may span several. `StreamRedactor` holds back the tail
that could still be part of one (the text after the last space, and anything within
`HOLD_CHARS` of the end that a phone number could span), and releases the rest redacted. At the
end `flush()` releases the remainder. The concatenation of what it releases equals
`redact(whole answer)`.
"""

from __future__ import annotations

import re

EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# International or national numbers with 7+ digits, separated by spaces, dots, dashes or
# parentheses: +1 (555) 010-0199, 0044 20 7946 0958, 555-0100-12. Citations like [12] and
# years do not have 7 digits; dates and decimals are excluded by the separators and lengths.
PHONE_RE = re.compile(r"(?<![\w.])(?:\+|00)?\d(?:[ .\-]?\(?\d{1,4}\)?){2,6}[ .\-]?\d{2,4}(?![\w])")
EMAIL_MASK = "[email redacted]"
PHONE_MASK = "[phone redacted]"
HOLD_CHARS = 24


def _phone(m: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in m.group(0))
    return PHONE_MASK if 7 <= digits <= 15 else m.group(0)


def redact(text: str) -> tuple[str, int]:
    """(text with e-mail addresses and phone numbers masked, how many were masked)."""
    out, n_mail = EMAIL_RE.subn(EMAIL_MASK, text)
    before = out.count(PHONE_MASK)
    out = PHONE_RE.sub(_phone, out)
    return out, n_mail + out.count(PHONE_MASK) - before


class StreamRedactor:
    def __init__(self) -> None:
        self._pending = ""
        self.count = 0

    def feed(self, text: str) -> str:
        """Redacted text that is safe to release now (may be empty)."""
        self._pending += text
        cut = self._safe_cut()
        if cut <= 0:
            return ""
        head, self._pending = self._pending[:cut], self._pending[cut:]
        out, n = redact(head)
        self.count += n
        return out

    def flush(self) -> str:
        out, n = redact(self._pending)
        self._pending = ""
        self.count += n
        return out

    def _safe_cut(self) -> int:
        p = self._pending
        limit = len(p) - HOLD_CHARS
        if limit <= 0:
            return 0
        cut = max(p.rfind(" ", 0, limit + 1), p.rfind("\n", 0, limit + 1))
        if cut <= 0:
            return 0
        # Never cut inside a match that starts before the cut.
        for rx in (EMAIL_RE, PHONE_RE):
            for m in rx.finditer(p):
                if m.start() < cut < m.end():
                    cut = m.start()
        return cut
