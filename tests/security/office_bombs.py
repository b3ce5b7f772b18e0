"""Small office files that ask a parser for huge work: a DOCX table cell spanning two billion
columns, an XLSX whose `<dimension>` declares every cell of the sheet, an oversized XML part, and
a deeply nested table. Each is a valid archive of a few KiB (the oversized part aside)."""

from __future__ import annotations

import io
import random
import re
import zipfile

W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def _docx_with_body(body_xml: str) -> bytes:
    """A python-docx document whose `<w:body>` content is replaced by `body_xml`."""
    import docx

    buf = io.BytesIO()
    docx.Document().save(buf)
    return _rewrite(
        buf.getvalue(),
        "word/document.xml",
        lambda xml: re.sub(r"<w:body>.*</w:body>", lambda _m: f"<w:body>{body_xml}</w:body>", xml, flags=re.S),
    )


def _rewrite(archive: bytes, member: str, edit) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == member:
                data = edit(data.decode()).encode()
            dst.writestr(info.filename, data)
    return out.getvalue()


def _p(text: str) -> str:
    return f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>"


def gridspan_docx() -> bytes:
    """One table row whose first cell declares gridSpan=2000000000 (python-docx's row.cells
    would build a two-billion-cell grid)."""
    cell = '<w:tc><w:tcPr><w:gridSpan w:val="2000000000"/></w:tcPr>' + _p("spanned") + "</w:tc>"
    table = f"<w:tbl><w:tblGrid><w:gridCol/></w:tblGrid><w:tr>{cell}<w:tc>{_p('next')}</w:tc></w:tr></w:tbl>"
    return _docx_with_body(_p("A table with a hostile span.") + table)


def dimension_xlsx(last_row: int = 1048576) -> bytes:
    """Two cells, but a `<dimension>` of the whole sheet (A1:XFD1048576, 17 billion cells) and a
    last row numbered `last_row` (1048576, the sheet's last, unless asked otherwise)."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws["A1"], ws["B1"] = "name", "value"
    ws["A2"], ws["B2"] = "dimension", "bomb"
    buf = io.BytesIO()
    wb.save(buf)

    def edit(xml: str) -> str:
        xml = re.sub(r'<dimension ref="[^"]*"\s*/>', '<dimension ref="A1:XFD1048576"/>', xml)
        return xml.replace(
            "</sheetData>",
            f'<row r="{last_row}"><c r="XFD{last_row}" t="inlineStr"><is><t>x</t></is></c></row></sheetData>',
        )

    return _rewrite(buf.getvalue(), "xl/worksheets/sheet1.xml", edit)


def oversized_part_docx(part_bytes: int) -> bytes:
    """A DOCX whose document.xml unpacks to at least `part_bytes` (varied words repeated with a
    period longer than deflate's window, so the zip ratio stays near 3:1 and only the per-part
    limit stops it)."""
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(5000)]
    block = "".join(_p(" ".join(rng.choice(words) for _ in range(60))) for _ in range(1500))
    return _docx_with_body(block * (part_bytes // len(block) + 1))


def many_paragraphs_docx(n: int) -> bytes:
    """A DOCX of `n` empty paragraphs: a few KiB that become `n` XML nodes and Python objects."""
    return _docx_with_body(_p("many") + "<w:p/>" * n)


def nested_table_docx(depth: int = 400) -> bytes:
    """A table nested `depth` levels deep, one cell in another."""
    open_ = "<w:tbl><w:tr><w:tc>" * depth
    close = "</w:tc></w:tr></w:tbl>" * depth
    return _docx_with_body(_p("nested") + open_ + _p("deepest") + close)


def all_bombs(part_bytes: int) -> dict[str, bytes]:
    return {
        "gridspan.docx": gridspan_docx(),
        "dimension.xlsx": dimension_xlsx(),
        "oversized-part.docx": oversized_part_docx(part_bytes),
        "nested-table.docx": nested_table_docx(),
    }
