"""The whole local stack behind `rtrec up|down|status`: the Tarantool cluster, the Kafka broker, the
consumer supervisor (which keeps the extractor consumers running) and the API server, each a background
process with a pid file under ``run_dir``."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from deploy import processes
from deploy.cluster import StoreCluster
from deploy.kafka_broker import KafkaBroker
from deploy.problems import problems_of
from deploy.settings import Settings
from deploy.supervisor import read_supervisor_state, supervisor_alive
from extractors.health import read_state, state_path
from extractors.offsets import consumer_lag, dead_letters_since

RECENT_S = 600.0


class LocalStack:
    def __init__(self, settings: Settings, config_path: Path) -> None:
        self.settings = settings
        self.config_path = config_path.resolve()
        self.cluster = StoreCluster(settings)
        self.broker = KafkaBroker(settings)
        self.proc_dir = settings.run_dir / "procs"

    def _rtrec(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "deploy.cli", *args, "--config", str(self.config_path)]

    def _consumer_names(self) -> list[str]:
        return [f"consumer-{i}" for i in range(1, self.settings.consumer.instances + 1)]

    def up(self, *, log: Any = print) -> None:
        log("starting the Tarantool cluster ...")
        asyncio.run(self.cluster.start())
        log("starting the Kafka broker (KRaft) ...")
        self.broker.start()
        if not supervisor_alive(self.settings.run_dir):
            log("starting the consumer supervisor ...")
            processes.spawn(
                self._rtrec("supervise"),
                log_path=self.proc_dir / "supervisor.log",
                pid_path=self.proc_dir / "supervisor.pid",
            )
        api_pid = self.proc_dir / "api.pid"
        if not processes.is_alive(processes.read_pid(api_pid)):
            log("starting the API ...")
            processes.spawn(self._rtrec("serve"), log_path=self.proc_dir / "api.log", pid_path=api_pid)
        self._wait_api_ready(60.0)

    def _wait_api_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.settings.api.url}/ready"
        while time.monotonic() < deadline:
            if not processes.is_alive(processes.read_pid(self.proc_dir / "api.pid")):
                raise processes.ProcessError(f"the API exited:\n{processes.tail(self.proc_dir / 'api.log')}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise processes.ProcessError(f"the API was not ready in {timeout:.0f}s")

    def down(self) -> dict[str, int]:
        """Stop everything, consumers first so they commit their batch. Safe to run twice."""
        stopped = {"api": int(processes.stop(self.proc_dir / "api.pid"))}
        grace = self.settings.consumer.stop_grace_s + 10
        supervisor = processes.stop(self.proc_dir / "supervisor.pid", timeout=grace)
        # consumers started by hand (or left by a supervisor that was killed)
        stopped["consumers"] = sum(
            processes.stop(self.proc_dir / f"{n}.pid", timeout=grace) for n in self._consumer_names()
        )
        stopped["supervisor"] = int(supervisor)
        stopped["kafka"] = int(self.broker.stop())
        stopped["store_instances"] = self.cluster.stop()
        return stopped

    def status(self) -> dict[str, Any]:
        """``rtrec status --json`` (DESIGN.md): every part's facts and a ``problems`` list, empty only when
        everything runs."""
        now = time.time()
        kafka_running = self.broker.reachable()
        status: dict[str, Any] = {
            "store": {
                "replicasets": asyncio.run(self.cluster.status()),
                "space": "features",
                "bucket_count": self.settings.store.bucket_count,
            },
            "kafka": {
                "bootstrap": self.settings.kafka.bootstrap,
                "running": kafka_running,
                "pid": processes.read_pid(self.broker.pid_path) if self.broker.running() else None,
            },
            "consumers": self._consumers_status(now, kafka_running),
            "api": self._api_status(),
        }
        status["problems"] = problems_of(status, now)
        return status

    def _consumers_status(self, now: float, kafka_running: bool) -> dict[str, Any]:
        supervised = read_supervisor_state(self.settings.run_dir) or {}
        by_name = {c["name"]: c for c in supervised.get("consumers", [])}
        lag: dict[str, int] | str = "n/a (the broker is not running)"
        dead_recent: int | None = None
        if kafka_running:
            try:
                lag = asyncio.run(asyncio.wait_for(consumer_lag(self.settings), 10.0))
                dead_recent = asyncio.run(asyncio.wait_for(dead_letters_since(self.settings, RECENT_S), 10.0))
            except Exception as exc:  # status must print even when Kafka misbehaves
                lag = f"unavailable: {type(exc).__name__}: {exc}"
        return {
            "processes": [
                self._consumer_status(n, i, by_name.get(n, {}), now) for i, n in enumerate(self._consumer_names(), 1)
            ],
            "lag": lag,
            "dead_letters_recent": dead_recent,
            "supervisor": {
                "alive": supervisor_alive(self.settings.run_dir),
                "pid": processes.read_pid(self.proc_dir / "supervisor.pid"),
                "lag_samples": supervised.get("lag_samples", []),
            },
        }

    def _consumer_status(self, name: str, instance: int, supervised: dict[str, Any], now: float) -> dict[str, Any]:
        pid = processes.read_pid(self.proc_dir / f"{name}.pid")
        alive = processes.is_alive(pid)
        health = read_state(state_path(self.settings.run_dir, instance)) or {}
        current = alive and health.get("pid") == pid
        holding = None
        if current and health.get("holding_since"):
            holding = {
                "stage": health.get("holding_stage"),
                "seconds": round(now - health["holding_since"], 1),
                "attempts": health.get("hold_attempts"),
                "cause": health.get("holding_cause"),
            }
        holds = [
            {
                "what": what,
                "stage": hold.get("stage"),
                "seconds": round(now - hold["since"], 1),
                "attempts": hold.get("attempts"),
                "cause": hold.get("cause"),
            }
            for what, hold in ((health.get("holds") or {}) if current else {}).items()
        ]
        return {
            "name": name,
            "pid": pid if alive else None,
            "alive": alive,
            "state": health.get("state") if current else ("not running" if not alive else "starting"),
            "started_at": health.get("started_at") if current else None,
            "heartbeat_age_s": round(now - health["updated_at"], 1) if current and health.get("updated_at") else None,
            "last_commit_at": health.get("last_commit_at") if current else None,
            "holding": holding,  # the longest of ``holds``
            "holds": holds,  # every step held now: the writes to a replica set, the dead letters
            "messages_in_hand": health.get("messages_in_hand") if current else None,
            "max_messages_in_hand": health.get("max_messages_in_hand") if current else None,
            "all_ingest_waits": health.get("all_ingest_waits") if current else None,
            "all_ingest_waits_because": health.get("all_ingest_waits_because") if current else None,
            "messages": health.get("messages") if current else None,
            "dead_letters": health.get("dead_letters") if current else None,
            "rebalances": health.get("rebalances") if current else None,
            "commit_failures": health.get("commit_failures") if current else None,
            # messages behind on this consumer's own partitions (refreshed every few seconds by the consumer)
            "lag": sum((health.get("lag") or {}).values()) if current else None,
            "restarts": supervised.get("restarts", 0),
            "restart_times": supervised.get("restart_times", []),
            "last_exit_reason": supervised.get("last_exit_reason"),
        }

    def _api_status(self) -> dict[str, Any]:
        pid = processes.read_pid(self.proc_dir / "api.pid")
        alive = processes.is_alive(pid)
        api: dict[str, Any] = {
            "url": self.settings.api.url,
            "name": "api",
            "pid": pid if alive else None,
            "alive": alive,
        }
        if alive:
            try:
                answer = httpx.get(f"{self.settings.api.url}/ready", timeout=2.0)
                api["ready"] = answer.status_code == 200
                if not api["ready"]:
                    api["ready_detail"] = answer.text[:300]
            except httpx.HTTPError as exc:
                api["ready"], api["ready_detail"] = False, f"{type(exc).__name__}: {exc}"
        return api
