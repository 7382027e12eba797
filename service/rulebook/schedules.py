"""Rules R10-R11: the blog's learning-rate schedule notes (warmup, cosine decay).

R10 is a question about learning rates above the largest one that trains stably without
warmup, and where that edge lies depends on the objective. So R10 runs two studies. First
`warmup-edge` scans a wide log range of learning rates (quarter-decades over six decades),
warmup 0 and warmup > 0, one run per cell on a seed no evidence run uses: it locates the
edge L (the largest LR whose no-warmup run trained stably) and, above it, the LRs where the
no-warmup run failed but the warmup run trained. The rulebook then places `warmup-large-lr`'s
arms there (`WarmupCheck.adapt`: the two smallest such LRs; a spec cannot depend on a result,
the rulebook can), so the comparison is of a failing no-warmup run with a warmup run that
can train, not of two failures; on an objective whose stable LRs lie far below or above a
fixed grid the arms move with the edge. Those cells run on fresh seeds, and they alone are
the evidence. A run *failed* when it diverged (NaN/inf loss, `records.diverged`) or ended at
chance accuracy (below twice the chance level: 1/10 for the built-ins' ten classes, or the
objective's `chance_accuracy`). R11's `decay-shape` study tunes the peak LR per shape.
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

EDGE_STUDY = "warmup-edge"
WARMUP_STUDY = "warmup-large-lr"
DECAY_STUDY = "decay-shape"
STABLE_TOLERANCE = 0.05  # "stable": trained, and within 5 pp of the best no-warmup LR
CHANCE = 0.1  # ten classes, unless the objective reports `chance_accuracy`
ARMS = 2  # LRs placed above the edge
OTHER_SHAPES = ("step", "linear", "exponential")


def failed(trial: Any, metric: str) -> bool:
    """Diverged (NaN/inf loss), or ended at chance: below twice the chance accuracy."""
    if records.diverged(trial):
        return True
    chance = records.number(trial.user_attrs.get("chance_accuracy")) or CHANCE
    acc = cmp.final(metric)(trial)
    return metric.endswith("accuracy") and acc is not None and acc < 2 * chance


@dataclass
class Edge:
    """What the scan found: the stable edge and the LRs above it where warmup trained."""

    lrs: list[float]
    stable: float | None
    above: list[float]  # LRs > stable where no-warmup failed or fell behind, warmup trained
    why: str = ""  # why no arms can be placed


def scan_cells(study: StudyData) -> dict[tuple[float, float], cmp.ArmRuns]:
    """(lr, warmup) -> the runs of that cell; either may be fixed rather than an arm value."""
    fixed = study.spec.get("fixed", {})
    cells = {}
    for a in study.arms:
        config = {**fixed, **a.values}
        if {"lr", "warmup_epochs"} <= set(config):
            cells[float(config["lr"]), float(config["warmup_epochs"])] = cmp.arm_runs(study, a)
    return cells


def find_edge(study: StudyData) -> Edge:
    """Locate the edge in the scan and the LRs above it where only warmup trained."""
    cells, metric = scan_cells(study), study.metric
    acc = cmp.final(metric)
    lrs = sorted({lr for lr, _ in cells})
    warm = sorted({w for _, w in cells if w > 0})
    ok = {k: bool(r.runs) and not any(failed(t, metric) for t in r.runs)
          for k, r in cells.items()}
    means = {k: mean(r.values(acc)) for k, r in cells.items() if r.values(acc)}
    best = max((v for (lr, w), v in means.items() if w == 0), default=math.nan)
    stable = [lr for lr in lrs if ok.get((lr, 0.0)) and means.get((lr, 0.0), -1) >= best -
              STABLE_TOLERANCE]
    if not stable or not warm:
        return Edge(lrs, None, [], f"no LR of the scanned range {lrs[0]:g}-{lrs[-1]:g} trained "
                    "stably without warmup" if lrs else "the scan holds no runs")
    edge = max(stable)
    if edge == lrs[-1]:
        return Edge(lrs, edge, [], f"every LR up to the top of the scanned range ({edge:g}) "
                    "trained stably without warmup: no rate to test warmup at")
    above = [lr for lr in lrs if lr > edge and lr not in stable and ok.get((lr, warm[0]))]
    return Edge(lrs, edge, above[:ARMS] or [min(lr for lr in lrs if lr > edge)])


@dataclass
class WarmupGrid:
    """R10's evidence cells (lr, warmup) -> runs, at the LRs placed above the edge."""

    study: StudyData
    cells: dict[tuple[float, float], cmp.ArmRuns]
    lrs: list[float]
    warmup: float
    edge: Edge

    @property
    def stable_lr(self) -> float | None:
        return self.edge.stable

    @property
    def where(self) -> str:
        return " and ".join(f"{lr:g} ({lr / self.edge.stable:.2g}x)" for lr in self.lrs) \
            if self.edge.stable else ", ".join(f"{lr:g}" for lr in self.lrs)

    def runs(self, warmup: float) -> list[Any]:
        return [t for lr in self.lrs for t in self.cells[lr, warmup].runs
                if (lr, warmup) in self.cells]

    def table(self, acc: cmp.RunValue) -> list[dict[str, Any]]:
        metric = self.study.metric
        return [self.cells[k].row(acc, lr=k[0], warmup_epochs=k[1],
                                  failed=sum(failed(t, metric) for t in self.cells[k].runs))
                for k in sorted(self.cells)]


