"""`rtrec supervise`: keeps the local stack's consumer processes running (what systemd's ``Restart=`` does
in production, see deploy/systemd).

- A consumer that exits is restarted with exponential backoff (1 s doubling to ``restart_backoff_max_s``;
  the backoff resets once a consumer has run for a minute), so a crash loop costs little and shows.
- A consumer whose heartbeat (its state file) is older than ``hung_after_s`` is not responding: it is killed
  and restarted (one that has not beaten yet gets at least STARTUP_GRACE_S to start). Nothing is lost: its
  uncommitted batch is redelivered and writes are idempotent.
- Every ``LAG_SAMPLE_INTERVAL_S`` the group's lag is sampled, so `rtrec status` can tell growing lag from a
  backlog being worked off.
- Everything it knows is in ``procs/supervisor.json``; SIGTERM stops the consumers (each finishes its batch)
  and then the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deploy import processes
from deploy.settings import Settings
from extractors.health import read_state, state_path
from extractors.offsets import consumer_lag
from feature_store.files import write_atomically

log = logging.getLogger("rtrec.supervise")

POLL_INTERVAL_S = 0.5
LAG_SAMPLE_INTERVAL_S = 10.0
LAG_SAMPLES_KEPT = 12
HEALTHY_RUN_S = 60.0
# Before its first heartbeat a consumer is starting (interpreter, imports): on a busy 2-core machine that took
# over 4 s, and a short hung_after_s killed healthy consumers in a loop. Once it beats, hung_after_s applies.
STARTUP_GRACE_S = 30.0


@dataclass
class SupervisedConsumer:
    instance: int
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    consecutive_failures: int = 0
    next_start_at: float = 0.0
    last_exit_code: int | None = None
    last_exit_at: float | None = None
    last_exit_reason: str | None = None
    restart_times: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"consumer-{self.instance}"


class ConsumerSupervisor:
    def __init__(self, settings: Settings, config_path: Path) -> None:
        self.settings = settings
        self.config_path = config_path.resolve()
        self.proc_dir = settings.run_dir / "procs"
        self.consumers = [SupervisedConsumer(i) for i in range(1, settings.consumer.instances + 1)]
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False
        self._lag_samples: list[tuple[float, int]] = []
        self._last_lag_sample = 0.0

    @property
    def state_file(self) -> Path:
        return self.proc_dir / "supervisor.json"

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("supervising %d consumer(s)", len(self.consumers))
        while not self._stopping:
            try:
                self._round(time.time())
            except Exception:  # the supervisor must outlive anything one round meets (a full disk, a fork error)
                log.exception("supervision round failed; trying again")
            time.sleep(POLL_INTERVAL_S)
        self._stop_all()
        with contextlib.suppress(OSError):
            self._write_state()
        return 0

    def _round(self, now: float) -> None:
        for consumer in self.consumers:
            self._check(consumer, now)
        if now - self._last_lag_sample >= LAG_SAMPLE_INTERVAL_S:
            self._sample_lag(now)
        self._write_state()

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %d: stopping the consumers", signum)
        self._stopping = True

    # ---- one consumer ------------------------------------------------------------------------------------
    def _check(self, consumer: SupervisedConsumer, now: float) -> None:
        child = self._children.get(consumer.instance)
        if child is None:
            if now >= consumer.next_start_at:
                self._start(consumer, now)
            return
        code = child.poll()
        if code is not None:
            self._exited(consumer, code, f"exited with code {code}", now)
            return
        heartbeat = read_state(state_path(self.settings.run_dir, consumer.instance))
        hung_after = self.settings.consumer.hung_after_s
        started = consumer.started_at or now
        beat_at = heartbeat["updated_at"] if heartbeat and heartbeat.get("pid") == child.pid else None
        silent_for = now - (beat_at if beat_at is not None else started)
        if silent_for > (hung_after if beat_at is not None else max(hung_after, STARTUP_GRACE_S)):
            log.warning("%s (pid %d) not responding for %.0fs: killing it", consumer.name, child.pid, silent_for)
            child.kill()
            child.wait()
            self._exited(consumer, -signal.SIGKILL, f"not responding for {silent_for:.0f}s: killed", now)

    def _start(self, consumer: SupervisedConsumer, now: float) -> None:
        log_path = self.proc_dir / f"{consumer.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "deploy.cli", "consume", "--instance", str(consumer.instance)]
        command += ["--config", str(self.config_path)]
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(  # noqa: S603 - the project's own command
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ),
                preexec_fn=_stop_when_parent_dies,
            )
        self._children[consumer.instance] = child
        consumer.pid, consumer.started_at = child.pid, now
        processes.write_pid(self.proc_dir / f"{consumer.name}.pid", child.pid)
        log.info("%s started (pid %d)", consumer.name, child.pid)

    def _exited(self, consumer: SupervisedConsumer, code: int, reason: str, now: float) -> None:
        del self._children[consumer.instance]
        ran_for = now - (consumer.started_at or now)
        consumer.consecutive_failures = 1 if ran_for >= HEALTHY_RUN_S else consumer.consecutive_failures + 1
        doublings = min(consumer.consecutive_failures - 1, 16)  # 2**1024 would overflow a float
        backoff = min(2.0**doublings, self.settings.consumer.restart_backoff_max_s)
        consumer.pid, consumer.started_at = None, None
        consumer.last_exit_code, consumer.last_exit_at, consumer.last_exit_reason = code, now, reason
        consumer.restarts += 1
        consumer.restart_times = [t for t in consumer.restart_times if now - t < 3600] + [now]
        consumer.next_start_at = now + backoff
        log.warning("%s %s after %.0fs; restarting in %.0fs", consumer.name, reason, ran_for, backoff)

    def _stop_all(self) -> None:
        for child in self._children.values():
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.consumer.stop_grace_s + 5
        for instance, child in self._children.items():
            try:
                child.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            (self.proc_dir / f"consumer-{instance}.pid").unlink(missing_ok=True)
        self._children.clear()
        for consumer in self.consumers:
            consumer.pid = None

    # ---- the group -------------------------------------------------------------------------------------
    def _sample_lag(self, now: float) -> None:
        self._last_lag_sample = now
        try:
            lag = asyncio.run(asyncio.wait_for(consumer_lag(self.settings), 5.0))
        except Exception as exc:  # the broker away: no sample this time (status shows the broker)
            log.debug("lag sample failed: %s", exc)
            return
        self._lag_samples = [*self._lag_samples, (now, sum(lag.values()))][-LAG_SAMPLES_KEPT:]

    def _write_state(self) -> None:
        document: dict[str, Any] = {
            "pid": os.getpid(),
            "updated_at": time.time(),
            "stopping": self._stopping,
            "consumers": [{"name": c.name, **asdict(c)} for c in self.consumers],
            "lag_samples": self._lag_samples,
        }
        write_atomically(self.state_file, json.dumps(document).encode())


def _stop_when_parent_dies() -> None:
    """In the child before exec: SIGTERM it if the supervisor dies, even by SIGKILL (Linux prctl), so a
    killed supervisor never leaves consumers running that a new one would duplicate."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def read_supervisor_state(run_dir: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads((run_dir / "procs" / "supervisor.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def supervisor_alive(run_dir: Path) -> bool:
    return processes.is_alive(processes.read_pid(run_dir / "procs" / "supervisor.pid"))
