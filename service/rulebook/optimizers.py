"""Rules R5-R8: the blog's optimizer notes (momentum, AdaGrad, RMSProp, Adam).

Two studies serve the four rules. `optimizer-momentum-adam` (R5, R8) has arms plain SGD,
SGD with momentum and Adam, all with cosine decay, each with its own tuned learning rate
and weight decay. `optimizer-adagrad-rmsprop` (R6, R7) has arms AdaGrad and RMSProp (and Adam
in the full budget) with a *constant* learning rate, so the only decay of the effective
learning rate is the optimizer's own, which is what R6 is about.
"""

from __future__ import annotations

import math
from typing import Any

from service.rulebook import compare as cmp
from service.rulebook._base import Finding, RuleCheck
from service.store.study_data import StudyData

MOMENTUM_STUDY = "optimizer-momentum-adam"
ADAPTIVE_STUDY = "optimizer-adagrad-rmsprop"
STEPS_MARGIN = 0.10  # a speed-up under 10% of the slower arm's steps is practically none
CEILING = 0.97  # half-way accuracy above this leaves little to gain late: say so


def _opt(name: str) -> dict[str, Any]:
    return {"optimizer": name}


def _epochs(study: StudyData, runs: list[cmp.ArmRuns]) -> int:
    fixed = study.spec.get("fixed", {}).get("epochs")
    return int(fixed) if fixed else max(cmp.planned_epochs(t) for r in runs for t in r.runs)


class MomentumCheck(RuleCheck):
    rule = "R5"
    claim = ("SGD with momentum reaches a target val accuracy in fewer steps than plain SGD "
             "and ends at least as good (within 0.5 pp), each arm with its own tuned LR")
    blog_zh = "动量移动得更快 / 动量有机会逃脱局部极小值 / 代价是引入了另一个超参数"
    blog_en = ("Momentum moves faster; momentum has a chance to escape local minima; the price "
               "is one more hyperparameter.")
    literature = (
        "Choi et al. 2019 show that an optimizer containing another as a special case "
        "(momentum 0 is plain SGD) never does worse once both are fully tuned, so 'ends at "
        "least as good' is expected; speed at a fixed momentum of 0.9 is not what they test. "
        "The Tuning Playbook re-tunes the learning rate for every optimizer compared, since "
        "momentum changes the effective step (roughly lr/(1-momentum)); that is the protocol "
        "here.")
    specs = (MOMENTUM_STUDY,)
    needs = ("optimizer", "lr", "momentum")

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, MOMENTUM_STUDY, _opt("momentum"), _opt("sgd"))
        if isinstance(got, Finding):
            return got
        study, mom, sgd = got
        acc = cmp.final(study.metric)
        target = cmp.shared_target([mom, sgd], acc)
        speed = cmp.steps_to(target, cmp.steps_per_epoch([mom, sgd]))
        mean = {r.label: cmp.mean(r.values(speed)) for r in (mom, sgd)}
        steps = cmp.welch_part("steps to target", "steps_to_target", mom.values(speed),
                               sgd.values(speed), -1, margin=STEPS_MARGIN * max(mean.values()))
        end = cmp.welch_part("final val accuracy", study.metric, mom.values(acc),
                             sgd.values(acc), +1, difference=False)
        decision = cmp.decide([steps, end])
        never = {r.label: sum(1 for t in r.runs if not any(
            v >= target for v in t.intermediate_values.values())) for r in (mom, sgd)}
        ci = steps.test.ci
        evidence = (
            f"Momentum reached {cmp.pct(target)} val accuracy in {mean[mom.label]:.0f} steps "
            f"vs {mean[sgd.label]:.0f} for plain SGD (difference {steps.effect:+.0f}"
            + (f", 95% CI {ci[0]:+.0f} to {ci[1]:+.0f}" if ci else "")
            + f") and ended {cmp.pp(end.effect)} against it "
            f"({cmp.pct(cmp.mean(mom.values(acc)))} vs {cmp.pct(cmp.mean(sgd.values(acc)))}), "
            f"{len(mom.values(acc))} and {len(sgd.values(acc))} seeds.")
        caveats = cmp.caveats(study, [mom, sgd]) + [
            "escaping local minima is not measured: no objective here exposes them",
            f"target = {cmp.TARGET_FRACTION:.0%} of the weaker arm's mean final accuracy; runs "
            "that never reached it count as one epoch past the end ("
            + ", ".join(f"{label}: {k}" for label, k in never.items()) + ")"]
        return cmp.finding(
            self, decision, evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared momentum vs sgd on seed re-runs: steps to target by Welch t-test "
                f"(TOST margin {STEPS_MARGIN:.0%} of the slower arm's steps), final accuracy by "
                f"a one-sided non-inferiority Welch test at {cmp.ACCURACY_MARGIN * 100:g} pp; "
                "both must hold (intersection-union test).")),
            table=[r.row(acc, **{"steps to target": mean[r.label],
                                 "never reached": never[r.label]}) for r in (mom, sgd)],
            plots=cmp.plots(plot_dir, self.rule, study, [mom, sgd],
                            "R5: momentum vs plain SGD (cosine decay)"),
            caveats=caveats, studies=[study.name])


