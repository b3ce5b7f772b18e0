"""Saved benchmark runs in the default backend: `bench/<run_id>.json` (the run) and `.csv`.

Runs live in the object store, not on local disk, so any replica lists the same runs."""

from __future__ import annotations

import asyncio
import json
import re

from kernel.errors import invalid, not_found

from .bench_model import Comparison, RunRecord, compare_runs, run_from_json
from .core import StorageCore

RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
RUN_KEY_RE = re.compile(r"^bench/([0-9]{8}T[0-9]{6}Z-[0-9a-f]{8})\.json$")


class BenchRuns:
    def __init__(self, core: StorageCore) -> None:
        self.core = core

    async def _run_ids(self) -> list[str]:
        ids, token = [], ""
        while True:
            objs, token, _ = await self.core.list("", "bench/", 1000, token)
            ids += [m.group(1) for o in objs if (m := RUN_KEY_RE.match(o.key))]
            if not token:
                return sorted(ids, reverse=True)

    async def list(self, page_size: int, page_token: str = "") -> tuple[list[RunRecord], str]:
        """Newest first. The page token is the last run id of the previous page."""
        if page_token and not RUN_ID_RE.match(page_token):
            raise invalid("page_token is not a token this service returned", reason="INVALID_PAGE_TOKEN")
        ids = await self._run_ids()
        if page_token:
            ids = [i for i in ids if i < page_token]
        page = ids[:page_size]
        runs = await asyncio.gather(*(self.get(i) for i in page))
        nxt = page[-1] if len(ids) > page_size else ""
        return list(runs), nxt

    async def get(self, run_id: str) -> RunRecord:
        if not RUN_ID_RE.match(run_id):
            raise invalid(f"{run_id[:60]!r} is not a benchmark run id", reason="INVALID_RUN_ID")
        try:
            data, _, _ = await self.core.get("", f"bench/{run_id}.json")
        except Exception as err:
            if getattr(err, "reason", "") == "OBJECT_NOT_FOUND":
                raise not_found(f"benchmark run {run_id!r} was not found", reason="RUN_NOT_FOUND") from None
            raise
        return run_from_json(json.loads(data))

    async def compare(self, a: str | RunRecord, b: str | RunRecord) -> tuple[RunRecord, RunRecord, list[Comparison]]:
        """Two runs, each a saved run's id or a run given whole, and their cells lined up."""

        async def run(ref: str | RunRecord) -> RunRecord:
            return ref if isinstance(ref, RunRecord) else await self.get(ref)

        ra, rb = await asyncio.gather(run(a), run(b))
        return ra, rb, compare_runs(ra, rb)
