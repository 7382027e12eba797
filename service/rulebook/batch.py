"""R2-R4: the blog's batch-size rules on learning (loss noise, epochs to target, generalization).

Two specs serve the three rules (search_spaces/rulebook/<budget>/):

* ``batch_arms`` (R2, R3, R4's equal-epoch budget): batch-size arms, each with the same LR grid
  and its chosen configuration re-run over seeds. One grid for all arms makes R2's divergence
  rates comparable (the same LRs were tried at every batch size).
* ``r4_steps`` (R4's equal-step budget): one arm, the largest batch, trained for as many epochs
  as give it the steps of ``batch_arms``' moderate arm, with the same grid and seeds.

R2 and R3 are trends across batch sizes: each arm is one tuned configuration, so the arm is
the unit (`stats.arm_trend`: a line through the arm means, df = arms - 2, lack of fit
reported), not the seeds, which replicate one configuration. R4 compares two arms' seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial

from service import records
from service.report.edges import chosen_params
from service.rulebook import stats
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook._batch_data import (
    BatchArms,
    arms_by_batch,
    attr,
    batch_arms,
    divergence_part,
    plot_file,
    trend,
    usable,
)
from service.rulebook.compare import ACCURACY_MARGIN, evidence_seeds, guard_edges
from service.rulebook.decision import Part, two_sample_part
from service.rulebook.describe import describe_budget, fmt_ci, standard_caveats
from service.rulebook.figures import decision_plot, save_plot
from service.store.study_data import ArmData, StudyData


def _mean(x: Any) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _sd(x: Any) -> float | None:
    return float(np.std(x, ddof=1)) if len(x) > 1 else None


def _chosen_lr(arm: ArmData, direction: str) -> float | None:
    """The LR of the arm's chosen configuration (`report.edges.chosen_params`)."""
    params = chosen_params(arm, direction) or {}
    return records.number(params.get("lr"))


def _log2_positive(data: BatchArms, name: str) -> list[list[float]]:
    """log2 of each arm's positive `name` values over its usable evidence runs at the end."""
    out = []
    for _, arm in data.arms:
        values = attr(usable(data.seeds(arm), data.end), name)
        out.append(list(np.log2(values[values > 0])))
    return out


def _lack_of_fit(part: Part, trend: stats.ArmTrend | None) -> str:
    if trend is None or trend.lack_of_fit is None:
        return "lack of fit not testable (needs 2 seeds in some arm)"
    f, d1, d2, p = trend.lack_of_fit
    return f"lack of fit F({d1}, {d2}) = {f:.2f}, p = {p:.2g}"


# ---------------------------------------------------------------- R2: loss noise


