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

from deploy.settings import TOPICS

# The broker's default max.message.bytes is ~1 MiB; these caps keep every dead letter well below it.
MAX_PAYLOAD_BYTES = 512 * 1024
MAX_KEY_BYTES = 1024
MAX_REASON_BYTES = 2000
MAX_COPIED_HEADER_BYTES = 16 * 1024


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
        value = self.value or b""
        origin = [
            ("dlq.reason", self.reason.encode("utf-8", errors="replace")[:MAX_REASON_BYTES]),
            ("dlq.error", self.error_kind.encode()),
            ("dlq.topic", self.topic.encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
            ("dlq.size", str(len(value)).encode()),
            ("dlq.sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        if self.truncated:
            origin.append(("dlq.truncated", b"payload"))
        if self.value is None:
            origin.append(("dlq.value", b"null"))
        copied = [(k, v if v is not None else b"") for k, v in self.headers]
        if sum(len(k.encode("utf-8", errors="replace")) + len(v) for k, v in copied) > MAX_COPIED_HEADER_BYTES:
            origin.append(("dlq.headers_dropped", str(len(copied)).encode()))
            copied = []
        return [*origin, *copied]


async def send_dead_letters(producer: AIOKafkaProducer, letters: list[DeadLetter], topic: str | None = None) -> None:
    """Publish dead letters and wait until the broker acknowledged all of them (raises on any failure)."""
    target = topic or TOPICS["dlq"]
    futures = [
        await producer.send(target, value=letter.kafka_value(), key=letter.kafka_key(), headers=letter.kafka_headers())
        for letter in letters
    ]
    await asyncio.gather(*futures)


def header(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None
