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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service import records
from service.rulebook import compare as cmp
from service.rulebook import stats
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook.decision import Part, rate_part
from service.rulebook.describe import caveats, mean, pct, pp, protocol
from service.rulebook.figures import decision_plot, study_plots
from service.store.study_data import StudyData

WARMUP_STUDY = "warmup-large-lr"
DECAY_STUDY = "decay-shape"
STABLE_TOLERANCE = 0.05  # "stable": no run diverged and within 5 pp of the best no-warmup LR
MULTIPLIERS = (1, 3, 10)  # of the stable LR; 3 matches the half-decade grid point (x3.16)
GRID_MATCH = 1.25  # a grid LR within this factor of m * L stands for m * L
OTHER_SHAPES = ("step", "linear", "exponential")


@dataclass
class WarmupGrid:
    """R10's study read as its grid: cells (lr, warmup) -> runs, the stable LR and the
    grid LRs standing for 1x, 3x and 10x it."""

    study: StudyData
    cells: dict[tuple[float, float], cmp.ArmRuns]
    lrs: list[float]
    warmup: float
    stable_lr: float | None
    at: dict[int, float | None]

    @property
    def large(self) -> list[int]:
        return [m for m in MULTIPLIERS[1:] if self.at[m] is not None
                and (self.at[m], self.warmup) in self.cells]

    @property
    def where(self) -> str:
        return " and ".join(f"{m}x ({self.at[m]:g})" for m in self.large)

    def runs(self, warmup: float) -> list[Any]:
        return [t for m in self.large for t in self.cells[self.at[m], warmup].runs]

    def table(self, acc: cmp.RunValue) -> list[dict[str, Any]]:
        names = {self.at[m]: f"{m}x" for m in MULTIPLIERS if self.at[m] is not None}
        return [self.cells[k].row(acc, lr=k[0], warmup_epochs=k[1],
                                  diverged=sum(map(records.diverged, self.cells[k].runs)),
                                  multiplier=names.get(k[0], ""))
                for k in sorted(self.cells)]


def _grid_lr(lrs: list[float], target: float) -> float | None:
    near = min(lrs, key=lambda lr: abs(math.log(lr / target)))
    return near if abs(math.log(near / target)) <= math.log(GRID_MATCH) else None


