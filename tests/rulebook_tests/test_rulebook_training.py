"""Calibration of the R5-R8 and R10-R14 checks on worlds with PLANTED effects.

Each world runs `tests/fixtures/planted_training.py` as the runner would, in memory
(`planted_studies.training`), and the real check and `finalize` decide it. A planted effect
in the claimed direction is supported, one against it contradicted, equal arms are
contradicted only by an equivalence test under Holm, and a world where the parameter does
nothing supports nothing.
"""

from __future__ import annotations

import dataclasses

import optuna
import pytest
from optuna.trial import TrialState
from planted_studies import batch, training, warmup, warmup_scan

from service.rulebook import finalize
from service.rulebook.batch import SmallBatchLossNoise
from service.rulebook.compare import steps_to
from service.rulebook.optimizers import (
    AdaGradStallCheck,
    AdamVsMomentumCheck,
    MomentumCheck,
    RMSPropCheck,
)
from service.rulebook.regularization import AugmentationCheck, BatchNormCheck, WeightDecayCheck
from service.rulebook.schedules import CosineCheck, WarmupCheck, find_edge
from service.rulebook.schedules import failed as failed_run
from service.store.study_data import ArmData, StudyData

MOM, ADA = "optimizer-momentum-adam", "optimizer-adagrad-rmsprop"
OPT3 = {"optimizer": ["sgd", "momentum", "adam"]}
OPT2 = {"optimizer": ["adagrad", "rmsprop"]}
SHAPES = {"decay": ["cosine", "constant", "step", "linear", "exponential"]}


def decide(check, stem: str, study: StudyData):
    (f,) = finalize([check.check({stem: study}, None)])
    assert f.evidence and (f.protocol or f.verdict == "not_tested"), check.rule
    return f


@pytest.mark.parametrize(("plant", "verdict"), [
    ({"plant": "optimizer=momentum", "gain": 0.02, "speed": 2.0}, "supported"),
    ({"plant": "optimizer=sgd", "gain": 0.03, "speed": 2.0}, "contradicted")])
def test_r5_momentum(plant, verdict):
    f = decide(MomentumCheck(), MOM, training("r5", OPT3, **plant))
    assert f.verdict == verdict, f.evidence
    assert [p.claim for p in f.parts] == ["fewer steps to target",
                                          "final val accuracy at least as good"]
    assert f.n == [6, 6] and f.decision is not None


@pytest.mark.parametrize(("plant", "verdict"), [
    ({"plant": "optimizer=adagrad", "speed": 3.0}, "supported"),  # near its end by half-way
    ({"plant": "optimizer=rmsprop", "speed": 3.0}, "contradicted")])
def test_r6_adagrad_stall(plant, verdict):
    f = decide(AdaGradStallCheck(), ADA, training("r6", OPT2, decay="constant", **plant))
    assert f.verdict == verdict, f.evidence


@pytest.mark.parametrize(("gain", "verdict", "test"), [
    (0.03, "supported", "welch"), (-0.03, "contradicted", "welch"),
    (0.0, "contradicted", "tost")])
def test_r7_rmsprop(gain, verdict, test):
    f = decide(RMSPropCheck(), ADA, training("r7", OPT2, plant="optimizer=rmsprop", gain=gain,
                                             noise=0.001, decay="constant"))
    assert f.verdict == verdict and f.decision["test"] == test, f.evidence
    assert f.decision["p_adjusted"] <= 0.05


@pytest.mark.parametrize(("plant", "verdict", "part"), [
    ({"plant": "optimizer=adam", "early": 0.08, "gain": -0.02}, "supported", None),
    ({"plant": "optimizer=adam", "gain": 0.02}, "contradicted", "momentum ahead at the end")])
def test_r8_adam_vs_momentum(plant, verdict, part):
    f = decide(AdamVsMomentumCheck(), MOM, training("r8", OPT3, **plant))
    assert f.verdict == verdict, f.evidence
    if part:
        assert f.decision["part"] == part


def r10(**world):
    return WarmupCheck().check({"warmup-edge": warmup_scan(**world),
                                "warmup-large-lr": warmup(**world)}, None)


def test_r10_places_its_arms_above_the_edge_the_scan_found():
    scan = warmup_scan(diverge_lr=0.5)  # no warmup diverges above 0.5, warmup above 15
    edge = find_edge(scan)
    assert edge.stable == pytest.approx(0.316228) and edge.above == pytest.approx(
        [0.562341, 1.0])
    spec = {"scientific": {"lr": [1.0], "warmup_epochs": [0.0, 2.0]}}
    placed = WarmupCheck().adapt("warmup-large-lr", spec, {"warmup-edge": scan})
    assert placed["scientific"]["lr"] == edge.above
    assert WarmupCheck().adapt("warmup-edge", spec, {}) is spec


