"""/healthz: the API answers and its database does."""

from __future__ import annotations

from fastapi import APIRouter

from service.server.api.deps import QueueDep
from service.server.api.schemas import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, summary="Liveness and the queue's states")
def healthz(queue: QueueDep) -> HealthPublic:
    return HealthPublic(status="ok", queue=dict(queue.state_counts()))
