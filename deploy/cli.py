"""`rtrec`: the command line of the local stack, the stream, the API and the benchmarks.

Every command takes ``--config FILE`` (default deploy/local.toml); any setting can be overridden from the
environment as ``RTREC_<SECTION>__<KEY>`` (e.g. ``RTREC_STORE__REPLICASETS=3``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from datetime import date
from pathlib import Path
from typing import Any

from deploy import demo_bank
from deploy.settings import DEFAULT_CONFIG, Settings, load_settings


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.stack import LocalStack

    stack = LocalStack(settings, args.config)
    stack.up(log=lambda message: print(message, file=sys.stderr))  # stdout stays pure JSON
    _print_json(stack.status())
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.stack import LocalStack

    _print_json(LocalStack(settings, args.config).down())
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.stack import LocalStack

    _print_json(LocalStack(settings, args.config).status())
    return 0


def cmd_supervise(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.supervisor import ConsumerSupervisor

    return ConsumerSupervisor(settings, args.config).run()


def cmd_consume(settings: Settings, args: argparse.Namespace) -> int:
    from extractors.process import run_consumer_process

    return run_consumer_process(
        settings, instance=args.instance, idle_exit_s=args.idle_exit, serve_metrics=args.metrics
    )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """One process, or ``api.workers`` processes sharing the port (uvicorn's supervisor restarts a dead one);
    metrics are then kept per process in files under the run directory and summed by `/metrics`."""
    import uvicorn

    from deploy.api_worker import CONFIG_VARIABLE
    from manager.app import create_app

    common: dict[str, Any] = {
        "host": settings.api.host,
        "port": settings.api.port,
        "log_level": "warning",
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,
    }
    if settings.api.workers <= 1:
        uvicorn.run(create_app(settings), **common)
        return 0
    metrics_dir = settings.run_dir / "api-metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters of an earlier run must not add up with these
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ[CONFIG_VARIABLE] = str(Path(args.config).resolve())
    uvicorn.run("deploy.api_worker:app", factory=True, workers=settings.api.workers, **common)
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from extractors.publish import publish_events
    from extractors.simulate import BankSimulator, SimulationConfig

    simulator = BankSimulator(SimulationConfig(clients=args.clients, days=args.days, seed=args.seed))
    demo_bank.forget(settings.run_dir)  # the store no longer holds the demo's bank alone
    counts = asyncio.run(publish_events(settings, simulator.events(), progress=not args.quiet))
    _print_json({"published": counts, "clients": args.clients, "days": args.days, "seed": args.seed})
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from extractors.berka import berka_events
    from extractors.publish import publish_events

    demo_bank.forget(settings.run_dir)  # the store no longer holds the demo's bank alone
    counts = asyncio.run(publish_events(settings, berka_events(Path(args.path)), progress=not args.quiet))
    _print_json({"published": counts, "dataset": "berka"})
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.target == "serve":
        from deploy.bench_serve import run_serve

        result = run_serve(settings, args)
    else:
        from deploy.bench import run as run_bench

        result = run_bench(args.target, settings, args)
    if args.json:
        print(json.dumps(result))
    else:
        _print_json(result)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.demo import run_demo

    return run_demo(
        settings,
        args.config,
        clients=args.clients,
        days=args.days,
        seed=args.seed,
        dataset=args.dataset,
        berka_path=Path(args.path),
        fresh=args.fresh,
        quick=args.quick,
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    rec = settings.recommendations
    # serving shares the machine: it goes first. Before the imports, whose BLAS threads would keep the old priority
    os.nice(rec.training_niceness)
    from recommenders.training import TrainingConfig, TrainingSetupError, train_configured

    try:
        config = TrainingConfig(
            read_concurrency=rec.training_read_concurrency,
            horizon_days=args.horizon_days,
            step_days=args.step_days,
            cuts=args.cuts,
            holdout_cuts=args.holdout_cuts,
            k=args.k,
            end=_epoch(args.end) if args.end else None,
        )
        meta = asyncio.run(train_configured(settings, config, read_from=rec.training_read_from))
    except TrainingSetupError as exc:
        print(f"rtrec train: {exc}", file=sys.stderr)
        return 2
    metrics = meta["metrics"]
    report = settings.recommendations.models_dir / meta["version"] / "report.html"
    _print_json(
        {
            "version": meta["version"],
            "report": str(report),
            "training": meta["training"],
            **{k: v for k, v in metrics.items() if k != "per_product"},
            "per_product": metrics["per_product"],
        }
    )
    return 0


def _epoch(text: str, *, low: float | None = None) -> float:
    """Epoch seconds from ISO 8601 or epoch text, within the event range unless ``low`` widens it; a bad value
    ends the command with its reason, not a traceback."""
    from extractors.events import MIN_TS, _to_epoch

    try:
        return _to_epoch(text, low=MIN_TS if low is None else low)
    except ValueError as exc:
        print(f"rtrec: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def cmd_serve_scorer(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from recommenders.scorer_service import create_scorer_app

    uvicorn.run(
        create_scorer_app(settings, args.product),
        host=settings.api.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


def cmd_uptake_signal(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.uptake_signal import run_uptake_signal

    _print_json(run_uptake_signal(args))
    return 0


def cmd_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.evaluate import LARGE_BANK, run_evaluation

    if args.large:
        if args.dataset != "simulated":
            raise SystemExit("rtrec evaluate: --large is a simulated bank (--dataset simulated)")
        vars(args).update(LARGE_BANK)
    result = run_evaluation(settings, args)
    if args.json:
        print(json.dumps(result))
        return 0
    from rich.console import Console

    from deploy.rankings_table import rankings_table

    console = Console()
    console.print(rankings_table(result))
    console.print(f"report with the intervals drawn: {result['report']}")
    return 0


def cmd_failover(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.cluster import StoreCluster

    _print_json(asyncio.run(StoreCluster(settings).failover(args.replicaset)))
    return 0


def cmd_rebuild_replica(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.cluster import StoreCluster
    from deploy.rebuild import rebuild_replica

    _print_json(asyncio.run(rebuild_replica(StoreCluster(settings), args.name, force=args.force)))
    return 0


def cmd_reshard(settings: Settings, args: argparse.Namespace) -> int:
    from deploy.cluster import StoreCluster

    if args.recover:
        _print_json(asyncio.run(StoreCluster(settings).recover_moves()))
        return 0
    if args.rebalance:
        _print_json(asyncio.run(StoreCluster(settings).finish_reshard()))
        return 0
    if not args.add_replicaset:
        print("rtrec reshard: say what to do (--add-replicaset, --rebalance or --recover)", file=sys.stderr)
        return 2
    _print_json(asyncio.run(StoreCluster(settings).add_replicaset()))
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Blocks until the replay ends; exit 0 when done, 1 when it failed or was cancelled, 2 on a bad window."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from extractors.events import MIN_ARRIVAL_TS
    from feature_store.client import FeatureStore
    from feature_store.ttl import TtlPolicy
    from replay.runner import ReplayJob
    from replay.window import ReplayWindowError, validate_window

    start, end = _epoch(args.from_, low=MIN_ARRIVAL_TS), _epoch(args.to, low=MIN_ARRIVAL_TS)
    try:
        validate_window(start, end, time.time())
    except ReplayWindowError as exc:
        print(f"rtrec replay: {exc}", file=sys.stderr)
        return 2

    async def run() -> dict[str, Any]:
        async with FeatureStore(settings.store, ttl=TtlPolicy.from_settings(settings.ttl)) as store:
            job = ReplayJob(
                settings,
                store,
                start,
                end,
                topics=args.topic,
                subjects=args.subject,
                dry_run=args.dry_run,
                max_events_per_s=args.rate,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, job.cancel)
            task = asyncio.create_task(job.run())
            with Progress(
                TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
            ) as bar:
                shown = bar.add_task("replay", total=None)
                while not task.done():
                    done = job.progress
                    bar.update(
                        shown,
                        total=(done.offsets_total + done.offsets_after_window) or None,
                        completed=done.offsets_done + done.offsets_after_window_done,
                    )
                    await asyncio.sleep(0.2)
            return (await task).as_dict()

    result = asyncio.run(run())
    _print_json(result)
    return 0 if result["state"] == "done" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtrec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="settings file (TOML)")
    common.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("up", parents=[common], help="start the local stack").set_defaults(fn=cmd_up)
    sub.add_parser("down", parents=[common], help="stop the local stack").set_defaults(fn=cmd_down)
    status = sub.add_parser("status", parents=[common], help="print the stack status as JSON")
    status.add_argument("--json", action="store_true", help="(the output is always JSON)")
    status.set_defaults(fn=cmd_status)

    consume = sub.add_parser("consume", parents=[common], help="run an extractor consumer")
    consume.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    consume.add_argument("--instance", type=int, default=1, help="consumer number (its metrics port offset)")
    consume.add_argument("--no-metrics", dest="metrics", action="store_false", help="no Prometheus endpoint")
    consume.set_defaults(fn=cmd_consume)
    sub.add_parser("serve", parents=[common], help="run the HTTP API").set_defaults(fn=cmd_serve)
    supervise = sub.add_parser("supervise", parents=[common], help="keep the consumers running (started by up)")
    supervise.set_defaults(fn=cmd_supervise)

    simulate = sub.add_parser("simulate", parents=[common], help="publish a simulated bank's events to Kafka")
    simulate.add_argument("--clients", type=int, default=1000)
    simulate.add_argument("--days", type=int, default=365)
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--quiet", action="store_true")
    simulate.set_defaults(fn=cmd_simulate)

    importer = sub.add_parser("import", parents=[common], help="publish a real dataset's events to Kafka")
    importer.add_argument("dataset", choices=["berka"])
    importer.add_argument("--path", default="../shared/datasets/berka")
    importer.add_argument("--quiet", action="store_true")
    importer.set_defaults(fn=cmd_import)

    bench = sub.add_parser("bench", parents=[common], help="benchmarks (print JSON)")
    bench.add_argument("target", choices=["store", "ingest", "extract", "score", "serve", "reshard", "inspect"])
    bench.add_argument("--json", action="store_true", help="one line of JSON")
    bench.add_argument("--subjects", type=int, default=200, help="store, reshard: subjects of 1,000 features each")
    bench.add_argument("--features-per-subject", type=int, default=1000)
    bench.add_argument("--requests", type=int, default=5000, help="store: aggregate calls to time")
    bench.add_argument("--concurrency", type=int, default=16)
    bench.add_argument("--events", type=int, default=100_000, help="ingest, extract: transactions")
    bench.add_argument("--consumers", type=int, help="ingest: consumer processes (default: [consumer] instances)")
    bench.add_argument("--clients", type=int, default=20_000, help="serve: distinct light clients asked")
    bench.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 2000], help="serve: offered rps")
    bench.add_argument("--seconds", type=float, default=5, help="serve: seconds per offered rate; inspect: seconds")
    bench.add_argument(
        "--while-training",
        action="store_true",
        help="serve: measure each rate again while training's reads run as `rtrec train` makes them",
    )
    bench.set_defaults(fn=cmd_bench)

    demo = sub.add_parser("demo", parents=[common], help="the main job: up, simulate, ingest, query")
    demo.add_argument("--clients", type=int, default=600)
    demo.add_argument("--days", type=int, default=200)
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--dataset", choices=["simulated", "berka"], default="simulated")
    demo.add_argument("--path", default="../shared/datasets/berka", help="the Berka files (with --dataset berka)")
    demo.add_argument(
        "--fresh",
        action="store_true",
        help="stop the local stack and delete its data first (the demo refuses a store holding another bank)",
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="leave out the end: the recipe judged on the 24,000-client bank that tells the models apart (15-17 min)",
    )
    demo.set_defaults(fn=cmd_demo)

    trainer = sub.add_parser("train", parents=[common], help="train the models on the store's features")
    trainer.add_argument("--horizon-days", type=float, default=30.0, help="label: uptake within this many days")
    trainer.add_argument("--step-days", type=float, default=7.0, help="days between training cuts")
    trainer.add_argument(
        "--cuts", type=int, default=15, help="number of cuts: the holdout cuts, then training cuts a horizon before"
    )
    trainer.add_argument(
        "--holdout-cuts", type=int, default=4, help="holdout cuts, step-days apart (the served models learn them too)"
    )
    trainer.add_argument("--k", type=int, default=3, help="k of MAP@k")
    trainer.add_argument("--end", default=None, help="ISO time the labels end (default now)")
    trainer.set_defaults(fn=cmd_train)

    signal = sub.add_parser(
        "uptake-signal", parents=[common], help="how well balance for income ranks a product's takers (raw events)"
    )
    signal.add_argument("--product", default="savings_account")
    signal.add_argument("--segment", default="retail")
    signal.add_argument("--clients", type=int, default=1500)
    signal.add_argument("--days", type=int, default=200)
    signal.add_argument("--seed", type=int, default=101)
    signal.add_argument("--at", type=int, nargs="+", default=[70, 100, 130, 170], help="cut days into the bank")
    signal.add_argument("--json", action="store_true", help="accepted for symmetry: the output is JSON")
    signal.set_defaults(fn=cmd_uptake_signal)

    evaluate = sub.add_parser("evaluate", parents=[common], help="train and evaluate on a dataset (private cluster)")
    evaluate.add_argument("--dataset", choices=["simulated", "berka"], default="simulated")
    evaluate.add_argument("--path", default="../shared/datasets/berka")
    evaluate.add_argument("--clients", type=int, default=600)
    evaluate.add_argument("--days", type=int, default=300)
    evaluate.add_argument("--seed", type=int, default=42)
    evaluate.add_argument(
        "--end-date",
        type=date.fromisoformat,
        default=None,
        help="simulated: the bank's last day ends at this date's midnight UTC (default today); a seed and a date "
        "give the same bank",
    )
    evaluate.add_argument(
        "--large",
        action="store_true",
        help="simulated: the bank that tells the models apart (24,000 clients x 200 days, seed 301, to 2026-11-30; "
        "about 15-17 min on 2 cores); sets --clients, --days, --seed and --end-date",
    )
    evaluate.add_argument("--horizon-days", type=float, default=180.0, help="berka: uptake window after the cutoff")
    evaluate.add_argument("--json", action="store_true", help="the whole result as JSON instead of the table")
    evaluate.add_argument("--report-dir", default="artifacts/evaluations", help="where the report is kept")
    evaluate.set_defaults(fn=cmd_evaluate)

    scorer = sub.add_parser("serve-scorer", parents=[common], help="one product's XGBoost scorer as a service")
    scorer.add_argument("--product", required=True)
    scorer.add_argument("--port", type=int, default=8090)
    scorer.set_defaults(fn=cmd_serve_scorer)

    failover = sub.add_parser("failover", parents=[common], help="promote a replica of a replica set to master")
    failover.add_argument("--replicaset", type=int, required=True)
    failover.set_defaults(fn=cmd_failover)

    rebuild = sub.add_parser(
        "rebuild-replica", parents=[common], help="start a replica afresh from its master (its files damaged)"
    )
    rebuild.add_argument("name", help="the instance, e.g. storage-1-b")
    rebuild.add_argument(
        "--force", action="store_true", help="rebuild an instance that runs and answers (its master loses a follower)"
    )
    rebuild.set_defaults(fn=cmd_rebuild_replica)

    reshard = sub.add_parser("reshard", parents=[common], help="add a replica set and move buckets to it live")
    reshard.add_argument("--add-replicaset", action="store_true")
    reshard.add_argument(
        "--recover", action="store_true", help="finish or roll back bucket moves that were interrupted"
    )
    reshard.add_argument(
        "--rebalance",
        action="store_true",
        help="move the newest replica set the rest of its even share (after a reshard whose moves partly failed)",
    )
    reshard.set_defaults(fn=cmd_reshard)

    replayer = sub.add_parser("replay", parents=[common], help="replay the raw events that arrived in a window")
    replayer.add_argument("--from", dest="from_", required=True, help="window start, ISO 8601 or epoch")
    replayer.add_argument("--to", required=True, help="window end (exclusive), ISO 8601 or epoch")
    replayer.add_argument("--topic", action="append", help="a topic to replay (repeat); default all bank topics")
    replayer.add_argument("--subject", action="append", help="only these subjects (repeat)")
    replayer.add_argument("--dry-run", action="store_true", help="report what would be written, write nothing")
    replayer.add_argument("--rate", type=float, default=None, help="throttle: events per second")
    replayer.set_defaults(fn=cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    # asynctnt logs every failed connection attempt as an error; the store client maps and reports them itself
    logging.getLogger("asynctnt").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.config)
        return int(args.fn(settings, args))
    except OPERATOR_ERRORS as exc:  # what an operator can act on: the message, not a traceback (-v shows it)
        if args.verbose:
            raise
        print(f"rtrec {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _operator_errors() -> tuple[type[Exception], ...]:
    """Failures of the stack an operator fixes outside the code: a process that did not start, no safe
    failover, a store or broker that refuses or is away, a config that does not validate."""
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable
    from pydantic import ValidationError

    from deploy.processes import ProcessError
    from feature_store.errors import StoreError

    # a broker away, not every KafkaError: a client used wrongly (IllegalStateError) is a bug to see whole
    return (ProcessError, StoreError, KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable, ValidationError)


OPERATOR_ERRORS = _operator_errors()


if __name__ == "__main__":
    sys.exit(main())
