"""Hypothesis strategies for a transaction's versions (a first version and its corrections) and the batches a
consumer might cut them into: shared by the unit test on the in-memory store and the real-store test."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from hypothesis import strategies as st

from extractors.ops import AppendFeatures, StoreOp, apply_ops
from feature_store.records import Feature

TIME = 1_780_000_000.0


@st.composite
def versions(draw: st.DrawFn, subject: str = "c") -> list[AppendFeatures]:
    """Events of two transactions, each sent one to four times with other fields (amount, time, direction,
    category, channel), interleaved as producers might; each event's rows as the extractor orders them."""
    events: list[AppendFeatures] = []
    for _ in range(draw(st.integers(1, 6))):
        tx_id = draw(st.sampled_from(["t1", "t2"]))
        direction = draw(st.sampled_from(["in", "out"]))
        amount = float(draw(st.sampled_from([10, 20])))
        ts = TIME - draw(st.sampled_from([0, 60]))
        names = [f"tx.{direction}.amount"]
        mcc = draw(st.sampled_from([None, "travel", "groceries"]))
        if mcc is not None:
            names.append(f"tx.{direction}.mcc.{mcc}")
        if draw(st.booleans()):
            names.append(f"tx.{direction}.channel.online")
        features = tuple(Feature(subject, "transactions", name, tx_id, amount, ts) for name in names)
        events.append(AppendFeatures(features))
    return events


def batches(draw: st.DrawFn, events: list[Any]) -> list[list[Any]]:
    """``events`` cut into consecutive batches at drawn points."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=len(events)))))
    bounds = [0, *(c for c in cuts if c < len(events)), len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds) if events[a:b]]


def apply_in_batches(runner: asyncio.Runner, store: Any, split: list[list[StoreOp]]) -> None:
    for batch in split:
        runner.run(apply_ops(store, batch))
