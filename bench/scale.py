"""Many fast trials on a simulated 3-node Ray cluster, SQLite vs PostgreSQL (issue: scale).

A head with no CPUs and two 4-CPU worker nodes (`ray.cluster_utils.Cluster`, all on this
machine), 1,000+ trials of a pure-Python objective (3 epochs, no sleep) at concurrency 8.
What it shows is what liandan itself costs per trial, since the objective costs ~nothing:
trials per minute, wall time per trial x concurrency (the scheduling overhead a trial
pays), and the storage's own latency for one trial's records (ask, 3 reports, user
attributes, tell) measured directly, without Ray.

    .venv/bin/python bench/scale.py [--trials 1000]   # writes bench/results/scale.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import ray
from ray.cluster_utils import Cluster
from record import RESULTS, machine, now, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "fixtures"), str(ROOT)])

from service.run.runner import ensure_ray, run_study  # noqa: E402
from service.spec import validate_spec  # noqa: E402
from service.store.storage import open_storage  # noqa: E402

PG_URL = os.environ.get("LIANDAN_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CONCURRENCY = 8


def spec(trials: int):
    return validate_spec({
        "name": "scale-bench", "objective": "toy_objectives:quadratic", "metric": "val_loss",
        "direction": "minimize", "nuisance": {"x": {"low": -2.0, "high": 3.0}},
        "fixed": {"epochs": 3}, "budget": {"trials": trials, "max_concurrent": CONCURRENCY},
        "search": {"sampler": "random", "pruner": "none", "seed": 0},
    })


def reset_pg(url: str) -> bool:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public;"))
        engine.dispose()
        return True
    except Exception as exc:  # noqa: BLE001 - no server: skip that storage, say so
        print(f"PostgreSQL not reachable ({exc.__class__.__name__}); skipping it")
        return False


def storage_latency(url: str, n: int = 200) -> dict:
    """One trial's records written directly: ask, 3 reports, 4 user attributes, tell."""
    storage = open_storage(url)
    study = optuna.create_study(study_name="latency", storage=storage)
    dist = {"x": optuna.distributions.FloatDistribution(-2, 3)}
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        trial = study.ask(dist)
        for step in (1, 2, 3):
            trial.report(0.5, step)
        for key in ("role", "node_id", "device", "val_loss"):
            trial.set_user_attr(key, "x")
        study.tell(trial, 0.5)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"per_trial_ms_p50": 1e3 * statistics.median(times),
            "per_trial_ms_p99": 1e3 * times[int(0.99 * (n - 1))]}


def run_on_cluster(url: str, trials: int) -> dict:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        cluster.add_node(num_cpus=CONCURRENCY // 2)
    cluster.wait_for_nodes()
    ensure_ray(cluster.address)
    try:
        t0 = time.perf_counter()
        run_study(spec(trials), url, show_progress=False)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    study = optuna.load_study(study_name="scale-bench", storage=url)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    nodes = {t.user_attrs["node_id"] for t in done}
    compute = statistics.fmean(t.user_attrs["compute_s"] for t in done)
    return {"trials": len(done), "wall_s": wall, "trials_per_min": 60 * len(done) / wall,
            "wall_per_trial_x_concurrency_s": wall * CONCURRENCY / len(done),
            "objective_compute_per_trial_s": compute, "nodes_used": len(nodes)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    args = ap.parse_args()
    out: dict = {"date": now(),
                 "machine": machine(ray=ray.__version__, optuna=optuna.__version__),
                 "cluster": f"head 0 CPUs + 2 workers x {CONCURRENCY // 2} CPUs (one machine)",
                 "concurrency": CONCURRENCY, "storages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{Path(tmp) / 'scale.db'}"}
        if reset_pg(PG_URL):
            urls["postgresql"] = PG_URL
        for name, url in urls.items():
            latency = storage_latency(url)
            if name == "postgresql":
                reset_pg(PG_URL)
            result = run_on_cluster(url, args.trials)
            out["storages"][name] = {**result, "storage_latency": latency}
            print(f"{name:10s} {result['trials']} trials in {result['wall_s']:.0f} s = "
                  f"{result['trials_per_min']:.0f}/min; wall x concurrency per trial "
                  f"{result['wall_per_trial_x_concurrency_s']:.2f} s (objective "
                  f"{1e3 * result['objective_compute_per_trial_s']:.1f} ms); storage "
                  f"p50 {latency['per_trial_ms_p50']:.1f} ms p99 "
                  f"{latency['per_trial_ms_p99']:.1f} ms per trial; "
                  f"{result['nodes_used']} nodes")
    save(out, RESULTS / "scale.json")


if __name__ == "__main__":
    main()
