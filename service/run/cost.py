"""What a plan will cost, known before it runs (`liandan run --dry-run`, `liandan rulebook
--dry-run`).

    Plan ──► trials (tuning, candidate re-runs, seed re-runs) × epochs ──► epochs
    cluster ──► trials at once (its nodes' CPUs/GPUs per trial, the spec's max_concurrent)
    storage ──► seconds per epoch of this objective on this device (store.epoch_times)
             ──► wall time and GPU-hours, saying what they rest on

Nothing starts: no Ray on this machine (its CPUs from the OS, GPUs from torch), and on a
cluster (`--ray-address`) the driver only joins long enough to read `ray.nodes()`, submitting
no task or actor. Nothing is written: the storage is read only if it already exists.

The counts are upper bounds, as the plan's are: a pruner stops trials before their last
epoch, an arm with fewer complete tuning trials than candidates re-runs fewer, and the
rulebook copies arms identical to ones already trained.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from service.plan import Plan
from service.store.epoch_times import EpochTime, epoch_times

__all__ = ["Cluster", "Estimate", "StudyCost", "cost_lines", "estimate", "hms", "local_cluster",
           "pick_basis", "ray_cluster", "study_cost", "total_lines"]

ACCELERATOR = "accelerator_type:"  # Ray's node resource naming the GPU model


@dataclass(frozen=True)
class Cluster:
    """The nodes trials may run on: each node's CPUs and GPUs."""

    nodes: list[dict[str, float]]  # {"CPU": 8, "GPU": 1}
    where: str  # "this machine" / "the Ray cluster at ADDR"
    gpu_name: str | None = None  # when the cluster says (torch locally, Ray's accelerator type)

    @property
    def cpus(self) -> float:
        return sum(n.get("CPU", 0.0) for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.get("GPU", 0.0) for n in self.nodes)

    def slots(self, cpu: float, gpu: float) -> int:
        """How many trials of `cpu` CPUs and `gpu` GPUs fit at once, node by node (Ray
        places a trial on one node)."""
        def fits(have: float, need: float) -> int:
            return math.floor(have / need + 1e-9) if need > 0 else 1 << 30

        return sum(min(fits(n.get("CPU", 0.0), cpu), fits(n.get("GPU", 0.0), gpu))
                   for n in self.nodes)

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPU" + (f" ({self.gpu_name})" if self.gpu_name else "") \
            if self.gpus else ", no GPU"
        nodes = f"{len(self.nodes)} node{'s' * (len(self.nodes) != 1)}, " \
            if len(self.nodes) != 1 else ""
        return f"{self.where}: {nodes}{self.cpus:g} CPU{gpus}"


def local_cluster() -> Cluster:
    """This machine as a Ray started here would see it: the CPUs this process may use, the
    GPUs torch sees."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus, name = 0, None
    try:
        import torch

        if torch.cuda.is_available():
            gpus, name = torch.cuda.device_count(), torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - no torch, no driver: no GPU to count
        pass
    return Cluster([{"CPU": float(cpus or 1), "GPU": float(gpus)}], "this machine", name)


def ray_cluster(address: str) -> Cluster:
    """The live nodes of the Ray cluster at `address`. Joins as a driver to read them and
    leaves: no task or actor is submitted."""
    import ray

    joined = not ray.is_initialized()
    if joined:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    try:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    finally:
        if joined:
            ray.shutdown()
    names = sorted({key[len(ACCELERATOR):] for r in nodes for key in r
                    if key.startswith(ACCELERATOR)})
    return Cluster([{"CPU": float(r.get("CPU", 0.0)), "GPU": float(r.get("GPU", 0.0))}
                    for r in nodes], f"the Ray cluster at {address}",
                   ", ".join(names) or None)


@dataclass
class Estimate:
    """Wall time and device-hours of a plan, from a measured time per epoch."""

    wall_s: float  # epochs × s/epoch ÷ trials at once
    gpu_hours: float  # epochs × s/epoch × GPUs per trial
    cpu_hours: float
    basis: EpochTime  # what it rests on

    def describe(self) -> str:
        b = self.basis
        inside = f", {b.compute_s:.3g} s of it in the objective" if b.compute_s else ""
        return (f"{b.seconds:.3g} s per epoch on {b.device} (median of {b.trials} trial"
                f"{'s' * (b.trials != 1)} measured in {', '.join(b.studies)}{inside})")


@dataclass
class StudyCost:
    """One study's plan in trials, epochs and resources."""

    name: str
    objective: str
    arms: int
    tuning: int  # tuning trials, all arms
    candidate_reruns: int  # re-runs choosing each arm's configuration (selection protocol)
    seed_reruns: int  # evidence re-runs of each arm's choice
    total: int  # trials of the plan
    epochs_per_trial: int | None  # the longest trial; None when the objective does not say
    cpu: float
    gpu: float
    max_concurrent: int
    slots: int  # trials of these resources the cluster holds at once
    estimate: Estimate | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int | None:
        return None if self.epochs_per_trial is None else self.total * self.epochs_per_trial

    @property
    def concurrency(self) -> int:
        return min(self.max_concurrent, self.slots)


