"""The Ray that `liandan run` starts in its own process: trials run in the workers Ray
prestarts, and stopping it leaves no process behind.

The check runs in a fresh interpreter: the test session's own Ray (`ray_session`) is
already started, and its idle workers long since taken or gone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys, time
import optuna, psutil
from service.runner import ensure_ray, run_study, stop_ray
from service.spec import validate_spec

def ray_processes():
    return psutil.Process().children(recursive=True)

def idle_workers():
    found = set()
    for p in ray_processes():
        try:
            if "ray::IDLE" in " ".join(p.cmdline()):
                found.add(p.pid)
        except psutil.Error:
            pass
    return found

assert ensure_ray(None)
deadline = time.monotonic() + 30
while len(idle_workers()) < 2 and time.monotonic() < deadline:
    time.sleep(0.1)
idle = idle_workers()
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
print(json.dumps({"idle": sorted(idle), "trial_pids": sorted(pids),
                  "left": [" ".join(p.cmdline())[:80] for p in alive]}))
"""


def test_trials_run_in_prestarted_workers_and_stopping_leaves_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "local.db")],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    # Ray prestarts one worker per CPU at ray.init; Tune's actors take them instead of
    # starting processes of their own (they would, given a runtime_env of their own).
    assert len(seen["idle"]) >= 2
    assert seen["trial_pids"] and set(seen["trial_pids"]) <= set(seen["idle"])
    # stop_ray kills Ray's autoscaler monitor itself: no process may outlive the stop.
    assert seen["left"] == []
