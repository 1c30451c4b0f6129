"""`rtrec demo` (the README's first command): start the local stack, stream a simulated bank through Kafka,
wait until the extractors caught up, ask the API for clients' windowed aggregates, train the models, and show
recommendations with their reasons and latencies. The stack keeps running afterwards so the API can be
explored; `rtrec down` stops it.

The demo's own bank streams through Kafka in about a minute, and that is too few clients to tell the served
blend from the logistic regression. So the demo ends by judging the same recipe on the bank that can
(`deploy.evaluate.LARGE_BANK`, 15-17 minutes on 2 cores) while the stack serves; `--quick` leaves that out."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from deploy import demo_bank
from deploy.rankings_table import intervals_overlap, intervals_verdict, rankings_table, verdict
from deploy.settings import Settings
from deploy.stack import LocalStack
from extractors.offsets import consumer_lag
from extractors.publish import publish_events
from extractors.simulate import BankSimulator, SimulationConfig

SHOWN_AGGREGATES = [
    "sum(tx.in.salary,90d)",
    "sum(tx.out.amount,30d)",
    "count(tx.out.amount,30d)",
    "sum(tx.out.mcc.travel,365d)",
    "min(balance,180d)",
    "last(profile.segment)",
]


def _reader_key(settings: Settings) -> str:
    for key, role in settings.api.keys.items():
        if role == "reader":
            return key
    raise SystemExit("the config has no reader API key ([api.keys])")


async def _wait_caught_up(settings: Settings, console: Console, timeout: float = 900.0) -> float:
    started = time.monotonic()
    with console.status("extractors consuming the stream ...") as status:
        while time.monotonic() - started < timeout:
            lag = await consumer_lag(settings)
            remaining = sum(lag.values())
            status.update(f"extractors consuming the stream ... {remaining:,} messages to go")
            if remaining == 0:
                return time.monotonic() - started
            await asyncio.sleep(1.0)
    raise SystemExit("the consumers did not catch up in time; see .rtrec/run/procs/consumer-*.log")


async def _query(settings: Settings, console: Console, clients: list[str]) -> None:
    headers = {"Authorization": f"Bearer {_reader_key(settings)}"}
    async with httpx.AsyncClient(base_url=settings.api.url, headers=headers, timeout=5) as api:
        specs = len(settings.views["client_profile"])
        table = Table(title=f"client_profile view over HTTP (a few of its {specs} aggregates)")
        table.add_column("client")
        for label in SHOWN_AGGREGATES:
            table.add_column(label, justify="right")
        for client in clients:
            answer = (await api.get(f"/v1/subjects/{client}/aggregates", params={"view": "client_profile"})).json()
            values = answer["values"]
            table.add_row(client, *[_fmt(values.get(label)) for label in SHOWN_AGGREGATES])
        console.print(table)

        latencies = []
        for i in range(300):
            started = time.perf_counter()
            response = await api.get(
                f"/v1/subjects/{clients[i % len(clients)]}/aggregates", params={"view": "client_profile"}
            )
            response.raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        console.print(
            f"HTTP view aggregate ({specs} specs), 300 sequential calls: p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.1f} ms"
        )


async def _train(settings: Settings, simulator: BankSimulator | None) -> dict[str, Any]:
    from recommenders.training import TrainingConfig, train_configured

    if simulator is not None:
        # four weekly holdout cuts: the demo's small bank gives a few hundred client-cuts to judge the models on;
        # the table ranks the simulator's own chances beside them
        config = TrainingConfig(cuts=15, holdout_cuts=4, history_start=simulator.start_ts)
        return await train_configured(settings, config, reference=simulator.chances)
    from extractors.berka import CUTOFF, BerkaShift, default_shift_years

    # Berka ends at its (shifted) cutoff: the labels must end there too
    end = BerkaShift(default_shift_years()).ts(CUTOFF, 23.9)
    return await train_configured(settings, TrainingConfig(end=end, horizon_days=60, step_days=60, cuts=4))


async def _recommend(settings: Settings, console: Console, clients: list[str]) -> None:
    headers = {"Authorization": f"Bearer {_reader_key(settings)}"}
    async with httpx.AsyncClient(base_url=settings.api.url, headers=headers, timeout=5) as api:
        table = Table(title="GET /v1/recommendations/{client}?limit=3")
        for column in ("client", "product", "score", "sources", "reasons", "ms"):
            table.add_column(column)
        for client in [*clients, "new-client-never-seen"]:
            answer = (await api.get(f"/v1/recommendations/{client}", params={"limit": 3})).json()
            for i, item in enumerate(answer["items"]):
                table.add_row(
                    client if i == 0 else "",
                    item["product"],
                    f"{item['score']:.3f}",
                    ",".join(item["sources"]),
                    "; ".join(item["reasons"]) or "-",
                    f"{answer['elapsed_ms']:.1f}" if i == 0 else "",
                )
        console.print(table)
        latencies = []
        for i in range(200):
            started = time.perf_counter()
            (await api.get(f"/v1/recommendations/c{i:06d}", params={"limit": 3})).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        latencies.sort()
        console.print(
            f"recommendations over HTTP, 200 sequential calls: p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {latencies[int(len(latencies) * 0.99) - 1]:.1f} ms, max {latencies[-1]:.1f} ms"
        )


async def _replay_drill(settings: Settings, console: Console, published_at: float) -> None:
    """Replay what arrived since the demo started publishing: idempotent, so it writes nothing new."""
    from feature_store.client import FeatureStore
    from feature_store.ttl import TtlPolicy
    from replay.runner import ReplayJob

    console.print("[bold]>[/] replay drill: re-running every event that arrived during this demo ...")
    async with FeatureStore(settings.store, ttl=TtlPolicy.from_settings(settings.ttl)) as store:
        progress = await ReplayJob(settings, store, published_at - 60, time.time()).run()
    console.print(
        f"  replay {progress.state}: {progress.offsets_done:,} messages, {progress.features_written} features "
        f"written, {progress.features_unchanged:,} already in place, {progress.replaces_ignored_older} older "
        f"client updates ignored (idempotent: nothing double counted)"
    )


def _too_few_clients(metrics: dict[str, Any], judged_below: bool) -> str:
    """Why the served blend's interval overlaps the logistic regression's on the demo's bank, in figures, and
    where the bank that parts them is judged."""
    rankings = metrics["rankings"]
    text = (
        f"{metrics['evaluated_distinct_clients']} clients are too few for the blend's and the logistic "
        "regression's intervals to part"
    )
    chances = rankings.get("simulator_chances")
    if chances is not None and intervals_overlap(chances["map_at_3"], rankings["logistic_regression"]["map_at_3"]):
        # ranking by the very chances the uptake was drawn from does not part from it either: no model could
        text += " (even ranking by the simulator's own chances does not part from it here)"
    where = "judged at the end of this demo" if judged_below else "`make evaluate-large`, 15-17 minutes on 2 cores"
    return f"{text}. On banks of 24,000 and 32,000 clients the gap is about 0.015 and the intervals part ({where})"


def _judge_on_the_large_bank(settings: Settings, console: Console) -> None:
    """The same recipe judged on the bank large enough to part the intervals, in a private throwaway store
    (other ports: the stack keeps serving). Ctrl-C skips it and leaves the stack as it is."""
    from deploy.evaluate import LARGE_BANK, large_bank_args, run_evaluation

    bank = LARGE_BANK
    console.rule("the same recipe judged on a bank large enough to tell the models apart")
    console.print(
        f"[bold]>[/] {bank['clients']:,} clients x {bank['days']} days (seed {bank['seed']}, to {bank['end_date']}) "
        "loaded into a private throwaway store, trained and judged: 15-17 minutes on 2 cores. The stack above "
        "keeps serving meanwhile; Ctrl-C skips this (`rtrec demo --quick` leaves it out, `make evaluate-large` "
        "runs it alone)."
    )
    started = time.monotonic()
    try:
        result = run_evaluation(settings, large_bank_args())
    except KeyboardInterrupt:
        console.print("  skipped: the stack keeps running")
        return
    console.print(rankings_table(result))
    console.print(
        f"  {intervals_verdict(result)} ({(time.monotonic() - started) / 60:.0f} min; report {result['report']})"
    )


def _store_refusal(settings: Settings, status: dict[str, Any], bank: demo_bank.BankId) -> str | None:
    """Why the store cannot take the demo's bank (it holds another one), or None."""
    masters = [i for rs in status["store"]["replicasets"] for i in rs["instances"] if i["role"] == "master"]
    stored = sum(master["features"] or 0 for master in masters)
    unconsumed = sum(asyncio.run(consumer_lag(settings)).values())
    return demo_bank.conflict(stored, unconsumed, demo_bank.claimed_bank(settings.run_dir), bank)


