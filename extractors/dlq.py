"""Dead letters: a message the extractors cannot use goes to ``bank.dlq`` with its original bytes and key,
and the reason and origin in headers (``dlq.reason``, ``dlq.error``, ``dlq.topic``, ``dlq.partition``,
``dlq.offset``, ``dlq.sha256``, ``dlq.size``), so nothing is lost and an operator can re-publish it after a fix.

A dead letter must always fit in the broker, or the consumer could not get past the message that caused it:
payloads, keys and copied headers are capped (the digest, the size and the original coordinates are always
kept, so a truncated message can still be found in its source topic and checked against the original).
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from extractors.config import TOPICS

# The broker's default max.message.bytes is ~1 MiB; these caps keep every dead letter well below it.
MAX_PAYLOAD_BYTES = 512 * 1024
MAX_KEY_BYTES = 1024
MAX_REASON_BYTES = 2000
MAX_COPIED_HEADER_BYTES = 16 * 1024
MAX_COPIED_HEADERS = 64
HEADER_WIRE_OVERHEAD = 10  # the varint lengths of one header on the wire, counted against the cap


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    reason: str
    error_kind: str

    @property
    def truncated(self) -> bool:
        return self.value is not None and len(self.value) > MAX_PAYLOAD_BYTES

    def kafka_value(self) -> bytes:
        """The payload as sent (capped). A null value (or one the client could not read) is sent empty, with
        ``dlq.value: null`` saying so: Kafka refuses a message with neither key nor value."""
        return self.value[:MAX_PAYLOAD_BYTES] if self.value is not None else b""

    def kafka_key(self) -> bytes | None:
        return self.key[:MAX_KEY_BYTES] if self.key is not None else None

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        origin = [
            ("dlq.reason", self.reason.encode("utf-8", errors="replace")[:MAX_REASON_BYTES]),
            ("dlq.error", self.error_kind.encode()),
            ("dlq.topic", _printable(self.topic).encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
        ]
        if self.value is None:  # null, or bytes this client could not read: no digest of bytes never seen
            origin.append(("dlq.value", b"null"))
        else:
            origin.append(("dlq.size", str(len(self.value)).encode()))
            origin.append(("dlq.sha256", hashlib.sha256(self.value).hexdigest().encode()))
        if self.truncated:
            origin.append(("dlq.truncated", b"payload"))
        copied = [(_printable(k), v if v is not None else b"") for k, v in self.headers]
        wire_size = sum(len(k.encode()) + len(v) + HEADER_WIRE_OVERHEAD for k, v in copied)
        if len(copied) > MAX_COPIED_HEADERS or wire_size > MAX_COPIED_HEADER_BYTES:
            origin.append(("dlq.headers_dropped", str(len(copied)).encode()))
            copied = []
        return [*origin, *copied]


def _printable(key: str) -> str:
    """A header key as valid UTF-8 (one read leniently may carry undecodable bytes as surrogates)."""
    return key.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")


class DeadLetterSender:
    """Sends one batch's dead letters until the broker acknowledged every one; a retry after a partial
    failure sends only the letters not yet acknowledged (no duplicates from the retry itself)."""

    def __init__(self, producer: AIOKafkaProducer, letters: list[DeadLetter], topic: str | None = None) -> None:
        self.producer = producer
        self.pending = list(letters)
        self.topic = topic or TOPICS["dlq"]

    async def send(self) -> None:
        """One attempt; raises the first failure after every letter of the attempt was tried."""
        attempts: list[tuple[DeadLetter, asyncio.Future[object] | BaseException]] = []
        for letter in self.pending:
            try:
                future = await self.producer.send(
                    self.topic, value=letter.kafka_value(), key=letter.kafka_key(), headers=letter.kafka_headers()
                )
            except Exception as exc:  # refused before sending (size, metadata): this letter only
                attempts.append((letter, exc))
                continue
            attempts.append((letter, future))
        outcomes = await asyncio.gather(
            *(a for _, a in attempts if isinstance(a, asyncio.Future)), return_exceptions=True
        )
        results = iter(outcomes)
        failures: list[tuple[DeadLetter, BaseException]] = []
        for letter, attempt in attempts:
            outcome = attempt if isinstance(attempt, BaseException) else next(results)
            if isinstance(outcome, BaseException):
                failures.append((letter, outcome))
        self.pending = [letter for letter, _ in failures]
        if failures:
            raise failures[0][1]


async def send_dead_letters(producer: AIOKafkaProducer, letters: list[DeadLetter], topic: str | None = None) -> None:
    """Publish dead letters once and wait until the broker acknowledged all of them (raises on any failure)."""
    await DeadLetterSender(producer, letters, topic).send()


def header(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None
