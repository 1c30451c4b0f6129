"""The simulated bank made in a worker process while the caller loads it.

Simulating is about half of a bulk load's Python time (`rtrec evaluate`), and every client has its own random
stream, so a part of the bank simulated elsewhere gives the same events. With the simulation in a worker, the
caller only validates, extracts and writes, and on two cores the two overlap (docs/benchmarks.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from itertools import islice
from multiprocessing import get_context
from multiprocessing.pool import AsyncResult

import numpy as np

from extractors.simulate import BankSimulator, SimulationConfig

Event = tuple[str, str, dict[str, object]]
# Clients per part sent back at once (about 90,000 events), and parts simulated ahead of the caller: enough to
# keep the worker busy while the caller loads a part, few enough to hold only a few parts in memory.
PART_CLIENTS = 200
PARTS_AHEAD = 2


def _simulate_part(config: SimulationConfig, clients: range) -> tuple[list[Event], dict[str, np.ndarray]]:
    simulator = BankSimulator(config)
    return list(simulator.events(clients)), simulator.recorded_chances()


def events_from_worker(simulator: BankSimulator, part_clients: int = PART_CLIENTS) -> Iterator[Event]:
    """The events of ``simulator.events()``, in the same order, made in a worker process. The chances the
    worker records land in ``simulator`` as each part arrives, so ``simulator.chances`` answers for every
    client once the events are consumed."""
    # the worker must not pick its own "today": the parent's end of the data is the bank's
    config = replace(simulator.config, end_ts=simulator.end_ts)
    clients = config.clients
    parts = [range(first, min(first + part_clients, clients)) for first in range(0, clients, part_clients)]
    # spawned, not forked: the caller runs an event loop. Terminated on the way out, so a caller that stops
    # early (an error while loading) does not wait for the parts simulated ahead.
    pool = get_context("spawn").Pool(processes=1)
    try:
        waiting = iter(parts)
        pending: deque[AsyncResult[tuple[list[Event], dict[str, np.ndarray]]]] = deque(
            pool.apply_async(_simulate_part, (config, part)) for part in islice(waiting, PARTS_AHEAD)
        )
        while pending:
            events, chances = pending.popleft().get()
            part = next(waiting, None)
            if part is not None:
                pending.append(pool.apply_async(_simulate_part, (config, part)))
            simulator.keep_chances(chances)
            yield from events
    finally:
        pool.terminate()
        pool.join()
