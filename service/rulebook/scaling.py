"""R9: the linear learning-rate scaling rule (multiply the batch by k, multiply the LR by k).

Spec ``r9_lr_grid`` (search_spaces/rulebook/<budget>/): batch-size arms, each searching the
SAME log-spaced LR grid with the grid sampler, so every arm's best LR is picked from identical
candidates. The best LR of an arm is refined between grid points by the vertex of a parabola
through the best point and its two neighbours (in log LR), which removes most of the grid's
discreteness from the slope; an arm whose best LR sits on the grid's edge is only a bound and
is left out of the fit. The slope of log(best LR) on log(batch) is the finding: the claim is
the value 1 (linear scaling), with square-root scaling (0.5) reported as the alternative.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from optuna.trial import TrialState

from service import records
from service.report.edges import search_space_warnings
from service.rulebook import stats
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook._batch_data import arms_by_batch, plot_file
from service.rulebook.compare import outcome
from service.rulebook.decision import Hypothesis, Part, value_part
from service.rulebook.describe import describe_budget, fmt_ci, standard_caveats
from service.rulebook.figures import batch_axis, decision_plot, save_plot
from service.store.study_data import ArmData, StudyData

TARGET, MARGIN = 1.0, 0.25  # claimed slope, and how far from it still counts as linear


def best_lr(arm: ArmData, direction: str, spec_grid: list[float]) -> dict[str, Any] | None:
    """The arm's best LR on its grid: grid point, parabolic refinement, and whether on an edge.

    The grid is the spec's LR list (plus any LR tried off it), so an untried grid point (a
    study cut short) is a gap, not a neighbour. Trials that failed (a diverged run whose metric
    is NaN) were tried but have no value; the refinement needs both neighbours to have one.
    """
    tried = [t for t in arm.tune((TrialState.COMPLETE, TrialState.FAIL))
             if "lr" in t.params and outcome(t)]
    grid = sorted(set(spec_grid) | {float(t.params["lr"]) for t in tried})
    scored = {float(t.params["lr"]): float(t.value) for t in tried
              if t.state == TrialState.COMPLETE and records.finite(t.value)}
    if not scored:
        return None
    sign = records.sign(direction)
    lr0 = max(scored, key=lambda lr: sign * scored[lr])
    i = grid.index(lr0)
    refined = math.log10(lr0)
    if 0 < i < len(grid) - 1 and grid[i - 1] in scored and grid[i + 1] in scored:
        xs = [math.log10(grid[j]) for j in (i - 1, i, i + 1)]
        ys = [sign * scored[grid[j]] for j in (i - 1, i, i + 1)]
        a, b, _ = np.polyfit(xs, ys, 2)
        if a < 0:  # a proper peak; a flat top keeps the grid point
            refined = float(np.clip(-b / (2 * a), xs[0], xs[2]))
    return {"best lr (grid)": lr0, "best_lr": 10**refined, "best value": scored[lr0],
            "edge": i in (0, len(grid) - 1), "grid points scored": f"{len(scored)}/{len(grid)}",
            "diverged": sum(map(records.diverged, tried))}


class LinearLrScaling(RuleCheck):
    rule = "R9"
    claim = ("The best learning rate grows in proportion to the batch size: the slope of "
             "log(best LR) on log(batch size) is 1 (within +-0.25), not 0.5 (square-root)")
    blog_zh = ("针对batch的变化，线性增加学习率\n"  # the blog's heading, then its paragraph
               "通常增大batch size会降低收敛率，那就需要在学习率上做些改动，"
               "根据经验batch size增加多少倍，学习率也增加多少倍。")
    blog_en = ("Increase the learning rate linearly as the batch changes. Enlarging the batch "
               "usually slows convergence, so the learning rate has to change: by experience, "
               "multiply the learning rate by the same factor as the batch size.")
    literature = (
        "Goyal et al. 2017 train ImageNet with linear scaling plus warmup up to batch 8k; "
        "Hoffer et al. 2017 argue for square-root scaling (to keep the gradient noise "
        "covariance), McCandlish et al. 2018 predict linear scaling only below the critical "
        "batch size and saturation above it, and Shallue et al. 2019 find that the best LR "
        "follows neither rule consistently across workloads.")
    specs = ("r9_lr_grid",)
    needs = ("batch_size", "lr")

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        study = studies.get("r9_lr_grid")
        if study is None:
            return not_tested(self.rule, self.claim, "the r9_lr_grid study did not run")
        domain = study.spec.get("nuisance", {}).get("lr")
        spec_grid = [float(v) for v in domain] if isinstance(domain, list) else []
        return study, [(b, arm, best_lr(arm, study.direction, spec_grid))
                       for b, arm in arms_by_batch(study)]

    @staticmethod
    def points(found: list) -> list[tuple[int, float]]:
        """(batch, refined best LR) of the arms whose best is inside the grid."""
        return [(b, best["best_lr"]) for b, _, best in found if best and not best["edge"]]

    def estimate(self, loaded: Any) -> list[Part]:
        _, found = loaded
        pts = self.points(found)
        x = np.log([p[0] for p in pts]) if pts else np.array([])
        fit = (stats.least_squares(np.column_stack([np.ones_like(x), x]), np.log([p[1] for p
                                                                               in pts]))
               if len(pts) >= 3 and np.ptp(x) > 0 else None)
        if fit is None:
            return [Part("slope of log best LR on log batch is 1", "slope", "too few points",
                         math.nan, None, [len(pts)], [Hypothesis("support", "value tost", None)])]
        slope_, se = fit.coef(1)
        return [value_part("slope of log best LR on log batch is 1", "slope", slope_, se,
                           fit.df, target=TARGET, margin=MARGIN, n=[len(pts)],
                           method=f"OLS of log best LR on log batch over {len(pts)} arms (the "
                                  f"arms are the unit), t with df={fit.df}; TOST inside "
                                  f"{TARGET:g} ± {MARGIN:g}, one-sided tests outside it")]

    def describe(self, loaded: Any, parts: list[Part]) -> Finding:
        study, found = loaded
        part = parts[0]
        f = Finding(rule=self.rule, claim=self.claim, parts=parts, method=part.test,
                    studies=[study.name], caveats=standard_caveats([study]))
        f.protocol = (f"{describe_budget(study)}. Best LR per arm = the grid point with the best "
                      f"final {study.metric}, refined by a parabola through it and its two "
                      "neighbours in log LR; arms whose best is on the grid's edge are left out.")
        f.table = [{"batch_size": b, **(best or {"best_lr": None})} for b, _, best in found]
        pts = self.points(found)
        edges = [b for b, _, best in found if best and best["edge"]]
        if edges:
            f.caveats.append(f"best LR on the grid's edge (a bound, not an estimate) at batch "
                             f"{edges}: left out of the fit; widen the grid")
        if part.ci is None:
            f.evidence = (f"only {len(pts)} batch sizes have a best LR inside the grid; a "
                          "slope with an interval needs 3")
            return f
        sqrt_t = (part.effect - 0.5) / ((part.ci[1] - part.ci[0]) / 2 / 1.96)
        f.evidence = (f"Across batch {pts[0][0]}-{pts[-1][0]} ({len(pts)} arms) the best LR "
                      f"scales as batch^{part.effect:.2f} (95% CI {fmt_ci(part.ci)}); linear "
                      f"scaling claims 1 ± {MARGIN:g}; square-root scaling (0.5) is "
                      f"{abs(sqrt_t):.1f} standard errors away (descriptive).")
        f.caveats += ["each arm's LR curve comes from one tuning seed; the criterion is the "
                      f"final {study.metric} after a fixed number of epochs (Goyal's setting)",
                      "one best LR per arm: the scatter about the line holds both tuning noise "
                      "and any curvature, so lack of fit cannot be told from noise here"]
        # Edge arms are left out of the fit, so they are listed but do not block the verdict.
        f.search_space_warnings += search_space_warnings(study)
        return f

    def plot(self, loaded: Any, finding: Finding, plot_dir: Any) -> list[str]:
        study, found = loaded
        return decision_plot(finding, plot_dir) + _plot(study, found, finding, plot_dir)


def _plot(study: StudyData, found: list, f: Finding, plot_dir: Any) -> list[str]:
    """The LR grid per arm, and the best LR per arm against batch with the fit, 1 and 0.5."""
    if not any(best for _, _, best in found):
        return []
    fig = Figure(figsize=(9, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    for b, arm, _ in found:
        pts = sorted((t.params["lr"], t.value) for t in arm.tune()
                     if t.value is not None and "lr" in t.params)
        if pts:
            ax1.plot(*zip(*pts, strict=True), marker="o", ms=3, label=f"batch {b}")
    # A diverging LR's loss can be 1000x the best one's: a log axis keeps the optimum visible.
    positive = all(t.value > 0 for _, arm, _ in found for t in arm.tune() if t.value is not None)
    ax1.set(xscale="log", yscale="log" if positive else "linear", xlabel="lr",
            ylabel=study.metric, title="R9: the LR grid per arm")
    ax1.legend(fontsize=7)
    pts = [(b, best["best_lr"], best["edge"]) for b, _, best in found if best]
    for edge, marker in ((False, "o"), (True, "x")):
        sel = [(b, lr) for b, lr, e in pts if e == edge]
        if sel:
            ax2.scatter(*zip(*sel, strict=True), marker=marker,
                        label="grid edge (not fitted)" if edge else "best lr")
    inside = [(b, lr) for b, lr, e in pts if not e]
    if f.effect is not None and math.isfinite(f.effect) and inside:
        xb = np.geomspace(min(p[0] for p in pts), max(p[0] for p in pts), 20)
        x0 = math.exp(np.mean(np.log([p[0] for p in inside])))
        y0 = math.exp(np.mean(np.log([p[1] for p in inside])))
        for k, style in ((f.effect, "k-"), (1.0, "g--"), (0.5, "r:")):
            ax2.plot(xb, y0 * (xb / x0) ** k, style, lw=1, label=f"slope {k:.2f}")
    batch_axis(ax2, [p[0] for p in pts])
    ax2.set(yscale="log", ylabel="best lr", title="R9: best LR vs batch size")
    ax2.legend(fontsize=7)
    return save_plot(fig, plot_dir, plot_file("R9", study), f)


CHECKS: list[RuleCheck] = [LinearLrScaling()]
