"""How long a report takes on a big study (issue: reports).

Claim: `write_study_report` on a 10,000-trial study in SQLite (5 epochs of intermediate
values and the ◆ user attributes per trial) takes <= 10 s on 2 cores, in bounded memory.

Two synthetic studies, built once with `study.add_trials` (no training):

  search   10,000 trials in one study (a plain search: best trials, history, importances)
  arms     4 arms x 2,500 trials (per-arm table, isolation plot, learning curves)

Each report is written in a fresh process, so its peak RSS (VmHWM) is the report's own
plus the imports, not the building of the study; a second run under `tracemalloc`
gives the peak of Python allocations alone (slower, so it is not the timed run).

    .venv/bin/python bench/report_scale.py      # writes bench/results/report_scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial
from record import RESULTS, now, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.spec import validate_spec  # noqa: E402

TRIALS = 10_000
EPOCHS = 5
TARGET_S = 10.0
RESULT = RESULTS / "report_scale.json"


# ------------------------------------------------------------------ synthetic studies
def _spec(name: str, arms: int) -> dict:
    scientific = {"batch_size": [32, 64, 128, 256][:arms]} if arms > 1 else {}
    nuisance = {"lr": {"low": 1e-4, "high": 1.0, "log": True},
                "momentum": {"low": 0.5, "high": 0.99},
                "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True}}
    if arms == 1:
        nuisance["batch_size"] = [32, 64, 128, 256]
    return validate_spec({
        "name": name, "objective": "digits_cnn", "scientific": scientific,
        "nuisance": nuisance, "fixed": {"epochs": EPOCHS, "decay": "cosine"},
        "budget": {"trials": TRIALS // arms, "seeds": 5},
    }, check_objective=False).model_dump(mode="json")


def _trial(rng: random.Random, number: int, fixed: dict, role: str) -> optuna.trial.FrozenTrial:
    lr = math.exp(rng.uniform(math.log(1e-4), 0.0))
    params = {"lr": lr, "momentum": rng.uniform(0.5, 0.99),
              "weight_decay": math.exp(rng.uniform(math.log(1e-6), math.log(1e-2))),
              "epochs": EPOCHS, "decay": "cosine", "seed": 0 if role == "tune" else number,
              **fixed}
    dists = {"lr": FloatDistribution(1e-4, 1.0, log=True),
             "momentum": FloatDistribution(0.5, 0.99),
             "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
             "epochs": CategoricalDistribution([EPOCHS]), "decay": CategoricalDistribution(
                 ["cosine"]), "seed": IntDistribution(params["seed"], params["seed"])}
    if "batch_size" not in fixed:
        params["batch_size"] = rng.choice([32, 64, 128, 256])
        dists["batch_size"] = CategoricalDistribution([32, 64, 128, 256])
    else:
        dists["batch_size"] = CategoricalDistribution([fixed["batch_size"]])
    ceiling = 0.97 - abs(math.log10(lr) + 1.5) / 6
    outcome = rng.random()
    epochs = EPOCHS if outcome < 0.9 else rng.randint(1, EPOCHS - 1)
    curve = {e: ceiling * (1 - 0.5**e) + rng.gauss(0, 0.01) for e in range(1, epochs + 1)}
    last = curve[epochs]
    diverged = lr > 0.6 and outcome > 0.97
    state = TrialState.COMPLETE if epochs == EPOCHS or diverged else TrialState.PRUNED
    attrs = {"role": role, "device": "cpu", "node_id": "f" * 56, "val_accuracy": last,
             "val_loss": 1 - last, "train_loss": 0.9 - last, "samples_per_s": 4000.0,
             "loss_oscillation": 0.1, "diverged": diverged, "epoch": epochs}
    if fixed:
        attrs["arm"] = f"batch_size={fixed['batch_size']}"
    return create_trial(state=state, value=last if state == TrialState.COMPLETE else None,
                        params=params, distributions=dists, user_attrs=attrs,
                        intermediate_values=curve)


def bulk_insert(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Insert finished trials in one transaction of multi-row INSERTs.

    `study.add_trials` issues a query per attribute (~40 ms per trial here: 7 minutes for
    10,000), so this writes the rows of Optuna's own tables directly. It relies on the RDB
    schema, so `build` reads a trial back and compares it with what went in.
    """
    from optuna.storages._rdb import models

    engine = getattr(study._storage, "_backend", study._storage).engine  # under the cache
    value_type = models.TrialValueModel.TrialValueType.FINITE
    inter_type = models.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        first = conn.execute(models.TrialModel.__table__.select().order_by(
            models.TrialModel.trial_id.desc()).limit(1)).first()
        next_id = (first.trial_id + 1) if first else 1
        rows: dict[str, list[dict]] = {"trials": [], "params": [], "values": [], "inter": [],
                                       "attrs": []}
        for number, t in enumerate(trials):
            tid = next_id + number
            rows["trials"].append({"trial_id": tid, "number": number,
                                   "study_id": study._study_id, "state": t.state,
                                   "datetime_start": now, "datetime_complete": now})
            rows["params"] += [{"trial_id": tid, "param_name": k,
                                "param_value": t.distributions[k].to_internal_repr(v),
                                "distribution_json": optuna.distributions.distribution_to_json(
                                    t.distributions[k])} for k, v in t.params.items()]
            if t.value is not None:
                rows["values"].append({"trial_id": tid, "objective": 0, "value": t.value,
                                       "value_type": value_type})
            rows["inter"] += [{"trial_id": tid, "step": s, "intermediate_value": v,
                               "intermediate_value_type": inter_type}
                              for s, v in t.intermediate_values.items()]
            rows["attrs"] += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)}
                              for k, v in t.user_attrs.items()]
        for key, model in (("trials", models.TrialModel), ("params", models.TrialParamModel),
                           ("values", models.TrialValueModel),
                           ("inter", models.TrialIntermediateValueModel),
                           ("attrs", models.TrialUserAttributeModel)):
            conn.execute(model.__table__.insert(), rows[key])


