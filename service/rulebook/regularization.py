"""Rules R12-R14: the blog's notes on BatchNorm, weight decay and data augmentation.

`batchnorm` (R12) tunes the learning rate with BatchNorm on and off. `regularization` (R13,
R14) is one 2x2 (or 3x2) factorial study: weight decay off/on crossed with augmentation
off/on, learning rate tuned per cell. R13 compares weight decay on vs off without
augmentation, R14 augmentation on vs off without weight decay, and the remaining cells show
whether weight decay is "the best way" (against augmentation alone) and whether the two add up.
"""

from __future__ import annotations

from typing import Any

from service import records
from service.rulebook import compare as cmp
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook.decision import Part
from service.rulebook.describe import mean, pct, pp
from service.store.study_data import StudyData

BN_STUDY = "batchnorm"
REG_STUDY = "regularization"
STEPS_MARGIN = 0.10  # a speed-up under 10% of the slower arm's steps is practically none
STABLE_TOLERANCE = 0.05  # an LR "works" when its tuning trial ends within 5 pp of the arm's best


def _largest_lr(runs: cmp.ArmRuns, tolerance: float | None) -> float | None:
    """Largest tuning LR that did not diverge (and, with `tolerance`, ended near the best)."""
    ok = [t for t in runs.tune if records.finite(t.value) and not records.diverged(t)
          and (tolerance is None or runs.best is None or t.value >= runs.best.value - tolerance)]
    return max((float(t.params["lr"]) for t in ok if "lr" in t.params), default=None)


