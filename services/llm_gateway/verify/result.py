"""What a groundedness check found: plain data, kept with a conversation's turn
(conversations.py) as well as sent in the `verify` event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SentenceCheck:
    index: int
    text: str
    citations: tuple[int, ...]
    score: float
    supported: bool


@dataclass(frozen=True)
class Verification:
    """The check of one answer text."""

    sentences: tuple[SentenceCheck, ...]
    answer_score: float
    method: str
    duration_ns: int

    @property
    def unsupported(self) -> list[SentenceCheck]:
        return [s for s in self.sentences if not s.supported]

    def as_json(self) -> dict[str, Any]:
        return {
            "sentences": [
                {
                    "index": c.index,
                    "text": c.text,
                    "citations": list(c.citations),
                    "score": c.score,
                    "supported": c.supported,
                }
                for c in self.sentences
            ],
            "answer_score": self.answer_score,
            "method": self.method,
            "duration_ns": self.duration_ns,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Verification:
        return cls(
            tuple(
                SentenceCheck(
                    int(c["index"]),
                    str(c["text"]),
                    tuple(int(n) for n in c.get("citations") or ()),
                    float(c["score"]),
                    bool(c["supported"]),
                )
                for c in d.get("sentences") or ()
            ),
            float(d.get("answer_score", 1.0)),
            str(d.get("method", "")),
            int(d.get("duration_ns", 0)),
        )
