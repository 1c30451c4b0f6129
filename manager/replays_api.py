"""Replay endpoints for ops (operator role): start a replay of an arrival window, follow it, cancel it."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, Field

from extractors.decode import INPUT_TOPICS
from extractors.events import ArrivalTimestamp
from manager.auth import Operator
from replay.registry import ReplayRegistry
from replay.window import ReplayWindowError, validate_window

router = APIRouter(prefix="/v1")


class ReplayRequest(BaseModel):
    from_: ArrivalTimestamp = Field(alias="from", description="window start (Kafka arrival time), ISO 8601 or epoch")
    to: ArrivalTimestamp = Field(description="window end (exclusive)")
    topics: list[str] | None = Field(default=None, description=f"default: all of {list(INPUT_TOPICS)}")
    subjects: list[str] | None = None
    dry_run: bool = False
    max_events_per_s: float | None = Field(default=None, gt=0)


def _registry(request: Request) -> ReplayRegistry:
    return request.app.state.replays  # type: ignore[no-any-return]


@router.post("/replays", status_code=status.HTTP_202_ACCEPTED)
async def start_replay(request: Request, _: Operator, body: ReplayRequest) -> dict[str, Any]:
    """Re-run the events that arrived in [from, to) through the extractors (idempotent, newest wins)."""
    try:
        validate_window(body.from_, body.to, time.time())
        job = _registry(request).start(
            body.from_,
            body.to,
            topics=body.topics,
            subjects=body.subjects,
            dry_run=body.dry_run,
            max_events_per_s=body.max_events_per_s,
        )
    except (ReplayWindowError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from exc
    return {"id": job.progress.id, "state": job.progress.state}


ReplayId = Annotated[str, Path(max_length=64)]


@router.get("/replays/{replay_id}")
async def replay_status(request: Request, _: Operator, replay_id: ReplayId) -> dict[str, Any]:
    progress = _registry(request).status(replay_id)
    if progress is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no replay {replay_id}")
    return progress


@router.delete("/replays/{replay_id}")
async def cancel_replay(request: Request, _: Operator, replay_id: ReplayId) -> dict[str, Any]:
    if not _registry(request).cancel(replay_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no replay {replay_id}")
    return {"id": replay_id, "state": "cancelling"}