class SmallBatchLossNoise(RuleCheck):
    rule = "R2"
    claim = ("With the LR tuned per batch size, step-to-step training-loss variability (loss "
             "oscillation at the last epoch) falls with the batch size faster than minibatch "
             "averaging alone makes it (slope of log oscillation on log batch below -0.5), "
             "and the divergence rate over a shared LR grid falls as the batch grows")
    blog_zh = ("batch数太小，梯度容易受噪声影响，或者相邻两次差异过大，"
               "可能会导致loss函数震荡而不收敛。")
    blog_en = ("If the batch is too small, the gradient is easily disturbed by noise, or two "
               "consecutive steps differ too much, which may make the loss oscillate and not "
               "converge.")
    literature = (
        "McCandlish et al. 2018 model the gradient noise as shrinking like 1/B, which is what "
        "makes small batches noisy; but Shallue et al. 2019 find that with the LR re-tuned per "
        "batch size small batches train reliably (they only need more steps), and Keskar et al. "
        "2017 credit small-batch noise with finding flatter, better minima rather than with "
        "failing to converge.")
    specs = ("batch_arms",)
    needs = ("batch_size", "lr")
    baseline = -0.5  # averaging B independent gradients alone: noise sd as B^-0.5
    margin = 0.1  # a slope within 0.1 of the baseline is practically averaging alone

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        study = studies.get("batch_arms")
        if study is None:
            return not_tested(self.rule, self.claim, "the batch_arms study did not run")
        return batch_arms(study)

    def oscillation(self, data: BatchArms) -> list[list[float]]:
        """log2 loss oscillation of each arm's evidence runs at the last epoch."""
        return _log2_positive(data, "loss_oscillation")

    def estimate(self, data: BatchArms) -> list[Part]:
        return [trend(data, "oscillation falls faster than batch^-0.5",
                       "log2 loss_oscillation", self.oscillation(data), claimed_sign=-1,
                       margin=self.margin, null=self.baseline),
                divergence_part(data)]

    def describe(self, data: BatchArms, parts: list[Part]) -> Finding:
        study = data.study
        osc, div = parts
        f = Finding(rule=self.rule, claim=self.claim, parts=parts, studies=[study.name],
                    caveats=standard_caveats([study]),
                    method="; ".join(f"{p.claim}: {p.test}" for p in parts))
        f.protocol = (f"{describe_budget(study)}. Every batch size tried the same LRs, so the "
                      "divergence rates over the grid compare like with like (tested within "
                      "each LR); oscillation is read from the evidence runs of each arm's chosen "
                      "LR, all at the same (last) epoch, and its slope on log2(batch) is fitted "
                      "through the arm means (the arms are the unit) and tested against -0.5, "
                      "the slope minibatch averaging alone gives.")
        logs = self.oscillation(data)
        for (b, arm), lo, rate in zip(data.arms, logs, div.samples.values(), strict=True):
            seeds = data.seeds(arm)
            acc = attr(seeds, "val_accuracy")
            raw = np.exp2(lo) if lo else np.array([])
            f.table.append({
                "batch_size": b, "chosen lr": _chosen_lr(arm, study.direction),
                "seeds": len(lo), "loss oscillation (mean)": _mean(raw),
                "loss oscillation (sd)": _sd(raw),
                "LR grid diverged": f"{int(sum(rate))}/{len(rate)}",
                "seed runs diverged": f"{sum(map(records.diverged, seeds))}/{len(seeds)}",
                "val accuracy (mean)": _mean(acc), "val accuracy (sd)": _sd(acc)})
        trend = stats.arm_trend([(x, v) for x, v in zip(data.x, logs, strict=True) if v])
        f.evidence = (f"Loss oscillation scales as batch^{osc.effect:.2f} across "
                      f"{len(osc.samples)} batch sizes (95% CI {fmt_ci(osc.ci)}; minibatch "
                      f"averaging alone gives -0.5; {_lack_of_fit(osc, trend)}); the LR grid "
                      f"diverged {div.effect:+.2f} more often at the largest batch than at the "
                      "smallest.") if osc.ci else "too few batch sizes with a loss oscillation " \
            "to fit a trend (needs 3)."
        f.caveats += [f"baseline: slope {self.baseline} (noise of a mean of B gradients); "
                      f"equivalence margin ±{self.margin} around it",
                      "with the LR tuned per arm, the oscillation also reflects each arm's LR"]
        return guard_edges(f, [study], [a for _, a in data.arms])


# ---------------------------------------------------------------- R3: epochs to target


def epochs_to(t: FrozenTrial, target: float, censor: int) -> int:
    """First epoch whose intermediate value reaches `target`; `censor` if none does."""
    hits = [e for e, v in sorted(t.intermediate_values.items()) if v >= target]
    return hits[0] if hits else censor


