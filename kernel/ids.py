"""Content-addressed and stable ids shared by every component."""

from __future__ import annotations

import hashlib
import re

# The rule for collection, backend and A/B arm names: the one home of it (the demo page's form
# repeats the pattern; tests/unit/test_shared_rules.py checks they agree).
NAME_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
NAME_RULE = "1-63 characters a-z, 0-9, '_' or '-', starting with a letter or digit"
_NAME_RE = re.compile(NAME_PATTERN)


def document_id(collection: str, name: str) -> str:
    """The id of the document called `name` in `collection`: stable, so uploading a file with the
    same name again replaces that document instead of adding a second copy."""
    return hashlib.sha256(f"{collection}\x00{name}".encode()).hexdigest()[:16]


def document_key(collection: str, doc_id: str, name: str) -> str:
    """Where a raw document lives in the object store."""
    return f"docs/{collection}/{doc_id}/{name}"


def chunk_id(collection: str, document_id: str, position: int, text: str) -> str:
    """Content-addressed: the same document, position and text always give the same id. Whoever
    reads a chunk object checks its body against it (the retriever's fetch, an A/B run)."""
    h = hashlib.sha256()
    for part in (collection, document_id, str(position), text):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:32]


def valid_name(name: str) -> bool:
    """Collection and backend names: [a-z0-9][a-z0-9_-]{0,62}."""
    return _NAME_RE.fullmatch(name) is not None
