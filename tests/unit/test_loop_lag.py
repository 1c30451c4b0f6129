"""The event loop lag ticker (``manager.loop_lag``): near zero on an idle loop, about the blocked time after
the loop was held up."""

from __future__ import annotations

import asyncio
import time

from manager.loop_lag import LoopLag


async def test_the_lag_shows_how_long_the_loop_was_held_up() -> None:
    lag = LoopLag()
    ticker = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.05)
        assert lag() < 0.02  # idle
        asyncio.get_running_loop().call_soon(time.sleep, 0.08)  # a callback that hogs the loop
        await asyncio.sleep(0.02)  # the ticker's wake-up is due before this one: it runs first, late
        assert lag() >= 0.06
        await asyncio.sleep(0.05)
        assert lag() < 0.02  # and back once it runs freely
    finally:
        ticker.cancel()
