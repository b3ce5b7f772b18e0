"""A small, strict server-sent events reader for tests (text/event-stream as on the wire)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


async def iter_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[SseEvent]:
    """Yields events as they arrive; comment lines (": ping") are attached to the next event."""
    ev = SseEvent()
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data or ev.event != "message" or ev.id is not None:
                ev.data = "\n".join(data)
                yield ev
            ev, data = SseEvent(), []
            continue
        if line.startswith(":"):
            ev.comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            ev.event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ev.id = value