class AdaGradStallCheck(RuleCheck):
    rule = "R6"
    claim = ("With a constant learning rate tuned per arm, AdaGrad gains less val accuracy in "
             "the second half of training than RMSProp")
    blog_zh = "梯度的平方和只会增加，会导致有效学习率过早和过量的减小"
    blog_en = ("The sum of squared gradients only grows, so the effective learning rate shrinks "
               "too early and too much.")
    literature = (
        "Wilson et al. 2017 tuned AdaGrad and RMSProp among other optimizers and found the "
        "adaptive methods generalize worse than tuned SGD, without isolating a late stall. "
        "Choi et al. 2019 show rankings of optimizers move once more of their hyperparameters "
        "are tuned; here only the learning rate is, and a larger tuned rate can offset "
        "AdaGrad's shrinking steps.")
    specs = (ADAPTIVE_STUDY,)
    needs = ("optimizer", "lr", "decay")

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, ADAPTIVE_STUDY, _opt("adagrad"), _opt("rmsprop"),
                            cmp.late_gain)
        if isinstance(got, Finding):
            return got
        study, ada, rms = got
        epochs = _epochs(study, [ada, rms])
        part = cmp.welch_part("val accuracy gained in the second half", "late_gain",
                              ada.values(cmp.late_gain), rms.values(cmp.late_gain), -1)
        decision = cmp.decide([part])
        runs = [ada, rms]
        adam = cmp.find_arm(study, optimizer="adam")
        if adam is not None:
            runs.append(cmp.arm_runs(study, adam))  # shown beside them, not tested
        mid = cmp.value_at(max(1, epochs // 2))

        def avg(r: cmp.ArmRuns, fn: cmp.RunValue) -> float:
            return cmp.mean(r.values(fn))

        caveats = cmp.caveats(study, runs)
        high = [r.label for r in (ada, rms) if avg(r, mid) > CEILING]
        if high:
            caveats.append(f"{', '.join(high)} already above {cmp.pct(CEILING)} at epoch "
                           f"{epochs // 2}: little is left to gain, so a small late gain may be "
                           "a ceiling, not a stall")
        evidence = (
            f"From epoch {epochs // 2} to {epochs}, AdaGrad gained "
            f"{cmp.pp(avg(ada, cmp.late_gain))} and RMSProp {cmp.pp(avg(rms, cmp.late_gain))} "
            f"(difference {cmp.pp(part.effect)}), "
            f"{len(ada.values(cmp.late_gain))} and {len(rms.values(cmp.late_gain))} seeds.")
        return cmp.finding(
            self, decision, evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared adagrad vs rmsprop on seed re-runs: accuracy at the last epoch minus "
                f"at epoch {epochs // 2}, Welch t-test, TOST margin "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp.")),
            table=[r.row(cmp.final(study.metric), **{
                f"acc at epoch {epochs // 2}": avg(r, mid),
                "late gain": avg(r, cmp.late_gain)}) for r in runs],
            plots=cmp.plots(plot_dir, self.rule, study, runs,
                            "R6: AdaGrad vs RMSProp, constant LR"),
            caveats=caveats, studies=[study.name])


class RMSPropCheck(RuleCheck):
    rule = "R7"
    claim = "RMSProp ends with a higher val accuracy than AdaGrad, each with its own tuned LR"
    blog_zh = ("RMSProp 算法修改AdaGrad，改变梯度积累为指数加权的移动平均，也可以理解为添加衰减"
               "因子来控制梯度积累的大小，保证学习率在一个可控范围。")
    blog_en = ("RMSProp modifies AdaGrad by turning the gradient accumulation into an "
               "exponentially weighted moving average, i.e. a decay factor that bounds the "
               "accumulation and keeps the learning rate in a controlled range.")
    literature = (
        "Wilson et al. 2017 tuned both (with SGD and Adam) and report the adaptive methods "
        "behind tuned SGD; which of the two leads is not their point. Choi et al. 2019 warn "
        "that such rankings depend on what is tuned: here the learning rate only, with "
        "PyTorch's default epsilon and RMSProp decay (0.99).")
    specs = (ADAPTIVE_STUDY,)
    needs = ("optimizer", "lr", "decay")

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, ADAPTIVE_STUDY, _opt("rmsprop"), _opt("adagrad"))
        if isinstance(got, Finding):
            return got
        study, rms, ada = got
        acc = cmp.final(study.metric)
        part = cmp.welch_part("final val accuracy", study.metric, rms.values(acc),
                              ada.values(acc), +1)
        ci = part.test.ci
        evidence = (
            f"RMSProp ended at {cmp.pct(cmp.mean(rms.values(acc)))} and AdaGrad at "
            f"{cmp.pct(cmp.mean(ada.values(acc)))} (difference {cmp.pp(part.effect)}"
            + (f", 95% CI {cmp.pp(ci[0])} to {cmp.pp(ci[1])}" if ci else "")
            + f"), {len(rms.values(acc))} and {len(ada.values(acc))} seeds.")
        return cmp.finding(
            self, cmp.decide([part]), evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared rmsprop vs adagrad on seed re-runs: final val accuracy, Welch t-test, "
                f"TOST margin {cmp.ACCURACY_MARGIN * 100:g} pp.")),
            table=[r.row(acc) for r in (rms, ada)],
            plots=cmp.plots(plot_dir, self.rule, study, [rms, ada],
                            "R7: RMSProp vs AdaGrad, constant LR"),
            caveats=cmp.caveats(study, [rms, ada]), studies=[study.name])


