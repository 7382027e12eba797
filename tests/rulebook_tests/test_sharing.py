"""Identical configurations shared by rule studies are trained once (service.rulebook.sharing):
which arms are identical, and a copied arm the runner resumes as complete (SQLite, no Ray)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from service.plan import make_plan
from service.rulebook.execute import spec_for
from service.rulebook.sharing import SHARED_FROM, Sharer, arm_key
from service.spec import validate_spec
from service.store.storage import open_storage

ROOT = Path(__file__).resolve().parents[2]
MEDIUM = ROOT / "search_spaces" / "rulebook" / "medium"


def _keys(stem: str) -> dict[str, str | None]:
    spec = spec_for(MEDIUM / f"{stem}.yaml", "digits_cnn", 1, [], {})
    plan = make_plan(spec)
    return {arm.label: arm_key(plan, arm) for arm in plan.arms}


def test_the_medium_baseline_arm_is_one_configuration_in_four_studies():
    found = [_keys("batch_arms")["batch_size=64"], _keys("batchnorm")["batchnorm=true"],
             _keys("decay-shape")["decay=cosine"],
             _keys("regularization")["weight_decay=0.0,augment=false"]]
    assert found[0] is not None and len(set(found)) == 1
    assert _keys("batchnorm")["batchnorm=false"] not in found
    # The evidence seeds do not enter the key: a later look of one study shares with another.
    assert spec_for(MEDIUM / "batchnorm.yaml", "digits_cnn", 4, [], {}).budget.seeds == 24


SPEC = {"objective": "digits_cnn", "metric": "val_accuracy", "direction": "maximize",
        "nuisance": {"lr": [0.1, 0.3]},
        "fixed": {"epochs": 2, "batch_size": 64, "weight_decay": 0.0},
        "budget": {"trials": 2, "seeds": 2, "max_concurrent": 1},
        "search": {"sampler": "grid", "pruner": "none", "seed": 0}}


def _trial(plan, arm, lr: float, seed: int, role: str, value: float):
    params = {"lr": lr, "epochs": 2, "batch_size": 64, "weight_decay": 0.0, "seed": seed,
              "batchnorm": True}
    dists = plan.distributions(arm, seed)
    attrs = {"role": role, "node_id": "n", "device": "cpu", "val_accuracy": value,
             **({"stage": "evidence"} if role == "seed" else {})}
    return optuna.trial.create_trial(state=TrialState.COMPLETE, value=value, params=params,
                                     distributions=dists, user_attrs=attrs,
                                     intermediate_values={1: value - 0.1, 2: value})


def test_an_identical_arm_is_copied_and_the_runner_finds_it_done(tmp_path):
    from service.run.ledger import Ledger
    from service.run.study_search import StudySearch

    url = f"sqlite:///{tmp_path / 'share.db'}"
    storage = open_storage(url)
    first = validate_spec({**SPEC, "name": "first", "scientific": {"batchnorm": [True, False]}})
    second = validate_spec({**SPEC, "name": "second", "fixed": {**SPEC["fixed"],
                                                                "batchnorm": True}})
    sharer = Sharer(storage)
    plan = make_plan(first)
    source = plan.arms[0]  # batchnorm=True: second's only arm
    study = optuna.create_study(study_name=source.study_name, storage=storage,
                                direction="maximize")
    for args in ((0.1, 0, "tune", 0.9), (0.3, 0, "tune", 0.95), (0.3, 1000, "seed", 0.94),
                 (0.3, 1001, "seed", 0.93)):
        study.add_trial(_trial(plan, source, *args))
    sharer.register(first)
    assert sharer.share(second) == 4 and sharer.share(second) == 0  # idempotent
    copied = optuna.load_study(study_name="second", storage=storage).get_trials()
    assert {t.user_attrs[SHARED_FROM] for t in copied} == {
        f"{source.study_name}#{i}" for i in range(4)}
    assert StudySearch(make_plan(second), storage, Ledger("maximize")).remaining == 0
    # The copies keep the trial-record contract the dashboard and checks rely on.
    tool = ROOT.parent / "shared" / "tools" / "check_trial_records.py"
    if tool.is_file():
        out = subprocess.run([sys.executable, str(tool), url, "--study", "second"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


def test_arms_whose_trials_depend_on_their_study_are_not_shared():
    tpe = validate_spec({**SPEC, "name": "tpe", "nuisance": {"lr": {"low": 0.1, "high": 1.0}},
                         "search": {"sampler": "tpe", "pruner": "none", "seed": 0}})
    pruned = validate_spec({**SPEC, "name": "asha",
                            "search": {"sampler": "grid", "pruner": "asha", "seed": 0}})
    for spec in (tpe, pruned):
        plan = make_plan(spec)
        assert arm_key(plan, plan.arms[0]) is None
