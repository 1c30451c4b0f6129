"""A store written by an older version (layout 1) is refused at start with what to do, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import asynctnt
import pytest

from deploy.cluster import StoreCluster
from deploy.processes import ProcessError
from deploy.settings import Settings
from feature_store.client import FeatureStore
from feature_store.records import Feature
from tests.conftest import private_settings

# Layout 1 stores had no `store_meta` record: removing it makes this store one of theirs as far as start is
# concerned (the check reads the record before anything else touches the data).
FORGET_LAYOUT = "box.space.store_meta:delete('layout') box.snapshot()"


async def test_an_older_layout_is_refused_with_what_to_do_and_kept(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = private_settings(kafka_settings, tmp_path_factory.mktemp("layout"), replicasets=1)
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            await store.put_features([Feature("old-client", "tx", "amount", "tx-1", 12.5, 1_700_000_000.0)])
        master = cluster.instance(cluster.master_name(cluster.topology[0]))
        conn = asynctnt.Connection(
            host=master.host, port=master.port, username=settings.store.user, password=settings.store.password
        )
        await conn.connect()
        await conn.eval(FORGET_LAYOUT)
        await conn.disconnect()
        await cluster.wait_synced()
    finally:
        cluster.stop()
    snapshots_before = _snapshots(cluster)

    again = StoreCluster(settings)
    try:
        with pytest.raises(ProcessError) as refused:
            await again.start(timeout=30)
    finally:
        again.stop()  # also when the start wrongly succeeded
    message = str(refused.value)
    assert "layout 1" in message and "layout 2" in message
    assert "rtrec replay" in message and "docs/operations.md" in message
    # the refused start wrote nothing over the old data
    assert _snapshots(cluster) == snapshots_before


def _snapshots(cluster: StoreCluster) -> dict[str, list[tuple[str, int]]]:
    """Each instance's snapshot files and their sizes."""
    return {
        spec.name: sorted((p.name, p.stat().st_size) for p in Path(cluster.work_dir(spec)).glob("*.snap"))
        for spec in cluster.instances()
    }
