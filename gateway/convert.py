"""JSON for HTTP responses and SSE data: the one protobuf -> dict walker (`clients/protodict.py`,
which the CLI's `--json` uses too, so both print an enum as "get" and bytes as their length) and
the gateway's unit helper."""

from __future__ import annotations

from clients.protodict import enum_name, enum_value, to_dict

__all__ = ["enum_name", "enum_value", "ns_to_ms", "to_dict"]


def ns_to_ms(ns: int) -> float:
    """Nanoseconds -> milliseconds, rounded to microseconds."""
    return round(ns / 1e6, 3)
