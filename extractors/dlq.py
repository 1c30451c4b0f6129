"""Dead letters: a message the extractors cannot use goes to ``bank.dlq`` with its original bytes and key as
they were, and the reason and origin in headers (``dlq.reason``, ``dlq.topic``, ``dlq.partition``,
``dlq.offset``, ``dlq.error``), so nothing is lost and an operator can re-publish it after a fix."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from deploy.settings import TOPICS


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    reason: str
    error_kind: str

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        origin = [
            ("dlq.reason", self.reason.encode("utf-8")[:2000]),
            ("dlq.error", self.error_kind.encode()),
            ("dlq.topic", self.topic.encode()),
            ("dlq.partition", str(self.partition).encode()),
            ("dlq.offset", str(self.offset).encode()),
        ]
        return [*origin, *self.headers]


async def send_dead_letters(producer: AIOKafkaProducer, letters: list[DeadLetter], topic: str | None = None) -> None:
    """Publish dead letters and wait until the broker acknowledged all of them."""
    target = topic or TOPICS["dlq"]
    futures = [
        await producer.send(target, value=letter.value, key=letter.key, headers=letter.kafka_headers())
        for letter in letters
    ]
    await asyncio.gather(*futures)


def header(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None
