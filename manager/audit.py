"""Every answer is logged to ``bank.recommendations`` (client, items, model versions, latency) for feedback
and audit. Logging never delays or fails an answer: messages are handed to the producer without waiting,
and a broker outage only counts dropped messages."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from deploy.settings import Settings
from manager.metrics import AUDIT_DROPPED

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, settings: Settings) -> None:
        self.topic = settings.kafka.topic("recommendations")
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, acks=1, linger_ms=20, request_timeout_ms=5000
        )
        self._started = False

    async def start(self) -> None:
        try:
            await self._producer.start()
            self._started = True
        except (KafkaError, OSError) as exc:
            log.warning("audit log disabled, Kafka unreachable: %s", exc)

    async def stop(self) -> None:
        if self._started:
            await self._producer.stop()
            self._started = False

    async def record(self, answer: dict[str, Any]) -> None:
        if not self._started:
            AUDIT_DROPPED.inc()
            return
        try:
            await self._producer.send(self.topic, value=orjson.dumps(answer), key=answer["client_id"].encode())
        except (KafkaError, OSError):
            AUDIT_DROPPED.inc()
