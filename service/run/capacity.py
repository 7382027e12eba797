"""Whether one trial's `resources` fit a node of the Ray cluster.

Ray queues a trial it cannot place and waits for a node that can hold it, forever: a
study asking for `{cpu: 1024, gpu: 64}` would sit `running` and block its worker. So a
run checks first. The rule: a trial must fit on one node that is alive, counting that
node's total CPUs and GPUs (what is busy now frees up; what is missing never comes). On
a Ray that liandan started in-process no node can join, so the check is final at once;
on an existing cluster (`--ray-address`) it waits up to `NODE_WAIT_S` for a node that
fits to join (one being started by hand or by an autoscaler already under way), then
fails. An autoscaling cluster must keep a node of the trial's size up (or start one
within that time): liandan does not wait minutes for a node that may never come.

Light on purpose (Ray is imported only to ask it): the API may call `unschedulable`
with node descriptions it has at hand to refuse a spec at submission.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["NODE_WAIT_S", "Unschedulable", "check_fits", "unschedulable"]

NODE_WAIT_S = 25.0  # with the check's own polling, a run fails within 30 s


class Unschedulable(ValueError):
    """No node of the cluster can hold one trial's resources."""


def unschedulable(cpu: float, gpu: float, nodes: Iterable[dict[str, Any]]) -> str | None:
    """Why a trial of `cpu` CPUs and `gpu` GPUs fits no node in `nodes` (Ray's `ray.nodes()`
    entries: `Alive`, `Resources`), or None when one node can hold it."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if any(r.get("CPU", 0) >= cpu and r.get("GPU", 0) >= gpu for r in alive):
        return None
    if not alive:
        return (f"resources: a trial needs cpu {cpu:g}, gpu {gpu:g}, but the Ray cluster has "
                "no live node")
    largest = max(alive, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)))
    return (f"resources: a trial needs cpu {cpu:g}, gpu {gpu:g}, but no node of the Ray "
            f"cluster can hold it; the largest node has cpu {largest.get('CPU', 0):g}, gpu "
            f"{largest.get('GPU', 0):g} ({len(alive)} node{'s' * (len(alive) != 1)}). Lower "
            "`resources`, or run on a cluster with a node that big")


def check_fits(cpu: float, gpu: float, wait_s: float,
               nodes: Callable[[], list[dict[str, Any]]] | None = None) -> None:
    """Return once a live node can hold one trial; raise `Unschedulable` after `wait_s`."""
    if nodes is None:
        import ray

        nodes = ray.nodes
    deadline = time.monotonic() + wait_s
    while True:
        problem = unschedulable(cpu, gpu, nodes())
        if problem is None:
            return
        if time.monotonic() >= deadline:
            raise Unschedulable(problem)
        time.sleep(1.0)