def test_r10_moves_with_an_objective_whose_stable_lrs_lie_low():
    # Stable LRs far below any fixed grid: the arms follow the edge down, not "move the grid".
    low = find_edge(warmup_scan(diverge_lr=0.002))
    assert low.stable == pytest.approx(0.001778, rel=1e-3)
    assert low.above == pytest.approx([0.003162, 0.005623], rel=1e-3)
    with pytest.raises(ValueError, match="cannot be placed"):
        WarmupCheck().adapt("warmup-large-lr", {"scientific": {"lr": [1.0]}},
                            {"warmup-edge": warmup_scan(diverge_lr=0.0, lr_sensitivity=0.0)})


def test_r10_warmup_counts_failed_divergences():
    (f,) = finalize([r10(diverge_lr=0.5)])
    assert f.verdict == "supported", f.evidence
    assert "stable without warmup at 0.3162" in f.evidence
    assert sorted({row["lr"] for row in f.table}) == pytest.approx([0.562341, 1.0])
    # A diverged run whose metric was NaN is a FAIL with fail_reason "diverged" and no
    # `diverged` attribute: records.diverged counts it (schedules.py's old copy did not).
    study = warmup(diverge_lr=0.5)
    def as_fail(t):
        if not t.user_attrs.get("diverged"):
            return t
        attrs = {k: v for k, v in t.user_attrs.items() if k != "diverged"}
        return optuna.trial.create_trial(
            state=TrialState.FAIL, params=t.params, distributions=t.distributions,
            user_attrs={**attrs, "fail_reason": "diverged"},
            intermediate_values=t.intermediate_values)
    failed = dataclasses.replace(study, arms=[
        dataclasses.replace(a, trials=[as_fail(t) for t in a.trials]) for a in study.arms])
    (g,) = finalize([WarmupCheck().check({"warmup-edge": warmup_scan(diverge_lr=0.5),
                                          "warmup-large-lr": failed}, None)])
    assert g.parts[1].claim.startswith("failure rate lower")
    assert g.parts[1].samples == f.parts[1].samples


def test_r10_a_run_at_chance_accuracy_failed():
    from planted_studies import run_trial
    from planted_training import training_world

    t = run_trial(training_world, {"lr": 0.1, "epochs": 2, "gain": -0.9, "plant": "lr=0.1"},
                  "val_accuracy", 0, "seed")
    assert t.state == TrialState.COMPLETE and failed_run(t, "val_accuracy")


@pytest.mark.parametrize(("gain", "verdict"), [(-0.03, "supported"), (0.03, "contradicted")])
def test_r11_cosine_is_tested_against_every_other_shape(gain, verdict):
    f = decide(CosineCheck(), "decay-shape",
               training("r11", SHAPES, seeds=8, noise=0.001, plant="decay=constant", gain=gain))
    assert f.verdict == verdict, f.evidence
    assert [p.claim for p in f.parts] == [
        "cosine above constant", "cosine no worse than decay=step",
        "cosine no worse than decay=linear", "cosine no worse than decay=exponential"]


@pytest.mark.parametrize(("gain", "verdict"), [(0.02, "supported"), (-0.02, "contradicted")])
def test_r12_batchnorm(gain, verdict):
    f = decide(BatchNormCheck(), "batchnorm",
               training("r12", {"batchnorm": [True, False]}, plant="batchnorm=true", gain=gain,
                        speed=2.0 if gain > 0 else 0.5))
    assert f.verdict == verdict, f.evidence


@pytest.mark.parametrize(("plant", "verdict"), [
    ({"gain": 0.02, "gap": -0.02}, "supported"), ({"gain": -0.03}, "contradicted")])
def test_r13_weight_decay(plant, verdict):
    study = training("r13", {"weight_decay": [0.0, 0.0005], "augment": [False, True]},
                     plant="weight_decay=0.0005", **plant)
    f = decide(WeightDecayCheck(), "regularization", study)
    assert f.verdict == verdict, f.evidence
    assert [p.claim for p in f.parts] == ["final val accuracy higher", "train/val gap narrower"]


@pytest.mark.parametrize(("gain", "verdict", "test"), [
    (0.02, "supported", "welch"), (-0.02, "contradicted", "welch"),
    (0.0, "contradicted", "tost")])
def test_r14_augmentation(gain, verdict, test):
    study = training("r14", {"augment": [False, True]}, plant="augment=true", gain=gain,
                     noise=0.0005, weight_decay=0.0)
    f = decide(AugmentationCheck(), "regularization", study)
    assert f.verdict == verdict and f.decision["test"] == test, f.evidence
    # R13 has no weight-decay arm in this study: said so, not guessed.
    assert decide(WeightDecayCheck(), "regularization", study).verdict == "not_tested"


