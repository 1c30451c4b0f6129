"""What a consumer process says about itself: a small state file rewritten every second and the same facts as
Prometheus gauges, so `rtrec status`, the supervisor and alerting see a consumer that is holding a batch,
stalled, or no longer responding (a stale file) instead of a live-looking process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from extractors import metrics
from feature_store.files import write_atomically

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0


@dataclass
class Hold:
    """A step that keeps failing and is retried: the store writes of one replica set, or the dead letters."""

    stage: str  # store | dead_letters
    since: float
    cause: str
    attempts: int = 1


@dataclass
class ConsumerHealth:
    """Mutable health of one consumer, updated by its stages (one event loop, no locks needed)."""

    instance: int = 1
    state: str = "starting"  # starting | running | stopping | stopped | failed
    started_at: float = field(default_factory=time.time)
    last_poll_at: float | None = None  # the fetch loop asked Kafka for records
    last_commit_at: float | None = None  # a batch was applied and its offsets committed
    batches: int = 0
    messages: int = 0
    dead_letters: int = 0
    features_written: int = 0
    rebalances: int = 0
    commit_failures: int = 0
    # every step held now, by what it holds ("replica set 2", "dead letters"); several lanes can hold at once
    holds: dict[str, Hold] = field(default_factory=dict)
    # the longest hold of ``holds``, or None
    holding_stage: str | None = None
    holding_since: float | None = None
    holding_cause: str | None = None
    hold_attempts: int = 0
    # fetched and not yet committed: the write lanes' backlog, and the bound at which all ingest waits
    messages_in_hand: int = 0
    max_messages_in_hand: int = 0
    all_ingest_waits: bool = False  # none of this consumer's ingest moves
    all_ingest_waits_because: str | None = None  # no room under the bound, or no replica set takes writes
    lag: dict[str, int] = field(default_factory=dict)  # per topic, of this consumer's assignment
    lag_at: float | None = None
    error: str | None = None

    def start_hold(self, what: str, stage: str, cause: str) -> None:
        self.holds[what] = Hold(stage, time.time(), cause)
        self._show_longest()

    def note_hold_attempt(self, what: str, cause: str) -> None:
        hold = self.holds[what]
        hold.cause, hold.attempts = cause, hold.attempts + 1
        self._show_longest()

    def end_hold(self, what: str) -> float:
        """Clear the hold of ``what``; returns how long it lasted (seconds)."""
        hold = self.holds.pop(what)
        self._show_longest()
        return time.time() - hold.since

    def holding(self, stage: str) -> bool:
        return any(hold.stage == stage for hold in self.holds.values())

    def _show_longest(self) -> None:
        longest = min(self.holds.values(), key=lambda hold: hold.since, default=None)
        if longest is None:
            self.holding_stage = self.holding_since = self.holding_cause = None
            self.hold_attempts = 0
        else:
            self.holding_stage, self.holding_since = longest.stage, longest.since
            self.holding_cause, self.hold_attempts = longest.cause, longest.attempts

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pid": os.getpid(), "updated_at": time.time()}


def state_path(run_dir: Path, instance: int) -> Path:
    """Where consumer ``instance`` of a local stack writes its health (read by `rtrec status`)."""
    return run_dir / "procs" / f"consumer-{instance}.state.json"


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def write_state(path: Path, health: ConsumerHealth) -> None:
    """Atomic replace, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, json.dumps(health.as_dict()).encode())


def publish_gauges(health: ConsumerHealth) -> None:
    metrics.LAST_POLL.set(health.last_poll_at or 0)
    metrics.LAST_COMMIT.set(health.last_commit_at or 0)
    metrics.HOLDING_SECONDS.set(time.time() - health.holding_since if health.holding_since else 0)


async def heartbeat(health: ConsumerHealth, path: Path | None, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
    """Rewrite the state file and gauges every ``interval_s`` until cancelled. Runs on the consumer's event
    loop on purpose: a loop that hangs stops the heartbeat, and the stale file shows it."""
    while True:
        publish_gauges(health)
        if path is not None:
            try:
                write_state(path, health)
            except OSError as exc:  # a full disk must not stop consumption; the stale file shows it
                log.warning("cannot write consumer state %s: %s", path, exc)
        await asyncio.sleep(interval_s)


def final_state(health: ConsumerHealth, path: Path | None) -> None:
    """Write the last state on exit (stopped or failed), so status tells a clean stop from a crash."""
    if path is not None:
        with contextlib.suppress(OSError):
            write_state(path, health)
