"""A retried dead-letter send sends only what the broker has not acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from extractors.dlq import DeadLetter, DeadLetterSender


def letter(offset: int) -> DeadLetter:
    return DeadLetter("bank.transactions", 0, offset, None, b"{}", (), "bad", "invalid")


class FlakyProducer:
    """Refuses offset 2 before sending once, fails offset 3's delivery once; records what was sent."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.refused_once = self.failed_once = False

    async def send(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        offset = int(dict(headers)["dlq.offset"])
        if offset == 2 and not self.refused_once:
            self.refused_once = True
            raise MessageSizeTooLargeError("too large")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if offset == 3 and not self.failed_once:
            self.failed_once = True
            future.set_exception(KafkaTimeoutError())
        else:
            self.sent.append(offset)
            future.set_result(None)
        return future


async def test_a_retry_sends_only_the_letters_not_yet_acknowledged() -> None:
    producer = FlakyProducer()
    sender = DeadLetterSender(producer, [letter(i) for i in range(5)], "dlq")  # type: ignore[arg-type]
    with pytest.raises(MessageSizeTooLargeError):
        await sender.send()
    assert sorted(producer.sent) == [0, 1, 4] and [x.offset for x in sender.pending] == [2, 3]
    await sender.send()
    assert sorted(producer.sent) == [0, 1, 2, 3, 4] and sender.pending == []
