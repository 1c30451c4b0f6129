"""`rtrec bench ingest --json`: transactions from an independent producer process to visible through the API,
end to end, on a private default-shaped stack (the cluster, one broker, `--consumers` consumer processes, the
API) sharing this machine's cores.

The clock starts when the producer starts publishing and stops when the consumer group's lag is 0 and the last
published events can be read through `GET /v1/subjects/{client}/features`. Alongside: features/s, the stage
split of the consumers, and the CPU seconds every process spent (where the two cores went).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from deploy import processes
from deploy.bench import _machine, _private
from deploy.cluster import StoreCluster
from deploy.kafka_broker import KafkaBroker
from deploy.settings import Settings
from extractors.health import HEARTBEAT_INTERVAL_S, read_state, state_path
from extractors.offsets import consumer_lag
from manager.features_api import MAX_RAW_ROWS

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "RTREC_RUN_DIR": str(settings.run_dir),
        "RTREC_STORE__BASE_PORT": str(settings.store.base_port),
        "RTREC_KAFKA__PORT": str(settings.kafka.port),
        "RTREC_KAFKA__CONTROLLER_PORT": str(settings.kafka.controller_port),
        "RTREC_API__PORT": str(settings.api.port),
        "RTREC_RECOMMENDATIONS__AUDIT_TO_KAFKA": "false",
        "RTREC_RECOMMENDATIONS__MODELS_DIR": str(settings.run_dir / "models"),
        "RTREC_CONSUMER__METRICS_PORT": "0",
    }


def run_ingest(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    args.consumers = args.consumers or settings.consumer.instances
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-ingest-") as tmp:
        private = _private(settings, Path(tmp))
        cluster, broker = StoreCluster(private), KafkaBroker(private)
        asyncio.run(cluster.start())
        broker.start()
        started: list[processes.ProcessHandle] = []
        try:
            return _measure(private, cluster, args, Path(tmp), started)
        finally:
            for handle in started:
                handle.stop()
            broker.stop()
            cluster.stop()


def _measure(
    settings: Settings, cluster: StoreCluster, args: argparse.Namespace, workdir: Path, started: list[Any]
) -> dict[str, Any]:
    env, config = _env(settings), str(args.config.resolve())
    cli = [sys.executable, "-m", "deploy.cli"]
    api = processes.ProcessHandle.spawn([*cli, "serve", "--config", config], workdir / "api.log", env)
    started.append(api)
    processes.wait_port(settings.api.host, settings.api.port, 60, what="API")
    consumers = [
        processes.ProcessHandle.spawn(
            [*cli, "consume", "--instance", str(i), "--no-metrics", "--config", config], workdir / f"c{i}.log", env
        )
        for i in range(1, args.consumers + 1)
    ]
    started.extend(consumers)
    _wait_consumers_running(settings, args.consumers)
    storage_pids = {spec.name: processes.read_pid(cluster.pid_path(spec)) or 0 for spec in cluster.instances()}
    broker_pid = processes.read_pid(KafkaBroker(settings).pid_path) or 0
    watched = {
        **storage_pids,
        "kafka": broker_pid,
        "api": api.pid,
        **{f"consumer-{i + 1}": c.pid for i, c in enumerate(consumers)},
    }
    cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}

    producer = processes.ProcessHandle.spawn(
        [
            sys.executable, "-m", "deploy.bench_producer", "--bootstrap", settings.kafka.bootstrap,
            "--topic", settings.kafka.topic("transactions"), "--events", str(args.events),
            "--clients", str(max(args.events // 200, 1)),
        ],
        workdir / "producer.log",
        env,
        capture=True,
    )  # fmt: skip
    produced = json.loads(producer.wait_output(timeout=600))
    producer_cpu = producer.cpu_at_exit
    visible_at = _wait_visible(settings, produced["sample"], timeout=600)
    cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 2) for name, pid in watched.items()}
    cpu["producer"] = round(producer_cpu, 2)
    time.sleep(HEARTBEAT_INTERVAL_S + 0.5)  # the consumers' state files catch up with their last batch
    health = [read_state(state_path(settings.run_dir, i)) or {} for i in range(1, args.consumers + 1)]
    features = sum(h.get("features_written", 0) for h in health)
    seconds = visible_at - produced["started"]
    return {
        "benchmark": "ingest",
        "machine": _machine(),
        "layout": f"{settings.store.replicasets} x {settings.store.instances_per_replicaset}",
        "consumers": args.consumers,
        "events": args.events,
        "features_written": features,
        "seconds_to_visible": round(seconds, 3),
        "events_per_s": round(args.events / seconds),
        "features_per_s": round(features / seconds),
        "publish_events_per_s": round(args.events / (produced["ended"] - produced["started"])),
        "cpu_seconds": cpu,
        "cpu_seconds_by_role": _by_role(cpu),
    }


def _by_role(cpu: dict[str, float]) -> dict[str, float]:
    roles: dict[str, float] = {}
    for name, seconds in cpu.items():
        role = "masters" if name.endswith("-a") else "replicas" if name.startswith("storage-") else name.split("-")[0]
        roles[role] = round(roles.get(role, 0.0) + seconds, 2)
    return roles


def _wait_consumers_running(settings: Settings, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [read_state(state_path(settings.run_dir, i)) or {} for i in range(1, count + 1)]
        if all(s.get("state") == "running" for s in states):
            return
        time.sleep(0.1)
    raise processes.ProcessError("the consumers did not start")


def _wait_visible(settings: Settings, sample: list[dict[str, str]], timeout: float) -> float:
    """The time when every sampled event is readable through the API and the group has no lag.

    The sample is the last events published, which cover every partition; a partition is written in order, so
    its last event visible means the events before it are too. The lag is asked only then (one lag query opens
    three Kafka clients: asked every few milliseconds it would load the broker it measures), and the clock
    stops at the first poll that saw everything visible."""
    key = next(k for k, role in settings.api.keys.items() if role in ("reader", "writer", "operator"))
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=settings.api.url, headers=headers, timeout=5) as api:
        while time.monotonic() < deadline:
            seen_at = time.time()
            if all(_visible(api, e) for e in sample):
                if sum(asyncio.run(consumer_lag(settings)).values()) == 0:
                    return seen_at
                time.sleep(0.2)
            time.sleep(0.02)
    raise processes.ProcessError("the published events did not become visible in time")


def _visible(api: httpx.Client, event: dict[str, str]) -> bool:
    name = f"tx.{event['direction']}.amount"
    answer = api.get(f"/v1/subjects/{event['client_id']}/features", params={"name": name, "limit": MAX_RAW_ROWS})
    answer.raise_for_status()  # a refused query never becomes visible: fail, not wait out the timeout
    return any(row["object"] == event["tx_id"] for row in answer.json()["features"])
