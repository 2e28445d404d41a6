"""Continuous batching for the ingress: the next batch forms when a slot frees, from all that queued.

Ray Serve 2.60's `@serve.batch` forms each batch as soon as its wait timeout passes and only then
waits for a free slot (`max_concurrent_batches`), so under load it queues many 1-2 item batches
behind the running one (measured: 2 requests per graph call at 16 connections). Here a batch is
formed only once a slot is free, so everything that arrived meanwhile rides in one call. The
classifier replica keeps `@serve.batch`: its callers are the few ingress replicas.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("ray.serve")


class Slot:
    """One of a Coalescer's `max_concurrent_batches`, held by a running batch."""

    def __init__(self, owner: Coalescer):
        self._owner, self.held = owner, True

    def release(self) -> None:
        """Free the slot for the next batch (idempotent)."""
        if self.held:
            self.held = False
            self._owner._free_slot()

    async def acquire(self) -> None:
        """Take a slot again after release(), waiting for one to free (a retry counts like a batch)."""
        if not self.held:
            await self._owner._take_slot()
            self.held = True


class Coalescer(Generic[T, R]):
    def __init__(self, fn: Callable[..., Awaitable[list[R]]], size: Callable[[T], int],
                 max_batch_size: int, batch_wait_timeout_s: float, max_concurrent_batches: int = 1,
                 observe_wait: Callable[[float], None] | None = None, early_release: bool = False):
        """With early_release, fn(items, slot) gets the batch's Slot: slot.release() frees it before
        fn returns (once the scarce stage is done), slot.acquire() takes one again (a retry);
        otherwise fn(items) and the slot frees when fn returns."""
        self._fn, self._size, self._observe_wait = fn, size, observe_wait
        self._early_release = early_release
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches
        self._queue: asyncio.Queue | None = None
        self._loop_task: asyncio.Task | None = None
        # Entries are (item, future, size). The loop holds those it took from the queue in
        # _forming (the batch being formed) and _carry (one that did not fit the last batch: it
        # opens the next one), so a loop that dies can fail them rather than leave them waiting.
        self._forming: list = []
        self._carry = None
        self._running = 0
        self._slot_freed: asyncio.Event | None = None
        # The event loop keeps only weak references to tasks: a batch task nobody holds may be
        # garbage-collected mid-flight, and its callers would wait forever.
        self._tasks: set[asyncio.Task] = set()

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float, max_concurrent_batches: int) -> None:
        """Applied to the next batch formed; batches in flight finish as they were."""
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self._loop_task is None:  # first use, or the loop died: started on the replica's event loop
            if self._queue is None:
                self._queue, self._slot_freed = asyncio.Queue(), asyncio.Event()
            self._loop_task = loop.create_task(self._loop())
            self._loop_task.add_done_callback(self._loop_ended)
        future = loop.create_future()
        future.queued_at = loop.time()
        await self._queue.put((item, future, self._size(item)))
        return await future  # a cancelled caller (client gone) is skipped when its batch forms

    def _loop_ended(self, task: asyncio.Task) -> None:
        """The loop never returns: it died (a bug) or was cancelled. Fail every request it held or
        that queued, so none waits forever; the next submit starts a fresh loop."""
        err = RuntimeError("the batching loop stopped") if task.cancelled() else task.exception()
        waiting = self._forming + ([self._carry] if self._carry else [])
        self._forming, self._carry = [], None
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        failed = [future for _, future, _ in waiting if not future.done()]
        for future in failed:
            future.set_exception(err)
        if not task.cancelled() or failed:  # a cancel with nothing waiting is a quiet shutdown
            log.error("the batching loop died; %d waiting requests failed; it restarts with the next request",
                      len(failed), exc_info=None if task.cancelled() else err)
        self._loop_task = None

    async def _slot_free(self) -> None:
        while self._running >= self.max_concurrent_batches:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _take_slot(self) -> None:
        await self._slot_free()
        self._running += 1

    def _free_slot(self) -> None:
        self._running -= 1
        self._slot_freed.set()

    async def _get(self, timeout: float | None = None):
        """The next queued entry, or None after timeout. No entry is lost to the timeout: a
        cancelled Queue.get leaves its item queued (unlike wait_for on Python 3.11)."""
        getter = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({getter}, timeout=timeout)
        if not done:
            getter.cancel()
            try:
                return await getter  # it may have finished just before the cancel
            except asyncio.CancelledError:
                return None
        return getter.result()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slot_free()
            first, self._carry = self._carry or await self._get(), None
            if first[1].done():
                continue
            self._forming = batch = [first]
            size = first[2]
            deadline = loop.time() + self.batch_wait_timeout_s
            while size < self.max_batch_size:
                remaining = deadline - loop.time()
                if self._queue.empty() and remaining <= 0:
                    break
                entry = self._queue.get_nowait() if not self._queue.empty() else await self._get(remaining)
                if entry is None:
                    break
                if entry[1].done():
                    continue
                if size + entry[2] > self.max_batch_size:
                    self._carry = entry
                    break
                batch.append(entry)
                size += entry[2]
            if self._observe_wait:
                now = loop.time()
                for _, future, _ in batch:
                    self._observe_wait(now - future.queued_at)
            await self._take_slot()  # free at once unless a retry (Slot.acquire) took it meanwhile
            self._forming = []
            task = loop.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future, int]]) -> None:
        slot = Slot(self)
        items = [item for item, _, _ in batch]
        try:
            results: list[Any] = await (self._fn(items, slot) if self._early_release else self._fn(items))
            # A result count that differs from the batch is a bug: every caller gets the error,
            # none a neighbour's result (checked before any future is set).
            answered = list(zip(batch, results, strict=True))
        except Exception as err:  # noqa: BLE001 - every caller of the batch gets the failure
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(err)
        else:
            for (_, future, _), result in answered:
                if not future.done():
                    future.set_result(result)
        finally:
            slot.release()