class LargeBatchNeedsMoreEpochs(RuleCheck):
    rule = "R3"
    claim = ("With the LR tuned per batch size, the epochs needed to reach a target validation "
             "accuracy rise with batch size while the time per epoch falls")
    blog_zh = ("随着batch size增大，处理相同的数据量的速度加快，震荡会减小，有利于收敛但慢，"
               "达到相同精度所需要的epoch数量越来越多。")
    blog_en = ("As the batch size grows, the same amount of data is processed faster and the "
               "oscillation shrinks, which helps convergence but slowly: more and more epochs "
               "are needed to reach the same accuracy.")
    literature = (
        "Shallue et al. 2019 find that steps to a target fall with batch size, perfectly at "
        "first and then with diminishing returns past a workload-dependent critical batch size "
        "(predicted by McCandlish et al. 2018's gradient noise scale), so epochs to target are "
        "flat below it and rise above it; Goyal et al. 2017 reach the same ImageNet accuracy in "
        "the same 90 epochs up to batch 8k with linear LR scaling and warmup.")
    specs = ("batch_arms",)
    needs = ("batch_size", "lr")
    target_fraction = 0.95  # of the best arm's mean final accuracy
    margin = 0.25  # epochs per doubling of the batch: below this, practically flat
    time_margin = 0.1  # log2 time per epoch per doubling: within 7%, practically flat

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        study = studies.get("batch_arms")
        if study is None:
            return not_tested(self.rule, self.claim, "the batch_arms study did not run")
        if study.metric != "val_accuracy":
            return not_tested(self.rule, self.claim, "batch_arms did not record val_accuracy "
                              f"per epoch (its metric is {study.metric})")
        data = batch_arms(study)
        if data.end is None or len(self.finals(data)) < 2:
            return Finding(rule=self.rule, claim=self.claim, studies=[study.name],
                           evidence="fewer than 2 batch sizes have seed re-runs that finished "
                                    "every epoch")
        return data

    @staticmethod
    def finals(data: BatchArms) -> dict[int, float]:
        """Mean final val accuracy of each arm's evidence runs that finished every epoch."""
        out = {}
        for b, arm in data.arms:
            vals = [t.intermediate_values[data.end] for t in usable(data.seeds(arm), None)
                    if data.end in t.intermediate_values]
            if vals:
                out[b] = float(np.mean(vals))
        return out

    def target(self, data: BatchArms) -> float:
        return self.target_fraction * max(self.finals(data).values())

    def epochs(self, data: BatchArms) -> list[list[float]]:
        """Epochs to target per evidence run; a run that never reaches it (or diverged) is
        censored at one past the end, which understates its epochs."""
        target, end = self.target(data), data.end or 0
        return [[float(epochs_to(t, target, end + 1)) for t in data.seeds(arm)
                 if t.intermediate_values] for _, arm in data.arms]

    @staticmethod
    def epoch_time(data: BatchArms) -> list[list[float]]:
        """log2 seconds per epoch of the runs that finished (a diverged run's is partial)."""
        return _log2_positive(data, "epoch_time_s")

    def estimate(self, data: BatchArms) -> list[Part]:
        return [trend(data, "epochs to target rise with batch size", "epochs to target",
                       self.epochs(data), claimed_sign=+1, margin=self.margin),
                trend(data, "time per epoch falls with batch size", "log2 epoch_time_s",
                       self.epoch_time(data), claimed_sign=-1, margin=self.time_margin)]

    def describe(self, data: BatchArms, parts: list[Part]) -> Finding:
        study, target, end = data.study, self.target(data), data.end or 0
        ep, tm = parts
        f = Finding(rule=self.rule, claim=self.claim, parts=parts, studies=[study.name],
                    caveats=standard_caveats([study]),
                    method="; ".join(f"{p.claim}: {p.test}" for p in parts))
        f.protocol = (f"{describe_budget(study)}. Target: {self.target_fraction:.0%} of the best "
                      f"arm's mean final val accuracy ({target:.4f}); epochs to target read from "
                      f"each evidence run's per-epoch val accuracy; a run that never reaches it "
                      f"counts as {end + 1} epochs (censored). Both trends are fitted through "
                      "the arm means on log2(batch) (the arms are the unit).")
        finals, epochs, times = self.finals(data), self.epochs(data), self.epoch_time(data)
        for (b, arm), e, t in zip(data.arms, epochs, times, strict=True):
            f.table.append({
                "batch_size": b, "chosen lr": _chosen_lr(arm, study.direction),
                "seeds": len(e), "final val accuracy (mean)": finals.get(b),
                "epochs to target (mean)": _mean(e),
                "never reached": int(sum(v > end for v in e)),
                "diverged": sum(map(records.diverged, data.seeds(arm))),
                "epoch time s (mean)": _mean(np.exp2(t)) if t else None})
        fits = [stats.arm_trend([(x, v) for x, v in zip(data.x, vals, strict=True) if v])
                for vals in (epochs, times)]
        f.evidence = (f"Each doubling of the batch changes the epochs to reach {target:.3f} val "
                      f"accuracy by {ep.effect:+.2f} (95% CI {fmt_ci(ep.ci)}; "
                      f"{_lack_of_fit(ep, fits[0])}) and time per epoch scales as "
                      f"batch^{tm.effect:.2f} (95% CI {fmt_ci(tm.ci)}; "
                      f"{_lack_of_fit(tm, fits[1])}).")
        f.caveats += [
            f"equivalence margins: |slope| < {self.margin} epochs and < {self.time_margin} "
            "log2 seconds per doubling of the batch",
            "the LR was tuned for final accuracy, not for speed; epoch time includes evaluation "
            "and, with concurrent trials, contention"]
        if any(row["never reached"] for row in f.table):
            f.caveats.append("some runs never reached the target within the epoch budget")
        return guard_edges(f, [study], [a for _, a in data.arms])

    def plot(self, data: BatchArms, finding: Finding, plot_dir: Any) -> list[str]:
        fig = Figure(figsize=(6.4, 3.6))
        ax = fig.add_subplot()
        for b, arm in data.arms:
            runs = [t for t in usable(data.seeds(arm), None) if t.intermediate_values]
            if runs and data.end:
                curve = np.mean([[t.intermediate_values.get(e, np.nan)
                                  for e in range(1, data.end + 1)] for t in runs], axis=0)
                ax.plot(range(1, data.end + 1), 1 - curve, marker="o", ms=3, label=f"batch {b}")
        ax.axhline(1 - self.target(data), color="k", ls=":", lw=1, label="target")
        ax.set(xlabel="epoch", ylabel="val error rate (seed mean), log", yscale="log",
               title="R3: chosen LR per arm")
        ax.legend(fontsize=7)
        return decision_plot(finding, plot_dir) + save_plot(
            fig, plot_dir, plot_file("R3", data.study), finding)


