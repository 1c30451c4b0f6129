"""How late this process's event loop runs what is ready: the wait a new request has already had.

uvicorn reads, parses and dispatches requests on the same loop that runs them, so when the loop is saturated a
request waits in the socket and the ready queue before the app sees it, and the service cannot see that wait
by counting its own requests in flight (`rtrec bench serve` at 2,000 requests/s: server-side p99 339 ms,
client-side p99 1.27 s). A ticker that asks to wake every INTERVAL_S and notes how late it woke measures it; the
recommendation service counts it against the request's budget and sheds work while it is high.
"""

from __future__ import annotations

import asyncio

INTERVAL_S = 0.01


class LoopLag:
    def __init__(self) -> None:
        self.lag_s = 0.0  # how late the last tick woke (seconds)

    def __call__(self) -> float:
        return self.lag_s

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + INTERVAL_S
            await asyncio.sleep(INTERVAL_S)
            self.lag_s = max(loop.time() - asked, 0.0)
