"""Every answer is logged to ``bank.recommendations`` (client, items, model versions, latency) for feedback
and audit. Logging never delays or fails an answer: messages are handed to the producer without waiting,
and a broker outage only counts dropped messages. A broker that is away at startup is retried in the
background (every ``RETRY_S``), so the audit comes back by itself."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from manager.config import AppConfig
from manager.metrics import AUDIT_DROPPED

log = logging.getLogger(__name__)


RETRY_S = 30.0


class AuditLog:
    def __init__(self, settings: AppConfig) -> None:
        self.topic = settings.kafka.topic("recommendations")
        self._bootstrap = settings.kafka.bootstrap
        self._producer: AIOKafkaProducer | None = None
        self._retrying: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not await self._connect():
            self._retrying = asyncio.create_task(self._retry())

    async def _connect(self) -> bool:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks=1, linger_ms=20, request_timeout_ms=5000)
        try:
            await producer.start()
        except (KafkaError, OSError) as exc:
            log.warning("audit log paused, Kafka unreachable (retrying every %.0fs): %s", RETRY_S, exc)
            await producer.stop()
            return False
        self._producer = producer
        return True

    async def _retry(self) -> None:
        while not await self._connect():
            await asyncio.sleep(RETRY_S)
        log.info("audit log resumed")

    async def stop(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def record(self, answer: dict[str, Any]) -> None:
        if self._producer is None:
            AUDIT_DROPPED.inc()
            return
        try:
            await self._producer.send(self.topic, value=orjson.dumps(answer), key=answer["client_id"].encode())
        except (KafkaError, OSError):
            AUDIT_DROPPED.inc()
