"""R1: the blog's throughput rule (power-of-two batch sizes run faster than their neighbours).

Spec ``r1_throughput`` (search_spaces/rulebook/<budget>/): nine batch sizes, nothing tuned,
the same run repeated; each epoch's samples/s is the study metric, so every epoch is an
intermediate value and epoch 1 (warm-up) can be left out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from service.rulebook import stats
from service.rulebook._base import Finding, RuleCheck, not_tested
from service.rulebook._batch_data import (
    arms_by_batch,
    batch_axis,
    describe_budget,
    devices,
    fill,
    fmt_ci,
    fmt_p,
    plot_file,
    save_plot,
    standard_caveats,
    t_estimate,
)
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
    logs = [math.log(v) for v in vals if isinstance(v, int | float) and math.isfinite(v) and v > 0]
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

    def check(self, studies: dict[str, StudyData | None], plot_dir: Any) -> Finding:
        study = studies.get("r1_throughput")
        if study is None:
            return not_tested(self.rule, self.claim, "the r1_throughput study did not run")
        per_epoch = study.metric == "samples_per_s"
        points = [(b, y) for b, arm in arms_by_batch(study)
                  for t in arm.trials if t.state == TrialState.COMPLETE
                  if (y := _trial_throughput(t, per_epoch)) is not None]
        f = Finding(rule=self.rule, claim=self.claim, metric="samples_per_s",
                    studies=[study.name], caveats=standard_caveats([study]))
        f.protocol = (f"{describe_budget(study)}. Each run (1 + seeds per batch size) is one "
                      "timing; its throughput is the median samples/s over epochs 2.. (epoch 1 "
                      "is warm-up). Nothing is tuned: throughput does not depend on the LR.")
        if not per_epoch:
            f.caveats.append("the study metric is not samples_per_s, so only each run's last "
                             "epoch was timed (warm-up cannot be excluded when epochs=1)")
        b = np.array([p[0] for p in points], dtype=float)
        y = np.array([p[1] for p in points])
        pow2 = np.array([_is_pow2(int(v)) for v in b], dtype=float)
        if len(set(b[pow2 == 1])) < 2 or len(set(b[pow2 == 0])) < 2 or len(b) < 7:
            f.evidence = (f"too few timings to compare ({len(b)} runs over "
                          f"{len(set(b))} batch sizes; need 2+ powers, 2+ non-powers, 7+ runs)")
            return f
        # log thr = a + b1 x + b2 x^2 + delta [power of two]: the quadratic in x = log2(batch)
        # is the smooth size trend (rise, then saturation); delta is what powers add on top.
        x = np.log2(b) - np.log2(b).mean()
        design = np.column_stack([np.ones_like(x), x, x**2, pow2])
        beta, *_ = np.linalg.lstsq(design, y, rcond=None)
        df = len(y) - design.shape[1]
        resid_sd = float(np.sqrt(np.sum((y - design @ beta) ** 2) / df))
        cov = resid_sd**2 * np.linalg.pinv(design.T @ design)
        est = t_estimate(float(beta[3]), float(np.sqrt(cov[3, 3])), df, R1_MARGIN,
                          "OLS of log samples/s on a quadratic in log2(batch) plus a "
                          "power-of-two indicator; effect = indicator's coefficient (log ratio)")
        fill(f, est)
        f.claimed_sign = +1
        f.n = [int(pow2.sum()), int(len(pow2) - pow2.sum())]

        def trend(v: float) -> float:
            xv = math.log2(v) - np.log2(b).mean()
            return float(beta[1] * xv + beta[2] * xv**2)

        raw_logs = []
        for hi, lo in R1_PAIRS:
            yh, yl = y[b == hi], y[b == lo]
            if len(yh) == 0 or len(yl) == 0:
                continue
            raw = float(yh.mean() - yl.mean())
            raw_logs.append(raw)
            ci = stats.ratio_ci(np.exp(yh), np.exp(yl)) if min(len(yh), len(yl)) > 1 else None
            w = stats.welch(yh, yl)
            f.table.append({
                "pair": f"{hi} vs {lo}", "samples/s (2^k)": round(float(np.exp(yh).mean()), 1),
                "samples/s (other)": round(float(np.exp(yl).mean()), 1),
                "ratio": round(math.exp(raw), 4),
                "ratio 95% CI": None if ci is None or not math.isfinite(ci.low)
                else [round(ci.low, 4), round(ci.high, 4)],
                "Welch p (log)": None if w.p_value is None else round(w.p_value, 4),
                "size-adjusted ratio": round(math.exp(raw - (trend(hi) - trend(lo))), 4),
                "both multiples of 8": lo % 8 == 0, "runs": [len(yh), len(yl)]})
        pct = 100 * (math.exp(est.effect) - 1)
        ci_pct = None if est.ci is None else tuple(100 * (math.exp(c) - 1) for c in est.ci)
        raw_txt = (f"; the raw mean ratio over {len(raw_logs)} pairs is "
                   f"{math.exp(np.mean(raw_logs)):.3f}, which includes the larger batch's "
                   "own advantage" if raw_logs else "")
        f.evidence = (f"Power-of-two batch sizes ran {pct:+.1f}% (95% CI {fmt_ci(ci_pct, 1, 1)}%,"
                      f" {fmt_p(est.p)}) faster than the smooth size trend through the "
                      f"non-powers predicts{raw_txt}.")
        found = devices([study])
        if not any(d != "cpu" for d in found):
            f.caveats.append("measured on CPU: the blog's claim is about GPUs, so this finding "
                             "does not speak for a GPU; run the full budget on one")
        if study.spec.get("budget", {}).get("max_concurrent", 1) > 1:
            f.caveats.append("runs shared the machine with concurrent trials: contention adds "
                             "noise (arms are interleaved, so it does not bias one arm)")
        f.caveats.append(f"equivalence margin: +-3% throughput (log {R1_MARGIN:.4f})")
        if est.p is not None and est.p >= 0.05 and not est.equivalent:
            n = stats.seeds_needed(est.effect, resid_sd, resid_sd)
            if n:
                f.more_needed = (f"about {n} timing runs per batch size would detect a "
                                 f"{pct:+.1f}% power-of-two effect (80% power)")
        fig = Figure(figsize=(6.4, 4))
        ax = fig.add_subplot()
        for flag, color, label in ((1, "tab:red", "power of two"), (0, "tab:blue", "other")):
            ax.scatter(b[pow2 == flag], np.exp(y[pow2 == flag]), c=color, s=14, label=label)
        grid = np.geomspace(b.min(), b.max(), 100)
        smooth = np.exp(beta[0] + np.array([trend(g) for g in grid]))
        ax.plot(grid, smooth, "k-", lw=1, label="size trend (non-power)")
        ax.plot(grid, smooth * math.exp(beta[3]), "k--", lw=1, label="trend x power bonus")
        batch_axis(ax, b)
        ax.set(ylabel="samples/s (median of epochs 2..)",
               title=f"R1 throughput on {', '.join(found) or '?'}")
        ax.legend(fontsize=8)
        save_plot(fig, plot_dir, plot_file("R1", study), f)
        return f


CHECKS: list[RuleCheck] = [PowerOfTwoThroughput()]
