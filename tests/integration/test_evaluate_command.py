"""`rtrec evaluate` as a user runs it: a small simulated bank through the extractors into the command's own
throwaway cluster (one instance per replica set, no replicas), trained and judged, every figure with its
interval, the report kept and the cluster gone afterwards."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import asynctnt
import pytest

from deploy import evaluate
from deploy.cli import main
from deploy.cluster import StoreCluster
from deploy.evaluate import _advancing, _memory_mb, _throwaway_store
from deploy.settings import Settings
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.config import StoreSettings
from recommenders.training import progress_bar
from tests.conftest import private_settings


def _tarantools() -> int:
    return len(subprocess.run(["pgrep", "-x", "tarantool"], capture_output=True, text=True).stdout.split())


def test_rtrec_evaluate_reports_every_figure_with_an_interval_from_its_own_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tarantools()
    argv = ["evaluate", "--dataset", "simulated", "--clients", "150", "--days", "160", "--seed", "9", "--json"]
    assert main([*argv, "--end-date", "2026-11-30", "--report-dir", str(tmp_path)]) == 0
    result = json.loads(capsys.readouterr().out)

    assert result["store"]["instances_per_replicaset"] == 1 and result["store"]["wal_mode"] == "none"
    assert result["features_loaded"] > 50_000
    assert result["end"] == "2026-11-30T00:00:00+00:00"
    served, logistic = result["rankings"]["blend"]["map_at_3"], result["rankings"]["logistic_regression"]["map_at_3"]
    assert served[0] == pytest.approx(result["map_at_3"], abs=1e-4)
    for mean, low, high in (served, logistic, result["blend_minus"]["logistic_regression"]):
        assert low <= mean <= high and high > low
    assert result["evaluated_distinct_clients"] >= 30
    assert result["load_seconds"] > 0 and set(result["training"]["seconds"]) >= {"point_in_time_rows", "holdout"}
    assert Path(result["report"]).is_file() and Path(result["report"]).is_relative_to(tmp_path)
    assert _tarantools() == before  # the private cluster was stopped


async def test_the_throwaway_store_runs_one_instance_per_replica_set_without_a_write_ahead_log(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """What `_throwaway_store` asks for reaches Tarantool itself (`box.cfg`), not only the settings."""
    settings = _throwaway_store(private_settings(kafka_settings, tmp_path_factory.mktemp("throwaway"), replicasets=1))
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        (instance,) = cluster.topology[0].instances
        conn = asynctnt.Connection(
            host=instance.host, port=instance.port, username=settings.store.user, password=settings.store.password
        )
        await conn.connect()
        answer = await conn.eval("return box.cfg.wal_mode, box.cfg.memtx_memory")
        await conn.disconnect()
    finally:
        cluster.stop()
    assert list(answer) == ["none", settings.store.memtx_memory_mb * 2**20]
    assert kafka_settings.store.wal_mode == "write"  # every other store keeps its log


def test_the_memory_limit_is_the_containers_when_it_is_lower_than_the_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine_mb = _memory_mb()
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(evaluate, "CGROUP_MEMORY_LIMITS", (limit,))
    limit.write_text("max\n")  # cgroup v2 without a limit
    assert _memory_mb() == machine_mb
    limit.write_text(f"{2**30}\n")
    assert _memory_mb() == 1024
    limit.write_text(f"{2**70}\n")  # v1 reports "no limit" as a huge number
    assert _memory_mb() == machine_mb


def test_a_store_without_a_write_ahead_log_cannot_have_replicas() -> None:
    with pytest.raises(ValueError, match="replicas read the log"):
        StoreSettings(wal_mode="none", instances_per_replicaset=3)
    assert StoreSettings(wal_mode="none", instances_per_replicaset=1).wal_mode == "none"


def test_the_load_bar_counts_clients_not_events() -> None:
    events = list(BankSimulator(SimulationConfig(clients=3, days=20, seed=1, end_ts=1.7e9)).events())
    with progress_bar(False) as bar:
        task = bar.add_task("loading", total=3)
        assert list(_advancing(bar, task, events)) == events
        assert bar.tasks[0].completed == 3 < len(events)
