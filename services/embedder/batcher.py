"""Dynamic batching: concurrent requests merge into model batches by a token budget and a
maximum wait, as TEI's queue does.

One worker task owns the model. It takes a window of queued texts in arrival order (so no text
waits behind later ones for more than one window), sorts the window by length so that texts of
similar length share a batch (less padding), cuts it into batches whose padded size
(texts x longest) stays within the token budget, and runs each batch in its one inference thread.
While a batch runs, new requests queue up and form the next window, so batching costs no extra
wait under load; an idle worker waits at most `max_wait_s` for company before it runs.

The queue is bounded in texts; a request that does not fit is refused whole with
RESOURCE_EXHAUSTED (nothing of it is queued). With `dynamic=False` each window is one request's
texts only, which is "batching off": requests never share a model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from kernel.errors import exhausted, unavailable

log = logging.getLogger(__name__)

# A window holds at most this many batches' worth of tokens.
WINDOW_BATCHES = 4


@dataclass
class BatchStats:
    """How one request was served by the batcher."""

    vectors: np.ndarray
    queue_time_ns: int
    inference_time_ns: int
    compute_tokens: int
    batches: int
    # The most texts in one model batch this request rode in (with other requests' texts).
    batch_size: int = 0


@dataclass
class _Group:
    """The texts of one request, and where their vectors go."""

    items: list[tuple[int, ...]]
    future: asyncio.Future[None]
    enqueued_ns: int
    dimension: int
    vectors: np.ndarray = field(init=False)
    remaining: int = field(init=False)
    started_ns: int = 0
    inference_ns: int = 0
    batches: int = 0
    batch_size: int = 0
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.vectors = np.zeros((len(self.items), self.dimension), dtype=np.float32)
        self.remaining = len(self.items)


def plan_batches(lengths: list[int], max_batch_tokens: int, max_batch_texts: int) -> list[list[int]]:
    """Cuts the indices of `lengths`, sorted by length, into batches whose padded size (count x
    longest) is at most `max_batch_tokens` (a single text longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so lengths[i] is the longest of the batch if it joins.
        if current and ((len(current) + 1) * lengths[i] > max_batch_tokens or len(current) >= max_batch_texts):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class Batcher:
    """Queues tokenised texts and runs them through `run_batch` in merged, length-sorted batches.

    `run_batch(list_of_ids) -> (n, dim) float32` is blocking; it runs in the batcher's one
    inference thread.
    """

    def __init__(
        self,
        run_batch: Callable[[list[tuple[int, ...]]], np.ndarray],
        dimension: int,
        *,
        max_batch_tokens: int,
        max_batch_texts: int = 1024,
        max_wait_s: float = 0.002,
        max_queue_texts: int = 4096,
        dynamic: bool = True,
    ) -> None:
        if max_batch_tokens <= 0 or max_queue_texts <= 0:
            raise ValueError("max_batch_tokens and max_queue_texts must be positive")
        self.run_batch = run_batch
        self.dimension = dimension
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_texts = max_batch_texts
        self.max_wait_s = max_wait_s
        self.max_queue_texts = max_queue_texts
        self.dynamic = dynamic
        self._queue: deque[tuple[_Group, int]] = deque()
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder-infer")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._active: list[_Group] = []  # groups of the window being run
        self.batches_run = 0
        # Called with (texts, inference ns) after each batch the model ran (metrics).
        self.on_batch: Callable[[int, int], None] | None = None

    @property
    def queued_texts(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="embedder-batcher")

    async def close(self) -> None:
        """Stops the worker; requests still queued fail with UNAVAILABLE."""
        self._closed = True
        self._room.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        groups = [*self._active, *(g for g, _ in self._queue)]
        self._queue.clear()
        for group in groups:
            if not group.future.done():
                group.future.set_exception(unavailable("the embedder is shutting down; retry on another replica"))
        # The running batch (if any) finishes in its thread; wait for it off the event loop.
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def submit(self, items: list[tuple[int, ...]], *, wait_for_room: bool = False) -> BatchStats:
        """Embeds `items` (token id tuples). When the queue cannot take them all, the request is
        refused whole (RESOURCE_EXHAUSTED), or with `wait_for_room` (flow-controlled streams)
        waits until it can."""
        if self._closed:
            raise unavailable("the embedder is shutting down; retry on another replica")
        if not items:
            return BatchStats(np.zeros((0, self.dimension), np.float32), 0, 0, 0, 0)
        if wait_for_room and len(items) <= self.max_queue_texts:
            while len(self._queue) + len(items) > self.max_queue_texts and not self._closed:
                self._room.clear()
                await self._room.wait()
            if self._closed:
                raise unavailable("the embedder is shutting down; retry on another replica")
        if len(self._queue) + len(items) > self.max_queue_texts:
            raise exhausted(
                f"the embedder is overloaded: {len(self._queue)} texts are queued and the queue holds "
                f"{self.max_queue_texts}; retry later with backoff",
                reason="EMBEDDER_QUEUE_FULL",
                queued=len(self._queue),
                max_queue_texts=self.max_queue_texts,
            )
        loop = asyncio.get_running_loop()
        group = _Group(items, loop.create_future(), time.perf_counter_ns(), self.dimension)
        for i, ids in enumerate(items):
            self._queue.append((group, i))
            self._queued_tokens += len(ids)
        self._wakeup.set()
        try:
            await asyncio.shield(group.future)
        except asyncio.CancelledError:
            group.cancelled = True
            raise
        return BatchStats(
            vectors=group.vectors,
            queue_time_ns=max(0, group.started_ns - group.enqueued_ns),
            inference_time_ns=group.inference_ns,
            compute_tokens=sum(len(x) for x in items),
            batches=group.batches,
            batch_size=group.batch_size,
        )

    def _take_window(self) -> list[tuple[_Group, int]]:
        """Queued texts in arrival order, up to WINDOW_BATCHES budgets of tokens (dynamic) or the
        head request's texts only (batching off)."""
        window: list[tuple[_Group, int]] = []
        tokens = 0
        limit = self.max_batch_tokens * WINDOW_BATCHES
        head = self._queue[0][0] if self._queue else None
        while self._queue:
            group, idx = self._queue[0]
            if not self.dynamic and group is not head:
                break
            n = len(group.items[idx])
            if window and tokens + n > limit:
                break
            self._queue.popleft()
            self._queued_tokens -= n
            if group.cancelled:
                continue
            window.append((group, idx))
            tokens += n
        return window

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self.dynamic and self._queued_tokens < self.max_batch_tokens and self.max_wait_s > 0:
                # Idle: give concurrent callers a moment to join this batch.
                deadline = loop.time() + self.max_wait_s
                while self._queued_tokens < self.max_batch_tokens:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), left)
                    except TimeoutError:
                        break
            window = self._take_window()
            if not window:
                continue
            self._active = list({id(g): g for g, _ in window}.values())
            self._room.set()
            lengths = [len(g.items[i]) for g, i in window]
            for batch in plan_batches(lengths, self.max_batch_tokens, self.max_batch_texts):
                members = [window[j] for j in batch if not window[j][0].cancelled]
                if members:
                    await self._run(members)

    async def _run(self, members: list[tuple[_Group, int]]) -> None:
        loop = asyncio.get_running_loop()
        start = time.perf_counter_ns()
        groups = {id(g): g for g, _ in members}
        for g in groups.values():
            if not g.started_ns:
                g.started_ns = start
        try:
            vectors = await loop.run_in_executor(self._executor, self.run_batch, [g.items[i] for g, i in members])
        except Exception as err:
            log.exception("inference failed for a batch of %d texts", len(members))
            for g in groups.values():
                if not g.future.done():
                    g.future.set_exception(err)
            return
        elapsed = time.perf_counter_ns() - start
        self.batches_run += 1
        if self.on_batch is not None:
            self.on_batch(len(members), elapsed)
        for g in groups.values():
            g.inference_ns += elapsed
            g.batches += 1
            g.batch_size = max(g.batch_size, len(members))
        for row, (g, i) in enumerate(members):
            g.vectors[i] = vectors[row]
            g.remaining -= 1
            if g.remaining == 0 and not g.future.done():
                g.future.set_result(None)
