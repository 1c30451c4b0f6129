"""Hold a batch while the store (or the dead-letter topic) refuses it: retry with backoff until it passes,
loudly, and never skip it.

A consumer that meets a full store, a read-only or restarting master, or an unreachable broker must neither
crash (a restart meets the same failure and loops) nor commit past the batch (losing it). It keeps the batch
uncommitted, retries with exponential backoff capped at a few seconds, logs a warning with the cause on every
attempt, shows the hold in its health (status file, metrics), and goes on by itself once the step passes.
Only a stop request ends a hold early; the batch then stays uncommitted and is redelivered on restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from extractors import metrics
from extractors.health import ConsumerHealth

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


class HoldAbandoned(Exception):
    """A stop was requested while a step was held; the batch stays uncommitted."""


def describe(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " ")
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


async def hold_until_done(
    step: Callable[[], Awaitable[T]],
    *,
    stage: str,
    health: ConsumerHealth,
    stop: asyncio.Event,
    what: str | None = None,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> T:
    """Run ``step`` until it returns. Any exception holds (logged with its cause, counted, shown in
    ``health`` under ``what``, default the stage: holds of one stage may run side by side, as the write lanes'
    do); ``stop`` ends the hold with ``HoldAbandoned``."""
    what = what or stage
    backoff = FIRST_BACKOFF_S
    attempts = 0
    while True:
        try:
            result = await step()
        except Exception as exc:
            attempts += 1
            cause = describe(exc)
            if attempts == 1:
                health.start_hold(what, stage, cause)
                metrics.HOLDING.labels(stage).set(1)
            else:
                health.note_hold_attempt(what, cause)
            metrics.HOLD_FAILURES.labels(stage, type(exc).__name__).inc()
            held_for = time.time() - health.holds[what].since
            log.warning(
                "%s held for %.1fs (attempt %d), retrying in %.1fs: %s", what, held_for, attempts, backoff, cause
            )
            if attempts == 1 and not _expected(exc):
                log.warning("first failure of %s in detail", what, exc_info=exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            except TimeoutError:
                pass
            if stop.is_set():
                health.end_hold(what)
                metrics.HOLDING.labels(stage).set(health.holding(stage))
                raise HoldAbandoned(f"stopped while {what} was held: {cause}") from exc
            backoff = min(backoff * 2, max_backoff_s)
            continue
        if attempts:
            log.warning("%s passed after %d failed attempts (%.1fs held)", what, attempts, health.end_hold(what))
            metrics.HOLDING.labels(stage).set(health.holding(stage))
        return result


def _expected(exc: BaseException) -> bool:
    """Failures whose message says everything (store and broker errors); others get a traceback once."""
    from aiokafka.errors import KafkaError

    from feature_store.errors import StoreError

    return isinstance(exc, StoreError | KafkaError | OSError | TimeoutError)
