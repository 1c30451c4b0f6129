"""`rtrec bench serve --json`: open-loop load on the real recommendation API.

A private cluster gets a simulated bank (through the extractors) and a trained model; the API runs as its own
process; the generator sends requests at a fixed offered rate regardless of how fast answers come (open loop)
and measures each latency from the request's *scheduled* time, so queueing shows up instead of hiding
(no coordinated omission). The cache is disabled (TTL 0) so every request runs the full path.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from deploy import processes
from deploy.bench import _machine, _private, percentiles
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.direct import load_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from recommenders.catalogue import load_catalogue
from recommenders.profile import FeatureSpace
from recommenders.training import TrainingConfig, train


def _env(settings: Settings, catalogue: Path, models: Path) -> dict[str, str]:
    return {
        "RTREC_RUN_DIR": str(settings.run_dir),
        "RTREC_STORE__BASE_PORT": str(settings.store.base_port),
        "RTREC_API__PORT": str(settings.api.port),
        "RTREC_RECOMMENDATIONS__CATALOGUE": str(catalogue),
        "RTREC_RECOMMENDATIONS__MODELS_DIR": str(models),
        "RTREC_RECOMMENDATIONS__AUDIT_TO_KAFKA": "false",
        "RTREC_RECOMMENDATIONS__CACHE": "false",  # every request runs the full path
        "OPENBLAS_NUM_THREADS": "1",
    }


async def _open_loop(
    url: str, key: str, clients: list[str], rate: float, seconds: float, budget_s: float
) -> dict[str, Any]:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    degraded = 0
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, connector=connector, timeout=timeout
    ) as api:
        rng = random.Random(5)
        total = int(rate * seconds)
        start = time.perf_counter() + 0.2

        async def one(scheduled: float, client_id: str) -> None:
            nonlocal errors, degraded
            try:
                async with api.get(f"/v1/recommendations/{client_id}", params={"limit": "3"}) as response:
                    if response.status != 200:
                        errors += 1
                        return
                    body = await response.json()
                degraded += bool(body["degraded"])
                server_ms.append(body["elapsed_ms"])
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
            finally:
                latencies.append(time.perf_counter() - scheduled)

        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled, clients[rng.randrange(len(clients))])))
        await asyncio.gather(*tasks)
        achieved = total / (time.perf_counter() - start)
    ms = np.asarray(latencies) * 1000
    return {
        "offered_rps": rate,
        "achieved_rps": round(achieved, 1),
        "requests": total,
        "errors": errors,
        "degraded_answers": degraded,
        **percentiles(ms, digits=2),
        "over_budget": int((ms > budget_s * 1000).sum()),
        **{k: v for k, v in percentiles(server_ms, prefix="server_", digits=2).items() if "max" not in k},
    }


async def _prepare(settings: Settings, cluster: StoreCluster, workdir: Path, clients: int) -> list[str]:
    async with FeatureStore(settings.store, topology=cluster.topology) as store:
        await load_events(store, BankSimulator(SimulationConfig(clients=clients, days=180, seed=21)).events())
        catalogue = load_catalogue(workdir / "products.toml")
        space = FeatureSpace.from_view(settings.views[settings.recommendations.view])
        await train(store, space, catalogue, workdir / "models", TrainingConfig(progress=False, cuts=3))
    return [f"c{i:06d}" for i in range(clients)]


def run_serve(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-serve-") as tmp:
        workdir = Path(tmp)
        private = _private(settings, workdir / "run")
        catalogue_path = workdir / "products.toml"
        shutil.copy(settings.recommendations.catalogue, catalogue_path)
        (workdir / "models").mkdir()
        cluster = StoreCluster(private)
        asyncio.run(cluster.start())
        api_pid = workdir / "api.pid"
        try:
            clients = asyncio.run(_prepare(private, cluster, workdir, args.clients))
            processes.spawn(
                [sys.executable, "-m", "deploy.cli", "serve", "--config", str(args.config.resolve())],
                log_path=workdir / "api.log",
                pid_path=api_pid,
                env=_env(private, catalogue_path, workdir / "models"),
            )
            processes.wait_port(private.api.host, private.api.port, 60, pid_path=api_pid, what="API")
            key = next(k for k, role in settings.api.keys.items() if role == "reader")
            budget = load_catalogue(catalogue_path).decision.budget_s
            warm = asyncio.run(_open_loop(private.api.url, key, clients, 50, 2, budget))
            runs = [
                asyncio.run(_open_loop(private.api.url, key, clients, rate, args.seconds, budget))
                for rate in args.rates
            ]
            return {
                "benchmark": "serve",
                "machine": _machine(),
                "products": len(load_catalogue(catalogue_path).ids),
                "scorers": ["xgboost", "als", "expert"],
                "cache": "off",
                "clients": len(clients),
                "warmup_p50_ms": warm["p50_ms"],
                "runs": runs,
            }
        finally:
            processes.stop(api_pid)
            cluster.stop()
            shutil.rmtree(workdir, ignore_errors=True)
