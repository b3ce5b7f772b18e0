"""Turns raw document bytes into plain text: pdf, docx, pptx, xlsx, csv, html, md and txt.

Every failure is a `ParseError` whose message says, for people, why the file was refused; the
ingestion job records it for that file and goes on with the others. Office files are zip
archives, so their uncompressed size is checked before any parser opens them (zip bombs).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable
from pathlib import PurePosixPath

SUPPORTED = ("pdf", "docx", "pptx", "xlsx", "csv", "html", "htm", "md", "markdown", "txt", "text")


class ParseError(Exception):
    """A file that cannot be ingested; the message is the reason shown in the job."""


def extension(name: str) -> str:
    return PurePosixPath(name).suffix.lower().lstrip(".")


def parse_document(
    name: str, data: bytes, *, max_bytes: int = 64 * 1024 * 1024, max_unpacked_bytes: int = 256 * 1024 * 1024
) -> str:
    """The text of file `name`; raises ParseError for empty, oversize, unsupported or corrupt files."""
    if len(data) == 0:
        raise ParseError("the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ParseError(f"the file is {len(data)} bytes, over the {max_bytes}-byte limit")
    ext = extension(name)
    parser = _PARSERS.get(ext)
    if parser is None:
        raise ParseError(f"unsupported file type {ext!r}; accepted: {', '.join(SUPPORTED)}")
    if ext in ("docx", "pptx", "xlsx"):
        _check_zip(data, ext, max_unpacked_bytes)
    try:
        text = parser(data)
    except ParseError:
        raise
    except Exception as err:  # noqa: BLE001 - parsers raise anything on corrupt input
        raise ParseError(f"not a valid {ext.upper()} file: {_short(err)}") from None
    text = text.replace("\x00", "").strip()
    if not text:
        raise ParseError(f"no text could be extracted from this {ext.upper()} file")
    return text


def _short(err: BaseException) -> str:
    msg = str(err).strip() or type(err).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _check_zip(data: bytes, ext: str, max_unpacked: int) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise ParseError(f"not a valid {ext.upper()} file: {_short(err)}") from None
    with zf:
        total = 0
        for info in zf.infolist():
            total += info.file_size
            if total > max_unpacked:
                raise ParseError(f"the archive unpacks to more than {max_unpacked} bytes (zip bomb guard); refused")
            if info.compress_size and info.file_size / info.compress_size > 1000 and info.file_size > 10_000_000:
                raise ParseError(
                    f"member {info.filename!r} has a compression ratio over 1000:1 (zip bomb guard); refused"
                )


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM), UTF-16 with BOM, else refuses binary data."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data[:8192]:
        raise ParseError("the file looks binary, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        raise ParseError("the file is not valid UTF-8 text") from None


def _txt(data: bytes) -> str:
    return decode_text(data)


def _html(data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ParseError("the PDF is encrypted; upload an unencrypted copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except PdfReadError as err:
        raise ParseError(f"not a valid PDF: {_short(err)}") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())


def _docx(data: bytes) -> str:
    import docx

    doc = docx.Document(io.BytesIO(data))
    parts = [p.text for p in doc.paragraphs if p.text.strip()]
    for table in doc.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells]
            if any(cells):
                parts.append(" | ".join(cells))
    return "\n\n".join(parts)


def _pptx(data: bytes) -> str:
    from pptx import Presentation

    prs = Presentation(io.BytesIO(data))
    slides = []
    for i, slide in enumerate(prs.slides, 1):
        texts = []
        for shape in slide.shapes:
            if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                texts.append(shape.text_frame.text.strip())
            if getattr(shape, "has_table", False):
                for row in shape.table.rows:
                    texts.append(" | ".join(c.text.strip() for c in row.cells))
        if texts:
            slides.append(f"Slide {i}\n" + "\n".join(texts))
    return "\n\n".join(slides)


def _xlsx(data: bytes) -> str:
    import openpyxl

    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = []
        for ws in wb.worksheets:
            rows = []
            for row in ws.iter_rows(values_only=True):
                cells = ["" if v is None else str(v) for v in row]
                if any(c.strip() for c in cells):
                    rows.append(" | ".join(cells).rstrip(" |"))
            if rows:
                sheets.append(f"Sheet {ws.title}\n" + "\n".join(rows))
        return "\n\n".join(sheets)
    finally:
        wb.close()


def _csv(data: bytes) -> str:
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    rows = [r for r in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in r)]
    if not rows:
        return ""
    header, body = rows[0], rows[1:]
    if not body:
        return " | ".join(header)
    out = []
    for r in body:
        pairs = [f"{h.strip()}: {v.strip()}" for h, v in zip(header, r, strict=False) if v.strip()]
        out.append("; ".join(pairs))
    return "\n".join(out)


_PARSERS: dict[str, Callable[[bytes], str]] = {
    "txt": _txt,
    "text": _txt,
    "md": _txt,
    "markdown": _txt,
    "html": _html,
    "htm": _html,
    "pdf": _pdf,
    "docx": _docx,
    "pptx": _pptx,
    "xlsx": _xlsx,
    "csv": _csv,
}
