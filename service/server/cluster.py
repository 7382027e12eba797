"""What the service's Ray cluster can hold, recorded for the API (which never joins Ray).

The process attached to Ray (`liandan serve` after starting its local head, a worker on
`--ray-address`) notes each live node's CPUs and GPUs in the queue's database
(`StudyQueue.record_cluster`); `POST /studies` reads them to refuse a trial no node can
hold (service.run.capacity) instead of queueing a study that would wait forever.
"""

from __future__ import annotations

import logging
from typing import Any

from service.server.queue import StudyQueue

__all__ = ["ray_nodes", "record_cluster"]

log = logging.getLogger("liandan.cluster")


def ray_nodes() -> list[dict[str, Any]]:
    """The live nodes of the Ray this process is attached to, as `ray.nodes()` describes
    them, kept to what the capacity check reads."""
    import ray

    return [{"Alive": True, "Resources": {
        key: float(node.get("Resources", {}).get(key, 0.0)) for key in ("CPU", "GPU")}}
        for node in ray.nodes() if node.get("Alive")]


def record_cluster(queue: StudyQueue, ray_address: str) -> None:
    """Note the cluster's nodes under `ray_address`; a failure is logged, never raised (the
    run checks again before it starts trials)."""
    try:
        queue.record_cluster(ray_address, ray_nodes())
    except Exception:  # noqa: BLE001 - submission checks are a courtesy; runs check anyway
        log.exception("could not record the Ray cluster's nodes")
