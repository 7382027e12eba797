"""Rules R12-R14: the blog's notes on BatchNorm, weight decay and data augmentation.

`batchnorm` (R12) tunes the learning rate with BatchNorm on and off. `regularization` (R13,
R14) is one 2x2 (or 3x2) factorial study: weight decay off/on crossed with augmentation
off/on, learning rate tuned per cell. R13 compares weight decay on vs off without
augmentation, R14 augmentation on vs off without weight decay, and the remaining cells show
whether weight decay is "the best way" (against augmentation alone) and whether the two add up.
"""

from __future__ import annotations

from typing import Any

from service.rulebook import compare as cmp
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.store.study_data import StudyData

BN_STUDY = "batchnorm"
REG_STUDY = "regularization"
STEPS_MARGIN = 0.10  # a speed-up under 10% of the slower arm's steps is practically none
STABLE_TOLERANCE = 0.05  # an LR "works" when its tuning trial ends within 5 pp of the arm's best


def _largest_lr(runs: cmp.ArmRuns, tolerance: float | None) -> float | None:
    """Largest tuning LR that did not diverge (and, with `tolerance`, ended near the best)."""
    ok = [t for t in runs.tune if t.value is not None and not t.user_attrs.get("diverged")
          and (tolerance is None or runs.best is None or t.value >= runs.best.value - tolerance)]
    return max((float(t.params["lr"]) for t in ok if "lr" in t.params), default=None)


class BatchNormCheck(RuleCheck):
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

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, BN_STUDY, {"batchnorm": True}, {"batchnorm": False})
        if isinstance(got, Finding):
            return got
        study, on, off = got
        acc = cmp.final(study.metric)
        target = cmp.shared_target([on, off], acc)
        speed = cmp.steps_to(target, cmp.steps_per_epoch([on, off]))
        mean = {r.label: cmp.mean(r.values(speed)) for r in (on, off)}
        end = cmp.welch_part("final val accuracy", study.metric, on.values(acc), off.values(acc),
                             +1)
        steps = cmp.welch_part("steps to target", "steps_to_target", on.values(speed),
                               off.values(speed), -1, margin=STEPS_MARGIN * max(mean.values()))
        lrs = {r.label: (_largest_lr(r, None), _largest_lr(r, STABLE_TOLERANCE))
               for r in (on, off)}
        evidence = (
            f"With BatchNorm the net ended at {cmp.pct(cmp.mean(end.a))} vs "
            f"{cmp.pct(cmp.mean(end.b))} without ({cmp.pp(end.effect)}) and reached the target "
            f"in {mean[on.label]:.0f} vs {mean[off.label]:.0f} steps; the largest tuned LR "
            f"within {STABLE_TOLERANCE * 100:g} pp of each arm's best was "
            f"{lrs[on.label][1]} vs {lrs[off.label][1]} ({len(end.a)} and {len(end.b)} seeds).")
        return cmp.finding(
            self, cmp.decide([end, steps]), evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared batchnorm on vs off on seed re-runs: final val accuracy and steps to "
                f"{cmp.TARGET_FRACTION:.0%} of the weaker arm's mean final accuracy, Welch "
                f"t-tests (TOST margins {cmp.ACCURACY_MARGIN * 100:g} pp and "
                f"{STEPS_MARGIN:.0%} of the slower arm's steps); both must hold "
                "(intersection-union test). Largest stable LR read from the tuning trials.")),
            table=[r.row(acc, **{"steps to target": mean[r.label],
                                 "largest LR not diverged": lrs[r.label][0],
                                 "largest LR near best": lrs[r.label][1]}) for r in (on, off)],
            plots=cmp.plots(plot_dir, self.rule, study, [on, off], "R12: BatchNorm on vs off"),
            caveats=cmp.caveats(study, [on, off]), studies=[study.name])


def _augment(values: dict[str, Any]) -> bool:
    return bool(values.get("augment", False))