def _bank_id(dataset: str, simulator: BankSimulator | None) -> demo_bank.BankId:
    if simulator is None:
        return demo_bank.BankId(dataset)
    config = simulator.config
    return demo_bank.BankId(dataset, config.clients, config.days, config.seed, simulator.end_ts)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}"
    return "-" if value is None else str(value)


def run_demo(
    settings: Settings,
    config_path: Path,
    *,
    clients: int,
    days: int,
    seed: int,
    dataset: str = "simulated",
    berka_path: Path = Path("../shared/datasets/berka"),
    fresh: bool = False,
    quick: bool = False,
) -> int:
    console = Console(width=160)  # tables of reasons stay readable when the output is piped
    console.rule("rtrec demo: Kafka -> extractors -> sharded Tarantool -> aggregates over HTTP")
    stack = LocalStack(settings, config_path)
    if fresh:
        console.print(f"[bold]>[/] --fresh: stopping the local stack and deleting its data ({settings.run_dir}) ...")
        stack.down()
        shutil.rmtree(settings.run_dir, ignore_errors=True)
    stack.up(log=lambda message: console.print(f"[bold]>[/] {message}"))
    status = stack.status()
    for rs in status["store"]["replicasets"]:
        roles = ", ".join(f"{i['name']} {i['role']}" for i in rs["instances"])
        console.print(f"  replica set {rs['id']}: {roles}")
    console.print(f"  Kafka {status['kafka']['bootstrap']}, API {status['api']['url']}")
    simulator = None
    if dataset == "simulated":
        simulator = BankSimulator(SimulationConfig(clients=clients, days=days, seed=seed, record_chances=True))
    bank = _bank_id(dataset, simulator)
    refusal = _store_refusal(settings, status, bank)
    if refusal is not None:
        console.print(
            f"[bold red]rtrec demo:[/] {refusal}. Run `.venv/bin/rtrec demo --fresh` (stops the local stack and "
            f"deletes its data under {settings.run_dir} first) or `make clean && make demo`; the stack keeps "
            "running as it is."
        )
        return 2
    demo_bank.claim(settings.run_dir, bank)  # before publishing: a demo cut short may be run again

    if simulator is None:
        from extractors.berka import berka_events

        console.print(f"[bold]>[/] importing the real Berka bank data from {berka_path} into Kafka ...")
        events = berka_events(berka_path)
        shown = ["a576", "a3818", "a704", "a2378", "a2632"]
    else:
        console.print(f"[bold]>[/] simulating {clients} clients over {days} days (seed {seed}) into Kafka ...")
        events = simulator.events()
        shown = [f"c{i:06d}" for i in range(0, min(clients, 5))]
    started = time.monotonic()
    published_at = time.time()  # wall clock: Kafka record timestamps, for the replay drill
    counts = asyncio.run(publish_events(settings, events))
    published = sum(counts.values())
    console.print(f"  published {published:,} events in {time.monotonic() - started:.1f}s: {counts}")
    waited = asyncio.run(_wait_caught_up(settings, console))
    console.print(f"  consumers caught up {waited:.1f}s after publishing ended")

    asyncio.run(_query(settings, console, shown))
    console.print("[bold]>[/] training per-product XGBoost, ALS and expert statistics (point in time) ...")
    from recommenders.training import TrainingSetupError  # here: the CLI starts without the model libraries

    try:
        meta = asyncio.run(_train(settings, simulator))
        metrics = meta["metrics"]
        console.print(rankings_table(metrics))
        weights = ", ".join(f"{s} {w:.1f}" for s, w in metrics["blend_weights"].items())
        console.print(
            f"  model {meta['version']}: the served blend ({weights}) {verdict(metrics, 'popularity')} popularity, "
            f"{verdict(metrics, 'logistic_regression')} the logistic regression and "
            f"{verdict(metrics, 'xgboost')} XGBoost alone (paired 95 % intervals); report "
            f"{settings.recommendations.models_dir / meta['version'] / 'report.html'}"
        )
        rankings = metrics.get("rankings", {})
        if "logistic_regression" in rankings and intervals_overlap(
            rankings["blend"]["map_at_3"], rankings["logistic_regression"]["map_at_3"]
        ):
            console.print(f"  {_too_few_clients(metrics, judged_below=simulator is not None and not quick)}")
    except TrainingSetupError as exc:
        console.print(f"  not enough labelled history to train ({exc}); serving the expert cold-start models")
    time.sleep(settings.recommendations.reload_interval_s + 0.5)  # the API hot-reloads the new version
    asyncio.run(_recommend(settings, console, shown))
    asyncio.run(_replay_drill(settings, console, published_at=published_at))
    console.rule("the stack is running")
    first_port = settings.consumer.metrics_port
    consumer_ports = ", ".join(str(first_port + i) for i in range(settings.consumer.instances))
    console.print(
        f"API docs:  {settings.api.url}/docs      metrics: {settings.api.url}/metrics, "
        f"consumer metrics: http://{settings.api.host}:<{consumer_ports}>/metrics"
    )
    console.print("status:    .venv/bin/rtrec status        stop: .venv/bin/rtrec down")
    if simulator is not None and not quick:
        _judge_on_the_large_bank(settings, console)
    return 0
