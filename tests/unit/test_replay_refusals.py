"""A replay reports the events the store refused (a fat or denied subject, a name past the budget): it said
"done" with nothing to show that rows were left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
import pytest

from deploy.settings import load_settings
from extractors.ops import ApplyResult, StoreOp
from feature_store.client import FeatureStore
from replay import runner
from replay.runner import ReplayJob


@dataclass
class Record:
    topic: str
    value: bytes
    partition: int = 0
    offset: int = 0
    headers: tuple[Any, ...] = ()
    key: bytes | None = None
    timestamp: int = 0
    timestamp_type: int = 0


async def test_events_the_store_refused_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    job = ReplayJob(settings, cast(FeatureStore, None), 0.0, 1.0)

    async def refusing_store(store: object, ops: list[StoreOp], **_: object) -> ApplyResult:
        return ApplyResult(written=1, refused={op.origin: "SUBJECT_TOO_FAT" for op in ops[1:]})

    monkeypatch.setattr(runner, "apply_ops_retrying", refusing_store)
    events = [
        {"tx_id": f"t{i}", "client_id": f"c{i}", "ts": 1_790_000_000, "amount": 5, "currency": "RUB", "direction": "in"}
        for i in range(3)
    ]
    await job._replay(
        [Record(settings.kafka.topic("transactions"), orjson.dumps(e), offset=i) for i, e in enumerate(events)]
    )
    assert job.progress.events == 3 and job.progress.events_refused == 2
    assert job.progress.as_dict()["events_refused"] == 2
