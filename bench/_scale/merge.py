"""Search latency while a merge runs, for `bench/retriever_scale.py` (`query_p99_during_merge_over_idle`).

Interleaved, so that load from anything else on the machine hits both sides alike:

    idle(c0)  merge(c0)  idle(c1)  merge(c1)  ...  merge(c{R-1})  idle(cR)

Each collection `c_i` holds 8 neighbouring segments of 2k chunks. A merge window starts when a
one-document commit into `c_i` returns (the commit schedules the merge of the tier: seven 2k
segments and the new one) and queries `c_i` until its searches answer from the merged version
(measured for at most MAX_MERGE_S; the landing is then awaited, unmeasured, so that the next idle
window is idle). An idle window queries the next, unmerged collection for as long as the merge
window before it (FIRST_IDLE_S before the first). STREAMS clients query back to back in both kinds
of window, with the same queries in the same order. The key is the p99 of all merge windows'
latencies over the p99 of all idle windows'. Rounds stop after BUDGET_S, or when a merge starved of
CPU (it runs at nice 19) has not landed within MAX_WAIT_S; the JSON says how many landed and the
load average at each idle window.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# Sized so that the whole of retriever_scale.py stays under 10 minutes on a loaded 2-core machine:
# two merges of a 2k-chunk tier (each about a minute at nice 19 under load) give 1,000+ queries
# on each side, enough for a p99.
ROUNDS = 2  # merges measured at most; an idle window before each and after the last
STREAMS = 4  # concurrent query clients
SEGMENTS, SEGMENT_CHUNKS = 8, 2000
FIRST_IDLE_S = 20.0
MIN_IDLE_S, MAX_IDLE_S = 10.0, 60.0
MAX_MERGE_S = 90.0  # a merge window's queries are measured up to here
MAX_WAIT_S = 150.0  # and its landing awaited up to here (else the rounds stop, reported)
BUDGET_S = 150.0  # no new round starts after this


def collections(rounds: int = ROUNDS) -> list[str]:
    return [f"merging{i}" for i in range(rounds + 1)]


async def write_collections(b: Any, recs: list[Any], vecs: np.ndarray, docs: dict[str, Any]) -> None:
    """Each measured collection: 8 neighbouring segments of 2k chunks (one tier), merged on the next
    commit. The first is written through the commit path; the others are byte-for-byte copies of
    its objects (segment ids and SHA-256s do not depend on the collection's name)."""
    from services.retriever.adapters import StorageStore
    from services.retriever.live import write_collection

    store = StorageStore(b.storage)
    first, *others = collections()
    for s in range(SEGMENTS):
        part = slice(s * SEGMENT_CHUNKS, (s + 1) * SEGMENT_CHUNKS)
        sdocs = {d: docs[d] for d in {r.document_id for r in recs[part]}}
        await write_collection(store, first, sdocs, recs[part], vecs[part])
    keys = [o.key for o in await store.list(f"index/{first}/") if not o.key.endswith("/CURRENT")]
    for coll in others:
        for i in range(0, len(keys), 4):
            got = await store.get_many(keys[i : i + 4])
            await store.put_many([(g.key.replace(f"index/{first}/", f"index/{coll}/", 1), g.data) for g in got])
        current = await store.get(f"index/{first}/CURRENT")
        await store.put_many([(f"index/{coll}/CURRENT", current)])


async def only(b: Any, root: Any, corpus_rows: Callable[..., Any], scifact_dir: Any, small_docs: Any) -> dict[str, Any]:
    """`retriever_scale.py --only merge`: the collections, one retriever, the measurement."""
    from services.retriever.index import ChunkRecord, DocumentInfo

    rows, vecs = corpus_rows(SEGMENTS * SEGMENT_CHUNKS, b.dim)
    recs = [ChunkRecord(*r) for r in rows]
    await write_collections(b, recs, vecs, {r[1]: DocumentInfo(r[1], r[2], "", 0, "", 10) for r in rows[::10]})
    _, client = await b.retriever(root, "replica_a")
    try:
        return await measure(b, client, scifact_dir, small_docs)
    finally:
        await client.close()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else 0.0


class Load:
    """STREAMS clients querying one replica back to back, in one shared order of queries."""

    def __init__(self, client: Any, queries: list[str]) -> None:
        self.client, self.queries, self.n = client, queries, 0

    async def run(self, coll: str, stop: Callable[[Any, float], bool]) -> list[float]:
        """Latencies (s) of the searches answered before `stop(response, elapsed_s)` held."""
        lat: list[float] = []
        t0 = time.perf_counter()
        done = False

        async def stream() -> None:
            nonlocal done
            while not done:
                q = self.queries[self.n % len(self.queries)]
                self.n += 1
                t = time.perf_counter()
                resp = await self.client.search(coll, q, top_k=5, no_cache=True)
                if stop(resp, time.perf_counter() - t0):
                    done = True
                    return
                lat.append(time.perf_counter() - t)

        await asyncio.gather(*(stream() for _ in range(STREAMS)))
        return lat


async def measure(b: Any, client: Any, scifact_dir: Any, small_docs: Callable[..., Any]) -> dict[str, Any]:
    queries = [json.loads(line)["text"] for line in (scifact_dir / "queries_test.jsonl").open()][:200]
    load = Load(client, queries)
    colls = collections()
    for coll in colls:  # warm every collection's first search
        await client.search(coll, queries[0], top_k=5, no_cache=True)
    m: dict[str, list[Any]] = {"idle": [], "during": [], "merge_s": [], "loadavg": [], "landed": []}

    async def idle(coll: str, seconds: float) -> None:
        m["loadavg"].append(round(os.getloadavg()[0], 2))
        m["idle"].append(await load.run(coll, lambda _r, el: el >= seconds))

    async def version(coll: str) -> str:
        return (await client.search(coll, queries[1], top_k=5, no_cache=True)).index_version

    t_start = time.perf_counter()
    await idle(colls[0], FIRST_IDLE_S)
    for i, coll in enumerate(colls[:-1]):
        _, _, committed = await b.ingest(client, coll, small_docs(f"m{i}_", 1, offset=60 + i))
        t0 = time.perf_counter()
        lat = await load.run(coll, lambda r, el, v=committed: r.index_version != v or el > MAX_MERGE_S)
        took = time.perf_counter() - t0
        while await version(coll) == committed and time.perf_counter() - t0 < MAX_WAIT_S:
            await asyncio.sleep(1)  # past MAX_MERGE_S: not measured, but the next idle window must be idle
        landed = await version(coll) != committed
        m["during"].append(lat)
        m["merge_s"].append(time.perf_counter() - t0 if landed else None)
        m["landed"].append(landed)
        print(
            f"[{time.strftime('%H:%M:%S')}] merge {i}: {len(lat)} queries in {took:.1f} s, p99"
            f" {pct(lat, 0.99) * 1e3:.0f} ms, landed {landed}; idle before: {len(m['idle'][-1])} queries, p99"
            f" {pct(m['idle'][-1], 0.99) * 1e3:.0f} ms; load {m['loadavg'][-1]}",
            flush=True,
        )
        if not landed:
            break  # starved of CPU (it runs at nice 19): no idle window can follow while it runs
        await idle(colls[i + 1], float(np.clip(took, MIN_IDLE_S, MAX_IDLE_S)))  # as long as that merge window
        if time.perf_counter() - t_start > BUDGET_S:
            break
    return m


def keys(m: dict[str, Any]) -> dict[str, Any]:
    idle = [x for w in m["idle"] for x in w]
    during = [x for w in m["during"] for x in w]
    ms = {q: (round(pct(idle, q) * 1e3, 2), round(pct(during, q) * 1e3, 2)) for q in (0.5, 0.95, 0.99)}
    return {
        "query_p99_during_merge_over_idle": round(pct(during, 0.99) / pct(idle, 0.99), 3),
        "query_p99_ms": {"idle": ms[0.99][0], "during_merge": ms[0.99][1]},
        "query_p50_ms": {"idle": ms[0.5][0], "during_merge": ms[0.5][1]},
        "query_p95_ms": {"idle": ms[0.95][0], "during_merge": ms[0.95][1]},
        "queries_idle": len(idle),
        "queries_during_merge": len(during),
        "merges_measured": len(m["during"]),
        "merges_landed": sum(m["landed"]),
        "merge_s": [None if s is None else round(s, 2) for s in m["merge_s"]],
        "loadavg_1m_at_each_idle_window": m["loadavg"],
        "merge_windows": [
            {
                "idle_before_p99_ms": round(pct(i, 0.99) * 1e3, 1),
                "during_p99_ms": round(pct(d, 0.99) * 1e3, 1),
                "queries_idle_before": len(i),
                "queries_during": len(d),
            }
            for i, d in zip(m["idle"], m["during"], strict=False)  # each merge with the idle window before it
        ],
    }
