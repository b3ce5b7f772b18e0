"""Protobuf messages <-> JSON-ready dicts: the one walker behind the CLI's `--json`, the gateway's
HTTP responses and SSE data, and the files `rag bench` saves.

`json_format.MessageToDict` turns int64 into strings and drops defaults; people and browsers want
numbers and every field, so this walks the descriptor itself:
- every field, defaults included; an unset message field is None, an unset `optional` scalar is
  None, an unset oneof member is left out;
- int64 stays a number;
- an enum value becomes its name without the type prefix, lower case (`JOB_STATE_RUNNING` ->
  "running", `BENCHMARK_OPERATION_GET` -> "get"), the word a person types and reads;
- bytes become their length: raw bytes never go into JSON, and the size is what a reader can use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)
_ENUM_PREFIX: dict[str, str] = {}


def _prefix(desc: EnumDescriptor) -> str:
    prefix = _ENUM_PREFIX.get(desc.full_name)
    if prefix is None:
        first = desc.values[0].name if desc.values else ""
        prefix = first.rsplit("UNSPECIFIED", 1)[0] if first.endswith("UNSPECIFIED") else ""
        _ENUM_PREFIX[desc.full_name] = prefix
    return prefix


def enum_name(desc: EnumDescriptor, number: int) -> str:
    """`JOB_STATE_RUNNING` -> "running" for enum `JobState`; an unknown number as its digits."""
    value = desc.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(_prefix(desc)).lower()


def enum_value(desc: EnumDescriptor, name: str) -> int:
    """The inverse of `enum_name`: "running" or "JOB_STATE_RUNNING" -> its number; ValueError if unknown."""
    for candidate in (name.upper(), _prefix(desc) + name.upper()):
        value = desc.values_by_name.get(candidate)
        if value is not None:
            return value.number
    allowed = ", ".join(enum_name(desc, v.number) for v in desc.values if v.number)
    raise ValueError(f"{name!r} is not one of: {allowed}")


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return len(value)
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
        elif field.containing_oneof is not None and not msg.HasField(field.name):
            continue
        elif field.message_type is not None:
            out[field.name] = to_dict(value) if msg.HasField(field.name) else None
        elif field.has_presence and not msg.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _scalar(field, value)
    return out


def from_dict(data: Mapping[str, Any], msg: M) -> M:
    """Fills `msg` from a `to_dict` result and returns it: the inverse for everything but bytes
    (which `to_dict` keeps only the size of, and are skipped). Enums are read by either name (or
    number); None values and keys the message does not have are skipped, so a document written by
    an older version still reads."""
    fields = msg.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        field = fields.get(key)
        if field is None or value is None or field.type == FieldDescriptor.TYPE_BYTES:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            vfield = field.message_type.fields_by_name["value"]
            target = getattr(msg, key)
            for k, v in value.items():
                if vfield.message_type is not None:
                    from_dict(v, target[k])
                else:
                    target[k] = _from_scalar(vfield, v)
        elif field.is_repeated:
            target = getattr(msg, key)
            for v in value:
                if field.message_type is not None:
                    from_dict(v, target.add())
                else:
                    target.append(_from_scalar(field, v))
        elif field.message_type is not None:
            from_dict(value, getattr(msg, key))
            getattr(msg, key).SetInParent()
        else:
            setattr(msg, key, _from_scalar(field, value))
    return msg


def _from_scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        return enum_value(field.enum_type, value)
    return value
