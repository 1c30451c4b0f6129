"""Write chunks never cut an object's rows (``feature_store.client.object_chunks``): the store takes a
transaction's rows in one call as its whole version, so a transaction cut in two would read as a correction
that dropped half of its rows."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from feature_store.client import object_chunks
from feature_store.records import Feature


def _group(sizes: list[int]) -> list[tuple[Feature, list[Any]]]:
    return [
        (Feature("c1", "transactions", f"name{n}", f"tx{i}", 1.0, 0.0), [])
        for i, size in enumerate(sizes)
        for n in range(size)
    ]


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), max_size=40), batch=st.integers(1, 10))
def test_chunks_keep_every_row_in_order_and_never_cut_an_object(sizes: list[int], batch: int) -> None:
    group = _group(sizes)
    chunks = object_chunks(group, batch)
    assert [row for chunk in chunks for row in chunk] == group
    for before, after in itertools.pairwise(chunks):
        assert before[-1][0].object != after[0][0].object
    assert all(chunk for chunk in chunks)
    # a chunk passes the batch size only to finish the object it is in
    for chunk in chunks:
        assert len(chunk) <= batch or len({f.object for f, _ in chunk[batch - 1 :]}) == 1


def test_a_batch_of_separate_objects_is_cut_at_the_batch_size() -> None:
    assert [len(c) for c in object_chunks(_group([1] * 10), 4)] == [4, 4, 2]
    assert [len(c) for c in object_chunks(_group([3, 3, 3]), 4)] == [6, 3]
