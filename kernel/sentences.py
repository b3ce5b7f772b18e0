"""Sentences of a passage, and their vectors stored beside a chunk: one owner for both sides.

The retriever embeds a chunk's sentences once, at ingestion, and stores them beside the chunk
object (`sentences/<collection>/<chunk_id>`); the LLM gateway's extractive generator ranks the
sentences of the passages it is given with those vectors instead of embedding them per answer.
Both split with `split_sentences` below, and both name a sentence by `sentence_key` (a hash of
its text as split), so a sentence the generator finds that has no stored vector (a splitter that
changed since, a passage cut to fit the prompt) is simply embedded at answer time.

The stored record (`encode` / `decode`), little-endian:
    b"DDNSV" + format byte (FORMAT = 1)
    u32 header length + UTF-8 JSON header {"model": embedder model id, "dim": d, "n": n}
    n x 8-byte sentence keys
    n x d float16 vectors (L2-normalised by the embedder; float16 keeps the cosine within 1e-3)
A record that does not parse, or of another format, decodes to None: the caller falls back to
embedding at answer time, as for chunks written before sentence vectors existed.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAGIC = b"DDNSV"
FORMAT = 1
KEY_BYTES = 8

_SENT_SPLIT = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# A split after one of these is undone ("Dr. Smith", "e.g. this").
_ABBREV = re.compile(r"(?:^|\s)(?:dr|mr|mrs|ms|prof|st|vs|etc|fig|no|e\.g|i\.e|approx|inc|ltd)\.$", re.IGNORECASE)
_END = re.compile(r"[.!?][\"')\]]*$")
_START = re.compile(r"^[\"'(\[]?[A-Z0-9]")
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s")


def split_sentences(text: str) -> list[str]:
    """Sentences of a passage: paragraphs and list items first, then sentence punctuation.
    Headings (markdown `#` lines, a paragraph that is one short line without a full stop, setext
    underlines) are dropped; list bullets and numbers are removed from the items they mark."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n|\n(?=\s*(?:[-*+]|\d+[.)]|#+)\s)|\n(?=\s*[=-]{3,}\s*(?:\n|$))", text):
        raw = block.strip()
        if not raw or re.match(r"^#{1,6}\s", raw) or re.fullmatch(r"[=\-\s]+", raw):
            continue
        line = " ".join(raw.split())
        line = re.sub(r"^(?:[-*+]|\d+[.)])\s+", "", line)
        if "\n" not in raw and not _END.search(line) and len(line.split()) <= 12 and not _LIST.match(raw):
            continue  # a title line: "Time to first byte and why it matters"
        merged: list[str] = []
        for s in (s.strip() for s in _SENT_SPLIT.split(line)):
            if not s:
                continue
            if merged and _ABBREV.search(merged[-1]):
                merged[-1] = f"{merged[-1]} {s}"
            else:
                merged.append(s)
        out.extend(merged)
    return out


def is_sentence(s: str, min_words: int) -> bool:
    """A whole sentence: enough words, starts like a sentence (not a fragment cut from the
    middle of one), ends with a full stop, question or exclamation mark (not a colon)."""
    return len(s.split()) >= min_words and bool(_START.match(s)) and bool(_END.search(s))


def whole_sentences(text: str) -> list[str]:
    """The distinct whole sentences of `text` (any length): the ones worth a stored vector. The
    generator's own `min_words` filter only ever keeps a subset of them."""
    return list(dict.fromkeys(s for s in split_sentences(text) if is_sentence(s, 1)))


def sentence_key(sentence: str) -> bytes:
    """The 8-byte name of a sentence (BLAKE2b of its text as `split_sentences` gave it)."""
    return hashlib.blake2b(sentence.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()


@dataclass(frozen=True)
class SentenceVectors:
    """The stored vectors of one chunk's sentences: `keys[i]` (see `sentence_key`) names the
    sentence of row i of `vectors` ((n, dim) float16, L2-normalised)."""

    model: str
    keys: tuple[bytes, ...]
    vectors: np.ndarray

    def lookup(self) -> dict[bytes, np.ndarray]:
        return dict(zip(self.keys, self.vectors, strict=True))


def encode(model: str, sentences: Sequence[str], vectors: np.ndarray) -> bytes:
    """The stored record of `sentences` and their (n, d) vectors (any float dtype)."""
    vecs = np.ascontiguousarray(vectors, dtype="<f2")
    if vecs.ndim != 2 or len(vecs) != len(sentences):
        raise ValueError(f"{len(sentences)} sentences but vectors of shape {vectors.shape}")
    header = json.dumps({"model": model, "dim": int(vecs.shape[1]), "n": len(sentences)}).encode()
    keys = b"".join(sentence_key(s) for s in sentences)
    return b"".join((MAGIC, bytes([FORMAT]), struct.pack("<I", len(header)), header, keys, vecs.tobytes()))


def decode(data: bytes) -> SentenceVectors | None:
    """The record `encode` wrote, or None when `data` is not one (another format, cut short)."""
    head = len(MAGIC) + 1 + 4
    if len(data) < head or data[: len(MAGIC)] != MAGIC or data[len(MAGIC)] != FORMAT:
        return None
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC) + 1)
    try:
        meta = json.loads(data[head : head + hlen])
        n, dim, model = int(meta["n"]), int(meta["dim"]), str(meta["model"])
    except (ValueError, KeyError, TypeError):
        return None
    at = head + hlen
    if n < 0 or dim <= 0 or len(data) != at + n * KEY_BYTES + n * dim * 2:
        return None
    keys = tuple(data[at + i * KEY_BYTES : at + (i + 1) * KEY_BYTES] for i in range(n))
    vecs = np.frombuffer(data, dtype="<f2", count=n * dim, offset=at + n * KEY_BYTES).reshape(n, dim)
    return SentenceVectors(model, keys, vecs)
