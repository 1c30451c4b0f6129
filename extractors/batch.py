"""The pure part of consuming: Kafka records -> store operations and dead letters. No I/O.

Used unchanged by the live consumer and by replays. Whatever a record holds, it ends as operations or as
exactly one dead letter with a reason: an unexpected exception inside an extractor is a dead letter too
(kind ``extractor_error``), because one message must never stop a consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from extractors.decode import ExtractionError, check_not_ahead, decode_event, shorten
from extractors.dlq import DeadLetter
from extractors.events import ApplicationEvent, BankEvent, ProductEvent, TransactionDeleteEvent
from extractors.extract import ExtractionConfig, extract
from extractors.ops import StoreOp

log = logging.getLogger(__name__)


class KafkaRecord(Protocol):
    """What extraction reads of an aiokafka ``ConsumerRecord`` (tests build plain ones)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...
    @property
    def timestamp(self) -> int: ...  # milliseconds
    @property
    def timestamp_type(self) -> int: ...  # LOG_APPEND_TIME when the broker stamped it


# aiokafka's ``timestamp_type`` of a record the broker stamped with its arrival (the topics `rtrec up` creates)
LOG_APPEND_TIME = 1


@dataclass(frozen=True, slots=True)
class ExtractedBatch:
    """Operations tagged with the index of the record they came from (``origin``), and the dead letters."""

    ops: list[StoreOp]
    dead: list[DeadLetter]
    taken_at_latest: int = 0  # events stamped too far ahead, taken at the latest time accepted (``within_skew``)


def dead_letter(record: KafkaRecord, reason: str, kind: str) -> DeadLetter:
    return DeadLetter(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        value=record.value,
        headers=tuple(record.headers or ()),
        reason=reason,
        error_kind=kind,
    )


def extract_batch(
    records: Sequence[KafkaRecord],
    config: ExtractionConfig,
    canonical: Callable[[str], str] = str,
    now: float | None = None,
) -> ExtractedBatch:
    """Decode and extract every record; failures become dead letters. ``canonical`` maps a (prefixed)
    topic to its DESIGN.md name, which decides the event type. An event time may be at most
    ``config.max_ahead_s`` after its record's arrival (``arrival``; ``now``, default the clock, where the topic
    does not stamp arrival)."""
    now = time.time() if now is None else now
    ops: list[StoreOp] = []
    dead: list[DeadLetter] = []
    taken_at_latest = 0
    for origin, record in enumerate(records):
        try:
            event = decode_event(canonical(record.topic), record.value, record.headers)
            at = within_skew(event, arrival(record, now), config.max_ahead_s)
            ops.extend(extract(event, config, origin, at))
            taken_at_latest += at is not None
        except ExtractionError as exc:
            dead.append(dead_letter(record, str(exc), exc.kind))
        except Exception as exc:  # a bug met by this input: the message is parked, the stream goes on
            log.exception("extractor failed on %s/%s@%s", record.topic, record.partition, record.offset)
            reason = f"extractor failed: {type(exc).__name__}: {shorten(str(exc), 300)}"
            dead.append(dead_letter(record, reason, "extractor_error"))
    return ExtractedBatch(ops, dead, taken_at_latest)


def within_skew(event: BankEvent, arrived: float, max_ahead_s: float) -> float | None:
    """None when the event's time is at most ``max_ahead_s`` after its arrival. Beyond that a client version or a
    transaction is refused (FutureTimestamp: a client version would win against every genuine update until
    then, and a producer's clock or zone bug shows in the dead letters). An application or a product's opening
    or closing is taken at the latest time accepted instead, which is returned: they only add a fact of their
    own, which the filter of products held or applied for reads, and dead-lettered they were lost, the product
    offered to a client who had applied for it or held it. A deletion's time is not stored, so it is never
    refused for it."""
    if isinstance(event, TransactionDeleteEvent):
        return None
    latest = arrived + max_ahead_s
    if isinstance(event, ApplicationEvent | ProductEvent) and event.ts > latest:
        return latest
    check_not_ahead(event.ts, arrived, max_ahead_s)
    return None


def arrival(record: KafkaRecord, now: float) -> float:
    """When the broker took the record, where the topic stamps arrival; else ``now``. An event is judged ahead
    or not against its arrival, so a live consumer, one catching up hours late and a replay decide alike:
    against the clock at processing, a client version stamped 3 h ahead (a local time sent without its zone) went
    to the dead letters live and was applied by a replay 3 h later, beating the genuine updates in between."""
    if record.timestamp_type == LOG_APPEND_TIME:
        return float(record.timestamp) / 1000.0
    return now