def study_cost(plan: Plan, cluster: Cluster) -> StudyCost:
    """The plan's counts (its own: `Plan.total_trials` and the parts it adds up)."""
    spec, arms = plan.spec, len(plan.arms)
    select = plan.candidates * len(plan.candidate_seeds) if plan.selects else 0
    cost = StudyCost(
        spec.name, spec.objective, arms, arms * plan.trials_per_arm, arms * select,
        arms * len(plan.seeds), plan.total_trials, plan.max_epochs, spec.resources.cpu,
        spec.resources.gpu, spec.budget.max_concurrent,
        cluster.slots(spec.resources.cpu, spec.resources.gpu))
    if cost.slots == 0:
        cost.notes.append(f"no node of {cluster.where} holds one trial "
                          f"(cpu {cost.cpu:g}, gpu {cost.gpu:g}): the run would refuse it")
    if plan.max_epochs is None:
        cost.notes.append("the objective does not say how many epochs a trial runs "
                          "(no `epochs` in the spec): epochs and time not counted")
    return cost


def pick_basis(times: dict[str, EpochTime], gpu: float,
               gpu_name: str | None) -> EpochTime | None:
    """The measurement that prices a trial: the same device (the GPU model when known, any
    GPU otherwise; the CPU for CPU trials), the one resting on most trials."""
    if gpu <= 0:
        return times.get("cpu")
    gpus = [t for d, t in times.items() if d != "cpu"]
    if gpu_name:
        named = [t for t in gpus if gpu_name.lower() in t.device.lower()
                 or t.device.lower() in gpu_name.lower()]
        gpus = named or gpus
    return max(gpus, key=lambda t: t.trials, default=None)


def estimate(cost: StudyCost, storage_url: str, cluster: Cluster,
             times: dict[str, EpochTime] | None = None) -> StudyCost:
    """`cost` with its estimate filled in when the storage has measured this objective on
    this kind of device (a note says why not, otherwise)."""
    if cost.epochs is None or cost.concurrency == 0:
        return cost
    times = epoch_times(storage_url, cost.objective) if times is None else times
    basis = pick_basis(times, cost.gpu, cluster.gpu_name)
    if basis is None:
        kind = "a GPU" if cost.gpu > 0 else "the CPU"
        seen = f" (measured only on {', '.join(sorted(times))})" if times else ""
        cost.notes.append(f"no time estimate: no finished trial of {cost.objective} on {kind} "
                          f"in the storage yet{seen}; run a small study of it first")
        return cost
    busy_s = cost.epochs * basis.seconds
    cost.estimate = Estimate(busy_s / cost.concurrency, busy_s * cost.gpu / 3600,
                             busy_s * cost.cpu / 3600, basis)
    return cost


def cost_lines(cost: StudyCost) -> list[str]:
    """The plan of one study, as the dry run prints it."""
    seeds = f"{cost.seed_reruns} seed re-runs"
    if cost.candidate_reruns:
        seeds = f"{cost.candidate_reruns} candidate re-runs + " + seeds
    epochs = "—" if cost.epochs is None else (
        f"{cost.epochs:,} (at most {cost.epochs_per_trial} per trial)")
    lines = [f"{cost.name}: {cost.arms} arm{'s' * (cost.arms != 1)}, {cost.tuning} tuning "
             f"trials + {seeds} = {cost.total} trials; epochs {epochs}",
             f"  per trial cpu {cost.cpu:g}, gpu {cost.gpu:g}; at once {cost.concurrency} "
             f"(max_concurrent {cost.max_concurrent}, the cluster holds {cost.slots})"]
    if cost.estimate is not None:
        e = cost.estimate
        lines.append(f"  estimate: wall {hms(e.wall_s)}, {e.gpu_hours:.3g} GPU-hours, "
                     f"{e.cpu_hours:.3g} CPU-hours; from {e.describe()}")
    lines += [f"  note: {n}" for n in cost.notes]
    return lines


def hms(seconds: float) -> str:
    """1 h 05 min · 4 min 10 s · 12 s."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def total_lines(costs: list[StudyCost]) -> list[str]:
    """The sum over studies run one after another (the rulebook's)."""
    timed = [c.estimate for c in costs if c.estimate is not None]
    epochs = sum(c.epochs or 0 for c in costs)
    lines = [f"total: {len(costs)} studies, {sum(c.total for c in costs):,} trials, "
             f"{epochs:,} epochs at most"]
    if timed:
        part = "" if len(timed) == len(costs) else f" ({len(timed)} of {len(costs)} studies)"
        lines.append(f"  estimate{part}: wall {hms(sum(x.wall_s for x in timed))}, "
                     f"{sum(x.gpu_hours for x in timed):.3g} GPU-hours, "
                     f"{sum(x.cpu_hours for x in timed):.3g} CPU-hours")
    return lines