# ---------------------------------------------------------------- R4: generalization


def moderate_and_largest(arms: list[tuple[int, ArmData]]) -> tuple[int, int]:
    """Indices of the moderate arm (the middle batch size; the lower middle for an even count)
    and of the largest. Declared by position, before any result is read: picking the best arm
    as "moderate" would compare against the luckiest of several noisy arms."""
    return (len(arms) - 1) // 2, len(arms) - 1


class LargeBatchGeneralizesWorse(RuleCheck):
    rule = "R4"
    claim = ("With the LR tuned per batch size, the best validation accuracy at the largest "
             "batch is below that at a moderate batch (effect: moderate minus largest), given "
             "the same number of steps; the same-epochs comparison is also reported")
    blog_zh = "batch size过大时，相邻间差异太小，容易陷入局部最小。"
    blog_en = ("When the batch size is too large, consecutive steps differ too little and "
               "training easily gets stuck in a local minimum.")
    literature = (
        "Keskar et al. 2017 report a large-batch generalization gap and tie it to sharp minima; "
        "Hoffer et al. 2017 show the gap mostly closes when large batches get as many updates "
        "(train longer, adapted LR), and Shallue et al. 2019 and Goyal et al. 2017 (up to 8k on "
        "ImageNet) find no degradation with well-tuned hyperparameters. So the equal-steps "
        "comparison tests the 'poor minimum' mechanism; the equal-epochs one mostly measures "
        "fewer updates.")
    specs = ("batch_arms", "r4_steps")
    needs = ("batch_size", "lr", "epochs")
    margin = ACCURACY_MARGIN  # 0.5 percentage points of val accuracy: practically the same

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        epochs_study, steps_study = studies.get("batch_arms"), studies.get("r4_steps")
        if epochs_study is None:
            return not_tested(self.rule, self.claim, "the batch_arms study (which holds the "
                              "moderate batch) did not run")
        arms = arms_by_batch(epochs_study)
        if len(arms) < 2:
            return Finding(rule=self.rule, claim=self.claim, studies=[epochs_study.name],
                           evidence="batch_arms has fewer than 2 batch sizes")
        i_mod, i_big = moderate_and_largest(arms)
        step_arm = None
        if steps_study is not None:
            step_arm = next((a for b, a in arms_by_batch(steps_study) if b == arms[i_big][0]),
                            None)
        return epochs_study, steps_study, arms, arms[i_mod], arms[i_big], step_arm

    @staticmethod
    def acc(arm: ArmData) -> list[float]:
        return list(attr(evidence_seeds(arm), "val_accuracy"))

    def estimate(self, loaded: Any) -> list[Part]:
        _, _, _, (b_mod, mod), (b_big, big), step_arm = loaded
        # Equal steps isolates the claimed mechanism (a worse minimum); equal epochs also gives
        # the large batch fewer updates, so it is primary only when no step-budget arm ran.
        other, label = (step_arm, "equal steps") if step_arm is not None and \
            len(self.acc(step_arm)) > 1 else (big, "equal epochs")
        return [two_sample_part(f"moderate batch above largest ({label})", "val_accuracy",
                                {f"batch {b_mod}": self.acc(mod)},
                                {f"batch {b_big} ({label})": self.acc(other)},
                                claimed_sign=+1, margin=self.margin)]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        epochs_study, steps_study, arms, (b_mod, mod), (b_big, big), step_arm = loaded
        part = parts[0]
        used = [s for s in (epochs_study, steps_study) if s is not None]
        steps_primary = "equal steps" in part.claim
        f = Finding(rule=self.rule, claim=self.claim, parts=parts, method=part.test,
                    studies=[s.name for s in used], caveats=standard_caveats(used))
        rows = [("equal epochs", b, a, epochs_study) for b, a in arms]
        if step_arm is not None:
            rows.append(("equal steps", b_big, step_arm, steps_study))
        elif steps_study is not None:
            f.caveats.append(f"r4_steps has no arm at batch {b_big}: it was not used")
        for budget, b, a, s in rows:
            seeds = evidence_seeds(a)
            acc, steps = attr(seeds, "val_accuracy"), attr(seeds, "steps")
            gap = [g for t in seeds if (g := _gap(t)) is not None]
            f.table.append({
                "budget": budget, "batch_size": b,
                "role": "moderate" if a is mod else "largest" if b == b_big else "",
                "epochs": s.spec.get("fixed", {}).get("epochs"),
                "steps (median)": float(np.median(steps)) if len(steps) else None,
                "chosen lr": _chosen_lr(a, s.direction), "seeds": len(acc),
                "seeds diverged": sum(map(records.diverged, seeds)),
                "val accuracy (mean)": _mean(acc), "val accuracy (sd)": _sd(acc),
                "train - val accuracy (mean)": _mean(gap)})
        label = "equal steps" if steps_primary else "equal epochs"
        f.protocol = (f"{describe_budget(epochs_study)}"
                      + (f"; {describe_budget(steps_study)}" if steps_study else "")
                      + f". Moderate = batch {b_mod} (the middle of the arms, fixed in advance), "
                      f"largest = batch {b_big}; primary comparison: {label} (the other budget "
                      "is shown, not tested).")
        other = ""
        if steps_primary:
            desc = stats.welch(self.acc(mod), self.acc(big))
            other = (f"; with equal epochs (fewer steps for batch {b_big}) the difference is "
                     f"{100 * desc.effect:+.2f} points ({fmt_ci(desc.ci, 100)}, descriptive)")
        f.evidence = (f"With {label}, val accuracy at batch {b_mod} minus batch {b_big} is "
                      f"{100 * part.effect:+.2f} points (95% CI {fmt_ci(part.ci, 100)}){other}.")
        if not steps_primary:
            f.caveats.append("no equal-steps arm: at equal epochs the largest batch also takes "
                             "fewer steps, so under-training and 'poor minima' are confounded")
        f.caveats.append(f"equivalence margin: +-{100 * self.margin:g} points of val accuracy "
                         "(TOST); warmup was not tuned unless the spec's nuisance lists it")
        compared = [mod, step_arm if steps_primary else big]
        return guard_edges(f, used, [a for a in compared if a is not None])


def _gap(t: FrozenTrial) -> float | None:
    train, val = (records.number(t.user_attrs.get(k)) for k in ("train_accuracy",
                                                                 "val_accuracy"))
    return None if train is None or val is None else train - val


CHECKS: list[RuleCheck] = [SmallBatchLossNoise(), LargeBatchNeedsMoreEpochs(),
                           LargeBatchGeneralizesWorse()]
