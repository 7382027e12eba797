"""R1: the blog's throughput rule (power-of-two batch sizes run faster than their neighbours).

Spec ``r1_throughput`` (search_spaces/rulebook/<budget>/): nine batch sizes, nothing tuned,
the same run repeated; each epoch's samples/s is the study metric, so every epoch is an
intermediate value and epoch 1 (warm-up) can be left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from service import records
from service.rulebook import stats
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook._batch_data import arms_by_batch, plot_file
from service.rulebook.decision import Hypothesis, Part, t_part
from service.rulebook.describe import describe_budget, fmt_ci, standard_caveats
from service.rulebook.figures import batch_axis, decision_plot, save_plot
from service.store.study_data import StudyData

R1_PAIRS = ((32, 30), (64, 60), (128, 100), (128, 120), (256, 250))
R1_MARGIN = math.log(1.03)  # throughputs within 3% are practically the same


def _is_pow2(b: int) -> bool:
    return b > 0 and b & (b - 1) == 0


def _trial_throughput(t: FrozenTrial, per_epoch: bool) -> float | None:
    """log samples/s of one timing run: the median over epochs 2.. (epoch 1 warms up)."""
    if per_epoch:
        vals = [v for e, v in sorted(t.intermediate_values.items()) if e >= 2]
    else:
        vals = [t.user_attrs.get("samples_per_s")]
    logs = [math.log(v) for v in vals if records.finite(v) and v > 0]
    return float(np.median(logs)) if logs else None


class PowerOfTwoThroughput(RuleCheck):
    rule = "R1"
    claim = ("Power-of-two batch sizes have a higher training throughput (samples/s) than their "
             "neighbouring non-powers (30/32, 60/64, 100/128, 120/128, 250/256), beyond the "
             "smooth rise of throughput with batch size")
    blog_zh = ("GPU对2的幂次的batch可以发挥更佳的性能，"
               "设置成32、64、128…时往往要比设置为整10倍数时表现更优。")
    blog_en = ("GPUs get better performance from power-of-two batch sizes: setting 32, 64, "
               "128... often does better than a multiple of ten.")
    literature = (
        "NVIDIA's performance guidance ties tensor-core efficiency to sizes that are multiples "
        "of 8 (16-bit) rather than powers of two, so 120 (a multiple of 8) should run like 128 "
        "while 30, 60, 100 and 250 may not. Goyal et al. 2017 and Shallue et al. 2019 treat a "
        "larger batch as more parallelism, so throughput rises smoothly with batch size until "
        "the device saturates: a raw 2^k-over-neighbour ratio mixes that with the claim.")
    specs = ("r1_throughput",)
    needs = ("batch_size",)

    def load(self, studies: dict[str, StudyData | None]) -> Any:
        study = studies.get("r1_throughput")
        if study is None:
            return not_tested(self.rule, self.claim, "the r1_throughput study did not run")
        per_epoch = study.metric == "samples_per_s"
        points = [(b, y) for b, arm in arms_by_batch(study)
                  for t in arm.trials if t.state == TrialState.COMPLETE
                  if (y := _trial_throughput(t, per_epoch)) is not None]
        return Timings(study, np.array([p[0] for p in points], dtype=float),
                       np.array([p[1] for p in points]), per_epoch)

    def estimate(self, data: Timings) -> list[Part]:
        fit = data.fit()
        claim = "power-of-two bonus over the size trend"
        if fit is None:
            return [Part(claim, "log samples/s", "too few timings", math.nan, None,
                         data.n, [Hypothesis("support", "ols", None)])]
        effect, se = fit.coef(3)
        return [t_part(claim, "log samples/s", effect, se, fit.df, claimed_sign=+1,
                       margin=R1_MARGIN, test="ols", n=data.n,
                       method="OLS of log samples/s on a quadratic in log2(batch) plus a "
                              "power-of-two indicator; effect = the indicator's coefficient "
                              f"(log ratio), t with df={fit.df}",
                       samples={"power of two": list(data.y[data.pow2 == 1] - data.trend()[
                           data.pow2 == 1]), "other": list(data.y[data.pow2 == 0]
                                                          - data.trend()[data.pow2 == 0])})]

    def describe(self, data: Timings, parts: list[Part]) -> Finding:
        study, part = data.study, parts[0]
        f = Finding(rule=self.rule, claim=self.claim, parts=parts, method=part.test,
                    studies=[study.name], caveats=standard_caveats([study]))
        f.protocol = (f"{describe_budget(study)}. Each run (1 + seeds per batch size) is one "
                      "timing; its throughput is the median samples/s over epochs 2.. (epoch 1 "
                      "is warm-up). Nothing is tuned: throughput does not depend on the LR.")
        if not data.per_epoch:
            f.caveats.append("the study metric is not samples_per_s, so only each run's last "
                             "epoch was timed (warm-up cannot be excluded when epochs=1)")
        if part.ci is None:
            f.evidence = (f"too few timings to compare ({len(data.b)} runs over "
                          f"{len(set(data.b))} batch sizes; need 2+ powers, 2+ non-powers, "
                          "7+ runs)")
            return f
        f.table = data.pair_rows()
        raw = [math.log(row["ratio"]) for row in f.table]
        pct = 100 * (math.exp(part.effect) - 1)
        ci_pct = tuple(100 * (math.exp(c) - 1) for c in part.ci)
        raw_txt = (f"; the raw mean ratio over {len(raw)} pairs is {math.exp(np.mean(raw)):.3f}, "
                   "which includes the larger batch's own advantage" if raw else "")
        f.evidence = (f"Power-of-two batch sizes ran {pct:+.1f}% (95% CI "
                      f"{fmt_ci(ci_pct, 1, 1)}%) faster than the smooth size trend through the "
                      f"non-powers predicts{raw_txt}.")
        if not any(d != "cpu" for d in study.devices()):
            f.caveats.append("measured on CPU: the blog's claim is about GPUs, so this finding "
                             "does not speak for a GPU; run the full budget on one")
        if study.spec.get("budget", {}).get("max_concurrent", 1) > 1:
            f.caveats.append("runs shared the machine with concurrent trials: contention adds "
                             "noise (arms are interleaved, so it does not bias one arm)")
        f.caveats.append(f"equivalence margin: +-3% throughput (log {R1_MARGIN:.4f})")
        return f

    def plot(self, data: Timings, finding: Finding, plot_dir: Any) -> list[str]:
        fit = data.fit()
        if fit is None:
            return []
        b, y, pow2 = data.b, data.y, data.pow2
        fig = Figure(figsize=(6.4, 4))
        ax = fig.add_subplot()
        for flag, color, label in ((1, "tab:red", "power of two"), (0, "tab:blue", "other")):
            ax.scatter(b[pow2 == flag], np.exp(y[pow2 == flag]), c=color, s=14, label=label)
        grid = np.geomspace(b.min(), b.max(), 100)
        smooth = np.exp(fit.beta[0] + data.trend(grid))
        ax.plot(grid, smooth, "k-", lw=1, label="size trend (non-power)")
        ax.plot(grid, smooth * math.exp(fit.beta[3]), "k--", lw=1, label="trend x power bonus")
        batch_axis(ax, b)
        ax.set(ylabel="samples/s (median of epochs 2..)",
               title=f"R1 throughput on {', '.join(data.study.devices()) or '?'}")
        ax.legend(fontsize=8)
        return decision_plot(finding, plot_dir) + save_plot(
            fig, plot_dir, plot_file("R1", data.study), finding)


@dataclass
class Timings:
    """R1's timings: batch size and log samples/s per run."""

    study: StudyData
    b: np.ndarray
    y: np.ndarray
    per_epoch: bool

    @property
    def pow2(self) -> np.ndarray:
        return np.array([_is_pow2(int(v)) for v in self.b], dtype=float)

    @property
    def n(self) -> list[int]:
        return [int(self.pow2.sum()), int(len(self.b) - self.pow2.sum())]

    def _x(self, b: np.ndarray) -> np.ndarray:
        return np.log2(b) - np.log2(self.b).mean()

    def fit(self) -> stats.LeastSquares | None:
        """log thr = a + b1 x + b2 x^2 + delta [power of two], x = centred log2(batch): the
        quadratic is the smooth size trend (rise, then saturation), delta what powers add."""
        pow2 = self.pow2
        if len(set(self.b[pow2 == 1])) < 2 or len(set(self.b[pow2 == 0])) < 2 or len(self.b) < 7:
            return None
        x = self._x(self.b)
        return stats.least_squares(np.column_stack([np.ones_like(x), x, x**2, pow2]), self.y)

    def trend(self, b: np.ndarray | None = None) -> np.ndarray:
        """The smooth size trend (without intercept) at batch sizes `b` (default: the runs')."""
        fit = self.fit()
        x = self._x(self.b if b is None else np.asarray(b, dtype=float))
        return np.zeros_like(x) if fit is None else fit.beta[1] * x + fit.beta[2] * x**2

    def pair_rows(self) -> list[dict[str, Any]]:
        """The raw ratio of each 2^k to its neighbour, and the ratio with the trend removed."""
        rows = []
        b, y = self.b, self.y
        for hi, lo in R1_PAIRS:
            yh, yl = y[b == hi], y[b == lo]
            if len(yh) == 0 or len(yl) == 0:
                continue
            raw = float(yh.mean() - yl.mean())
            ci = stats.ratio_ci(np.exp(yh), np.exp(yl)) if min(len(yh), len(yl)) > 1 else None
            w = stats.welch(yh, yl)
            step = float(np.diff(self.trend(np.array([lo, hi], dtype=float)))[0])
            rows.append({
                "pair": f"{hi} vs {lo}", "samples/s (2^k)": round(float(np.exp(yh).mean()), 1),
                "samples/s (other)": round(float(np.exp(yl).mean()), 1),
                "ratio": round(math.exp(raw), 4),
                "ratio 95% CI": None if ci is None or not math.isfinite(ci.low)
                else [round(ci.low, 4), round(ci.high, 4)],
                "Welch p (log, descriptive)": None if w.p_value is None
                else round(w.p_value, 4),
                "size-adjusted ratio": round(math.exp(raw - step), 4),
                "both multiples of 8": lo % 8 == 0, "runs": [len(yh), len(yl)]})
        return rows


CHECKS: list[RuleCheck] = [PowerOfTwoThroughput()]