def _stable_lr(cells: dict[tuple[float, float], cmp.ArmRuns], acc: cmp.RunValue) -> float | None:
    """The largest warmup-0 LR whose runs all stayed finite and ended within
    STABLE_TOLERANCE of the best warmup-0 LR's mean."""
    base = {lr: r for (lr, w), r in cells.items() if w == 0}
    means = {lr: mean(r.values(acc)) for lr, r in base.items() if r.values(acc)}
    best = max(means.values(), default=math.nan)
    stable = [lr for lr, r in base.items() if r.runs and lr in means
              and not any(map(records.diverged, r.runs)) and means[lr] >= best - STABLE_TOLERANCE]
    return max(stable, default=None)


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

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        study = studies.get(WARMUP_STUDY)
        if study is None:
            return not_tested(self.rule, self.claim, f"the study {WARMUP_STUDY} did not run")
        cells = {(float(a.values["lr"]), float(a.values["warmup_epochs"])): cmp.arm_runs(study, a)
                 for a in study.arms if {"lr", "warmup_epochs"} <= set(a.values)}
        warm = sorted({w for _, w in cells if w > 0})
        if not warm or not any(w == 0 for _, w in cells):
            return not_tested(self.rule, self.claim, f"study {study.name} needs lr x "
                              "warmup_epochs arms with warmup 0 and warmup > 0")
        lrs = sorted({lr for lr, _ in cells})
        stable = _stable_lr(cells, cmp.final(study.metric))
        at = {m: None if stable is None else _grid_lr(lrs, stable * m) for m in MULTIPLIERS}
        grid = WarmupGrid(study, cells, lrs, warm[0], stable, at)
        if stable is None:
            return self._short(grid, "no grid LR trains stably without warmup: move the lr "
                                     "grid down")
        if not grid.large:
            return self._short(grid, f"the largest stable LR without warmup is {stable:g}, the "
                                     "top of the grid: extend the lr grid upward to reach 3x "
                                     "and 10x it")
        return grid

    def estimate(self, grid: WarmupGrid) -> list[Part]:
        acc = cmp.final(grid.study.metric)
        warm, none = grid.runs(grid.warmup), grid.runs(0.0)
        values = [[v for v in map(acc, runs) if v is not None] for runs in (warm, none)]
        parts = [cmp.two_sample_part(
            f"final val accuracy higher at {grid.where}", grid.study.metric,
            {f"warmup {grid.warmup:g}": values[0]}, {"warmup 0": values[1]}, claimed_sign=+1,
            margin=cmp.ACCURACY_MARGIN)]
        k = (sum(map(records.diverged, warm)), sum(map(records.diverged, none)))
        n = (len(warm), len(none))
        if sum(k):
            parts.append(_rate_part(f"divergence rate lower at {grid.where}", k, n,
                                    (f"warmup {grid.warmup:g}", "warmup 0")))
        return parts

    def describe(self, grid: WarmupGrid, parts: list[Part]) -> Finding:
        study, w = grid.study, grid.warmup
        warm, none = grid.runs(w), grid.runs(0.0)
        k = (sum(map(records.diverged, warm)), sum(map(records.diverged, none)))
        (va, vb) = parts[0].samples.values()
        extra = ["runs at 3x and 10x are pooled, so the accuracy sd includes the spread "
                 "between the two rates (a conservative Welch test)"]
        if not sum(k):
            extra.append(f"no run diverged at {grid.where} with or without warmup: the "
                         "divergence half of the claim is untestable here, the test rests on "
                         "accuracy")
        evidence = (
            f"The largest LR stable without warmup was {grid.stable_lr:g}; at {grid.where}, "
            f"warmup over {w:g} epoch{'s' if w != 1 else ''} diverged in {k[0]}/{len(warm)} runs "
            f"vs {k[1]}/{len(none)} without and ended at {pct(mean(va))} vs {pct(mean(vb))} "
            f"({pp(parts[0].effect)}).")
        finding = Finding(
            rule=self.rule, claim=self.claim, parts=parts, evidence=evidence,
            method="; ".join(f"{p.claim}: {p.test}" for p in parts),
            protocol=protocol(study, (
                f"The stable LR is the largest grid LR whose warmup-0 runs all stayed finite "
                f"and ended within {STABLE_TOLERANCE * 100:g} pp of the best warmup-0 LR. "
                f"Compared warmup {w:g} vs 0 at {grid.where}, runs pooled: final val accuracy "
                f"by Welch t-tests (TOST margin {cmp.ACCURACY_MARGIN * 100:g} pp), divergence "
                "by one-sided Fisher exact tests; both must hold (intersection-union).")),
            table=grid.table(cmp.final(study.metric)),
            caveats=caveats(study, list(grid.cells.values())) + extra, studies=[study.name])
        return cmp.guard_edges(finding, [study], [])

    def plot(self, grid: WarmupGrid, finding: Finding, plot_dir: Any) -> list[str]:
        acc = cmp.final(grid.study.metric)
        arms = [grid.cells[grid.at[m], x].arm for m in grid.large for x in (0.0, grid.warmup)]
        return (decision_plot(finding, plot_dir)
                + [self._bars(Path(plot_dir), grid.cells, grid.lrs, grid.warmup, acc, grid.at)]
                + study_plots(plot_dir, self.rule, grid.study, arms,
                              f"R10: no warmup vs {grid.warmup:g} warmup epochs",
                              isolation=False))

    def _short(self, grid: WarmupGrid, why: str) -> Finding:
        study = grid.study
        return Finding(rule=self.rule, claim=self.claim, verdict="inconclusive",
                       metric=study.metric, evidence=why, more_needed=why,
                       protocol=protocol(study, ""), table=grid.table(cmp.final(study.metric)),
                       caveats=caveats(study, list(grid.cells.values())), studies=[study.name])

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
            rate = [sum(map(records.diverged, r.runs)) / len(r.runs) if r and r.runs else 0.0
                    for r in runs]
            means = [mean(r.values(acc)) if r else math.nan for r in runs]
            label = f"warmup {warmup:g} epoch{'' if warmup == 1 else 's'}"
            top.bar([x + shift for x in xs], rate, width=0.4, color=color, label=label)
            bottom.bar([x + shift for x in xs], means, width=0.4, color=color, label=label)
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


