"""The whole local stack behind `rtrec up|down|status`: the Tarantool cluster, the Kafka broker, the
extractor consumers and the API server, each a background process with a pid file under ``run_dir``."""

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
from deploy.settings import Settings
from extractors.lag import consumer_lag


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
        for number, name in enumerate(self._consumer_names(), start=1):
            pid_path = self.proc_dir / f"{name}.pid"
            if not processes.is_alive(processes.read_pid(pid_path)):
                processes.spawn(
                    self._rtrec("consume", "--instance", str(number)),
                    log_path=self.proc_dir / f"{name}.log",
                    pid_path=pid_path,
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
        stopped["consumers"] = sum(
            processes.stop(self.proc_dir / f"{n}.pid", timeout=30) for n in self._consumer_names()
        )
        stopped["kafka"] = int(self.broker.stop())
        stopped["store_instances"] = self.cluster.stop()
        return stopped

    def status(self) -> dict[str, Any]:
        def proc(name: str) -> dict[str, Any]:
            pid = processes.read_pid(self.proc_dir / f"{name}.pid")
            alive = processes.is_alive(pid)
            return {"name": name, "pid": pid if alive else None, "alive": alive}

        lag: dict[str, int] | str
        try:
            lag = asyncio.run(asyncio.wait_for(consumer_lag(self.settings), 5.0)) if self.broker.running() else "n/a"
        except Exception as exc:  # status must print even when Kafka misbehaves
            lag = f"unavailable: {exc}"
        return {
            "store": {
                "replicasets": asyncio.run(self.cluster.status()),
                "space": "features",
                "bucket_count": self.settings.store.bucket_count,
            },
            "kafka": {
                "bootstrap": self.settings.kafka.bootstrap,
                "running": self.broker.running(),
                "pid": processes.read_pid(self.broker.pid_path) if self.broker.running() else None,
            },
            "consumers": {"processes": [proc(n) for n in self._consumer_names()], "lag": lag},
            "api": {"url": self.settings.api.url, **proc("api")},
        }
