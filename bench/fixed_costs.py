"""liandan's fixed costs, the ones `overhead.py` sees only in sum (issue: core).

1. What a fresh trial worker imports before its first epoch can run, stage by stage in a
   new interpreter (medians of `--repeats` runs): Ray, `ray.tune` (the trainable needs it),
   the built-in objective (torch), the first optimizer (torch.optim imports torch._dynamo
   on first use), the digits data set.
2. The driver's time per trial on its path between two trials, on SQLite: the searcher's
   ask (`StudySearch.suggest`: Optuna's ask and the trial's first record) and its tell
   (`on_trial_complete`: the final record and Optuna's tell), for the 24 trials of
   `overhead.py`'s grid, 12 epochs each.
3. A local Ray's start and stop as `liandan run` does them (`ensure_ray`, `stop_ray`), and
   Ray's own `ray.shutdown()` for comparison, each in a new interpreter (medians).

    .venv/bin/python bench/fixed_costs.py [--repeats 3]   # writes bench/results/fixed_costs.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

from record import RESULTS, ROOT, machine, now, save

STAGES = """
import json, time
t = [time.perf_counter()]
import ray; t.append(time.perf_counter())
import ray.tune; t.append(time.perf_counter())
from objectives import resolve; fn = resolve("digits_cnn"); t.append(time.perf_counter())
import torch
torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1); t.append(time.perf_counter())
from objectives.data import load; load("digits", "cpu"); t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
STAGE_NAMES = ["import ray", "import ray.tune", "objective (torch)",
               "first optimizer (torch._dynamo)", "digits data"]


def worker_imports(repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", STAGES], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    return {name: statistics.median(run[i] for run in runs)
            for i, name in enumerate(STAGE_NAMES)}


def driver_per_trial() -> dict:
    sys.path.insert(0, str(ROOT))
    import optuna
    from overhead import SPEC

    from service.plan import make_plan
    from service.run.ledger import Ledger
    from service.run.study_search import StudySearch
    from service.run.trainable import STEP_KEY
    from service.spec import validate_spec
    from service.store.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = validate_spec(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(spec.direction)
        search = StudySearch(make_plan(spec), open_storage(f"sqlite:///{tmp}/d.db"), ledger)
        ask, tell = [], []
        for i in range(spec.budget.trials):
            t = time.perf_counter()
            search.suggest(f"t{i}")
            ask.append(time.perf_counter() - t)
            for epoch in range(1, 13):  # as the trial's reports would arrive
                search.on_trial_result(f"t{i}", {spec.metric: 0.5 + epoch / 100,
                                                 STEP_KEY: epoch, "training_iteration": epoch})
            t = time.perf_counter()
            search.on_trial_complete(f"t{i}", {spec.metric: 0.62, STEP_KEY: 12, "epoch": 12,
                                               "training_iteration": 12, "node_id": "n",
                                               "device": "cpu", "compute_s": 1.0})
            tell.append(time.perf_counter() - t)
    return {"trials": len(ask), "ask_ms_median": 1e3 * statistics.median(ask),
            "tell_ms_median": 1e3 * statistics.median(tell)}


RAY_START_STOP = """
import json, sys, time
from service.run.runner import ensure_ray, stop_ray
import ray
t0 = time.perf_counter(); ensure_ray(None); t1 = time.perf_counter()
ray.get(ray.remote(lambda: 1).remote())  # a worker runs something, as in a study
t2 = time.perf_counter(); (stop_ray if sys.argv[1] == "stop_ray" else ray.shutdown)()
print(json.dumps([t1 - t0, time.perf_counter() - t2]))
"""


def ray_start_stop(repeats: int) -> dict:
    runs: dict[str, list] = {"stop_ray": [], "ray.shutdown": []}
    for _ in range(repeats):
        for way, times in runs.items():
            out = subprocess.run([sys.executable, "-c", RAY_START_STOP, way], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout
            times.append(json.loads(out.strip().splitlines()[-1]))
    return {"start_s": statistics.median(t[0] for ts in runs.values() for t in ts),
            **{f"{way}_s": statistics.median(t[1] for t in ts) for way, ts in runs.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = {"date": now(), "machine": machine(), "worker_imports_s": worker_imports(args.repeats),
           "driver": driver_per_trial(), "ray": ray_start_stop(args.repeats)}
    print("a fresh worker, before its first epoch (medians of runs, each in a new interpreter):")
    for name, seconds in out["worker_imports_s"].items():
        print(f"  {name:34s} {seconds:5.2f} s")
    print(f"  {'total':34s} {sum(out['worker_imports_s'].values()):5.2f} s")
    d = out["driver"]
    print(f"driver per trial, SQLite ({d['trials']} trials, medians): ask "
          f"{d['ask_ms_median']:.0f} ms, tell {d['tell_ms_median']:.0f} ms")
    r = out["ray"]
    print(f"local Ray (medians): start {r['start_s']:.2f} s; stop {r['stop_ray_s']:.2f} s "
          f"(stop_ray), {r['ray.shutdown_s']:.2f} s (ray.shutdown)")
    save(out, RESULTS / "fixed_costs.json")


if __name__ == "__main__":
    main()
