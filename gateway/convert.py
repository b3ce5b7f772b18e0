"""Protobuf messages -> JSON-ready dicts for HTTP responses and SSE data.

`json_format.MessageToDict` turns int64 into strings and drops defaults; a browser wants numbers
and every field, so this walks the descriptor itself. Enum values become their names without the
type prefix, lower case (`JOB_STATE_RUNNING` -> "running"), which is what the page shows.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

_ENUM_PREFIX: dict[str, str] = {}


def enum_name(desc: EnumDescriptor, number: int) -> str:
    """`JOB_STATE_RUNNING` -> "running" for enum `JobState`."""
    value = desc.values_by_number.get(number)
    if value is None:
        return str(number)
    prefix = _ENUM_PREFIX.get(desc.full_name)
    if prefix is None:
        names = [v.name for v in desc.values]
        prefix = names[0].rsplit("UNSPECIFIED", 1)[0] if names and names[0].endswith("UNSPECIFIED") else ""
        _ENUM_PREFIX[desc.full_name] = prefix
    name = value.name[len(prefix) :] if prefix and value.name.startswith(prefix) else value.name
    return name.lower()


def enum_value(desc: EnumDescriptor, name: str) -> int:
    """The inverse of `enum_name`: "running" or "JOB_STATE_RUNNING" -> its number; ValueError if unknown."""
    enum_name(desc, 0)  # fills the prefix cache
    prefix = _ENUM_PREFIX.get(desc.full_name, "")
    for candidate in (name.upper(), prefix + name.upper()):
        value = desc.values_by_name.get(candidate)
        if value is not None:
            return value.number
    allowed = ", ".join(enum_name(desc, v.number) for v in desc.values if v.number)
    raise ValueError(f"{name!r} is not one of: {allowed}")


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return len(value)  # never ship raw bytes as JSON; the size is what a caller can use
    return value


def to_dict(msg: Message) -> dict[str, Any]:
    """Every field of `msg` (defaults included), recursively, with JSON-friendly values."""
    out: dict[str, Any] = {}
    desc: Descriptor = msg.DESCRIPTOR
    for field in desc.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            vfield = field.message_type.fields_by_name["value"]
            out[field.name] = {
                k: to_dict(v) if vfield.message_type is not None else _scalar(vfield, v) for k, v in value.items()
            }
        elif field.is_repeated:
            if field.message_type is not None:
                out[field.name] = [to_dict(v) for v in value]
            else:
                out[field.name] = [_scalar(field, v) for v in value]
        elif field.message_type is not None:
            if field.containing_oneof is not None and not msg.HasField(field.name):
                continue
            out[field.name] = to_dict(value) if msg.HasField(field.name) else None
        else:
            if field.containing_oneof is not None and not msg.HasField(field.name):
                continue
            if field.has_presence and field.containing_oneof is None and not msg.HasField(field.name):
                out[field.name] = None
                continue
            out[field.name] = _scalar(field, value)
    return out


def ns_to_ms(ns: int) -> float:
    """Nanoseconds -> milliseconds, rounded to microseconds."""
    return round(ns / 1e6, 3)
