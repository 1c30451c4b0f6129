"""What is wrong with a running stack, in words: pure rules over the facts `rtrec status` gathered.

The list is empty only when everything runs. Each rule names the part, what is wrong, and where it matters
(docs/operations.md says what to do for each); the same conditions are Prometheus alert rules in
deploy/prometheus-alerts.yml for stacks that are not run by `rtrec up`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

MB = 1024 * 1024


@dataclass(frozen=True)
class Thresholds:
    memory_warning_ratio: float = 0.80
    memory_full_ratio: float = 0.95
    recent_s: float = 600.0  # memory failures, restarts and dead letters this recent are reported
    heartbeat_stale_s: float = 15.0
    hold_reported_after_s: float = 2.0
    stalled_after_s: float = 60.0
    replication_lag_s: float = 5.0
    lag_growing_samples: int = 4


def problems_of(status: dict[str, Any], now: float, limits: Thresholds | None = None) -> list[str]:
    limits = limits or Thresholds()
    return [
        *store_problems(status.get("store", {}), limits),
        *kafka_problems(status.get("kafka", {})),
        *consumer_problems(status.get("consumers", {}), now, limits),
        *api_problems(status.get("api", {})),
    ]


def store_problems(store: dict[str, Any], limits: Thresholds) -> list[str]:
    found: list[str] = []
    for rs in store.get("replicasets", []):
        instances = rs.get("instances", [])
        answering = [i for i in instances if i.get("alive")]
        for inst in instances:
            name = inst["name"]
            if not inst.get("alive"):
                if inst.get("pid") is None:
                    found.append(f"store instance {name} is not running (or not reachable at {inst.get('uri')})")
                else:
                    found.append(
                        f"store instance {name} does not answer (process {inst['pid']} exists: stopped or hung)"
                    )
                continue
            found.extend(_memory_problems(inst, limits))
            found.extend(_expiry_problems(inst))
            found.extend(_replication_problems(inst, {i["name"] for i in answering}, limits))
            if inst.get("lease_lost"):
                found.append(
                    f"store instance {name} is the master but {inst.get('followers') or 0} of the "
                    f"{inst['followers_needed']} replicas it needs follow it: it refuses client data until they do, "
                    "and ingest holds (bring a replica back or mend the network)"
                )
        in_flight = max([(i.get("buckets_sending") or 0) + (i.get("buckets_receiving") or 0) for i in answering] or [0])
        if in_flight:
            found.append(
                f"replica set {rs['id']} has {in_flight} buckets in transfer (writes to them are refused): "
                "if no `rtrec reshard` is running, run `rtrec reshard --recover`"
            )
        masters = [i["name"] for i in answering if i.get("ro") is False]
        if answering and not masters:
            found.append(f"replica set {rs['id']} has no writable master: writes to its buckets are held")
        elif len(masters) > 1:
            found.append(f"replica set {rs['id']} has {len(masters)} writable masters ({', '.join(masters)})")
    found.extend(_ownership_problems(store))
    return found


def _ownership_problems(store: dict[str, Any]) -> list[str]:
    """Every bucket active on exactly one replica set, judged when each replica set has one master answering
    and no bucket is in transfer (both are reported on their own): a bucket active nowhere has clients nobody
    can write or read, one active twice has two diverging copies."""
    bucket_count, replicasets = store.get("bucket_count"), store.get("replicasets", [])
    masters = [[i for i in rs.get("instances", []) if i.get("alive") and i.get("ro") is False] for rs in replicasets]
    if not bucket_count or not masters or any(len(m) != 1 or m[0].get("buckets_active") is None for m in masters):
        return []
    answering = [i for rs in replicasets for i in rs.get("instances", []) if i.get("alive")]
    if any((i.get("buckets_sending") or 0) + (i.get("buckets_receiving") or 0) for i in answering):
        return []
    active = sum(int(m[0]["buckets_active"]) for m in masters)
    if active == 0:
        return [
            f"no bucket is assigned to any replica set: run `rtrec up` (a new cluster's {bucket_count} are "
            "assigned as it starts)"
        ]
    if active < bucket_count:
        return [
            f"{bucket_count - active} of {bucket_count} buckets are active on no replica set: their clients can be "
            "neither written nor read; run `rtrec reshard --recover`"
        ]
    if active > bucket_count:
        return [
            f"{active - bucket_count} buckets are active on two replica sets: their copies diverge; run "
            "`rtrec reshard --recover`"
        ]
    return []


def _expiry_problems(inst: dict[str, Any]) -> list[str]:
    """A master whose expiry does not run frees nothing: memory grows silently until writes are refused."""
    expiry = inst.get("expiry") or {}
    if inst.get("ro") is not False or not expiry:
        return []
    if expiry.get("running") is False:
        return [f"store instance {inst['name']}: the expiry fiber is not running (restart the instance)"]
    if expiry.get("failing"):
        return [
            f"store instance {inst['name']}: expiry fails ({expiry.get('failures')} failed passes, last: "
            f"{expiry.get('last_error')}); expired features are not freed"
        ]
    return []


def _memory_problems(inst: dict[str, Any], limits: Thresholds) -> list[str]:
    found = []
    ratio = inst.get("memory_used_ratio")
    limit_mb = (inst.get("memory_limit_bytes") or 0) / MB
    if ratio is not None and ratio >= limits.memory_full_ratio:
        found.append(
            f"store instance {inst['name']} is at its memory limit ({ratio:.0%} of {limit_mb:.0f} MB): "
            "writes fail; raise store.memtx_memory_mb or shorten TTLs"
        )
    elif ratio is not None and ratio >= limits.memory_warning_ratio:
        found.append(f"store instance {inst['name']} is near its memory limit ({ratio:.0%} of {limit_mb:.0f} MB)")
    failures = inst.get("memory_failures") or {}
    ago = failures.get("seconds_ago")
    if failures.get("count") and ago is not None and ago <= limits.recent_s:
        found.append(
            f"store instance {inst['name']} refused writes for lack of memory "
            f"({failures['count']} times, the last {ago:.0f}s ago)"
        )
    return found


def _replication_problems(inst: dict[str, Any], answering: set[str], limits: Thresholds) -> list[str]:
    found = []
    for peer in inst.get("upstreams", []):
        if peer.get("peer") not in answering:
            continue  # a dead peer is reported as such
        if peer.get("status") != "follow":
            detail = f": {peer['message']}" if peer.get("message") else ""
            found.append(f"store instance {inst['name']} does not follow {peer['peer']} ({peer.get('status')}{detail})")
        elif (peer.get("lag") or 0) > limits.replication_lag_s:
            found.append(f"store instance {inst['name']} lags {peer['lag']:.1f}s behind {peer['peer']}")
    return found


def kafka_problems(kafka: dict[str, Any]) -> list[str]:
    return [] if kafka.get("running") else ["the Kafka broker is not running: producers and consumers wait"]


def consumer_problems(consumers: dict[str, Any], now: float, limits: Thresholds) -> list[str]:
    found: list[str] = []
    supervisor = consumers.get("supervisor") or {}
    if not supervisor.get("alive"):
        found.append("the consumer supervisor is not running: consumers that exit are not restarted (rtrec up)")
    for proc in consumers.get("processes", []):
        found.extend(_one_consumer(proc, now, limits))
    lag = consumers.get("lag")
    if isinstance(lag, str):
        found.append(f"consumer lag is unknown: {lag}")
    samples = supervisor.get("lag_samples") or []
    recent = [total for _, total in samples[-limits.lag_growing_samples :]]
    if len(recent) == limits.lag_growing_samples and all(b > a for a, b in itertools.pairwise(recent)):
        span = samples[-1][0] - samples[-limits.lag_growing_samples][0]
        found.append(
            f"consumer lag is growing: {recent[-1]:,} messages behind, +{recent[-1] - recent[0]:,} in {span:.0f}s"
        )
    dead = consumers.get("dead_letters_recent")
    if isinstance(dead, int) and dead > 0:
        found.append(
            f"{dead:,} dead letter{'s' if dead != 1 else ''} arrived in the last {limits.recent_s / 60:.0f} minutes "
            "(messages that could not be used; see the dead-letter topic)"
        )
    return found


def _one_consumer(proc: dict[str, Any], now: float, limits: Thresholds) -> list[str]:
    name = proc["name"]
    found = []
    recent_restarts = [t for t in proc.get("restart_times", []) if now - t <= limits.recent_s]
    if not proc.get("alive"):
        exit_note = f" (last {proc['last_exit_reason']})" if proc.get("last_exit_reason") else ""
        found.append(f"{name} is not running{exit_note}")
    elif (proc.get("heartbeat_age_s") or 0) > limits.heartbeat_stale_s:
        found.append(f"{name} is not responding (no heartbeat for {proc['heartbeat_age_s']:.0f}s)")
    holding = proc.get("holding")
    behind = proc.get("lag") or 0
    if proc.get("alive") and not holding and behind > 0:
        quiet_for = now - (proc.get("last_commit_at") or proc.get("started_at") or now)
        if quiet_for > limits.stalled_after_s:
            found.append(
                f"{name} is stalled: {behind:,} messages behind on its partitions and no batch committed "
                f"for {quiet_for:.0f}s"
                + (f" ({proc['commit_failures']} commits failed)" if proc.get("commit_failures") else "")
            )
    holds = proc.get("holds") or ([{"what": "a batch", **holding}] if holding else [])
    for hold in holds if proc.get("alive") else []:
        if hold.get("seconds", 0) >= limits.hold_reported_after_s:
            found.append(
                f"{name} has held {hold['what']} for {hold['seconds']:.0f}s because the {hold['stage']} "
                f"step fails ({hold['attempts']} attempts): {hold['cause']}{_in_hand(proc, hold)}"
            )
    if recent_restarts:
        found.append(
            f"{name} restarted {len(recent_restarts)} times in the last {limits.recent_s / 60:.0f} minutes"
            + (f" (last {proc['last_exit_reason']})" if proc.get("last_exit_reason") else "")
        )
    return found


def _in_hand(proc: dict[str, Any], hold: dict[str, Any]) -> str:
    """What a store or dead-letter hold keeps back: the messages fetched and uncommitted, and whether all of the
    consumer's ingest waits (no room under the bound, or no replica set takes writes) or the rest goes on."""
    in_hand, bound = proc.get("messages_in_hand"), proc.get("max_messages_in_hand")
    if hold.get("stage") not in ("store", "dead_letters") or not in_hand or not bound:
        return ""
    if proc.get("all_ingest_waits"):
        because = proc.get("all_ingest_waits_because") or f"no room for more under the bound of {bound:,}"
        return f"; {in_hand:,} messages in hand, {because}: all ingest waits"
    going_on = "the writes to the other replica sets" if hold["stage"] == "store" else "the writes to the store"
    return f"; {in_hand:,} messages in hand (all ingest waits at {bound:,}), {going_on} go on"


def api_problems(api: dict[str, Any]) -> list[str]:
    if not api.get("alive"):
        return ["the API is not running"]
    if api.get("ready") is False:
        return [f"the API is not ready: {api.get('ready_detail', 'unknown reason')}"]
    return []
