"""Rules R10-R11: the blog's learning-rate schedule notes (warmup, cosine decay).

R10 needs the largest learning rate that is stable *without* warmup before it can ask about
1x, 3x and 10x that rate, and a spec cannot depend on an earlier result. So `warmup-large-lr`
runs a fixed multiplicative grid of learning rates (half-decades: 0.316, 1, 3.16, ...) crossed
with warmup 0 and warmup > 0, every cell a fixed configuration over several seeds; the check
finds the stable rate L in the warmup-0 row and reads the cells at L, ~3L (the next
half-decade, 3.16x) and 10L. R11's `decay-shape` study tunes the peak learning rate per
decay shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from service.rulebook import compare as cmp
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.store.study_data import StudyData

WARMUP_STUDY = "warmup-large-lr"
DECAY_STUDY = "decay-shape"
STABLE_TOLERANCE = 0.05  # "stable": no run diverged and within 5 pp of the best no-warmup LR
MULTIPLIERS = (1, 3, 10)  # of the stable LR; 3 matches the half-decade grid point (x3.16)
GRID_MATCH = 1.25  # a grid LR within this factor of m * L stands for m * L
OTHER_SHAPES = ("step", "linear", "exponential")


def _diverged(trial: Any) -> bool:
    return bool(trial.user_attrs.get("diverged"))


class WarmupCheck(RuleCheck):
    rule = "R10"
    claim = ("At 3x and 10x the largest learning rate that trains stably without warmup, "
             "a linear warmup lowers the divergence rate and raises final val accuracy")
    blog_zh = ("如果是随机初始化的参数，一开始较大的学习率会导致不稳定，"
               "所以可以在最开始使用一个很小的学习率，然后逐步切换到默认的初始学习率。")
    blog_en = ("With randomly initialized parameters a large learning rate at the start makes "
               "training unstable, so start with a very small learning rate and gradually "
               "switch to the default initial learning rate.")
    literature = (
        "Goyal et al. 2017 needed gradual warmup to train ResNet-50 at the large learning "
        "rates of 8k batches; the Tuning Playbook's warmup recipe is this design: find the "
        "largest LR stable without warmup, then ask whether warmup makes a larger one "
        "trainable.")
    specs = (WARMUP_STUDY,)
    needs = ("lr", "warmup_epochs")

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        study = studies.get(WARMUP_STUDY)
        if study is None:
            return not_tested(self.rule, self.claim, f"the study {WARMUP_STUDY} did not run")
        cells = {(float(a.values["lr"]), float(a.values["warmup_epochs"])): cmp.arm_runs(study, a)
                 for a in study.arms if {"lr", "warmup_epochs"} <= set(a.values)}
        lrs = sorted({lr for lr, _ in cells})
        warm = sorted({w for _, w in cells if w > 0})
        if not warm or not any(w == 0 for _, w in cells):
            return not_tested(self.rule, self.claim, f"study {study.name} needs lr x "
                              "warmup_epochs arms with warmup 0 and warmup > 0")
        w = warm[0]
        acc = cmp.final(study.metric)
        base = {lr: cells[lr, 0.0] for lr in lrs if (lr, 0.0) in cells}
        means = {lr: cmp.mean(r.values(acc)) for lr, r in base.items() if r.values(acc)}
        best = max(means.values(), default=math.nan)
        stable = [lr for lr, r in base.items() if r.runs and lr in means
                  and not any(map(_diverged, r.runs)) and means[lr] >= best - STABLE_TOLERANCE]
        caveats = cmp.caveats(study, list(cells.values()))
        table = [cells[k].row(acc, lr=k[0], warmup_epochs=k[1],
                              diverged=sum(map(_diverged, cells[k].runs)))
                 for k in sorted(cells)]
        if not stable:
            return self._short(study, table, caveats, "no grid LR trains stably without "
                               "warmup: move the lr grid down")
        stable_lr = max(stable)
        at = {m: self._grid_lr(lrs, stable_lr * m) for m in MULTIPLIERS}
        large = [m for m in MULTIPLIERS[1:] if at[m] is not None and (at[m], w) in cells]
        for row in table:
            row["multiplier"] = next((f"{m}x" for m in MULTIPLIERS if at[m] == row["lr"]), "")
        if not large:
            return self._short(study, table, caveats, f"the largest stable LR without warmup "
                               f"is {stable_lr:g}, the top of the grid: extend the lr grid "
                               "upward to reach 3x and 10x it")
        none_runs = [t for m in large for t in cells[at[m], 0.0].runs]
        warm_runs = [t for m in large for t in cells[at[m], w].runs]
        k = (sum(map(_diverged, warm_runs)), sum(map(_diverged, none_runs)))
        n = (len(warm_runs), len(none_runs))
        where = " and ".join(f"{m}x ({at[m]:g})" for m in large)
        parts = [cmp.welch_part(f"final val accuracy at {where}", study.metric,
                                [v for v in map(acc, warm_runs) if v is not None],
                                [v for v in map(acc, none_runs) if v is not None], +1)]
        if sum(k):
            parts.append(cmp.proportion_part(f"divergence rate at {where}", "divergence_rate",
                                             k, n, -1))
        else:
            caveats.append(f"no run diverged at {where} with or without warmup: the divergence "
                           "half of the claim is untestable here, the test rests on accuracy")
        caveats.append("runs at 3x and 10x are pooled, so the accuracy sd includes the spread "
                       "between the two rates (a conservative Welch test)")
        decision = cmp.decide(parts)
        acc_part = parts[0]
        evidence = (
            f"The largest LR stable without warmup was {stable_lr:g}; at {where}, "
            f"warmup over {w:g} epoch{'s' if w != 1 else ''} diverged in {k[0]}/{n[0]} runs vs "
            f"{k[1]}/{n[1]} without "
            f"and ended at {cmp.pct(cmp.mean(acc_part.a))} vs {cmp.pct(cmp.mean(acc_part.b))} "
            f"({cmp.pp(acc_part.effect)}).")
        plots = []
        if plot_dir is not None:
            plots.append(self._bars(Path(plot_dir), cells, lrs, w, acc, at))
            plots += cmp.plots(plot_dir, self.rule, study,
                               [cells[at[m], x] for m in large for x in (0.0, w)],
                               f"R10: no warmup vs {w:g} warmup epochs", isolation=False)
        return cmp.finding(
            self, decision, evidence=evidence,
            protocol=cmp.protocol(study, (
                f"The stable LR is the largest grid LR whose warmup-0 runs all stayed finite "
                f"and ended within {STABLE_TOLERANCE * 100:g} pp of the best warmup-0 LR. "
                f"Compared warmup {w:g} vs 0 at {where}, runs pooled: final val accuracy by "
                "Welch t-test (TOST margin "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp), divergence by Fisher's exact test; both "
                "must hold (intersection-union test).")),
            table=table, plots=plots, caveats=caveats, studies=[study.name])

    @staticmethod
    def _grid_lr(lrs: list[float], target: float) -> float | None:
        near = min(lrs, key=lambda lr: abs(math.log(lr / target)))
        return near if abs(math.log(near / target)) <= math.log(GRID_MATCH) else None

    def _short(self, study: StudyData, table: list[dict[str, Any]], caveats: list[str],
               why: str) -> Finding:
        return Finding(rule=self.rule, claim=self.claim, verdict="inconclusive",
                       metric=study.metric, evidence=why, more_needed=why,
                       protocol=cmp.protocol(study, ""), table=table, caveats=caveats,
                       studies=[study.name])

    def _bars(self, folder: Path, cells: dict[tuple[float, float], cmp.ArmRuns],
              lrs: list[float], w: float, acc: cmp.RunValue,
              at: dict[int, float | None]) -> str:
        """Divergence rate and mean final accuracy per grid LR, warmup 0 vs w, side by side."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.0, 5.5))
        top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        xs = range(len(lrs))
        for shift, warmup, color in ((-0.2, 0.0, "tab:red"), (0.2, w, "tab:blue")):
            runs = [cells.get((lr, warmup)) for lr in lrs]
            rate = [sum(map(_diverged, r.runs)) / len(r.runs) if r and r.runs else 0.0
                    for r in runs]
            mean = [cmp.mean(r.values(acc)) if r else math.nan for r in runs]
            label = f"warmup {warmup:g} epoch{'' if warmup == 1 else 's'}"
            top.bar([x + shift for x in xs], rate, width=0.4, color=color, label=label)
            bottom.bar([x + shift for x in xs], mean, width=0.4, color=color, label=label)
        names = {at[m]: f"\n{m}x" for m in MULTIPLIERS if at[m] is not None}
        for ax, ylabel in ((top, "divergence rate"), (bottom, "mean final val accuracy")):
            ax.set_xticks(list(xs), [f"{lr:g}{names.get(lr, '')}" for lr in lrs])
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, axis="y")
        top.legend(fontsize="small")
        top.set_title("R10: warmup at multiples of the largest LR stable without warmup")
        bottom.set_xlabel("peak learning rate (multiple of the stable LR)")
        fig.tight_layout()
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / "R10-divergence.png", dpi=100)
        return f"{folder.name}/R10-divergence.png"


