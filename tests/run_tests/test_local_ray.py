"""The Ray that `liandan run` starts in its own process: trials run in Ray's worker
processes, never in the driver, and stopping it leaves no process behind.

Whether Tune's actors take the idle workers Ray prestarts at `ray.init` is a speed matter
that Ray does not guarantee (a busy machine may start a fresh worker before an idle one
registers), so its effect is measured by `bench/overhead.py`, not asserted here.

The check runs in a fresh interpreter: the test session's own Ray (`ray_session`) is
already started.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
import optuna, psutil
from service.run.runner import ensure_ray, run_study, stop_ray
from service.spec import validate_spec

def ray_processes():
    return psutil.Process().children(recursive=True)

assert ensure_ray(None)
spec = validate_spec({
    "name": "toy", "objective": "toy_objectives:quadratic", "metric": "val_loss",
    "direction": "minimize", "nuisance": {"x": {"low": -2.0, "high": 3.0}},
    "fixed": {"epochs": 2}, "budget": {"trials": 4, "seeds": 0, "max_concurrent": 2},
    "search": {"sampler": "random", "pruner": "none", "seed": 0},
})
url = "sqlite:///" + sys.argv[1]
run_study(spec, url, show_progress=False)
trials = optuna.load_study(study_name="toy", storage=url).trials
pids = {t.user_attrs["worker_pid"] for t in trials}
before = ray_processes()
stop_ray()
gone, alive = psutil.wait_procs(before, timeout=15)
print(json.dumps({"driver": os.getpid(), "trial_pids": sorted(pids), "n": len(trials),
                  "left": [" ".join(p.cmdline())[:80] for p in alive]}))
"""


def test_trials_run_in_ray_workers_and_stopping_leaves_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "local.db")],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["n"] == 4
    # Every trial ran in one of Ray's worker processes (its record says which), not here.
    assert seen["trial_pids"] and seen["driver"] not in seen["trial_pids"]
    # stop_ray kills Ray's autoscaler monitor itself: no process may outlive the stop.
    assert seen["left"] == []