class BatchNormCheck(cmp.PairCheck):
    rule = "R12"
    claim = ("With the LR tuned per arm, a conv net with BatchNorm ends with a higher val "
             "accuracy than without, and reaches a target accuracy in fewer steps")
    blog_zh = "卷积网络中添加batchnorm层重新规范特征的分布，也保证了梯度的传播。"
    blog_en = ("Adding BatchNorm layers to a conv net re-normalizes the distribution of the "
               "features and also keeps gradients propagating.")
    literature = (
        "Ioffe & Szegedy 2015 report the same accuracy in far fewer steps and stable training "
        "at higher learning rates with BatchNorm; Santurkar et al. 2018 agree on the benefit but "
        "trace it to a smoother loss landscape rather than re-normalized feature distributions, "
        "closer to the blog's second reason (gradient flow) than its first.")
    specs = (BN_STUDY,)
    needs = ("batchnorm", "lr")
    study, arms, title = BN_STUDY, ({"batchnorm": True}, {"batchnorm": False}), \
        "R12: BatchNorm on vs off"

    def estimate(self, loaded: Any) -> list[Part]:
        study, on, off = loaded
        acc = cmp.final(study.metric)
        speed = cmp.speed_to_target(on, off, acc)
        slower = max(mean(on.values(speed)), mean(off.values(speed)))
        return [cmp.pair_part("final val accuracy higher", study.metric, on, off, acc,
                              claimed_sign=+1),
                cmp.pair_part("fewer steps to target", "steps_to_target", on, off, speed,
                              claimed_sign=-1, margin=STEPS_MARGIN * slower)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, on, off = loaded
        acc = cmp.final(study.metric)
        end, steps = parts
        means = {label: mean(v) for label, v in steps.samples.items()}
        lrs = {r.label: (_largest_lr(r, None), _largest_lr(r, STABLE_TOLERANCE))
               for r in (on, off)}
        evidence = (
            f"With BatchNorm the net ended at {pct(mean(on.values(acc)))} vs "
            f"{pct(mean(off.values(acc)))} without ({pp(end.effect)}) and reached the target "
            f"in {means[on.label]:.0f} vs {means[off.label]:.0f} steps; the largest tuned LR "
            f"within {STABLE_TOLERANCE * 100:g} pp of each arm's best was "
            f"{lrs[on.label][1]} vs {lrs[off.label][1]} ({len(on.values(acc))} and "
            f"{len(off.values(acc))} seeds).")
        return cmp.pair_finding(
            self, study, [on, off], parts, evidence=evidence,
            how=("Compared batchnorm on vs off on seed re-runs: final val accuracy and steps to "
                 f"{cmp.TARGET_FRACTION:.0%} of the weaker arm's mean final accuracy, Welch "
                 f"t-tests (TOST margins {cmp.ACCURACY_MARGIN * 100:g} pp and "
                 f"{STEPS_MARGIN:.0%} of the slower arm's steps); both must hold "
                 "(intersection-union). Largest stable LR read from the tuning trials."),
            table=[r.row(acc, **{"steps to target": means[r.label],
                                 "largest LR not diverged": lrs[r.label][0],
                                 "largest LR near best": lrs[r.label][1]}) for r in (on, off)])


def _augment(values: dict[str, Any]) -> bool:
    return bool(values.get("augment", False))


def _weight_decay_arm(study: StudyData) -> tuple[cmp.ArmRuns | None, int]:
    """(the weight-decay arm without augmentation whose best tuning trial is best, how many
    there were). Chosen on tuning trials, tested on fresh seeds: the choice does not bias the
    test; of equal bests the earlier trial wins."""
    tuned = [cmp.arm_runs(study, a) for a in study.arms
             if float(a.values.get("weight_decay", 0.0)) > 0 and not _augment(a.values)]
    tuned = [r for r in tuned if r.best is not None]
    sign = records.sign(study.direction)
    pick = max(tuned, key=lambda r: (sign * r.best.value, -r.best.number),  # type: ignore
               default=None)
    return pick, len(tuned)


class WeightDecayCheck(cmp.PairCheck):
    rule = "R13"
    claim = ("With the LR tuned per arm, weight decay raises val accuracy and narrows the "
             "train/val accuracy gap (without augmentation)")
    blog_zh = "较为重要但有没什么好说的，约束参数值是目前提升泛化的最好办法。"
    blog_en = ("Fairly important but there is not much to say: constraining the parameter "
               "values is currently the best way to improve generalization.")
    literature = (
        "Loshchilov & Hutter (AdamW) show L2 and decoupled weight decay differ for adaptive "
        "optimizers but coincide, up to a rescaled coefficient, for the momentum SGD used here. "
        "The Tuning Playbook treats weight decay as one regularizer to tune among several "
        "(augmentation, dropout, label smoothing), not as the best one; 'the best way' is "
        "only compared with augmentation here, descriptively.")
    specs = (REG_STUDY,)
    needs = ("weight_decay", "lr")
    study, title = REG_STUDY, "R13: weight decay on vs off"

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        study = studies.get(REG_STUDY)
        if study is None:
            return not_tested(self.rule, self.claim, f"the study {REG_STUDY} did not run")
        pick, _ = _weight_decay_arm(study)
        if pick is None:
            return not_tested(self.rule, self.claim, f"study {study.name} has no weight-decay "
                              "arm without augmentation that completed a tuning trial")
        return cmp.load_pair(self, studies, REG_STUDY, pick.arm.values,
                             {**pick.arm.values, "weight_decay": 0.0})

    def estimate(self, loaded: Any) -> list[Part]:
        study, on, off = loaded
        return [cmp.pair_part("final val accuracy higher", study.metric, on, off,
                              cmp.final(study.metric), claimed_sign=+1),
                cmp.pair_part("train/val gap narrower", "generalization_gap", on, off, cmp.gap,
                              claimed_sign=-1)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, on, off = loaded
        acc = cmp.final(study.metric)
        end, gaps = parts
        aug = cmp.find_arm(study, weight_decay=0.0, augment=True)
        shown = [cmp.arm_runs(study, aug)] if aug is not None else []
        versus = ""
        if shown and len(shown[0].values(acc)) > 1:
            test = cmp.pair_part("vs augmentation", study.metric, on, shown[0], acc,
                                 claimed_sign=+1)
            versus = (f"; against augmentation alone weight decay was {pp(test.effect)} "
                      "(descriptive, not in the Holm family)")
        wd, n_tuned = on.arm.values.get("weight_decay"), _weight_decay_arm(study)[1]
        evidence = (
            f"Weight decay {wd:g} ended at {pct(mean(on.values(acc)))} vs "
            f"{pct(mean(off.values(acc)))} without ({pp(end.effect)}), with a train/val gap of "
            f"{pp(mean(on.values(cmp.gap)))} vs {pp(mean(off.values(cmp.gap)))}{versus} "
            f"({len(on.values(acc))} and {len(off.values(acc))} seeds).")
        extra = ([f"weight decay {wd:g} was the best of {n_tuned} tuned values by tuning trials"]
                 if n_tuned > 1 else [])
        extra.append("train accuracy is measured on the training batches during the last "
                     "epoch (augmented, before each update), so the gap is approximate")
        return cmp.pair_finding(
            self, study, [on, off], parts, evidence=evidence, shown=shown, extra_caveats=extra,
            how=("Compared weight decay on vs off (no augmentation) on seed re-runs: final val "
                 "accuracy and train-minus-val accuracy gap, Welch t-tests with TOST margin "
                 f"{cmp.ACCURACY_MARGIN * 100:g} pp; both must hold (intersection-union)."),
            table=[r.row(acc, gap=mean(r.values(cmp.gap))) for r in (on, off, *shown)])


class AugmentationCheck(cmp.PairCheck):
    rule = "R14"
    claim = ("With the LR tuned per arm, data augmentation raises val accuracy (without "
             "weight decay)")
    blog_zh = ("在监督学习中，数据预处理能一定程度的提升泛化能力，这个环节很重要，"
               "不过也需要根据实际情况做处理，就不多说了。")
    blog_en = ("In supervised learning, data preprocessing can improve generalization to some "
               "degree; this step is important, but it must suit the actual situation, so I "
               "will not say more.")
    literature = (
        "None of the listed papers isolates augmentation; the Tuning Playbook lists it among "
        "the regularizers whose benefit depends on model, data and training length, which is "
        "why the learning rate is tuned with it here rather than shared. Its benefit usually "
        "grows with longer training, so a short run tests the hard end of the claim.")
    specs = (REG_STUDY,)
    needs = ("augment", "lr")
    study, title = REG_STUDY, "R14: augmentation on vs off"
    arms = ({"augment": True, "weight_decay": 0.0}, {"augment": False, "weight_decay": 0.0})

    def estimate(self, loaded: Any) -> list[Part]:
        study, on, off = loaded
        return [cmp.pair_part("final val accuracy higher", study.metric, on, off,
                              cmp.final(study.metric), claimed_sign=+1)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, on, off = loaded
        acc = cmp.final(study.metric)
        ci = parts[0].ci
        evidence = (
            f"With augmentation the net ended at {pct(mean(on.values(acc)))} vs "
            f"{pct(mean(off.values(acc)))} without ({pp(parts[0].effect)}"
            + (f", 95% CI {pp(ci[0])} to {pp(ci[1])}" if ci else "")
            + f"), {len(on.values(acc))} and {len(off.values(acc))} seeds.")
        shown = [cmp.arm_runs(study, a) for a in study.arms
                 if a is not on.arm and a is not off.arm]
        return cmp.pair_finding(
            self, study, [on, off], parts, evidence=evidence,
            how=("Compared augment on vs off (no weight decay) on seed re-runs: final val "
                 f"accuracy, Welch t-tests, TOST margin {cmp.ACCURACY_MARGIN * 100:g} pp."),
            table=[r.row(acc, gap=mean(r.values(cmp.gap))) for r in (on, off, *shown)],
            extra_caveats=["augmentation: random rotation up to 10 degrees and shifts (digits: "
                           "1 pixel); a short run leaves the augmented arm less time to fit the "
                           "harder data"])


CHECKS: list[RuleCheck] = [BatchNormCheck(), WeightDecayCheck(), AugmentationCheck()]
