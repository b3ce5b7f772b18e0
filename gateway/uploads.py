"""Checks on uploaded files, done while the bytes stream through (nothing is buffered whole).

An upload is accepted when its extension is one the retriever parses and its bytes look like that
format: PDFs start with `%PDF-`, Office files are ZIP containers (`PK\\x03\\x04`), and text formats
must be UTF-8 without NUL bytes, checked incrementally across chunks. An empty file, a binary file
posing as text, or a size over the limit raises `ApiError`, which cancels the storage upload so no
object is left behind.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import unicodedata
from collections.abc import AsyncIterator, Callable

from kernel.filetypes import ACCEPTED_TEXT, LEGACY, TEXT_KINDS, ZIP_KINDS, extension, kind_of
from kernel.filetypes import CONTENT_TYPES as FILE_CONTENT_TYPES
from kernel.ids import valid_name

from .errors import ApiError

# The accepted kinds live in kernel.filetypes; text kinds are stored with their charset, since the
# upload checks that they decode as UTF-8.
CONTENT_TYPES = {k: v + ("; charset=utf-8" if k in TEXT_KINDS else "") for k, v in FILE_CONTENT_TYPES.items()}


def check_collection(name: str) -> str:
    if not valid_name(name):
        raise ApiError(
            400,
            f"collection {name[:80]!r} is not valid: use 1-63 characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit",
            "INVALID_COLLECTION",
        )
    return name


def clean_filename(raw: str | None) -> str:
    """The file's base name, safe as the last segment of an object key."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = unicodedata.normalize("NFC", name).strip()
    name = "".join(c for c in name if c.isprintable())
    if not name or name in (".", ".."):
        raise ApiError(400, "each uploaded file needs a file name with an extension; " + ACCEPTED_TEXT)
    if len(name.encode()) > 200:
        raise ApiError(400, "file names are limited to 200 bytes", "NAME_TOO_LONG")
    return name


def file_kind(name: str) -> str:
    """The accepted format of `name` by extension, or 415 saying what is accepted."""
    kind = kind_of(name)
    if kind is None:
        ext = extension(name)
        if ext in LEGACY:
            raise ApiError(
                415,
                f"{name}: .{ext} (the legacy binary Office format) is not supported; save it as .{LEGACY[ext]}"
                f" and upload that; {ACCEPTED_TEXT}",
                "UNSUPPORTED_TYPE",
            )
        shown = f".{ext}" if ext else "no extension"
        raise ApiError(415, f"{name}: unsupported file type ({shown}); {ACCEPTED_TEXT}", "UNSUPPORTED_TYPE")
    return kind


def document_id(collection: str, name: str) -> str:
    """Stable for collection + file name, so uploading the same name again replaces the document."""
    return hashlib.sha256(f"{collection}\x00{name}".encode()).hexdigest()[:16]


def object_key(collection: str, doc_id: str, name: str) -> str:
    return f"docs/{collection}/{doc_id}/{name}"


class CheckedStream:
    """Wraps an upload's chunks: counts bytes, enforces the limit and checks the format."""

    def __init__(
        self,
        name: str,
        kind: str,
        chunks: AsyncIterator[bytes],
        max_bytes: int,
        on_error: Callable[[], object] | None = None,
    ) -> None:
        self.on_error = on_error
        self.name = name
        self.kind = kind
        self.chunks = chunks
        self.max_bytes = max_bytes
        self.size = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")() if kind in TEXT_KINDS else None
        # The refusal, kept because the storage client may wrap it when it cancels the upload.
        self.error: ApiError | None = None

    def _check_first(self, head: bytes) -> None:
        if self.kind == "pdf" and not head.startswith(b"%PDF-"):
            raise ApiError(
                422, f"{self.name}: not a PDF (it does not start with %PDF-); {ACCEPTED_TEXT}", "BAD_CONTENT"
            )
        if self.kind in ZIP_KINDS and not head.startswith(b"PK\x03\x04"):
            raise ApiError(
                422, f"{self.name}: not a valid .{self.kind} file (not an Office ZIP container)", "BAD_CONTENT"
            )

    def _check_text(self, data: bytes, final: bool) -> None:
        if self._decoder is None:
            return
        if b"\x00" in data:
            raise ApiError(
                422, f"{self.name}: binary content in a .{self.kind} file; text files must be UTF-8", "BINARY_CONTENT"
            )
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError:
            raise ApiError(
                422, f"{self.name}: not UTF-8 text; .{self.kind} files must be UTF-8 encoded", "BINARY_CONTENT"
            ) from None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._checked():
                yield data
        except ApiError as err:
            self.error = err
            if self.on_error is None:
                raise
            # Never end the request stream normally after a refusal: a half-close racing the
            # cancel could let the server commit the object. Park until the call is cancelled.
            self.on_error()
            await asyncio.get_running_loop().create_future()

    async def _checked(self) -> AsyncIterator[bytes]:
        async for data in self.chunks:
            if not data:
                continue
            if self.size == 0:
                self._check_first(data)
            self.size += len(data)
            if self.size > self.max_bytes:
                raise ApiError(
                    413, f"{self.name} is larger than the upload limit of {self.max_bytes} bytes", "TOO_LARGE"
                )
            self._check_text(data, final=False)
            yield data
        if self.size == 0:
            raise ApiError(422, f"{self.name} is empty; upload a non-empty file ({ACCEPTED_TEXT})", "EMPTY_FILE")
        self._check_text(b"", final=True)
