import asyncio
import logging

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

        async def fn(items, slot):
            started.append(list(items))
            slot.release()  # the scarce stage is done: the next batch may start
            slot.release()  # idempotent
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


def test_a_retry_after_the_early_release_takes_a_slot_again():
    events, peak = [], 0

    async def main():
        b_started, b_may_finish = asyncio.Event(), asyncio.Event()

        async def fn(items, slot):
            nonlocal peak
            (item,) = items
            events.append(f"{item} runs")
            if item == "a":
                slot.release()  # the model is done; a later stage then fails
                await b_started.wait()  # b took the freed slot
                b_may_finish.set()
                await slot.acquire()  # the retry waits for a slot like any batch
                peak = max(peak, c._running)
                events.append("a retries")
            else:
                b_started.set()
                await b_may_finish.wait()
                await asyncio.sleep(0.01)  # a's retry would run here without a slot
                events.append("b done")
            return items

        c = Coalescer(fn, size=lambda i: 1, max_batch_size=1, batch_wait_timeout_s=0.0, early_release=True)
        return await asyncio.gather(c.submit("a"), c.submit("b")), c._running

    results, slots_in_use = run(main())
    # One slot: a's retry starts only once b, which ran in the slot a freed, is done.
    assert results == ["a", "b"] and events == ["a runs", "b runs", "b done", "a retries"]
    assert peak == 1 and slots_in_use == 0


def test_a_batch_returning_the_wrong_number_of_results_fails_every_caller():
    async def fn(items):
        return items[:-1]  # a bug: one result short

    async def main():
        c = Coalescer(fn, size=lambda i: 1, max_batch_size=10, batch_wait_timeout_s=0.01)
        return await asyncio.gather(c.submit("x"), c.submit("y"), return_exceptions=True)

    # No caller gets a neighbour's result: both fail, not only the one left without a result.
    assert [type(r) for r in run(main())] == [ValueError, ValueError]


def test_batch_tasks_are_referenced_until_they_finish():
    async def main():
        gate = asyncio.Event()

        async def fn(items):
            await gate.wait()
            return items

        c = Coalescer(fn, size=lambda i: 1, max_batch_size=1, batch_wait_timeout_s=0.0, max_concurrent_batches=2)
        tasks = [asyncio.create_task(c.submit(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        held = len(c._tasks)
        gate.set()
        return held, await asyncio.gather(*tasks), len(c._tasks)

    # The event loop holds tasks weakly: the coalescer keeps the running ones alive.
    assert run(main()) == (2, [0, 1], 0)


def test_a_dead_loop_fails_the_waiting_requests_and_restarts(caplog):
    broken = True

    def observe_wait(_seconds):
        if broken:
            raise RuntimeError("a bug in the loop")

    async def fn(items):
        await asyncio.sleep(0.01)
        return items

    async def main():
        nonlocal broken
        c = Coalescer(fn, size=lambda i: 1, max_batch_size=1, batch_wait_timeout_s=0.0, observe_wait=observe_wait)
        # The loop dies forming the first batch, with the rest still queued.
        first = await asyncio.gather(*(c.submit(i) for i in range(3)), return_exceptions=True)
        broken = False
        return first, await asyncio.gather(c.submit("again"), c.submit("and again"))

    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        failed, later = run(main())
    assert [str(e) for e in failed] == ["a bug in the loop"] * 3
    assert later == ["again", "and again"]
    assert "the batching loop died; 3 waiting requests failed" in caplog.text
