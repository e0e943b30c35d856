"""The transport's concurrency gate: at most ``limit`` requests inside, waiters let in one at
a time in arrival order, a cancelled waiter never holds a place, and a new limit applies to
requests already waiting."""

from __future__ import annotations

import asyncio

from producers.providers.transport import Gate


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_waiters_enter_one_release_at_a_time_in_arrival_order() -> None:
    async def run() -> None:
        gate, order, inside = Gate(2), [], []
        release = {i: asyncio.Event() for i in range(6)}

        async def request(i: int) -> None:
            async with gate:
                order.append(i)
                inside.append(gate.used)
                await release[i].wait()

        tasks = [asyncio.create_task(request(i)) for i in range(6)]
        await settle()
        assert order == [0, 1] and gate.used == 2
        release[1].set()
        await settle()
        assert order == [0, 1, 2]  # one place freed: one waiter in
        for i in (0, 2, 3, 4, 5):
            release[i].set()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4, 5] and max(inside) <= 2 and gate.used == 0

    asyncio.run(run())


def test_a_cancelled_waiter_holds_no_place_and_resize_lets_waiters_in() -> None:
    async def run() -> None:
        gate, entered = Gate(1), []
        hold = asyncio.Event()

        async def request(i: int) -> None:
            async with gate:
                entered.append(i)
                await hold.wait()

        first = asyncio.create_task(request(0))
        waiting = [asyncio.create_task(request(i)) for i in (1, 2, 3)]
        await settle()
        waiting[0].cancel()  # waiting: gone without a place
        await settle()
        await gate.resize(3)  # two more places for the two still waiting
        await settle()
        assert entered == [0, 2, 3] and gate.used == 3
        hold.set()
        await asyncio.gather(first, *waiting[1:])
        assert gate.used == 0

        # let in, then cancelled before it ran: the place goes to the next waiter
        gate2, got = Gate(1), []
        await gate2.__aenter__()
        late = asyncio.create_task(gate2.__aenter__())
        nxt = asyncio.create_task(gate2.__aenter__())
        await settle()
        await gate2.__aexit__()  # lets `late` in ...
        late.cancel()  # ... which is cancelled before it resumes
        await settle()
        got.append(nxt.done())
        assert got == [True] and gate2.used == 1 and late.cancelled()

    asyncio.run(run())
