"""`liandan run --dry-run` and `liandan rulebook --dry-run`: the plan and its cost, with nothing
started (no Ray) and nothing written (no database file, no report). The estimate comes from a
real storage holding a finished toy study, run on real Ray."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from service.plan import make_plan
from service.run.cost import Cluster, estimate, pick_basis, study_cost
from service.run.runner import run_study
from service.spec import load_spec, validate_spec
from service.store.epoch_times import EpochTime, epoch_times
from tests.conftest import run_cli

SPEC = """\
name: priced
objective: toy_objectives:quadratic
metric: val_loss
direction: minimize
scientific: {{shift: [0, 1]}}
nuisance: {{x: {{low: -2.0, high: 3.0}}}}
fixed: {{epochs: {epochs}, sleep: 0.05}}
budget: {{trials: {trials}, seeds: 2, candidates: 2, candidate_seeds: 1, max_concurrent: 2}}
search: {{sampler: random, pruner: none, seed: 0}}
"""

# Runs the CLI in this fresh process, then says whether Ray was ever started in it.
NO_RAY = ("import sys, ray; from service.cli import app\n"
          "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
          "print('RAY_INITIALIZED', ray.is_initialized())\nsys.exit(code)\n")


def dry_run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_RAY, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_run_dry_run_prints_the_plans_counts_and_starts_and_writes_nothing(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC.format(epochs=3, trials=4))
    db = tmp_path / "studies.db"
    proc = dry_run("run", "spec.yaml", "--dry-run", "--storage", f"sqlite:///{db}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    plan = make_plan(load_spec(tmp_path / "spec.yaml"))
    # 2 arms x (4 tuning + 2 candidates x 1 seed + 2 evidence seeds): the plan's own count.
    assert plan.total_trials == 16
    assert (f"priced: 2 arms, 8 tuning trials + 4 candidate re-runs + 4 seed re-runs = "
            f"{plan.total_trials} trials; epochs 48 (at most 3 per trial)") in out
    assert "per trial cpu 1, gpu 0; at once" in out and "cluster: this machine" in out
    assert "no time estimate" in out
    assert "RAY_INITIALIZED False" in out
    assert not db.exists() and not (tmp_path / "reports").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_dry_run_of_an_invalid_spec_names_every_problem(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        SPEC.format(epochs=3, trials=0) + "notify: {webhook: 'ftp://example.com/x'}\n")
    proc = run_cli("run", "spec.yaml", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "budget.trials" in proc.stdout and "notify.webhook" in proc.stdout
    assert not (tmp_path / "liandan.db").exists()


@pytest.mark.slow
def test_the_estimate_rests_on_the_finished_study_of_the_same_objective(ray_session,
                                                                         tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    small = validate_spec({**yaml.safe_load(SPEC.format(epochs=2, trials=2)),
                           "name": "measured"})
    run_study(small, url, show_progress=False)
    done = [t for s in optuna.get_all_study_summaries(url)
            for t in optuna.load_study(study_name=s.study_name, storage=url).trials
            if t.state == optuna.trial.TrialState.COMPLETE]
    per_epoch = statistics.median(
        (t.datetime_complete - t.datetime_start).total_seconds() / len(t.intermediate_values)
        for t in done)
    studies_before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}

    (tmp_path / "spec.yaml").write_text(SPEC.format(epochs=5, trials=10))
    proc = dry_run("run", "spec.yaml", "--dry-run", "--storage", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 2 arms x (10 + 2 + 2) trials x 5 epochs, two at a time, at the measured s/epoch.
    wall_s = 2 * 14 * 5 * per_epoch / 2
    assert f"median of {len(done)} trials measured in measured" in proc.stdout
    assert "estimate: wall" in proc.stdout and "GPU-hours" in proc.stdout
    cost = estimate(study_cost(make_plan(load_spec(tmp_path / "spec.yaml")),
                               Cluster([{"CPU": 2.0}], "test")), url, Cluster([], "test"))
    assert cost.estimate is not None and cost.estimate.basis.trials == len(done)
    assert cost.estimate.wall_s == pytest.approx(wall_s, rel=1e-9)
    assert cost.estimate.gpu_hours == 0 and cost.estimate.cpu_hours == pytest.approx(
        2 * 14 * 5 * per_epoch / 3600)
    assert "RAY_INITIALIZED False" in proc.stdout
    # Nothing written: the same studies with the same trials, no study `priced`.
    assert {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)} \
        == studies_before
    # Another objective, or the GPU, has no measurement: said, not guessed.
    assert epoch_times(url, "toy_objectives:boom") == {}
    assert set(epoch_times(url, "toy_objectives:quadratic")) == {"cpu"}


@pytest.mark.slow
def test_dry_run_reads_a_ray_clusters_resources_without_running_anything(ray_session,
                                                                          tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    cpus = ray_session.cluster_resources()["CPU"]
    (tmp_path / "spec.yaml").write_text(SPEC.format(epochs=3, trials=4))
    proc = run_cli("run", "spec.yaml", "--dry-run", "--ray-address", address, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"cluster: the Ray cluster at {address}: {cpus:g} CPU, no GPU" in proc.stdout
    assert f"the cluster holds {int(cpus)})" in proc.stdout
    assert not (tmp_path / "liandan.db").exists()


def test_rulebook_dry_run_counts_each_rule_study_and_writes_nothing(tmp_path):
    from service.rulebook.execute import spec_for
    from service.rulebook.run import SPECS_DIR

    db = tmp_path / "studies.db"
    proc = dry_run("rulebook", "--dry-run", "--rules", "R8", "--budget", "small",
                   "--storage", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = spec_for(SPECS_DIR / "small" / "optimizer-momentum-adam.yaml", "digits_cnn", 1, [],
                    {})
    assert f"{spec.name}: " in proc.stdout
    assert f"= {make_plan(spec).total_trials} trials" in proc.stdout
    assert "total: 1 studies" in proc.stdout
    assert "RAY_INITIALIZED False" in proc.stdout
    assert not db.exists() and not (tmp_path / "reports").exists()


def test_rulebook_dry_run_of_a_staged_budget_prices_its_first_and_last_look(tmp_path):
    proc = run_cli("rulebook", "--dry-run", "--rules", "R8", "--budget", "medium",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "first look" in proc.stdout and "last look" in proc.stdout
    assert not (tmp_path / "liandan.db").exists()


def test_the_measurement_that_prices_a_trial_is_of_its_device():
    cpu = EpochTime("o", "cpu", 2.0, 1.5, 10, ["a"])
    h100 = EpochTime("o", "NVIDIA H100 80GB HBM3", 0.2, 0.1, 4, ["b"])
    a100 = EpochTime("o", "NVIDIA A100-SXM4-40GB", 0.4, 0.3, 8, ["c"])
    times = {t.device: t for t in (cpu, h100, a100)}
    assert pick_basis(times, 0, None) is cpu
    assert pick_basis(times, 1, "H100") is h100  # Ray's accelerator type names the model
    assert pick_basis(times, 0.5, None) is a100  # model unknown: the best-measured GPU
    assert pick_basis({"cpu": cpu}, 1, "H100") is None


def test_trials_at_once_count_each_nodes_cpus_and_gpus():
    cluster = Cluster([{"CPU": 8.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 0.0}], "test")
    assert cluster.slots(1, 0) == 10
    assert cluster.slots(2, 0.5) == 2  # only the GPU node holds a GPU trial
    assert cluster.slots(4, 2) == 0
