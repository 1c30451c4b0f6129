"""What one API worker learns of a replay another worker runs, from the files under ``run_dir/replays``: a job
whose worker stopped is not reported running for ever, and cancelling a finished job leaves nothing behind."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any, cast

import orjson

from deploy.settings import load_settings
from feature_store.client import FeatureStore
from replay.registry import FINISHED, LOST_AFTER_S, ReplayRegistry


def _registry(run_dir: Path) -> ReplayRegistry:
    settings = load_settings().model_copy(update={"run_dir": run_dir})
    return ReplayRegistry(settings, cast(FeatureStore, None))


def _published(run_dir: Path, job_id: str, state: str, age_s: float) -> None:
    (run_dir / "replays").mkdir(parents=True, exist_ok=True)
    progress: dict[str, Any] = {"id": job_id, "state": state, "error": None, "published_at": time.time() - age_s}
    (run_dir / "replays" / f"{job_id}.json").write_bytes(orjson.dumps(progress))


def test_a_job_whose_worker_stopped_publishing_is_reported_failed(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    _published(tmp_path, "0123456789ab", "running", age_s=1.0)
    assert registry.status("0123456789ab")["state"] == "running"  # type: ignore[index]
    _published(tmp_path, "0123456789ab", "running", age_s=LOST_AFTER_S + 5)
    lost = registry.status("0123456789ab")
    assert lost is not None and lost["state"] == "failed" and "stopped" in lost["error"]
    _published(tmp_path, "0123456789ab", "done", age_s=3600)
    assert registry.status("0123456789ab")["state"] == "done"  # type: ignore[index]


def test_cancelling_a_finished_job_leaves_no_file_and_a_running_one_gets_its_request(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    _published(tmp_path, "aaaaaaaaaaaa", "done", age_s=1.0)
    assert registry.cancel("aaaaaaaaaaaa") is True
    assert not (tmp_path / "replays" / "aaaaaaaaaaaa.cancel").exists()
    _published(tmp_path, "bbbbbbbbbbbb", "running", age_s=1.0)
    assert registry.cancel("bbbbbbbbbbbb") is True
    assert (tmp_path / "replays" / "bbbbbbbbbbbb.cancel").exists()
    assert registry.cancel("cccccccccccc") is False
    assert registry.status("aaaaaaaaaaaa\n") is None and registry.status("../replays/aaaa") is None


async def test_a_replay_that_cannot_reach_the_broker_is_reported_failed_not_running(tmp_path: Path) -> None:
    """The consumer started before the job's error handling: a broker out of reach at the start left the job
    "running" for ever on the worker that started it, and the operator believed the hole was being filled."""
    settings = load_settings()
    closed = settings.kafka.model_copy(update={"host": "127.0.0.1", "port": _closed_port()})
    registry = ReplayRegistry(
        settings.model_copy(update={"run_dir": tmp_path, "kafka": closed}), cast(FeatureStore, None)
    )
    job = registry.start(
        time.time() - 3600, time.time(), topics=None, subjects=None, dry_run=True, max_events_per_s=None
    )
    deadline = time.monotonic() + 30
    while registry.status(job.progress.id)["state"] not in FINISHED and time.monotonic() < deadline:  # type: ignore[index]
        await asyncio.sleep(0.1)
    failed = registry.status(job.progress.id)
    assert failed is not None and failed["state"] == "failed" and "Kafka" in failed["error"]


def _closed_port() -> int:
    with socket.socket() as listener:  # bound and closed again: nothing listens there
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])