class WeightDecayCheck(RuleCheck):
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

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        study = studies.get(REG_STUDY)
        if study is None:
            return not_tested(self.rule, self.claim, f"the study {REG_STUDY} did not run")
        # Among several weight decays, the one with the best tuning trial is "on": chosen on
        # tuning trials, tested on fresh seeds, so the choice does not bias the test.
        sign = 1 if study.direction == "maximize" else -1
        tuned = [cmp.arm_runs(study, a) for a in study.arms
                 if float(a.values.get("weight_decay", 0.0)) > 0 and not _augment(a.values)]
        tuned = [r for r in tuned if r.best is not None]
        if not tuned:
            return not_tested(self.rule, self.claim, f"study {study.name} has no weight-decay "
                              "arm without augmentation that completed a tuning trial")
        pick = max(tuned, key=lambda r: sign * r.best.value)  # type: ignore[union-attr]
        got = cmp.load_pair(self, studies, REG_STUDY, pick.arm.values,
                            {**pick.arm.values, "weight_decay": 0.0})
        if isinstance(got, Finding):
            return got
        study, on, off = got
        acc = cmp.final(study.metric)
        end = cmp.welch_part("final val accuracy", study.metric, on.values(acc), off.values(acc),
                             +1)
        gaps = cmp.welch_part("train/val gap", "generalization_gap", on.values(cmp.gap),
                              off.values(cmp.gap), -1)
        caveats = cmp.caveats(study, [on, off])
        aug = cmp.find_arm(study, weight_decay=0.0, augment=True)
        rows = [on, off] + ([cmp.arm_runs(study, aug)] if aug is not None else [])
        versus = ""
        if aug is not None and len(rows[2].values(acc)) > 1:
            test = cmp.welch_part("weight decay vs augmentation", study.metric, on.values(acc),
                                  rows[2].values(acc), +1).test
            versus = (f"; against augmentation alone weight decay was {cmp.pp(test.effect)} "
                      f"(descriptive, p={test.p_value:.3g})" if test.p_value is not None else "")
        evidence = (
            f"Weight decay {pick.arm.values.get('weight_decay'):g} ended at "
            f"{cmp.pct(cmp.mean(end.a))} vs {cmp.pct(cmp.mean(end.b))} without "
            f"({cmp.pp(end.effect)}), with a train/val gap of {cmp.pp(cmp.mean(gaps.a))} vs "
            f"{cmp.pp(cmp.mean(gaps.b))}{versus} ({len(end.a)} and {len(end.b)} seeds).")
        if len(tuned) > 1:
            caveats.append(f"weight decay {pick.arm.values.get('weight_decay'):g} was the best "
                           f"of {len(tuned)} tuned values by tuning trials")
        caveats.append("train accuracy is measured on the training batches during the last "
                       "epoch (augmented, before each update), so the gap is approximate")
        return cmp.finding(
            self, cmp.decide([end, gaps]), evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared weight decay on vs off (no augmentation) on seed re-runs: final val "
                "accuracy and train-minus-val accuracy gap, Welch t-tests with TOST margin "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp; both must hold (intersection-union test).")),
            table=[r.row(acc, gap=cmp.mean(r.values(cmp.gap))) for r in rows],
            plots=cmp.plots(plot_dir, self.rule, study, rows, "R13: weight decay on vs off"),
            caveats=caveats, studies=[study.name])


class AugmentationCheck(RuleCheck):
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

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, REG_STUDY, {"augment": True, "weight_decay": 0.0},
                            {"augment": False, "weight_decay": 0.0})
        if isinstance(got, Finding):
            return got
        study, on, off = got
        acc = cmp.final(study.metric)
        part = cmp.welch_part("final val accuracy", study.metric, on.values(acc),
                              off.values(acc), +1)
        ci = part.test.ci
        evidence = (
            f"With augmentation the net ended at {cmp.pct(cmp.mean(part.a))} vs "
            f"{cmp.pct(cmp.mean(part.b))} without ({cmp.pp(part.effect)}"
            + (f", 95% CI {cmp.pp(ci[0])} to {cmp.pp(ci[1])}" if ci else "")
            + f"), {len(part.a)} and {len(part.b)} seeds.")
        rows = [on, off] + [cmp.arm_runs(study, a) for a in study.arms
                            if a is not on.arm and a is not off.arm]
        return cmp.finding(
            self, cmp.decide([part]), evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared augment on vs off (no weight decay) on seed re-runs: final val "
                f"accuracy, Welch t-test, TOST margin {cmp.ACCURACY_MARGIN * 100:g} pp.")),
            table=[r.row(acc, gap=cmp.mean(r.values(cmp.gap))) for r in rows],
            plots=cmp.plots(plot_dir, self.rule, study, [on, off], "R14: augmentation on vs off"),
            caveats=cmp.caveats(study, [on, off]) + [
                "augmentation: random rotation up to 10 degrees and shifts (digits: 1 pixel); "
                "a short run leaves the augmented arm less time to fit the harder data"],
            studies=[study.name])


CHECKS: list[RuleCheck] = [BatchNormCheck(), WeightDecayCheck(), AugmentationCheck()]
