"""The ingest benchmark's independent producer: `python -m deploy.bench_producer` publishes N transaction events
(JSON, keyed by client) as fast as the broker takes them, then prints one JSON line: when publishing started
and ended (epoch seconds) and the events of the last few clients to check for visibility.

Events are generated before the clock starts (a producer that generates is not what is measured)."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

DAY = 86400.0


def transactions(n: int, clients: int, now: float, seed: int = 2) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    mccs = [5411, 5812, 5541, 4511, 5732, 4900, None]
    out = []
    for i in range(n):
        payload: dict[str, Any] = {
            "tx_id": f"t{i}",
            "client_id": f"ingest-{rng.randrange(clients)}",
            "ts": round(now - rng.uniform(0, 300 * DAY)),
            "amount": round(rng.uniform(10, 5000), 2),
            "currency": "RUB",
            "direction": rng.choice(["in", "out"]),
            "channel": rng.choice(["pos", "online", "atm"]),
            "balance": round(rng.uniform(0, 1e5), 2),
        }
        mcc = rng.choice(mccs)
        if mcc is not None:
            payload["mcc"] = mcc
        out.append(payload)
    return out


async def publish(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> tuple[float, float]:
    """Publish keyed by client through the producer's batch API (the partition of each key chosen by Kafka's
    default partitioner, as `send` would): a bank's core system batches too, and a per-message `send` would
    make this producer, not the system under test, the largest user of the shared cores."""
    payloads = [(orjson.dumps(e), e["client_id"].encode()) for e in events]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in partitions}
        for value, key in payloads:
            by_partition[DefaultPartitioner()(key, partitions, partitions)].append((value, key))
        started = time.time()
        sends = []
        pending = {p: iter(messages) for p, messages in by_partition.items()}
        while pending:  # round-robin over partitions so every consumer gets work from the start
            for partition in list(pending):
                batch = producer.create_batch()
                for value, key in pending[partition]:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        pending[partition] = itertools.chain([(value, key)], pending[partition])
                        break
                else:
                    del pending[partition]
                if batch.record_count():
                    sends.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sends)
        return started, time.time()
    finally:
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--sample", type=int, default=50, help="events (the last ones) to check for visibility")
    args = parser.parse_args()
    events = transactions(args.events, args.clients, time.time())
    started, ended = asyncio.run(publish(args.bootstrap, args.topic, events))
    sample = [
        {"client_id": e["client_id"], "tx_id": e["tx_id"], "direction": e["direction"]} for e in events[-args.sample :]
    ]
    print(json.dumps({"started": started, "ended": ended, "sample": sample}))


if __name__ == "__main__":
    main()
