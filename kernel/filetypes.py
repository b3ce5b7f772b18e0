"""The document types the platform ingests: the one home of that rule.

The retriever parses them, the gateway and the CLI refuse anything else before uploading, and
clients label uploads with their content type. A kind is the canonical extension; a few aliases
name the same kind ("htm" is html, "markdown" is md, "text" is txt).
"""

from __future__ import annotations

# Canonical kinds, in the order messages list them.
KINDS = ("pdf", "docx", "pptx", "xlsx", "csv", "html", "md", "txt")
ALIASES = {"htm": "html", "markdown": "md", "text": "txt"}
# Every extension accepted (kinds and aliases), without the dot.
EXTENSIONS = (*KINDS, *ALIASES)
ACCEPTED_TEXT = "accepted: " + ", ".join(KINDS)
# Legacy binary Office formats are refused, not parsed (no well-kept pure-Python parser reads them);
# each maps to the kind to save it as, which the refusal names.
LEGACY = {"doc": "docx", "xls": "xlsx", "ppt": "pptx"}
# Plain-text kinds (decoded as UTF-8); the rest are PDF or Office zip containers.
TEXT_KINDS = frozenset({"csv", "html", "md", "txt"})
ZIP_KINDS = frozenset({"docx", "pptx", "xlsx"})
CONTENT_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "html": "text/html",
    "md": "text/markdown",
    "txt": "text/plain",
}


def extension(name: str) -> str:
    """The file name's extension, lower case, without the dot ("" when it has none). The base name
    counts from its last dot, so ".md" is a Markdown file."""
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[-1].lower() if "." in base else ""


def kind_of(name: str) -> str | None:
    """The accepted kind of a file name by its extension, or None when it is not accepted."""
    ext = extension(name)
    ext = ALIASES.get(ext, ext)
    return ext if ext in KINDS else None
