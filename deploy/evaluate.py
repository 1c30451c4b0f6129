"""`rtrec evaluate --dataset simulated|berka --json`: load a dataset through the extractors into a private
cluster, train, and print the holdout metrics (the figures in docs/models.md).

- simulated: the simulated bank, labels from its own applications and openings.
- berka: the real PKDD'99 data with the time split its README asks for: features from transactions up to
  1994-03-30; the holdout label is uptake (loan or card) within the horizon *after* that date, from the
  later loan and card records; training cuts are one horizon apart so no training label window reaches into
  the holdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Any

from rich.progress import Progress, TaskID

from deploy.bench import _machine, _private
from deploy.cluster import StoreCluster
from deploy.settings import Settings
from extractors.berka import CUTOFF, BerkaShift, berka_events, default_shift_years
from extractors.direct import load_events
from extractors.extract import ExtractionConfig
from extractors.simulate import BankSimulator, SimulationConfig
from extractors.simulate_worker import Event, events_from_worker
from feature_store.client import FeatureStore
from recommenders.catalogue import load_catalogue
from recommenders.profile import features_read, model_space
from recommenders.training import ReferenceChances, TrainingConfig, progress_bar, train

# The simulated bank that tells the served blend from the logistic regression (`rtrec evaluate --large`, `make
# evaluate-large`, the end of `rtrec demo`): the gap is about 0.015 of MAP@3, and the 95 % intervals narrow with the
# square root of the clients, so they part from about 24,000 clients on (docs/models.md, 2026-11-30 fourth). A
# fixed seed and last day make it the same bank, and the same figures, on every machine and day.
LARGE_BANK: dict[str, Any] = {"clients": 24_000, "days": 200, "seed": 301, "end_date": date(2026, 11, 30)}


def large_bank_args(report_dir: str = "artifacts/evaluations") -> argparse.Namespace:
    """What `rtrec evaluate --dataset simulated --large` evaluates, for callers that are not the CLI."""
    return argparse.Namespace(dataset="simulated", report_dir=report_dir, **LARGE_BANK)


def _dataset(
    args: argparse.Namespace,
) -> tuple[Iterable[tuple[str, str, dict[str, object]]], TrainingConfig, str, ReferenceChances | None]:
    """The events, the training settings, the home currency, and the known chances of uptake (simulated)."""
    if args.dataset == "simulated":
        end = None if args.end_date is None else datetime.combine(args.end_date, time(), UTC).timestamp()
        simulated = SimulationConfig(args.clients, args.days, args.seed, end_ts=end, record_chances=True)
        sim = BankSimulator(simulated)
        # four weekly holdout cuts: about four times the holdout rows, each client resampled whole
        config = TrainingConfig(
            end=sim.end_ts,
            horizon_days=30,
            cuts=15,
            holdout_cuts=4,
            progress=sys.stderr.isatty(),
            history_start=sim.start_ts,
        )
        return events_from_worker(sim), config, "RUB", sim.chances
    shift = default_shift_years()
    horizon = args.horizon_days
    events = berka_events(Path(args.path), shift, products_until=CUTOFF + timedelta(days=horizon))
    end = BerkaShift(shift).ts(CUTOFF + timedelta(days=horizon), 23.9)
    config = TrainingConfig(end=end, horizon_days=horizon, step_days=horizon, cuts=3, progress=sys.stderr.isatty())
    return events, config, "CZK", None


def _advancing(bar: Progress, task: TaskID, events: Iterable[Event]) -> Iterator[Event]:
    """The events, advancing the bar at each new client (the simulator gives each client's events together):
    the load is most of a large evaluation's time."""
    previous = None
    for event in events:
        if event[1] != previous:
            previous = event[1]
            bar.advance(task)
        yield event


async def _evaluate(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cluster = StoreCluster(settings)
    await cluster.start()
    try:
        events, config, currency, reference = _dataset(args)
        catalogue = load_catalogue(settings.recommendations.catalogue)
        space = model_space(settings.views[settings.recommendations.view], catalogue)
        # the store is thrown away after training: transaction features no snapshot reads stay out
        read = features_read(space, catalogue)
        async with FeatureStore(settings.store, topology=cluster.topology) as store:
            started = monotonic()
            with progress_bar(config.progress and args.dataset == "simulated") as bar:
                shown = _advancing(bar, bar.add_task("simulating and loading clients", total=args.clients), events)
                extraction = ExtractionConfig(home_currency=currency)
                loaded = await load_events(store, shown, extraction, transaction_names=read)
            load_seconds = monotonic() - started
            meta = await train(store, space, catalogue, workdir, config, reference=reference)
        metrics = meta["metrics"]
        report = _keep_report(workdir / meta["version"], Path(args.report_dir), args)
        return {
            "evaluation": args.dataset,
            "report": str(report / "report.html"),
            "machine": _machine(),
            "features_loaded": loaded.written,
            "load_seconds": round(load_seconds, 2),  # simulating (or reading) and extracting included
            "store": {
                "replicasets": settings.store.replicasets,
                "instances_per_replicaset": settings.store.instances_per_replicaset,
                "memtx_memory_mb": settings.store.memtx_memory_mb,
                "wal_mode": settings.store.wal_mode,
            },
            # the data's end (simulated: --end-date, today by default): with the seed it reproduces the run
            "end": None if config.end is None else datetime.fromtimestamp(config.end, UTC).isoformat(),
            "training": meta["training"],
            "validation": meta["validation"],
            **{k: v for k, v in metrics.items() if k != "per_product"},
            "per_product": metrics["per_product"],
        }
    finally:
        cluster.stop()


def _keep_report(version_dir: Path, report_dir: Path, args: argparse.Namespace) -> Path:
    """The report and its plots out of the private models directory, which is removed afterwards."""
    name = f"{args.dataset}-c{args.clients}-d{args.days}-s{args.seed}" if args.dataset == "simulated" else "berka"
    target = report_dir / f"{name}-{version_dir.name}"
    target.mkdir(parents=True, exist_ok=True)
    for path in version_dir.iterdir():
        if path.suffix in (".html", ".png", ".json"):
            shutil.copy(path, target / path.name)
    return target


# A container's memory limit: cgroup v2, then v1.
CGROUP_MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def _memory_mb() -> int:
    """The machine's RAM in MB, or the container's memory limit when one is set and lower (cgroup v2 or v1)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in CGROUP_MEMORY_LIMITS:
        try:
            ram = min(ram, int(limit_file.read_text().strip()))
        except (OSError, ValueError):  # no such file, or "max": no limit
            continue
    return ram // 2**20


def _throwaway_store(settings: Settings) -> Settings:
    """The evaluation's private store holds a copy of a dataset that is deleted afterwards, so it runs without
    replicas (they doubled the store's CPU while loading, on a 2-core machine), without a write-ahead log
    (about 12 % of the load's time; a crash loses nothing that a rerun does not make again) and with a memory
    limit of half the machine's RAM over its masters, so a large simulated bank fits without
    ``RTREC_STORE__MEMTX_MEMORY_MB``. The limit is a ceiling, not an allocation: a master takes what it stores."""
    ram_mb = _memory_mb()
    memory_mb = max(settings.store.memtx_memory_mb, ram_mb // 2 // settings.store.replicasets)
    store = settings.store.model_copy(
        update={"instances_per_replicaset": 1, "memtx_memory_mb": memory_mb, "wal_mode": "none"}
    )
    return settings.model_copy(update={"store": store})


def run_evaluation(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-eval-") as tmp:
        private = _throwaway_store(_private(settings, Path(tmp) / "run"))
        return asyncio.run(_evaluate(private, args, Path(tmp) / "models"))
