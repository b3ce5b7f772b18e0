"""Hostile office files are refused with a reason, and a file that kills its parser worker costs
that worker only: the wall-clock, CPU and memory limits each end a worker, the file gets a
reason, and the next file is parsed by a fresh worker (sandbox.py)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from services.retriever.parsing import Caps, ParseError, parse_document, parse_in_process
from services.retriever.sandbox import ParserLimits, ParserPool
from tests.security import office_bombs

GOOD = ("notes.csv", b"name,value\nalpha,1\nbeta,2\n")


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("gridspan.docx", office_bombs.gridspan_docx(), "spans 2000000000 columns"),
        ("dimension.xlsx", office_bombs.dimension_xlsx(), "table rows"),
        ("nested-table.docx", office_bombs.nested_table_docx(), "depth"),
    ],
)
def test_office_bombs_are_refused_with_a_reason(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_document(name, data)


def test_an_oversized_xml_part_is_refused_before_parsing() -> None:
    data = office_bombs.oversized_part_docx(2 * 1024 * 1024)
    with pytest.raises(ParseError, match="limit per part"):
        parse_in_process("big.docx", data, caps=Caps(max_part_bytes=1024 * 1024))


def _request(name: str, caps: Caps) -> dict[str, object]:
    return {"name": name, "max_bytes": 1 << 26, "max_unpacked_bytes": 1 << 28, "caps": dataclasses.asdict(caps)}


def _roomy() -> Caps:
    return Caps(max_rows=10**9, max_cells=10**12)  # the caps off: only the process limits stop it


def _check_recovers(pool: ParserPool) -> None:
    answer = pool.parse(_request(GOOD[0], Caps()), GOOD[1])
    assert answer["ok"] and "alpha" in str(answer["text"])


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (ParserLimits(workers=1, wall_s=1.0), "longer than 1 s"),
        (ParserLimits(workers=1, cpu_s=1, wall_s=60), "CPU time"),
    ],
)
def test_a_worker_over_its_time_limits_is_replaced(limits: ParserLimits, reason: str) -> None:
    pool = ParserPool(limits)
    try:
        spin = office_bombs.dimension_xlsx(last_row=2_000_000_000)  # two billion empty rows to pad
        answer = pool.parse(_request("dimension.xlsx", _roomy()), spin)
        assert not answer["ok"] and reason in str(answer["error"]), answer
        assert pool.deaths == 1
        _check_recovers(pool)
    finally:
        pool.close()


def test_a_worker_over_its_memory_limit_is_replaced() -> None:
    pool = ParserPool(ParserLimits(workers=1, memory_mb=300))
    try:
        data = office_bombs.many_paragraphs_docx(1_000_000)  # 50 KiB, a million nodes
        answer = pool.parse(_request("many.docx", Caps()), data)
        assert not answer["ok"] and "300 MiB" in str(answer["error"]), answer
        _check_recovers(pool)
    finally:
        pool.close()


def test_workers_are_reused_and_bounded() -> None:
    pool = ParserPool(ParserLimits(workers=1))
    try:
        for _ in range(3):
            _check_recovers(pool)
        assert pool._count == 1 and len(pool._idle) == 1
        worker = pool._idle[0]
        assert worker.files == 3
        with open(f"/proc/{worker.proc.pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        assert not [e for e in env if e.startswith((b"AWS_", b"DDNRAG_"))]
    finally:
        pool.close()
    assert not os.path.exists(f"/proc/{worker.proc.pid}/status") or worker.proc.poll() is not None
