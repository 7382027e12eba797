"""Calibration of the batch-size checks (R1-R4, R9) on worlds with PLANTED effects.

Each world is a pure-Python objective (tests/fixtures/planted_batch.py) run through the real
pipeline: the rulebook's own small specs, shrunk and pointed at the planted objective, go
through `run_study` on real Ray into SQLite, are read back with `load_study_data`, checked, and
Holm-finalized. A check must find what was planted, find nothing where nothing was planted,
and never crash on a study that is missing or empty.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.rulebook import finalize
from service.rulebook.batch import CHECKS as BATCH_CHECKS
from service.rulebook.scaling import CHECKS as SCALING_CHECKS
from service.rulebook.throughput import CHECKS as THROUGHPUT_CHECKS
from service.run.runner import run_study
from service.spec import load_spec, validate_spec
from service.store.storage import open_storage
from service.store.study_data import ArmData, StudyData, load_study_data

pytestmark = pytest.mark.usefixtures("ray_session")

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "search_spaces" / "rulebook"
CHECKS = {c.rule: c for c in THROUGHPUT_CHECKS + BATCH_CHECKS + SCALING_CHECKS}
LR_GRID = [0.01, 0.0316, 0.1, 0.316, 1.0]  # half-decade steps; planted best LRs 0.025-0.2
BATCHES = [16, 32, 64, 128]  # R4: moderate = 32 (the middle), largest = 128


def shrunk(stem: str, name: str, objective: str, **changes) -> dict:
    """The small spec `stem`, renamed, on a planted objective, with `changes` applied."""
    data = yaml.safe_load((SPECS / "small" / f"{stem}.yaml").read_text())
    data.update(name=name, objective=objective)
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if key == "fixed" else value
    return data


def run(data: dict, url: str) -> StudyData:
    run_study(validate_spec(data), url, show_progress=False)
    study = load_study_data(open_storage(url), data["name"])
    assert study is not None
    return study


def batch_world(url: str, tag: str, with_steps: bool = True, **knobs) -> dict:
    """batch_arms (also serving as R9's grid) and, if asked, r4_steps in one planted world."""
    grid = {"nuisance": {"lr": LR_GRID}, "search": {"sampler": "grid", "pruner": "none"},
            "budget": {"trials": len(LR_GRID), "seeds": 3, "max_concurrent": 2}}
    arms = run(shrunk("batch_arms", f"arms-{tag}", "planted_batch:batch_world",
                      scientific={"batch_size": BATCHES}, fixed={"epochs": 4, **knobs}, **grid),
               url)
    steps = None
    if with_steps:  # batch 128 for 4x the epochs of the moderate arm (32): equal steps
        steps = run(shrunk("r4_steps", f"steps-{tag}", "planted_batch:batch_world",
                           fixed={"batch_size": 128, "epochs": 16, **knobs}, **grid), url)
    return {"batch_arms": arms, "r4_steps": steps, "r9_lr_grid": arms}


def verdicts(studies, plot_dir: Path, rules=("R2", "R3", "R4", "R9")) -> dict:
    findings = finalize([CHECKS[r].check(studies, plot_dir) for r in rules])
    for f in findings:
        assert f.evidence and f.protocol, f.rule
        for plot in f.plots:
            assert (plot_dir.parent / plot).is_file()
    return {f.rule: f for f in findings}


def test_textbook_world_supports_every_planted_rule(sqlite_url, tmp_path):
    # Best LR proportional to batch, large batches 1 point worse per doubling, slower to
    # converge per epoch, loss noise falling as batch^-0.5.
    studies = batch_world(sqlite_url, "textbook", lr_exponent=1.0, large_gap=0.01,
                          epoch_slope=1.0, osc_exponent=0.5, curvature=0.15)
    found = verdicts(studies, tmp_path / "plots")
    assert {r: f.verdict for r, f in found.items()} == {
        "R2": "supported", "R3": "supported", "R4": "supported", "R9": "supported"}
    assert found["R9"].effect == pytest.approx(1.0, abs=0.1)
    assert found["R4"].effect == pytest.approx(0.02, abs=0.005)
    assert found["R4"].method.startswith("equal steps")
    assert found["R2"].effect == pytest.approx(-0.5, abs=0.1)
    assert len(found["R4"].table) == len(BATCHES) + 1  # every arm, plus the equal-steps arm
    assert all(f.plots for f in found.values())


def test_contrary_world_contradicts_scaling_and_generalization(sqlite_url, tmp_path):
    # Square-root LR scaling, and large batches generalize better.
    studies = batch_world(sqlite_url, "contrary", with_steps=False, lr_exponent=0.5,
                          large_gap=-0.01, curvature=0.15)
    found = verdicts(studies, tmp_path / "plots", rules=("R4", "R9"))
    assert found["R9"].verdict == "contradicted"
    assert found["R9"].effect == pytest.approx(0.5, abs=0.1)
    assert found["R9"].ci[1] < 0.75
    assert found["R4"].verdict == "contradicted" and found["R4"].effect < 0
    assert found["R4"].method.startswith("equal epochs")  # no r4_steps: the fallback
    assert any("confounded" in c for c in found["R4"].caveats)


def test_null_world_supports_nothing(sqlite_url, tmp_path):
    # Batch size changes nothing: not the best LR, accuracy, noise, or speed of convergence.
    studies = batch_world(sqlite_url, "null", with_steps=False, lr_exponent=0.0, noise=0.001,
                          curvature=0.15)
    found = verdicts(studies, tmp_path / "plots")
    assert all(f.verdict != "supported" for f in found.values())
    assert found["R4"].equivalent and found["R4"].verdict == "contradicted"  # TOST, 0.5 points
    assert found["R9"].verdict == "contradicted"  # slope ~0, far from 1


@pytest.mark.parametrize(("bonus", "verdict"), [(0.10, "supported"), (0.0, "contradicted")])
def test_r1_separates_a_power_of_two_bonus_from_the_size_trend(sqlite_url, tmp_path, bonus,
                                                               verdict):
    study = run(shrunk("r1_throughput", f"r1-{int(bonus * 100)}",
                       "planted_batch:throughput_world", fixed={"epochs": 3, "pow2_bonus": bonus},
                       budget={"trials": 1, "seeds": 1, "max_concurrent": 2}), sqlite_url)
    (f,) = finalize([CHECKS["R1"].check({"r1_throughput": study}, tmp_path / "plots")])
    assert f.verdict == verdict
    assert f.effect == pytest.approx(0.0953 if bonus else 0.0, abs=0.02)  # log(1.1)
    # The raw ratio favours the larger batch of every pair even without a bonus: the trend.
    assert all(row["ratio"] > 1 for row in f.table) and len(f.table) == 5
    assert any("CPU" in c for c in f.caveats)


def test_missing_or_empty_studies_are_not_tested_or_inconclusive(tmp_path):
    for check in CHECKS.values():
        (f,) = finalize([check.check({}, tmp_path)])
        assert f.verdict == "not_tested" and f.evidence, check.rule
    spec = {"name": "empty", "objective": "x", "scientific": {"batch_size": [16, 64]}}
    empty = StudyData("empty", spec, [ArmData(f"batch_size={b}", {"batch_size": b},
                                              f"empty[batch_size={b}]", []) for b in (16, 64)])
    studies = {stem: empty for check in CHECKS.values() for stem in check.specs}
    for check in CHECKS.values():
        (f,) = finalize([check.check(studies, tmp_path)])
        assert f.verdict in ("inconclusive", "not_tested") and f.evidence, check.rule


def test_rulebook_specs_are_valid_and_named_by_the_checks():
    stems = {stem for check in CHECKS.values() for stem in check.specs}
    for budget in ("small", "full"):
        found = {p.stem: load_spec(p, check_objective=False)
                 for p in (SPECS / budget).glob("*.yaml")}
        assert stems <= set(found), budget
        for stem in stems:
            spec = found[stem]
            assert spec.name == stem
            rules = {r for r, c in CHECKS.items() if stem in c.specs}
            assert rules <= set(spec.rules)
            if spec.search.sampler == "grid":  # one shared LR grid, searched whole per arm
                assert spec.budget.trials >= len(spec.nuisance["lr"])
