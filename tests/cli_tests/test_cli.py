"""`liandan` as a user runs it: real processes, real Ray, real SQLite, digits_cnn."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT, run_cli

CHECKER = ROOT.parent / "shared" / "tools" / "check_trial_records.py"

DIGITS_SPEC = """\
name: digits-e2e
objective: digits_cnn
scientific: {optimizer: [momentum, adam]}
nuisance:
  lr: {low: 1.0e-3, high: 0.3, log: true}
  batch_size: [64, 128]
fixed: {epochs: 3, decay: cosine, warmup_epochs: 0.5}
budget: {trials: 3, seeds: 2, max_concurrent: 2, candidates: 1, candidate_seeds: 0}
search: {sampler: tpe, pruner: asha, seed: 0}
"""


@pytest.mark.slow
def test_liandan_run_digits_end_to_end(tmp_path: Path):
    (tmp_path / "spec.yaml").write_text(DIGITS_SPEC)
    url = f"sqlite:///{tmp_path / 'liandan.db'}"
    proc = run_cli("run", "spec.yaml", "--storage", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "digits-e2e [optimizer=adam]" in proc.stdout and "dashboard" in proc.stdout
    names = {s.study_name for s in optuna.get_all_study_summaries(url)}
    assert names == {"digits-e2e[optimizer=momentum]", "digits-e2e[optimizer=adam]"}
    for name in names:
        trials = optuna.load_study(study_name=name, storage=url).trials
        assert len(trials) == 5  # 3 tuning + 2 seed re-runs
        for t in trials:
            assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
            assert {"lr", "batch_size", "optimizer", "epochs", "decay", "warmup_epochs",
                    "seed"} == set(t.params)
            for metric in ("val_accuracy", "val_loss", "train_loss", "samples_per_s",
                           "loss_oscillation", "diverged"):
                assert metric in t.user_attrs
            assert t.user_attrs["device"] == "cpu"
        best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        assert best.value > 0.5  # a 3-epoch CNN on digits learns something
    # The outside check of the trial-record contract, where the checkout sits beside it.
    if CHECKER.exists():
        check = subprocess.run([sys.executable, str(CHECKER), url], capture_output=True,
                               text=True)
        assert check.returncode == 0, check.stdout
        assert "0 contract problems" in check.stdout

    # The report is written at the end: markdown, findings JSON, plots.
    report = json.loads((tmp_path / "reports" / "digits-e2e.json").read_text())
    assert report["study"] == "digits-e2e" and report["findings"] == []
    assert "## Reproduce" in (tmp_path / "reports" / "digits-e2e.md").read_text()
    assert (tmp_path / "reports" / "digits-e2e" / "curves.png").stat().st_size > 1000

    status = run_cli("status", "digits-e2e", "--storage", url, cwd=tmp_path)
    assert status.returncode == 0 and "optimizer=momentum" in status.stdout


def test_invalid_spec_names_every_problem_and_writes_nothing(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text(
        "name: Bad/Name\nobjective: digits_cnn\nnuisance:\n  lr: {low: 1.0, high: 0.1}\n"
        "budget: {trials: -3}\nsearch: {sampler: annealing}\n")
    url = f"sqlite:///{tmp_path / 'liandan.db'}"
    proc = run_cli("run", "bad.yaml", "--storage", url, cwd=tmp_path)
    assert proc.returncode == 2
    for path in ("name", "nuisance.lr", "budget.trials", "search.sampler"):
        assert path in proc.stdout
    assert not (tmp_path / "liandan.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_serves_the_storage(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'liandan.db'}"
    study = optuna.create_study(study_name="shown", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "dashboard", "--storage", url,
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    body = json.load(r)
            except OSError:
                time.sleep(0.3)
        assert body is not None, "dashboard did not answer"
        assert [s["study_name"] for s in body["study_summaries"]] == ["shown"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
