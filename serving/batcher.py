"""Concurrent requests micro-batched into one forward pass.

Each request's validated :class:`~serving.runtime.Batch` goes onto an asyncio
queue with a future. One collector task takes the first waiting request,
adds whatever else is queued, and, while other requests are still being read
(their bodies arriving), waits up to ``window`` seconds for them, never past
``max_batch`` observations. The forward pass runs in one worker thread, so the
event loop keeps accepting and parsing requests meanwhile; those queue up and
form the next batch. A lone client is never kept waiting for the window:
with nothing else arriving the batch goes at once.

:class:`Unbatched` has the same ``submit`` and runs one forward pass per
request (on the same single worker thread): the baseline micro-batching is
measured against.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serving.runtime import Batch

Forward = Callable[[Batch], tuple[np.ndarray, np.ndarray]]
Observe = Callable[[int], None]


class _Item:
    __slots__ = ("batch", "future")

    def __init__(self, batch: Batch, future: asyncio.Future) -> None:
        self.batch = batch
        self.future = future


class Unbatched:
    """One forward pass per request, in one worker thread."""

    def __init__(self, forward: Forward, *, on_batch: Observe | None = None) -> None:
        self.forward = forward
        self.on_batch = on_batch or (lambda n: None)
        self.arriving = 0  # kept for the app's bookkeeping; unused here
        self._pool: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="forward")

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def submit(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        assert self._pool is not None, "start() the batcher first"
        self.on_batch(len(batch))
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.forward, batch)


class MicroBatcher(Unbatched):
    """Requests gathered for up to ``window`` seconds (or ``max_batch`` observations) into one forward pass.

    ``arriving`` counts requests that have begun but not yet been submitted
    (the app raises it when a request starts and lowers it when it submits or
    fails); the collector waits for the window only while it is above zero.
    """

    def __init__(self, forward: Forward, *, window: float, max_batch: int, on_batch: Observe | None = None) -> None:
        super().__init__(forward, on_batch=on_batch)
        if window < 0 or max_batch < 1:
            raise ValueError(f"window={window} must be >= 0 and max_batch={max_batch} >= 1.")
        self.window = window
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await super().start()
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        await super().stop()

    async def submit(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        assert self._queue is not None, "start() the batcher first"
        if len(batch) > self.max_batch:
            raise ValueError(f"{len(batch)} observations exceed max_batch={self.max_batch}")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(batch, future))
        return await future

    async def _gather(self, first: _Item) -> tuple[list[_Item], _Item | None]:
        """``first`` and what joins it within the window; the item that did not fit, if any."""
        queue, loop = self._queue, asyncio.get_running_loop()
        items, size = [first], len(first.batch)
        deadline = loop.time() + self.window
        while size < self.max_batch:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if self.arriving <= 0 or remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            if size + len(item.batch) > self.max_batch:
                return items, item
            items.append(item)
            size += len(item.batch)
        return items, None

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Item | None = None
        while True:
            first = carry if carry is not None else await self._queue.get()
            items, carry = await self._gather(first)
            items = [i for i in items if not i.future.done()]  # cancelled requests (client gone)
            if not items:
                continue
            batch = Batch.concat([i.batch for i in items])
            self.on_batch(len(batch))
            try:
                logits, values = await loop.run_in_executor(self._pool, self.forward, batch)
            except Exception as err:  # the model failed: every waiting request hears it, the loop goes on
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(err)
                continue
            start = 0
            for item in items:
                stop = start + len(item.batch)
                if not item.future.done():
                    item.future.set_result((logits[start:stop], values[start:stop]))
                start = stop
