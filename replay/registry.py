"""Replay jobs started over HTTP: one background task per job, kept for status queries and cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from extractors.config import IngestConfig
from feature_store.client import FeatureStore
from replay.runner import ReplayJob, ReplayProgress

KEEP_FINISHED = 100


class ReplayRegistry:
    def __init__(self, settings: IngestConfig, store: FeatureStore) -> None:
        self.settings = settings
        self.store = store
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
        self.jobs[job.progress.id] = job
        self._tasks[job.progress.id] = asyncio.create_task(job.run())
        self._forget_old()
        return job

    def get(self, job_id: str) -> ReplayJob | None:
        return self.jobs.get(job_id)

    def _forget_old(self) -> None:
        finished = [i for i, j in self.jobs.items() if j.progress.state in ("done", "failed", "cancelled")]
        for job_id in finished[:-KEEP_FINISHED]:
            self.jobs.pop(job_id, None)
            self._tasks.pop(job_id, None)

    async def stop(self) -> None:
        for job in self.jobs.values():
            job.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
