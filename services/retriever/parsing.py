"""Turns raw document bytes into plain text: pdf, docx, pptx, xlsx, csv, html, md and txt.

Every failure is a `ParseError` whose message says, for people, why the file was refused; the
ingestion job records it for that file and goes on with the others. Office files are zip
archives, so their uncompressed size, in all and per part, is checked before any parser opens
them (zip bombs).

Everything but plain text is parsed in a worker process with memory, CPU and wall-clock limits
(sandbox.py): a file that makes a parser spin or allocate without bound costs one worker, and is
refused with the reason. Tables are read without expanding spans (a `gridSpan="2000000000"`
cell is one cell), a worksheet's declared `<dimension>` is ignored, and rows and cells are
capped, so a small file cannot ask for billions of empty cells.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kernel.filetypes import ACCEPTED_TEXT, extension, kind_of


class ParseError(Exception):
    """A file that cannot be ingested; the message is the reason shown in the job."""


# Formats parsed in the service's own process: decoding text is linear in the file's size.
IN_PROCESS = frozenset({"txt", "md"})


@dataclass(frozen=True)
class Caps:
    """How much structure one file may declare (see sandbox.ParserLimits for the variables)."""

    max_part_bytes: int = 64 * 1024 * 1024
    max_cells: int = 2_000_000
    max_rows: int = 250_000


def parse_document(
    name: str, data: bytes, *, max_bytes: int = 64 * 1024 * 1024, max_unpacked_bytes: int = 256 * 1024 * 1024
) -> str:
    """The text of file `name`; raises ParseError for empty, oversize, unsupported, corrupt or
    hostile files. Blocking (run it in a thread); all but plain text go to a worker process."""
    ext = _precheck(name, data, max_bytes)
    if ext in IN_PROCESS:
        return parse_in_process(name, data, max_bytes=max_bytes, max_unpacked_bytes=max_unpacked_bytes)
    from .sandbox import default_pool

    pool = default_pool()
    limits = pool.limits
    caps = Caps(limits.max_part_bytes, limits.max_cells, limits.max_rows)
    answer = pool.parse(
        {
            "name": name,
            "max_bytes": max_bytes,
            "max_unpacked_bytes": max_unpacked_bytes,
            "caps": dataclasses.asdict(caps),
        },
        data,
    )
    if not answer.get("ok"):
        raise ParseError(str(answer.get("error") or "the parser failed on this file"))
    return str(answer["text"])


def _precheck(name: str, data: bytes, max_bytes: int) -> str:
    if len(data) == 0:
        raise ParseError("the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ParseError(f"the file is {len(data)} bytes, over the {max_bytes}-byte limit")
    kind = kind_of(name)
    if kind is None:
        raise ParseError(f"unsupported file type {extension(name)!r}; {ACCEPTED_TEXT}")
    return kind


def parse_in_process(
    name: str,
    data: bytes,
    *,
    max_bytes: int = 64 * 1024 * 1024,
    max_unpacked_bytes: int = 256 * 1024 * 1024,
    caps: Caps | None = None,
) -> str:
    """`parse_document` in this process, with no memory or time limit: the worker's entry point,
    and the path for plain text."""
    ext = _precheck(name, data, max_bytes)
    caps = caps or Caps()
    if ext in ("docx", "pptx", "xlsx"):
        _check_zip(data, ext, max_unpacked_bytes, caps.max_part_bytes)
    try:
        text = _PARSERS[ext](data, caps)
    except (ParseError, MemoryError):
        raise  # a MemoryError ends the worker (parse_worker.py)
    except Exception as err:  # noqa: BLE001 - parsers raise anything on corrupt input
        raise ParseError(f"not a valid {ext.upper()} file: {_short(err)}") from None
    text = text.replace("\x00", "").strip()
    if not text:
        raise ParseError(f"no text could be extracted from this {ext.upper()} file")
    return text


class _Budget:
    """Counts rows and cells read from one file; past a cap the file is refused."""

    def __init__(self, caps: Caps) -> None:
        self.caps, self.rows, self.cells = caps, 0, 0

    def row(self, cells: int) -> None:
        self.rows += 1
        self.cells += cells
        if self.rows > self.caps.max_rows:
            raise ParseError(f"the file has more than {self.caps.max_rows} table rows; refused")
        if self.cells > self.caps.max_cells:
            raise ParseError(f"the file has more than {self.caps.max_cells} table cells; refused")


def _short(err: BaseException) -> str:
    msg = str(err).strip() or type(err).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _check_zip(data: bytes, ext: str, max_unpacked: int, max_part: int) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise ParseError(f"not a valid {ext.upper()} file: {_short(err)}") from None
    with zf:
        total = 0
        for info in zf.infolist():
            total += info.file_size
            if info.file_size > max_part:
                raise ParseError(
                    f"the part {info.filename!r} unpacks to {info.file_size} bytes, over the {max_part}-byte "
                    "limit per part; refused"
                )
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


def _txt(data: bytes, caps: Caps) -> str:
    return decode_text(data)


def _html(data: bytes, caps: Caps) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "lxml")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(data: bytes, caps: Caps) -> str:
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


W_NS = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
MAX_GRID_SPAN = 1000


def _docx(data: bytes, caps: Caps) -> str:
    import docx

    doc = docx.Document(io.BytesIO(data))
    parts = [p.text for p in doc.paragraphs if p.text.strip()]
    parts.extend(" | ".join(row) for row in _docx_rows(doc.element.body, _Budget(caps)) if any(row))
    return "\n\n".join(parts)


def _docx_rows(body: object, budget: _Budget) -> Iterator[list[str]]:
    """Every table row, nested tables included, straight from the XML: each `<w:tc>` is one cell
    whatever its `gridSpan` (python-docx's `row.cells` would expand spans into a grid)."""
    for span in body.iter(W_NS + "gridSpan"):  # type: ignore[attr-defined]
        val = span.get(W_NS + "val", "1")
        if not val.isdigit() or int(val) > MAX_GRID_SPAN:
            raise ParseError(
                f"a table cell spans {val[:20]} columns (Word allows 63, this reader {MAX_GRID_SPAN}); refused"
            )
    for tbl in body.iter(W_NS + "tbl"):  # type: ignore[attr-defined]
        for tr in tbl.iterchildren(W_NS + "tr"):
            cells = [
                "".join(t.text or "" for p in tc.iterchildren(W_NS + "p") for t in p.iter(W_NS + "t")).strip()
                for tc in tr.iterchildren(W_NS + "tc")
            ]
            budget.row(len(cells))
            yield cells


def _pptx(data: bytes, caps: Caps) -> str:
    from pptx import Presentation

    budget = _Budget(caps)
    prs = Presentation(io.BytesIO(data))
    slides = []
    for i, slide in enumerate(prs.slides, 1):
        texts = []
        for shape in slide.shapes:
            if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                texts.append(shape.text_frame.text.strip())
            if getattr(shape, "has_table", False):
                for row in shape.table.rows:
                    cells = [c.text.strip() for c in row.cells]
                    budget.row(len(cells))
                    texts.append(" | ".join(cells))
        if texts:
            slides.append(f"Slide {i}\n" + "\n".join(texts))
    return "\n\n".join(slides)


def _xlsx(data: bytes, caps: Caps) -> str:
    import openpyxl

    budget = _Budget(caps)
    wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets = []
        for ws in wb.worksheets:
            # The declared <dimension> (say A1:XFD1048576) would pad every row to it; read the
            # cells that exist instead, and count what is read.
            ws.reset_dimensions()
            rows = []
            for row in ws.iter_rows(values_only=True):
                budget.row(len(row))
                cells = ["" if v is None else str(v) for v in row]
                if any(c.strip() for c in cells):
                    rows.append(" | ".join(cells).rstrip(" |"))
            if rows:
                sheets.append(f"Sheet {ws.title}\n" + "\n".join(rows))
        return "\n\n".join(sheets)
    finally:
        wb.close()


def _csv(data: bytes, caps: Caps) -> str:
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


_PARSERS: dict[str, Callable[[bytes, Caps], str]] = {
    "txt": _txt,
    "md": _txt,
    "html": _html,
    "pdf": _pdf,
    "docx": _docx,
    "pptx": _pptx,
    "xlsx": _xlsx,
    "csv": _csv,
}
