"""CSV cells that a spreadsheet would run as a formula are written as text.

A cell starting with `=`, `+`, `-`, `@` (or a tab or carriage return, which some spreadsheets
skip before looking) is prefixed with `'`, as OWASP advises for CSV injection. Such text can reach
a benchmark CSV from outside: an S3 error code is whatever the remote endpoint sends. Numbers are
left alone, so a negative number stays a number.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    return [safe_cell(v) for v in values]