def build(url: str, name: str, arms: int) -> float:
    """Create the study (one Optuna study per arm); returns the seconds it took."""
    t0 = time.perf_counter()
    spec = _spec(name, arms)
    rng = random.Random(0)
    values = spec["scientific"].get("batch_size", [None])
    for value in values:
        label = f"batch_size={value}" if value is not None else ""
        study = optuna.create_study(study_name=f"{name}[{label}]" if label else name,
                                    storage=url, direction="maximize")
        for key, attr in (("spec", spec), ("spec_name", name), ("arm", label or None),
                          ("arm_values", {"batch_size": value} if label else {})):
            study.set_user_attr(key, attr)
        fixed = {"batch_size": value} if label else {}
        per_arm = TRIALS // len(values)
        trials = [_trial(rng, i, fixed, "tune" if i < per_arm - 5 else "seed")
                  for i in range(per_arm)]
        bulk_insert(study, trials)
        # The bulk path bypasses Optuna's API: check a trial reads back as it went in.
        back = study.get_trials(deepcopy=False)
        assert len(back) == per_arm, len(back)
        for got, want in ((back[0], trials[0]), (back[-1], trials[-1])):
            assert (got.state, got.value, got.params, got.user_attrs,
                    got.intermediate_values) == (want.state, want.value, want.params,
                                                 want.user_attrs, want.intermediate_values)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ measuring
def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over an
    exec, so a child started by the process that built the study would report the
    builder's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(url: str, name: str, out: str, trace: bool) -> None:
    """Write one report in this (fresh) process and print its cost as JSON."""
    import tracemalloc

    from service.report.study import write_study_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rss_before = peak_rss_mib()
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    paths = write_study_report(url, name, out)
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    print(json.dumps({
        "wall_s": round(wall, 3), "plots": len(paths.plots), "noted": len(paths.noted),
        "rss_before_mib": round(rss_before, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
        "tracemalloc_peak_mib": None if peak is None else round(peak / 2**20, 1),
    }))


def measure(url: str, name: str, out: Path, trace: bool = False) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", url, name, str(out)]
                          + (["--trace"] if trace else []), capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = {"machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(), "optuna": optuna.__version__,
                           "date": now(),
                           # Shared cores: the load says how much of them the run had.
                           "load_avg_1m_start": round(os.getloadavg()[0], 2)},
               "trials": TRIALS, "epochs": EPOCHS, "target_s": TARGET_S, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="liandan-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        for name, arms in (("search", 1), ("arms", 4)):
            build_s = build(url, name, arms)
            # Best of two: the CI machine is shared, and a neighbour's burst is not ours.
            runs = [measure(url, name, Path(tmp) / "reports") for _ in range(2)]
            timed = min(runs, key=lambda r: r["wall_s"])
            traced = measure(url, name, Path(tmp) / "reports", trace=True)
            case = {"arms": arms, "build_s": round(build_s, 1), **timed,
                    "wall_s_runs": [r["wall_s"] for r in runs],
                    "tracemalloc_peak_mib": traced["tracemalloc_peak_mib"],
                    "meets_target": timed["wall_s"] <= TARGET_S}
            results["cases"][name] = case
            print(f"{name:7s} {TRIALS} trials / {arms} arm(s): report {timed['wall_s']:.2f} s "
                  f"(target <= {TARGET_S:g} s), peak RSS {timed['peak_rss_mib']:.0f} MiB "
                  f"(after imports {timed['rss_before_mib']:.0f}), Python peak "
                  f"{traced['tracemalloc_peak_mib']:.0f} MiB; built in {build_s:.1f} s")
    results["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    save(results, RESULT)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("URL", "NAME", "OUT"))
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(*args.child, trace=args.trace)
    else:
        main()
