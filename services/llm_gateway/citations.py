"""Citation renumbering on the token stream.

A backend cites passages by their number in the prompt ("[4]", "[1, 5]"). A reader wants the
citations numbered in the order they first appear in the answer, and listed in that order, so
`[4] ... [1] ... [5]` is sent as `[1] ... [2] ... [3]`. `Renumberer` rewrites the text as it
streams: a marker split across tokens ("[", "4", "]") is held back until it closes, so only a few
characters are ever delayed. Numbers outside 1..passages are left as they are (they point to no
passage and are not listed).
"""

from __future__ import annotations

import re

_MARKER = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
# An unfinished marker at the end of the text: "[", "[4", "[4, ", ...
_OPEN = re.compile(r"\[[\d,\s]{0,16}$")


class Renumberer:
    """Rewrites passage numbers to first-appearance numbers. `order[i]` is the passage number
    (1-based, as in the prompt) that is cited as [i + 1]."""

    def __init__(self, passages: int) -> None:
        self.passages = passages
        self.order: list[int] = []
        self._new: dict[int, int] = {}
        self._held = ""

    def _number(self, old: int) -> int:
        if old not in self._new:
            self.order.append(old)
            self._new[old] = len(self.order)
        return self._new[old]

    def _rewrite(self, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            parts = [int(p) for p in m.group(1).split(",")]
            out = [str(self._number(n)) if 1 <= n <= self.passages else str(n) for n in parts]
            return "[" + ", ".join(out) + "]"

        return _MARKER.sub(sub, text)

    def feed(self, text: str) -> str:
        """The text that can be sent now (possibly empty: a marker is still open)."""
        buf = self._held + text
        m = _OPEN.search(buf)
        if m is not None:
            self._held = buf[m.start() :]
            buf = buf[: m.start()]
        else:
            self._held = ""
        return self._rewrite(buf)

    def flush(self) -> str:
        """What is still held (an unclosed "[..." at the end of the answer), rewritten."""
        out, self._held = self._rewrite(self._held), ""
        return out

    def renumber(self, text: str) -> str:
        """A whole text at once."""
        return self.feed(text) + self.flush()