class CosineCheck(RuleCheck):
    rule = "R11"
    claim = ("With the peak LR tuned per shape, cosine decay to zero ends with a higher val "
             "accuracy than a constant LR, and no more than 0.5 pp below the best of step, "
             "linear and exponential decay")
    blog_zh = ("我比较喜欢的是Cosine Learning Rate Decay的方法，学习率随着时间按余弦曲线变化至零，"
               "虽然没有根据情况自定义学习率那么高效，但是很省心，就基本上不用考虑学习率问题。")
    blog_en = ("I like cosine learning-rate decay: the learning rate follows a cosine curve down "
               "to zero; it is not as efficient as a schedule tailored to the situation, but it "
               "saves effort, and you hardly have to think about the learning rate.")
    literature = (
        "Loshchilov & Hutter (SGDR) introduced cosine annealing and found it matched or beat "
        "step schedules on CIFAR; the Tuning Playbook prefers linear or cosine decay and "
        "expects several other shapes to be about as good, which is the non-inferiority "
        "half of this claim.")
    specs = (DECAY_STUDY,)
    needs = ("decay", "lr")

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        got = cmp.load_pair(self, studies, DECAY_STUDY, {"decay": "cosine"},
                            {"decay": "constant"})
        if isinstance(got, Finding):
            return got
        study, cos, const = got
        acc = cmp.final(study.metric)
        others = [cmp.arm_runs(study, a) for s in OTHER_SHAPES
                  if (a := cmp.find_arm(study, decay=s)) is not None]
        others = [r for r in others if r.best is not None and len(r.values(acc)) > 1]
        parts = [cmp.welch_part("cosine vs constant", study.metric, cos.values(acc),
                                const.values(acc), +1)]
        caveats = cmp.caveats(study, [cos, const, *others])
        rival = None
        if others:
            # Chosen on the tuning trials, tested on fresh seeds: no winner's curse in the test.
            sign = 1 if study.direction == "maximize" else -1
            rival = max(others, key=lambda r: sign * r.best.value)  # type: ignore[union-attr]
            parts.append(cmp.welch_part(f"cosine vs the best other shape ({rival.label})",
                                        study.metric, cos.values(acc), rival.values(acc), +1,
                                        difference=False))
        else:
            caveats.append("no step/linear/exponential arm with seed runs: only the comparison "
                           "with a constant LR was tested")
        rows = [cos, const, *others]
        evidence = (
            f"Cosine ended at {cmp.pct(cmp.mean(cos.values(acc)))}, constant at "
            f"{cmp.pct(cmp.mean(const.values(acc)))} ({cmp.pp(parts[0].effect)})"
            + (f", the best other shape by tuning, {rival.label}, at "
               f"{cmp.pct(cmp.mean(rival.values(acc)))} ({cmp.pp(parts[1].effect)})"
               if rival else "") + f"; {len(cos.values(acc))} seeds per arm.")
        plots = cmp.plots(plot_dir, self.rule, study, rows, "R11: decay shapes, peak LR tuned")
        if plot_dir is not None:
            from service.report.plots import lr_schedule_plot

            shapes = {r.label: r.best.params for r in rows if r.best is not None}
            path = lr_schedule_plot(shapes, Path(plot_dir) / "R11-schedules.png",
                                    title="R11: each shape at its tuned peak LR")
            plots.append(f"{Path(plot_dir).name}/{path.name}")
        return cmp.finding(
            self, cmp.decide(parts), evidence=evidence,
            protocol=cmp.protocol(study, (
                "Compared cosine vs constant on seed re-runs (Welch t-test, TOST margin "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp) and cosine vs the best other shape, picked "
                "by its best tuning trial, by a one-sided non-inferiority Welch test at "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp; both must hold (intersection-union test).")),
            table=[r.row(acc) for r in rows], plots=plots, caveats=caveats,
            studies=[study.name])


CHECKS: list[RuleCheck] = [WarmupCheck(), CosineCheck()]
