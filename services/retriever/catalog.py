"""The retriever's shared lists in the object store: collections and bucket-prefix watches.

Every replica reads the same lists, so a collection created through one replica, or a watch
started through it, is known to all:
- `collections/<name>`: one empty marker object per collection;
- `prefixwatches/<watch_id>.json`: one bucket-prefix watch (its prefix, interval and the ETag of
  every object it ingested), changed only by compare-and-swap so that a StopWatch sent to one
  replica and the holder's poll never overwrite each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .ports import ObjectNotFound, ObjectStore, PreconditionFailed

COLLECTIONS = "collections/"
PREFIX_WATCHES = "prefixwatches/"


class Catalog:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # Collections -------------------------------------------------------------------------------
    async def add(self, name: str) -> None:
        out = await self.store.put_many([(COLLECTIONS + name, b"")])
        if not out[0].ok:
            raise OSError(f"recording collection {name!r} failed: {out[0].error}")

    async def remove(self, name: str) -> None:
        await self.store.delete([COLLECTIONS + name])

    async def names(self) -> list[str]:
        return sorted(o.key[len(COLLECTIONS) :] for o in await self.store.list(COLLECTIONS))

    # Bucket-prefix watches ---------------------------------------------------------------------
    async def prefix_watches(self) -> list[dict[str, Any]]:
        objs = [o for o in await self.store.list(PREFIX_WATCHES) if o.key.endswith(".json")]
        got = await self.store.get_many([o.key for o in objs])
        return [json.loads(g.data) for g in got if g.ok]

    async def prefix_watch(self, watch_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(await self.store.get(f"{PREFIX_WATCHES}{watch_id}.json"))
        except ObjectNotFound:
            return None

    async def update_prefix_watch(
        self, watch_id: str, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read-modify-write with compare-and-swap, retried on a concurrent change. `change` gets
        the stored watch (None when missing) and returns the new one (None: leave it)."""
        key = f"{PREFIX_WATCHES}{watch_id}.json"
        for _ in range(20):
            try:
                data, etag = await self.store.read(key)
                old: dict[str, Any] | None = json.loads(data)
            except ObjectNotFound:
                old, etag = None, ""
            new = change(old)
            if new is None:
                return old
            body = json.dumps(new, separators=(",", ":")).encode()
            try:
                if etag:
                    await self.store.put_if(key, body, if_match=etag)
                else:
                    await self.store.put_if(key, body, if_none_match=True)
                return new
            except PreconditionFailed:
                continue
        raise OSError(f"prefix watch {watch_id} kept changing under this write; try again")