class AdamVsMomentumCheck(RuleCheck):
    rule = "R8"
    claim = ("With cosine decay and LR and weight decay tuned per arm, Adam is ahead of "
             "momentum SGD in val accuracy after the first quarter of training, and momentum "
             "is ahead at the end")
    blog_zh = ("根据我的经验，Adam比较快，但是泛化能力不会太好，momentum较为慢，但是结合余弦衰减的"
               "学习率，收敛效果极好。")
    blog_en = ("In my experience Adam is fast but does not generalize very well; momentum is "
               "slower, but combined with a cosine-decayed learning rate it converges very well.")
    literature = (
        "Wilson et al. 2017 agree with the blog (adaptive methods generalize worse than tuned "
        "momentum SGD); Choi et al. 2019 disagree once epsilon and the other hyperparameters "
        "are tuned too (Adam never underperforms). Loshchilov & Hutter (AdamW) show L2 "
        "regularization, used here for Adam, is weaker than decoupled weight decay, and "
        "(SGDR) that cosine decay suits momentum SGD.")
    specs = (MOMENTUM_STUDY,)
    needs = ("optimizer", "lr", "weight_decay", "decay")

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, MOMENTUM_STUDY, _opt("adam"), _opt("momentum"))
        if isinstance(got, Finding):
            return got
        study, adam, mom = got
        acc = cmp.final(study.metric)
        early_epoch = max(1, math.ceil(_epochs(study, [adam, mom]) / 4))
        early = cmp.value_at(early_epoch)
        end = cmp.welch_part("final val accuracy", study.metric, adam.values(acc),
                             mom.values(acc), -1)
        start = cmp.welch_part(f"val accuracy at epoch {early_epoch}", f"{study.metric}@"
                               f"{early_epoch}", adam.values(early), mom.values(early), +1)
        decision = cmp.decide([end, start])
        evidence = (
            f"At epoch {early_epoch} Adam was {cmp.pp(start.effect)} against momentum "
            f"({cmp.pct(cmp.mean(start.a))} vs {cmp.pct(cmp.mean(start.b))}); at the end "
            f"{cmp.pp(end.effect)} ({cmp.pct(cmp.mean(end.a))} vs {cmp.pct(cmp.mean(end.b))}), "
            f"{len(end.a)} and {len(end.b)} seeds.")
        return cmp.finding(
            self, decision, evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared adam vs momentum on seed re-runs: final and early (epoch "
                f"{early_epoch}) val accuracy, Welch t-tests with TOST margin "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp; both parts must hold "
                "(intersection-union test).")),
            table=[r.row(acc, **{f"acc at epoch {early_epoch}": cmp.mean(r.values(early)),
                                 "best weight_decay": (r.best.params.get("weight_decay")
                                                       if r.best else None)})
                   for r in (adam, mom)],
            plots=cmp.plots(plot_dir, self.rule, study, [adam, mom],
                            "R8: Adam vs momentum, both cosine"),
            caveats=cmp.caveats(study, [adam, mom]) + [
                "Adam uses L2 regularization (weight decay added to the gradient), not AdamW"],
            studies=[study.name])


CHECKS: list[RuleCheck] = [MomentumCheck(), AdaGradStallCheck(), RMSPropCheck(),
                           AdamVsMomentumCheck()]
