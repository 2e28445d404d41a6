import asyncio

import pytest

from app.batching import Coalescer


def run(coro):
    return asyncio.run(coro)


def test_batches_form_from_what_queued_while_the_slot_was_busy():
    calls = []

    async def fn(items):
        calls.append(list(items))
        await asyncio.sleep(0.05)
        return [i * 10 for i in items]

    waits = []

    async def main():
        c = Coalescer(fn, size=lambda i: 1, max_batch_size=100, batch_wait_timeout_s=0.0, observe_wait=waits.append)
        first = asyncio.create_task(c.submit(0))
        await asyncio.sleep(0.01)  # the first batch is running now
        rest = await asyncio.gather(*(c.submit(i) for i in range(1, 21)))
        return await first, rest

    first, rest = run(main())
    assert first == 0 and rest == [i * 10 for i in range(1, 21)]
    assert calls == [[0], list(range(1, 21))]
    # The 20 queued behind the running batch waited for it (about 40 ms); the first did not wait.
    assert len(waits) == 21 and waits[0] < 0.01 and min(waits[1:]) > 0.02


def test_size_cap_and_concurrency_cap():
    running, peak, sizes = 0, 0, []

    async def fn(items):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        sizes.append(sum(len(i) for i in items))
        await asyncio.sleep(0.01)
        running -= 1
        return [len(i) for i in items]

    async def main():
        c = Coalescer(fn, size=len, max_batch_size=5, batch_wait_timeout_s=0.0, max_concurrent_batches=2)
        return await asyncio.gather(*(c.submit("abc") for _ in range(10)))

    assert run(main()) == [3] * 10
    assert max(sizes) <= 5 and peak == 2


def test_a_failing_batch_fails_its_callers_only():
    async def fn(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    async def main():
        c = Coalescer(fn, size=lambda i: 1, max_batch_size=1, batch_wait_timeout_s=0.0)
        bad = asyncio.create_task(c.submit("bad"))
        good = asyncio.create_task(c.submit("good"))
        with pytest.raises(ValueError, match="boom"):
            await bad
        return await good

    assert run(main()) == "good"


def test_cancelled_callers_are_skipped():
    seen = []

    async def fn(items):
        seen.extend(items)
        await asyncio.sleep(0.02)
        return items

    async def main():
        c = Coalescer(fn, size=lambda i: 1, max_batch_size=10, batch_wait_timeout_s=0.0)
        busy = asyncio.create_task(c.submit("busy"))
        await asyncio.sleep(0.005)
        gone = asyncio.create_task(c.submit("gone"))
        kept = asyncio.create_task(c.submit("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        return await busy, await kept

    assert run(main()) == ("busy", "kept")
    assert "gone" not in seen


def test_early_release_frees_the_slot_before_the_batch_returns():
    started, finish = [], asyncio.Event

    async def main():
        gate = finish()

        async def fn(items, release):
            started.append(list(items))
            release()  # the scarce stage is done: the next batch may start
            release()  # idempotent
            await gate.wait()
            return items

        c = Coalescer(fn, size=lambda i: 1, max_batch_size=1, batch_wait_timeout_s=0.0, early_release=True)
        tasks = [asyncio.create_task(c.submit(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        running_before_any_returned = list(started)
        gate.set()
        return running_before_any_returned, await asyncio.gather(*tasks), c._running

    running, results, slots_in_use = run(main())
    # One slot (max_concurrent_batches=1), yet all three batches ran before the first returned.
    assert running == [[0], [1], [2]] and results == [0, 1, 2] and slots_in_use == 0
