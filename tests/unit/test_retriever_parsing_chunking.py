"""Parsers (every format, and the bad-input table) and the chunker, with no network."""

from __future__ import annotations

import io
import itertools
import zipfile

import pytest

from services.retriever.chunking import Chunker, RegexCounter, chunk_id, default_counter
from services.retriever.parsing import ParseError, parse_document


def _docx(text: str) -> bytes:
    import docx

    d = docx.Document()
    d.add_paragraph(text)
    t = d.add_table(rows=1, cols=2)
    t.rows[0].cells[0].text, t.rows[0].cells[1].text = "cell-a", "cell-b"
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


def _pptx(text: str) -> bytes:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "Title here"
    box = slide.shapes.add_textbox(Inches(1), Inches(2), Inches(4), Inches(1))
    box.text_frame.text = text
    buf = io.BytesIO()
    prs.save(buf)
    return buf.getvalue()


def _xlsx() -> bytes:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "gpus"
    ws.append(["model", "memory_gb"])
    ws.append(["H100", 80])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _pdf(text: str) -> bytes:
    # A minimal one-page PDF with a text stream, built by hand (offsets computed).
    content = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + o + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref))
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("a.txt", b"plain text here", "plain text here"),
        ("a.md", "# Title\n\nBody with ünïcode".encode(), "Body with ünïcode"),
        ("a.html", b"<html><script>var x=1</script><body><p>Hello <b>web</b></p></body></html>", "Hello"),
        ("a.csv", b"name,role\nada,engineer\n", "name: ada; role: engineer"),
    ],
)
def test_text_formats(name: str, data: bytes, expected: str) -> None:
    text = parse_document(name, data)
    assert expected in text
    assert "var x" not in text


def test_office_and_pdf_formats() -> None:
    assert "GPUs are fast" in parse_document("a.docx", _docx("GPUs are fast"))
    assert "cell-a | cell-b" in parse_document("a.docx", _docx("x"))
    pptx = parse_document("a.pptx", _pptx("Slides have text"))
    assert "Slides have text" in pptx and "Title here" in pptx
    assert "H100 | 80" in parse_document("a.xlsx", _xlsx())
    assert "Hello PDF world" in parse_document("a.pdf", _pdf("Hello PDF world"))


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "empty"),
        ("bad.pdf", b"%PDF-1.4 this is not really a pdf", "PDF"),
        ("bad.docx", b"PK\x03\x04 broken zip", "DOCX"),
        ("a.exe", b"MZ\x90\x00", "unsupported"),
        ("bin.txt", b"\x00\x01\x02binary", "binary"),
    ],
)
def test_bad_files_raise_parse_error_with_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_document(name, data)
    assert reason.lower() in str(err.value).lower()


def test_oversize_and_zip_bomb_are_refused() -> None:
    with pytest.raises(ParseError, match="limit"):
        parse_document("big.txt", b"x" * 101, max_bytes=100)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/document.xml", b"\x00" * (20 * 1024 * 1024))
    with pytest.raises(ParseError, match="zip bomb"):
        parse_document("bomb.docx", buf.getvalue(), max_unpacked_bytes=10 * 1024 * 1024)


def test_chunks_respect_size_and_overlap_in_model_tokens() -> None:
    counter = default_counter()
    text = " ".join(f"Sentence number {i} talks about object storage and GPUs." for i in range(200))
    chunker = Chunker(64, 16)
    chunks = chunker.split(text)
    assert len(chunks) > 5
    assert all(n <= 64 for n in counter.count(chunks))
    # Consecutive chunks share text (the overlap) and together cover every sentence.
    for a, b in itertools.pairwise(chunks):
        assert a[-30:].split(". ")[-1][:20] in b or b.split(". ")[0] in a
    joined = " ".join(chunks)
    assert all(f"Sentence number {i} " in joined for i in range(200))
    # Each chunk's token count (from the document's one tokenisation) is what the model's
    # tokenizer counts for the chunk's own text.
    assert [c.tokens for c in chunker.chunks("kb", "d", text)] == counter.count(chunks)


def test_cjk_text_is_split_on_cjk_punctuation_and_within_size() -> None:
    text = "对象存储是一种数据存储架构，它以对象的形式管理数据。" * 40
    chunker = Chunker(48, 8)
    chunks = chunker.split(text)
    assert len(chunks) > 3
    assert all(n <= 48 for n in chunker.counter.count(chunks))
    assert all(c.endswith(("。", "，")) for c in chunks[:-1])


def test_unbreakable_runs_are_cut_at_token_boundaries() -> None:
    chunker = Chunker(16, 0)
    chunks = chunker.split("漢字" * 500)  # no separator at all: one token per character
    assert len(chunks) > 1 and all(n <= 16 for n in chunker.counter.count(chunks))
    rc = Chunker(16, 0, counter=RegexCounter())
    assert all(n <= 16 for n in rc.counter.count(rc.split("漢字" * 100)))


def test_chunk_ids_are_content_addressed() -> None:
    chunker = Chunker(32, 4)
    a = chunker.chunks("c", "doc", "Alpha beta gamma. " * 30)
    b = chunker.chunks("c", "doc", "Alpha beta gamma. " * 30)
    assert [x.chunk_id for x in a] == [x.chunk_id for x in b]
    assert len({x.chunk_id for x in a}) == len(a)
    assert chunk_id("c", "doc", 0, "t") != chunk_id("c", "doc", 0, "u") != chunk_id("c", "doc2", 0, "t")


def test_bad_chunking_options() -> None:
    with pytest.raises(ValueError):
        Chunker(4, 0)
    with pytest.raises(ValueError):
        Chunker(64, 64)