class WarmupCheck(RuleCheck):
    rule = "R10"
    claim = ("At learning rates above the largest that trains stably without warmup, where "
             "training without warmup fails but training at all is possible, a linear warmup "
             "lowers the failure rate and raises final val accuracy")
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
    specs = (EDGE_STUDY, WARMUP_STUDY)
    needs = ("lr", "warmup_epochs")

    def adapt(self, stem: str, spec: dict[str, Any],
              earlier: dict[str, StudyData | None]) -> dict[str, Any]:
        """Place `warmup-large-lr`'s LRs where the scan found no-warmup failing and warmup
        training (raises, so the study does not run, when the scan leaves no such place)."""
        if stem != WARMUP_STUDY:
            return spec
        scan = earlier.get(EDGE_STUDY)
        if scan is None:
            raise ValueError(f"R10's arms are placed from the {EDGE_STUDY} scan, which did "
                             "not run")
        edge = find_edge(scan)
        if not edge.above:
            raise ValueError(f"R10's arms cannot be placed: {edge.why}; widen the scan")
        if len(edge.above) > 1:
            return {**spec, "scientific": {**spec["scientific"], "lr": edge.above}}
        scientific = {k: v for k, v in spec["scientific"].items() if k != "lr"}
        return {**spec, "scientific": scientific, "fixed": {**spec["fixed"],
                                                            "lr": edge.above[0]}}

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        scan, study = studies.get(EDGE_STUDY), studies.get(WARMUP_STUDY)
        if scan is None or study is None:
            missing = " and ".join(s for s in self.specs if studies.get(s) is None)
            return not_tested(self.rule, self.claim, f"the study {missing} did not run")
        cells = scan_cells(study)
        warm = sorted({w for _, w in cells if w > 0})
        if not warm or not any(w == 0 for _, w in cells):
            return not_tested(self.rule, self.claim, f"study {study.name} needs lr x "
                              "warmup_epochs arms with warmup 0 and warmup > 0")
        edge = find_edge(scan)
        grid = WarmupGrid(study, cells, sorted({lr for lr, _ in cells}), warm[0], edge)
        if edge.stable is None or not edge.above:
            return self._short(grid, edge.why + "; widen the warmup-edge scan")
        return grid

    def estimate(self, grid: WarmupGrid) -> list[Part]:
        acc, metric = cmp.final(grid.study.metric), grid.study.metric
        warm, none = grid.runs(grid.warmup), grid.runs(0.0)
        values = [[v for v in map(acc, runs) if v is not None] for runs in (warm, none)]
        parts = [cmp.two_sample_part(
            f"final val accuracy higher at {grid.where}", metric,
            {f"warmup {grid.warmup:g}": values[0]}, {"warmup 0": values[1]}, claimed_sign=+1,
            margin=cmp.ACCURACY_MARGIN)]
        k = (sum(failed(t, metric) for t in warm), sum(failed(t, metric) for t in none))
        n = (len(warm), len(none))
        if sum(k):
            parts.append(_rate_part(f"failure rate lower at {grid.where}", k, n,
                                    (f"warmup {grid.warmup:g}", "warmup 0")))
        return parts

    def describe(self, grid: WarmupGrid, parts: list[Part]) -> Finding:
        study, w, metric = grid.study, grid.warmup, grid.study.metric
        warm, none = grid.runs(w), grid.runs(0.0)
        k = (sum(failed(t, metric) for t in warm), sum(failed(t, metric) for t in none))
        (va, vb) = parts[0].samples.values()
        extra = []
        if len(grid.lrs) > 1:
            extra.append(f"runs at {grid.where} are pooled, so the accuracy sd includes the "
                         "spread between the rates (a conservative Welch test)")
        if not sum(k):
            extra.append(f"no run failed at {grid.where} with or without warmup: the failure "
                         "half of the claim is untestable here, the test rests on accuracy")
        scan = grid.edge
        evidence = (
            f"The scan of {scan.lrs[0]:g}-{scan.lrs[-1]:g} put the largest LR stable without "
            f"warmup at {grid.stable_lr:g}; at {grid.where}, warmup over {w:g} "
            f"epoch{'s' if w != 1 else ''} failed in {k[0]}/{len(warm)} fresh-seed runs vs "
            f"{k[1]}/{len(none)} without and ended at {pct(mean(va))} vs {pct(mean(vb))} "
            f"({pp(parts[0].effect)}).")
        finding = Finding(
            rule=self.rule, claim=self.claim, parts=parts, evidence=evidence,
            method="; ".join(f"{p.claim}: {p.test}" for p in parts),
            protocol=protocol(study, (
                f"A scan ({EDGE_STUDY}: {len(scan.lrs)} LRs from {scan.lrs[0]:g} to "
                f"{scan.lrs[-1]:g}, warmup 0 and {w:g}, one run per cell on a seed no evidence "
                "run uses) located the edge: the largest LR whose no-warmup run trained and "
                f"ended within {STABLE_TOLERANCE * 100:g} pp of the best no-warmup LR. The "
                f"arms were placed at the {ARMS} smallest scanned LRs above it where the "
                "no-warmup run failed or fell behind and the warmup run trained, and run on "
                f"fresh seeds: the evidence. A run failed when it diverged (NaN/inf loss) or "
                f"ended below twice the chance accuracy ({CHANCE:g} unless the objective "
                f"reports one). Compared warmup {w:g} vs 0, runs pooled over the placed LRs: "
                f"final val accuracy by Welch t-tests (TOST margin "
                f"{cmp.ACCURACY_MARGIN * 100:g} pp), failure by one-sided Fisher exact tests; "
                "both must hold (intersection-union).")),
            table=grid.table(cmp.final(metric)),
            caveats=caveats(study, list(grid.cells.values())) + extra, studies=[study.name])
        return cmp.guard_edges(finding, [study], [])

    def plot(self, grid: WarmupGrid, finding: Finding, plot_dir: Any) -> list[str]:
        acc = cmp.final(grid.study.metric)
        arms = [grid.cells[lr, x].arm for lr in grid.lrs for x in (0.0, grid.warmup)
                if (lr, x) in grid.cells]
        return (decision_plot(finding, plot_dir)
                + [self._bars(Path(plot_dir), grid.cells, grid.lrs, grid.warmup, acc,
                              grid.study.metric)]
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
              lrs: list[float], w: float, acc: cmp.RunValue, metric: str) -> str:
        """Failure rate and mean final accuracy per placed LR, warmup 0 vs w, side by side."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.0, 5.5))
        top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
        xs = range(len(lrs))
        for shift, warmup, color in ((-0.2, 0.0, "tab:red"), (0.2, w, "tab:blue")):
            runs = [cells.get((lr, warmup)) for lr in lrs]
            rate = [sum(failed(t, metric) for t in r.runs) / len(r.runs) if r and r.runs
                    else 0.0 for r in runs]
            means = [mean(r.values(acc)) if r else math.nan for r in runs]
            label = f"warmup {warmup:g} epoch{'' if warmup == 1 else 's'}"
            top.bar([x + shift for x in xs], rate, width=0.4, color=color, label=label)
            bottom.bar([x + shift for x in xs], means, width=0.4, color=color, label=label)
        for ax, ylabel in ((top, "failure rate"), (bottom, "mean final val accuracy")):
            ax.set_xticks(list(xs), [f"{lr:g}" for lr in lrs])
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3, axis="y")
        top.legend(fontsize="small")
        top.set_title("R10: warmup above the largest LR stable without warmup")
        bottom.set_xlabel("peak learning rate (placed from the scan)")
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
