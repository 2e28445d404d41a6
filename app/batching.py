"""Continuous batching for the ingress: the next batch forms when a slot frees, from all that queued.

Ray Serve 2.60's `@serve.batch` forms each batch as soon as its wait timeout passes and only then
waits for a free slot (`max_concurrent_batches`), so under load it queues many 1-2 item batches
behind the running one (measured: 2 requests per graph call at 16 connections). Here a batch is
formed only once a slot is free, so everything that arrived meanwhile rides in one call. The
classifier replica keeps `@serve.batch`: its callers are the few ingress replicas.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(self, fn: Callable[..., Awaitable[list[R]]], size: Callable[[T], int],
                 max_batch_size: int, batch_wait_timeout_s: float, max_concurrent_batches: int = 1,
                 observe_wait: Callable[[float], None] | None = None, early_release: bool = False):
        """With early_release, fn(items, release) may call release() to free its slot before it
        returns (once the scarce stage is done); otherwise the slot frees when fn returns."""
        self._fn, self._size, self._observe_wait = fn, size, observe_wait
        self._early_release = early_release
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches
        self._queue: asyncio.Queue | None = None
        self._loop_task: asyncio.Task | None = None
        self._carry = None  # an entry that did not fit the last batch: it opens the next one
        self._running = 0
        self._slot_freed: asyncio.Event | None = None

    def configure(self, max_batch_size: int, batch_wait_timeout_s: float, max_concurrent_batches: int) -> None:
        """Applied to the next batch formed; batches in flight finish as they were."""
        self.max_batch_size, self.batch_wait_timeout_s = max_batch_size, batch_wait_timeout_s
        self.max_concurrent_batches = max_concurrent_batches

    async def submit(self, item: T) -> R:
        if self._queue is None:  # created on the replica's running event loop
            self._queue, self._slot_freed = asyncio.Queue(), asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        future.queued_at = asyncio.get_running_loop().time()
        await self._queue.put((item, future))
        return await future  # a cancelled caller (client gone) is skipped when its batch forms

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
        while True:
            while self._running >= self.max_concurrent_batches:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            first, self._carry = self._carry or await self._get(), None
            if first[1].done():
                continue
            batch, size = [first], self._size(first[0])
            deadline = asyncio.get_running_loop().time() + self.batch_wait_timeout_s
            while size < self.max_batch_size:
                remaining = deadline - asyncio.get_running_loop().time()
                if self._queue.empty() and remaining <= 0:
                    break
                entry = self._queue.get_nowait() if not self._queue.empty() else await self._get(remaining)
                if entry is None:
                    break
                if entry[1].done():
                    continue
                if size + self._size(entry[0]) > self.max_batch_size:
                    self._carry = entry
                    break
                batch.append(entry)
                size += self._size(entry[0])
            self._running += 1
            if self._observe_wait:
                now = asyncio.get_running_loop().time()
                for _, future in batch:
                    self._observe_wait(now - future.queued_at)
            asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._running -= 1
                self._slot_freed.set()

        items = [item for item, _ in batch]
        try:
            results: list[Any] = await (self._fn(items, release) if self._early_release else self._fn(items))
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        except Exception as err:  # noqa: BLE001 - every caller of the batch gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
        finally:
            release()
