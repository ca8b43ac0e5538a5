"""A control loop's cycle that never ends (a query on a hung server) is cut short at its
deadline and counted as failed; the loop goes on."""

from __future__ import annotations

import asyncio

from runnerhub.control.loop import ControlLoop
from runnerhub.dev.waiting import wait_until


class Hangs(ControlLoop):
    name = "hangs"
    cycle_deadline_s = 0.1

    def __init__(self) -> None:
        super().__init__(interval_s=0.01)
        self.started = 0
        self.cancelled = 0

    async def cycle(self) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()  # never set: no answer, ever
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_cycle_that_never_ends_is_cut_short_and_the_loop_goes_on() -> None:
    loop, stop = Hangs(), asyncio.Event()
    running = asyncio.ensure_future(loop.run(stop))
    await wait_until(lambda: loop.cycles >= 2, 5, "two cycles cut short")
    stop.set()
    await asyncio.wait_for(running, 5)
    assert loop.cancelled >= 2 and loop.started >= 2
    assert loop.last_error == "no end within 0.1 s (a hung database?)"
