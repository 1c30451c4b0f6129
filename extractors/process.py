"""The `rtrec consume` process: one consumer with its store client, signals, metrics endpoint and state file.

Shutdown is bounded: the first SIGTERM/SIGINT finishes the batch in hand and commits; a second one, or the
stop grace period running out (a batch held on a store that does not come back), ends the process at once.
Nothing is lost either way: uncommitted batches are redelivered to the next consumer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import threading
from collections.abc import Callable

from extractors.config import IngestConfig
from extractors.consumer import ExtractorConsumer
from extractors.health import ConsumerHealth, state_path
from feature_store.client import FeatureStore
from feature_store.ttl import TtlPolicy

log = logging.getLogger("rtrec.consume")

EXIT_FORCED = 128 + signal.SIGTERM

# A batch of 5,000 transactions makes ~20,000 features and their rows: with CPython's default thresholds
# (700 allocations) the collector ran hundreds of times per batch, each pass walking the batch's young objects,
# and took about a third of the extraction CPU (decode to rows: 15.8 -> 10.2 microseconds per event with these
# settings, `rtrec bench extract`). Nothing a batch makes forms reference cycles, so collecting rarely loses
# nothing.
GC_THRESHOLDS = (100_000, 50, 1000)


def tune_gc() -> None:
    """Freeze what start-up allocated (modules, settings: never garbage) and collect young objects rarely."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_consumer_process(
    settings: IngestConfig, *, instance: int = 1, idle_exit_s: float | None = None, serve_metrics: bool = True
) -> int:
    """Run until stopped; 0 after a clean stop (or idle exit), 1 after a failure (logged with its cause)."""
    if settings.consumer.metrics_port and serve_metrics:
        from prometheus_client import start_http_server

        start_http_server(settings.consumer.metrics_port + instance - 1, addr=settings.consumer.metrics_host)

    async def consume() -> None:
        tune_gc()
        store = FeatureStore(settings.store, ttl=TtlPolicy.from_settings(settings.ttl), role="ingest")
        consumer = ExtractorConsumer(
            settings,
            store,
            extraction=settings.consumer.extraction(),
            health=ConsumerHealth(instance=instance),
            state_file=state_path(settings.run_dir, instance),
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop_handler(consumer, settings.consumer.stop_grace_s))
        try:
            stats = await consumer.run(idle_exit_s=idle_exit_s)
            log.info("consumer stopped: %s", stats)
        finally:
            await store.stop()

    try:
        asyncio.run(consume())
    except Exception:
        log.exception("consumer %d failed", instance)
        return 1
    return 0


def _stop_handler(consumer: ExtractorConsumer, grace_s: float) -> Callable[[], None]:
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("second stop signal: exiting now (the batch in hand is redelivered)")
            os._exit(EXIT_FORCED)
        log.info("stop requested: finishing the batch in hand (at most %.0fs)", grace_s)
        consumer.request_stop()
        # a thread, not a task: it fires even if the event loop is stuck
        timer = threading.Timer(grace_s, _exit_after_grace, args=(grace_s,))
        timer.daemon = True
        timer.start()

    return on_signal


def _exit_after_grace(grace_s: float) -> None:
    log.warning("stop did not finish within %.0fs: exiting now (uncommitted batches are redelivered)", grace_s)
    logging.shutdown()
    os._exit(EXIT_FORCED)
