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
from service.rulebook.decision import Part
from service.rulebook.describe import mean, pct, pp
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


class MomentumCheck(cmp.PairCheck):
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
    study, arms, title = MOMENTUM_STUDY, (_opt("momentum"), _opt("sgd")), \
        "R5: momentum vs plain SGD (cosine decay)"

    def estimate(self, loaded: Any) -> list[Part]:
        study, mom, sgd = loaded
        acc = cmp.final(study.metric)
        speed = cmp.speed_to_target(mom, sgd, acc)
        slower = max(mean(mom.values(speed)), mean(sgd.values(speed)))
        return [cmp.pair_part("fewer steps to target", "steps_to_target", mom, sgd, speed,
                              claimed_sign=-1, margin=STEPS_MARGIN * slower),
                cmp.pair_part("final val accuracy at least as good", study.metric, mom, sgd,
                              acc, claimed_sign=+1, noninferior=True)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, mom, sgd = loaded
        acc = cmp.final(study.metric)
        steps, end = parts
        target = cmp.shared_target([mom, sgd], acc)
        never = {r.label: sum(1 for t in r.runs if not any(
            v >= target for v in t.intermediate_values.values())) for r in (mom, sgd)}
        means = {label: mean(v) for label, v in steps.samples.items()}
        evidence = (
            f"Momentum reached {pct(target)} val accuracy in {means[mom.label]:.0f} steps "
            f"vs {means[sgd.label]:.0f} for plain SGD (difference {steps.effect:+.0f}) and "
            f"ended {pp(end.effect)} against it ({pct(mean(mom.values(acc)))} vs "
            f"{pct(mean(sgd.values(acc)))}), {len(mom.values(acc))} and "
            f"{len(sgd.values(acc))} seeds.")
        return cmp.pair_finding(
            self, study, [mom, sgd], parts, evidence=evidence,
            how=("Compared momentum vs sgd on seed re-runs: steps to target by Welch t-tests "
                 f"(TOST margin {STEPS_MARGIN:.0%} of the slower arm's steps), final accuracy "
                 f"by a one-sided non-inferiority Welch test at {cmp.ACCURACY_MARGIN * 100:g} "
                 "pp; both must hold (intersection-union)."),
            table=[r.row(acc, **{"steps to target": means[r.label],
                                 "never reached": never[r.label]}) for r in (mom, sgd)],
            extra_caveats=[
                "escaping local minima is not measured: no objective here exposes them",
                f"target = {cmp.TARGET_FRACTION:.0%} of the weaker arm's mean final accuracy; "
                "runs that never reached it count as one epoch past the end ("
                + ", ".join(f"{label}: {k}" for label, k in never.items()) + ")"])


class AdaGradStallCheck(cmp.PairCheck):
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
    study, arms, title = ADAPTIVE_STUDY, (_opt("adagrad"), _opt("rmsprop")), \
        "R6: AdaGrad vs RMSProp, constant LR"
    run_value = staticmethod(cmp.late_gain)

    def estimate(self, loaded: Any) -> list[Part]:
        _, ada, rms = loaded
        return [cmp.pair_part("val accuracy gained in the second half", "late_gain", ada, rms,
                              cmp.late_gain, claimed_sign=-1)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, ada, rms = loaded
        epochs = _epochs(study, [ada, rms])
        adam = cmp.find_arm(study, optimizer="adam")
        shown = [cmp.arm_runs(study, adam)] if adam is not None else []  # beside, not tested
        mid = cmp.value_at(max(1, epochs // 2))
        high = [r.label for r in (ada, rms) if mean(r.values(mid)) > CEILING]
        evidence = (
            f"From epoch {epochs // 2} to {epochs}, AdaGrad gained "
            f"{pp(mean(ada.values(cmp.late_gain)))} and RMSProp "
            f"{pp(mean(rms.values(cmp.late_gain)))} (difference {pp(parts[0].effect)}), "
            f"{len(ada.values(cmp.late_gain))} and {len(rms.values(cmp.late_gain))} seeds.")
        return cmp.pair_finding(
            self, study, [ada, rms], parts, evidence=evidence, shown=shown,
            how=("Compared adagrad vs rmsprop on seed re-runs: accuracy at the last epoch minus "
                 f"at epoch {epochs // 2}, Welch t-tests, TOST margin "
                 f"{cmp.ACCURACY_MARGIN * 100:g} pp."),
            table=[r.row(cmp.final(study.metric), **{
                f"acc at epoch {epochs // 2}": mean(r.values(mid)),
                "late gain": mean(r.values(cmp.late_gain))}) for r in (ada, rms, *shown)],
            extra_caveats=[f"{', '.join(high)} already above {pct(CEILING)} at epoch "
                           f"{epochs // 2}: little is left to gain, so a small late gain may "
                           "be a ceiling, not a stall"] if high else [])


class RMSPropCheck(cmp.PairCheck):
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
    study, arms, title = ADAPTIVE_STUDY, (_opt("rmsprop"), _opt("adagrad")), \
        "R7: RMSProp vs AdaGrad, constant LR"

    def estimate(self, loaded: Any) -> list[Part]:
        study, rms, ada = loaded
        return [cmp.pair_part("final val accuracy higher", study.metric, rms, ada,
                              cmp.final(study.metric), claimed_sign=+1)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, rms, ada = loaded
        acc = cmp.final(study.metric)
        ci = parts[0].ci
        evidence = (
            f"RMSProp ended at {pct(mean(rms.values(acc)))} and AdaGrad at "
            f"{pct(mean(ada.values(acc)))} (difference {pp(parts[0].effect)}"
            + (f", 95% CI {pp(ci[0])} to {pp(ci[1])}" if ci else "")
            + f"), {len(rms.values(acc))} and {len(ada.values(acc))} seeds.")
        return cmp.pair_finding(
            self, study, [rms, ada], parts, evidence=evidence,
            how=("Compared rmsprop vs adagrad on seed re-runs: final val accuracy, Welch "
                 f"t-tests, TOST margin {cmp.ACCURACY_MARGIN * 100:g} pp."),
            table=[r.row(acc) for r in (rms, ada)])


class AdamVsMomentumCheck(cmp.PairCheck):
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
    study, arms, title = MOMENTUM_STUDY, (_opt("adam"), _opt("momentum")), \
        "R8: Adam vs momentum, both cosine"

    @staticmethod
    def early_epoch(study: StudyData, runs: list[cmp.ArmRuns]) -> int:
        return max(1, math.ceil(_epochs(study, runs) / 4))

    def estimate(self, loaded: Any) -> list[Part]:
        study, adam, mom = loaded
        early = self.early_epoch(study, [adam, mom])
        return [cmp.pair_part("momentum ahead at the end", study.metric, adam, mom,
                              cmp.final(study.metric), claimed_sign=-1),
                cmp.pair_part(f"Adam ahead at epoch {early}", f"{study.metric}@{early}", adam,
                              mom, cmp.value_at(early), claimed_sign=+1)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, adam, mom = loaded
        end, start = parts
        early = self.early_epoch(study, [adam, mom])
        (ea, eb), (sa, sb) = end.samples.values(), start.samples.values()
        evidence = (
            f"At epoch {early} Adam was {pp(start.effect)} against momentum "
            f"({pct(mean(sa))} vs {pct(mean(sb))}); at the end {pp(end.effect)} "
            f"({pct(mean(ea))} vs {pct(mean(eb))}), {len(ea)} and {len(eb)} seeds.")
        return cmp.pair_finding(
            self, study, [adam, mom], parts, evidence=evidence,
            how=(f"Compared adam vs momentum on seed re-runs: final and early (epoch {early}) "
                 f"val accuracy, Welch t-tests with TOST margin {cmp.ACCURACY_MARGIN * 100:g} "
                 "pp; both parts must hold (intersection-union)."),
            table=[r.row(cmp.final(study.metric), **{
                f"acc at epoch {early}": mean(r.values(cmp.value_at(early))),
                "chosen weight_decay": (r.runs[0].params.get("weight_decay") if r.runs
                                        else None)}) for r in (adam, mom)],
            extra_caveats=["Adam uses L2 regularization (weight decay added to the gradient), "
                           "not AdamW"])


CHECKS: list[RuleCheck] = [MomentumCheck(), AdaGradStallCheck(), RMSPropCheck(),
                           AdamVsMomentumCheck()]