def _rate_part(claim: str, k: tuple[int, int], n: tuple[int, int],
               labels: tuple[str, str]) -> Part:
    """Rate a minus rate b, claimed lower: one-sided Fisher exact tests each way."""
    lower = stats.proportion_diff(k[0], n[0], k[1], n[1], alternative="less")
    higher = stats.proportion_diff(k[0], n[0], k[1], n[1], alternative="greater")
    shown = stats.proportion_diff(k[0], n[0], k[1], n[1])
    return rate_part(claim, "divergence_rate", lower.p_value, higher.p_value, shown.effect,
                     shown.ci, n, claimed_sign=-1, test="fisher",
                     method="one-sided Fisher exact tests, Newcombe-Wilson interval",
                     samples={labels[0]: [1.0] * k[0] + [0.0] * (n[0] - k[0]),
                              labels[1]: [1.0] * k[1] + [0.0] * (n[1] - k[1])})


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

    study, arms, title = DECAY_STUDY, ({"decay": "cosine"}, {"decay": "constant"}), \
        "R11: decay shapes, peak LR tuned"

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        got = cmp.load_pair(self, studies, DECAY_STUDY, {"decay": "cosine"},
                            {"decay": "constant"})
        if isinstance(got, Finding):
            return got
        study, cos, const = got
        acc = cmp.final(study.metric)
        others = [cmp.arm_runs(study, a) for s in OTHER_SHAPES
                  if (a := cmp.find_arm(study, decay=s)) is not None]
        return study, cos, const, [r for r in others if len(r.values(acc)) > 1]

    def estimate(self, loaded: Any) -> list[Part]:
        study, cos, const, others = loaded
        acc = cmp.final(study.metric)
        # Every other shape is a part of its own: no shape is picked by its tuning luck.
        return [cmp.pair_part("cosine above constant", study.metric, cos, const, acc,
                              claimed_sign=+1)] + [
            cmp.pair_part(f"cosine no worse than {r.label}", study.metric, cos, r, acc,
                          claimed_sign=+1, noninferior=True) for r in others]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, cos, const, others = loaded
        acc = cmp.final(study.metric)
        rest = "".join(f", {p.claim[len('cosine no worse than '):]} {pp(-p.effect)} against "
                       "cosine" for p in parts[1:])
        evidence = (f"Cosine ended at {pct(mean(cos.values(acc)))}, constant at "
                    f"{pct(mean(const.values(acc)))} ({pp(parts[0].effect)}){rest}; "
                    f"{len(cos.values(acc))} seeds per arm.")
        extra = [] if others else ["no step/linear/exponential arm with seed runs: only the "
                                   "comparison with a constant LR was tested"]
        return cmp.pair_finding(
            self, study, [cos, const, *others], parts, evidence=evidence, extra_caveats=extra,
            how=("Compared cosine vs constant on seed re-runs (Welch t-tests, TOST margin "
                 f"{cmp.ACCURACY_MARGIN * 100:g} pp) and cosine vs each other shape by one-sided "
                 f"non-inferiority Welch tests at {cmp.ACCURACY_MARGIN * 100:g} pp; every part "
                 "must hold (intersection-union)."),
            table=[r.row(acc) for r in (cos, const, *others)])

    def plot(self, loaded: Any, finding: Finding, plot_dir: Any) -> list[str]:
        from service.report.plots import lr_schedule_plot

        study, cos, const, others = loaded
        rows = [cos, const, *others]
        shapes = {r.label: r.runs[0].params for r in rows if r.runs}
        path = lr_schedule_plot(shapes, Path(plot_dir) / "R11-schedules.png",
                                title="R11: each shape at its chosen peak LR")
        return (decision_plot(finding, plot_dir)
                + study_plots(plot_dir, self.rule, study, [r.arm for r in rows], self.title)
                + [f"{Path(plot_dir).name}/{path.name}"])


CHECKS: list[RuleCheck] = [WarmupCheck(), CosineCheck()]
