"""Replay jobs started over HTTP: one background task per job, kept for status queries and cancellation.

The API runs several worker processes on one port (`api.workers`), and a status query or a cancel may reach a
worker that did not start the job. The worker running a job therefore writes its progress to a file under
``run_dir/replays`` every ``SYNC_S`` and watches there for a cancel request; any worker answers from the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from extractors.config import IngestConfig
from feature_store.client import FeatureStore
from feature_store.files import write_atomically
from replay.runner import ReplayJob, ReplayProgress

KEEP_FINISHED = 100
SYNC_S = 0.5
# A running job whose file was not rewritten for this long lost its worker (a restarted API process).
LOST_AFTER_S = 10.0
FINISHED = ("done", "failed", "cancelled")
_JOB_ID = re.compile(r"[0-9a-f]{12}")  # ReplayJob's ids (fullmatch): nothing else names a file


class ReplayRegistry:
    def __init__(self, settings: IngestConfig, store: FeatureStore) -> None:
        self.settings = settings
        self.store = store
        self.shared = Path(settings.run_dir) / "replays"
        self.jobs: dict[str, ReplayJob] = {}
        self._tasks: dict[str, asyncio.Task[ReplayProgress]] = {}

    def start(
        self,
        start_ts: float,
        end_ts: float,
        *,
        topics: Sequence[str] | None,
        subjects: Sequence[str] | None,
        dry_run: bool,
        max_events_per_s: float | None,
    ) -> ReplayJob:
        job = ReplayJob(
            self.settings,
            self.store,
            start_ts,
            end_ts,
            topics=topics,
            subjects=subjects,
            dry_run=dry_run,
            max_events_per_s=max_events_per_s,
        )
        self.shared.mkdir(parents=True, exist_ok=True)
        self.jobs[job.progress.id] = job
        self._publish(job)
        self._tasks[job.progress.id] = asyncio.create_task(self._run(job))
        self._forget_old()
        return job

    def status(self, job_id: str) -> dict[str, Any] | None:
        """The job's progress, from this worker's memory or the file of the worker running it; None if unknown."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job.progress.as_dict()
        if not _JOB_ID.fullmatch(job_id):
            return None
        try:
            progress: dict[str, Any] = orjson.loads(self._path(job_id, "json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        published_at = progress.pop("published_at", 0.0)
        if progress["state"] not in FINISHED and time.time() - published_at > LOST_AFTER_S:
            progress["state"] = "failed"
            progress["error"] = "the API worker running this replay stopped; start it again (replays are idempotent)"
        return progress

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop, wherever it runs; False when no worker knows it."""
        job = self.jobs.get(job_id)
        if job is not None:
            job.cancel()
            return True
        progress = self.status(job_id)
        if progress is None:
            return False
        if progress["state"] not in FINISHED:  # a finished job has nothing to cancel: no file left behind
            self._path(job_id, "cancel").touch()
        return True

    async def _run(self, job: ReplayJob) -> ReplayProgress:
        """Run the job, publishing its progress and taking a cancel request from another worker."""
        running = asyncio.create_task(job.run())
        try:
            while not running.done():
                await asyncio.wait({running}, timeout=SYNC_S)
                if self._path(job.progress.id, "cancel").exists():
                    job.cancel()
                self._publish(job)
            return running.result()
        finally:
            if not running.done():  # the registry is stopping
                job.cancel()
                await asyncio.gather(running, return_exceptions=True)
            self._publish(job)
            self._path(job.progress.id, "cancel").unlink(missing_ok=True)

    def _publish(self, job: ReplayJob) -> None:
        """Write the job's progress atomically (a reader never sees half a file); a full disk loses only this."""
        with contextlib.suppress(OSError):
            write_atomically(
                self._path(job.progress.id, "json"),
                orjson.dumps({**job.progress.as_dict(), "published_at": time.time()}),
            )

    def _path(self, job_id: str, kind: str) -> Path:
        return self.shared / f"{job_id}.{kind}"

    def _forget_old(self) -> None:
        finished = [i for i, j in self.jobs.items() if j.progress.state in FINISHED]
        for job_id in finished[:-KEEP_FINISHED]:
            self.jobs.pop(job_id, None)
            self._tasks.pop(job_id, None)
            self._path(job_id, "json").unlink(missing_ok=True)

    async def stop(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
