"""`rtrec bench serve --json`: open-loop load on the real recommendation API, as production sees it.

A private cluster gets a simulated bank to train on (through the extractors) plus ``--clients`` light clients
(about ten transactions each) that the load asks for; the API runs as its own process with the cache on. The
generator sends requests at a fixed offered rate regardless of how fast answers come (open loop) and measures
each latency from the request's *scheduled* time, so queueing shows up instead of hiding (no coordinated
omission). Requests walk the clients in a shuffled order, across all rates, so no client is asked twice while
there are clients left: the cache helps only as much as it would with distinct clients.

Per rate: p50/p99/max, errors, answers over the budget, degraded and fast-path shares, the API process's CPU,
and the per-stage split (mean milliseconds per request of each stage, from the API's own histograms).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import get_context
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import uvloop

from deploy import processes
from deploy.bench import _machine, _private, percentiles
from deploy.bench_ingest import CLOCK_TICKS, cpu_seconds
from deploy.cluster import StoreCluster
from deploy.load_generator import Answer, LoadPool
from deploy.settings import Settings
from extractors.direct import load_events
from extractors.simulate import BankSimulator, SimulationConfig
from feature_store.client import FeatureStore
from recommenders.catalogue import load_catalogue
from recommenders.dataset import build_dataset
from recommenders.profile import model_space
from recommenders.training import TrainingConfig, train


def _env(settings: Settings, catalogue: Path, models: Path) -> dict[str, str]:
    return {
        "RTREC_RUN_DIR": str(settings.run_dir),
        "RTREC_STORE__BASE_PORT": str(settings.store.base_port),
        "RTREC_API__PORT": str(settings.api.port),
        "RTREC_RECOMMENDATIONS__CATALOGUE": str(catalogue),
        "RTREC_RECOMMENDATIONS__MODELS_DIR": str(models),
        "RTREC_RECOMMENDATIONS__AUDIT_TO_KAFKA": "false",
        "OPENBLAS_NUM_THREADS": "1",
    }


def api_cpu_seconds(pid: int) -> float:
    """CPU seconds of the API: its process and its worker processes (uvicorn's children)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return cpu_seconds(pid) + sum(cpu_seconds(child) for child in children)


# Histograms whose per-request means make the stage split (label value -> its name in the report).
STAGE_METRICS = {
    "rtrec_recommendation_stage_seconds": "stage",
    "rtrec_scorer_seconds": "scorer",
}


async def _stage_totals(api: httpx.AsyncClient) -> dict[str, tuple[float, float]]:
    """``{"stage:read": (sum_seconds, count), ...}`` from the API's /metrics."""
    text = (await api.get("/metrics")).text
    totals: dict[str, list[float]] = {}
    for line in text.splitlines():
        for metric, label in STAGE_METRICS.items():
            for suffix, slot in (("_sum{", 0), ("_count{", 1)):
                if line.startswith(metric + suffix):
                    name = line.split(f'{label}="', 1)[1].split('"', 1)[0]
                    totals.setdefault(f"{label}:{name}", [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return {k: (v[0], v[1]) for k, v in totals.items()}


Totals = dict[str, tuple[float, float]]


def _split(before: Totals, after: Totals, requests: int) -> dict[str, float]:
    """Mean milliseconds per request spent in each stage between two /metrics readings."""
    return {
        name: round((total - before.get(name, (0.0, 0.0))[0]) * 1000 / max(requests, 1), 3)
        for name, (total, _) in sorted(after.items())
    }


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLOCK_TICKS, sum(fields) / CLOCK_TICKS


def _cpu_by_role(store_pids: dict[str, int], api_pid: int) -> dict[str, float]:
    """CPU seconds so far of each role on the machine: the API (all workers), the store's masters and
    replicas, and this generator."""
    store = {name: cpu_seconds(pid) for name, pid in store_pids.items()}
    return {
        "api": api_cpu_seconds(api_pid),
        "masters": sum(v for name, v in store.items() if name.endswith("-a")),
        "replicas": sum(v for name, v in store.items() if not name.endswith("-a")),
        "generator": time.process_time(),
    }


async def _open_loop(
    url: str,
    key: str,
    clients: list[str],
    rate: float,
    seconds: float,
    budget_s: float,
    api_pid: int,
    store_pids: dict[str, int],
) -> dict[str, Any]:
    latencies: list[float] = []
    server_ms: list[float] = []
    errors = 0
    degraded = 0
    fast_path = 0
    cached = 0

    def done(answer: Answer) -> None:
        nonlocal errors, degraded, fast_path, cached
        latencies.append(answer.latency_s)
        if answer.status != 200:
            errors += 1
            return
        body = orjson.loads(answer.body)
        degraded += bool(body["degraded"])
        fast_path += "fast path" in (body["degraded_reason"] or "")
        cached += bool(body["cached"])
        server_ms.append(body["elapsed_ms"])

    send_late: list[float] = []  # how late the generator itself sent each request (its own CPU starvation)
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    pool = LoadPool(host, int(port), {"Authorization": f"Bearer {key}"})
    async with httpx.AsyncClient(base_url=url, timeout=10) as api:  # for /metrics only
        total = int(rate * seconds)
        stages_before = await _stage_totals(api)
        cpu_before, busy_before = _cpu_by_role(store_pids, api_pid), machine_busy()
        start = time.perf_counter() + 0.2
        sends = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            client_id = clients.pop() if clients else "c000000"
            send_late.append(time.perf_counter() - scheduled)
            sends.append(asyncio.ensure_future(pool.get(f"/v1/recommendations/{client_id}?limit=3", scheduled, done)))
        await asyncio.gather(*sends)
        deadline = time.perf_counter() + 30
        while len(latencies) < total and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        errors += total - len(latencies)  # never answered within 30 s of the last send
        achieved = total / (time.perf_counter() - start)
        cpu = {role: seconds - cpu_before[role] for role, seconds in _cpu_by_role(store_pids, api_pid).items()}
        busy = [after - before for after, before in zip(machine_busy(), busy_before, strict=True)]
        split = _split(stages_before, await _stage_totals(api), total)
        pool.close()
    ms = np.asarray(latencies) * 1000
    return {
        "offered_rps": rate,
        "achieved_rps": round(achieved, 1),
        "requests": total,
        "errors": errors,
        "degraded_share": round(degraded / max(total, 1), 4),
        "fast_path_share": round(fast_path / max(total, 1), 4),
        "cached_share": round(cached / max(total, 1), 4),
        **percentiles(ms, digits=2),
        "over_budget": int((ms > budget_s * 1000).sum()),
        **{k: v for k, v in percentiles(server_ms, prefix="server_", digits=2).items() if "max" not in k},
        "generator_send_late_p99_ms": round(float(np.percentile(send_late, 99)) * 1000, 2) if send_late else 0.0,
        "api_cpu_ms_per_request": round(cpu["api"] * 1000 / max(total, 1), 3),
        "cpu_ms_per_request_by_role": {role: round(v * 1000 / max(total, 1), 3) for role, v in cpu.items()},
        "machine_busy_share": round(busy[0] / max(busy[1], 1e-9), 3),
        "stage_ms_per_request": split,
    }


TRAINING_CLIENTS = 1000  # the bank the models learn from (180 days of history each)
LOAD_DAYS = 4  # the light clients' history: about ten transactions each


async def _prepare(settings: Settings, cluster: StoreCluster, workdir: Path, clients: int) -> list[str]:
    """Train on a full bank, then load ``clients`` light clients; returns them in the order they are asked."""
    async with FeatureStore(settings.store, topology=cluster.topology) as store:
        bank = SimulationConfig(clients=TRAINING_CLIENTS, days=180, seed=21)
        await load_events(store, BankSimulator(bank).events())
        catalogue = load_catalogue(workdir / "products.toml")
        space = model_space(settings.views[settings.recommendations.view], catalogue)
        await train(store, space, catalogue, workdir / "models", TrainingConfig(progress=False, cuts=3))
        light = SimulationConfig(clients=clients, days=LOAD_DAYS, seed=22, client_prefix="load")
        await load_events(store, BankSimulator(light).events())
    # The masters' first expiry walk over every feature (then hourly) runs a minute after start: done here, it
    # cannot fall into a measured rate (about 0.6 s of a master's CPU per million features)
    for rs in cluster.topology:
        master = cluster.instance(cluster.master_name(rs))
        await cluster.call_instance(master, "expire_now", [time.time()], timeout=120)
    order = [f"load{i:06d}" for i in range(clients)]
    random.Random(5).shuffle(order)
    return order


TRAINING_CUTS = 15  # as `rtrec evaluate` reads a client


def _training_reads(settings: Settings, catalogue: Path, rows_read: Synchronized[int]) -> None:
    """Training's point-in-time reads of the trained bank as `rtrec train` makes them (`aggregate_at`, from
    where and how many at a time `recommendations.training_*` say, at its CPU priority), over and over until the
    process is stopped: in a process of its own, as training would be, not taking the generator's CPU."""
    rec = settings.recommendations
    os.nice(rec.training_niceness)

    def count(rows: int) -> None:
        with rows_read.get_lock():
            rows_read.value += rows

    async def forever() -> None:
        store_settings = settings.store.model_copy(update={"read_from": rec.training_read_from})
        async with FeatureStore(store_settings, topology=StoreCluster(settings).topology) as store:
            cat = load_catalogue(catalogue)
            space = model_space(settings.views[settings.recommendations.view], cat)
            clients = [f"c{i:06d}" for i in range(TRAINING_CLIENTS)]
            cuts = [time.time() - week * 7 * 86400.0 for week in range(2, 2 + TRAINING_CUTS)]
            while True:
                await build_dataset(
                    store, space, cat, clients, cuts, 30, progress=count, concurrency=rec.training_read_concurrency
                )

    asyncio.run(forever())


def _while_training(settings: Settings, catalogue: Path, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()`` while training's reads run in another process."""
    rec = settings.recommendations
    context = get_context("spawn")
    rows_read = context.Value("q", 0)
    reader = context.Process(target=_training_reads, args=(settings, catalogue, rows_read))
    reader.start()
    try:
        time.sleep(3)  # its start-up (imports, connections) must not fall into the measured seconds
        rows_before, started = rows_read.value, time.perf_counter()
        served = measure()
        rows_per_s = (rows_read.value - rows_before) / (time.perf_counter() - started)
        if not reader.is_alive() or rows_per_s == 0:  # else the row would show serving with no training at all
            raise RuntimeError(f"training's reads stopped during the measurement (exit code {reader.exitcode})")
        return {
            **served,
            "while_training": {
                "read_from": rec.training_read_from,
                "read_concurrency": rec.training_read_concurrency,
                "niceness": rec.training_niceness,
                "training_rows_per_s": round(rows_per_s),  # client-cuts read meanwhile
            },
        }
    finally:
        reader.terminate()
        reader.join()


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
            pid = processes.read_pid(api_pid) or 0
            store_pids = {spec.name: processes.read_pid(cluster.pid_path(spec)) or 0 for spec in cluster.instances()}
            url = private.api.url
            warm = uvloop.run(_open_loop(url, key, clients, 50, 2, budget, pid, store_pids))
            runs = []
            for rate in args.rates:

                def measure(rate: float = rate) -> dict[str, Any]:
                    return uvloop.run(_open_loop(url, key, clients, rate, args.seconds, budget, pid, store_pids))

                runs.append(measure())
                if args.while_training:
                    runs.append(_while_training(private, catalogue_path, measure))
            return {
                "benchmark": "serve",
                "machine": _machine(),
                "products": len(load_catalogue(catalogue_path).ids),
                "scorers": ["xgboost", "als", "expert"],
                "cache": "on",
                "clients": args.clients,
                "clients_left_unasked": len(clients),
                "warmup_p50_ms": warm["p50_ms"],
                "runs": runs,
            }
        finally:
            processes.stop(api_pid)
            cluster.stop()
            shutil.rmtree(workdir, ignore_errors=True)
