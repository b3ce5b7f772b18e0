"""A follower's poll reads one small object (`index-changed`) and lists the store only when a
writer changed something: a CURRENT, or the collection list. Counted per call, no timing."""

from __future__ import annotations

from pathlib import Path

from services.retriever import follower as following
from services.retriever.clearing import clear_collection
from services.retriever.follower import Follower
from tests.unit.test_retriever_segments import CountingStore, batch, close, corpus, make


class NoJobs:
    """The job manager as clearing a collection sees it, with no jobs."""

    async def records_of(self, name: str) -> list[object]:
        return []


async def test_polls_read_one_object_and_list_only_after_a_change(tmp_path: Path) -> None:
    store = CountingStore()
    writer = await make(tmp_path / "w", store)
    reader = await make(tmp_path / "r", store, follow_interval_s=0.5)
    follower = Follower(reader)  # polled by hand below: no background task counts calls
    await writer.commit("kb", *await batch(corpus(3)))
    await follower.poll()  # the first poll lists everything
    assert reader.collections["kb"].live.version == writer.collections["kb"].live.version

    reads, lists = store.reads, store.lists
    for _ in range(20):
        await follower.poll()
    assert store.lists == lists  # nothing changed: no listing at all
    assert store.reads == reads + 20  # one small read per poll

    await writer.commit("kb", *await batch(corpus(2, seed=5)))  # a commit notes its change
    await follower.poll()
    assert store.lists > lists
    assert reader.collections["kb"].live.version == writer.collections["kb"].live.version

    lists = store.lists
    await writer.create_collection("other")  # so does a new (empty) collection
    await follower.poll()
    assert store.lists > lists and "other" in reader.collections

    lists = store.lists
    await clear_collection(writer, NoJobs(), "other")  # type: ignore[arg-type]  # and a cleared one
    await follower.poll()
    assert store.lists > lists and "other" not in reader.collections

    # A writer that died between CURRENT and its note is still followed, FULL_POLL_S later.
    lists = store.lists
    follower._full_at -= following.FULL_POLL_S
    await follower.poll()
    assert store.lists > lists
    await close(writer)
    await close(reader)