def test_null_worlds_support_nothing_across_repeated_studies():
    # Noise only: neither the parameter nor the LR changes the expected accuracy.
    findings = [AugmentationCheck().check({"regularization": training(
        f"null-{w}", {"augment": [False, True]}, noise=0.01, weight_decay=0.0, world=w,
        lr_sensitivity=0.0)}, None) for w in range(8)]
    finalize(findings)
    assert not [f.evidence for f in findings if f.verdict == "supported"]
    # With 1 pp noise and 6 seeds nothing is equivalent within 0.5 pp either.
    assert all(f.verdict == "inconclusive" and "seeds per arm" in f.more_needed
               for f in findings)


def test_an_arm_tuned_to_the_edge_of_its_range_is_not_decided(monkeypatch):
    import planted_studies

    monkeypatch.setattr(planted_studies, "TRAINING_LRS", [0.1, 0.3, 1.0])  # best 0.1: an edge
    study = training("edge", OPT2, plant="optimizer=rmsprop", gain=0.03, decay="constant")
    f = decide(RMSPropCheck(), ADA, study)
    assert f.verdict == "inconclusive" and f.decision is None
    assert "low edge" in f.undecided_because and f.search_space_warnings
    assert {w["param"] for w in f.search_space_warnings} == {"lr"}
    assert f.parts[0].verdict == "supported"  # the test alone would have decided


def test_unfinished_trials_are_dropped_from_divergence_counts():
    # A trial whose worker was lost is neither an outcome nor spent budget (records.py);
    # batch.py's old copy dropped only "error" and "interrupted", so it counted it.
    studies = batch("lost", lr_exponent=1.0, osc_exponent=1.0, curvature=0.15)
    arms = studies["batch_arms"]
    model = arms.arms[0].trials[0]
    lost = optuna.trial.create_trial(state=TrialState.FAIL, params=model.params,
                                     distributions=model.distributions,
                                     user_attrs={"role": "tune", "fail_reason": "worker_lost"})
    before = SmallBatchLossNoise().check(studies, None).table[0]["LR grid diverged"]
    first = arms.arms[0]
    studies["batch_arms"] = dataclasses.replace(arms, arms=[
        ArmData(first.label, first.values, first.study_name, [*first.trials, lost]),
        *arms.arms[1:]])
    after = SmallBatchLossNoise().check(studies, None).table[0]["LR grid diverged"]
    assert before == after


def test_steps_to_target_interpolates_within_the_epoch_and_censors_misses():
    trial = optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.5, 2: 0.8, 3: 0.9})
    assert steps_to(0.7, 10.0)(trial) == pytest.approx((1 + 0.2 / 0.3) * 10)
    assert steps_to(0.4, 10.0)(trial) == pytest.approx(10)
    assert steps_to(0.95, 10.0)(trial) == pytest.approx(40)  # never: one epoch past the end


def test_only_evidence_runs_are_evidence():
    # Candidate re-runs that chose the configuration (stage "select") are not evidence, even
    # when they would flip the comparison; runs without a stage (older storages) are.
    study = training("sel", OPT2, plant="optimizer=rmsprop", gain=0.03, decay="constant")
    base = decide(RMSPropCheck(), ADA, study)

    def with_select(arm: ArmData) -> ArmData:
        seed = next(t for t in arm.trials if t.user_attrs.get("role") == "seed")
        wild = 0.99 if "adagrad" in arm.label else 0.5
        extra = [optuna.trial.create_trial(
            value=wild, params=seed.params, distributions=seed.distributions,
            intermediate_values={8: wild},
            user_attrs={**seed.user_attrs, "stage": "select", "val_accuracy": wild})
            for _ in range(4)]
        return ArmData(arm.label, arm.values, arm.study_name, [*arm.trials, *extra])

    selected = StudyData(study.name, study.spec, [with_select(a) for a in study.arms])
    f = decide(RMSPropCheck(), ADA, selected)
    assert (f.verdict, f.effect, f.n) == (base.verdict, base.effect, base.n)
    old = StudyData(study.name, study.spec, [ArmData(a.label, a.values, a.study_name, [
        optuna.trial.create_trial(
            value=t.value, params=t.params, distributions=t.distributions,
            intermediate_values=t.intermediate_values,
            user_attrs={k: v for k, v in t.user_attrs.items() if k != "stage"})
        for t in a.trials]) for a in study.arms])
    assert decide(RMSPropCheck(), ADA, old).effect == pytest.approx(base.effect)
