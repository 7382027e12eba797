"""What Ray and the service add over a bare training loop (issue: core).

One 24-trial digits study (a 3x2x4 grid, 12 epochs, no pruning, so every way runs the
same 24 configurations to the end), eight ways, in one process tree:

  bare      the objective called in a plain Python loop, sequentially (torch threads = CPUs)
  optuna    plain Optuna `study.optimize`, sequential, SQLite storage, per-epoch reports
            (torch threads = CPUs, the default; and = 1, as each liandan trial gets)
  bound     two plain processes of 1 thread each taking configurations from a queue: no
            Ray, no Optuna, no records, started before the clock. The most any runner of
            2 concurrent 1-CPU trials can get from this machine (an optimistic bound).
  ray       two plain Ray actors of 1 CPU each fed by an `ActorPool` (no Tune, no Optuna),
            started before the clock: what Ray itself costs against the bound
  liandan   `run_study` at 2 concurrent trials of 1 CPU each, less the time its in-process
            Ray took to start (its stop at the end is counted)

and two of them as a user starts them, from a fresh process to its exit (imports, data,
Ray's start and stop included): `optuna_cold`, the plain Optuna way as a script of its
own, and `liandan_cold`, `liandan run SPEC --no-report`. The ways above are timed warm:
plain Optuna after the bench process has imported torch and loaded the data, liandan
once Ray has started (but with its trial workers still to start and import torch).

This machine's speed drifts by 10-30% over minutes (shared 2-vCPU host), so the ways run
in interleaved rounds, each round in a rotated order, and the headline ratios are the
median of per-round ratios (each from the same round's runs) with their range.

Then the training loop's samples/s against a hand-written loop of the same model and batch
size (alternating, medians), and the peak memory (PSS) of a whole
`liandan run search_spaces/quickstart.yaml`, driver and Ray processes together.

Targets on 2 cores: liandan >= 1.6x faster than plain sequential Optuna; wall time added
per trial beyond (trial compute / concurrency) <= 25%; loop samples/s >= 0.95 of the bare
hand-written loop; quickstart peak memory <= 4 GiB.

    .venv/bin/python bench/overhead.py [--rounds 3]   # writes bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import psutil
import torch
import yaml
from record import RESULTS, machine, now, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from objectives import resolve  # noqa: E402
from objectives.data import load  # noqa: E402
from objectives.models import SmallCNN  # noqa: E402

# service (and so Ray) is imported where used: `optuna_cold` runs this file as its script.

GRID = {"batch_size": [32, 64, 128], "optimizer": ["momentum", "adam"],
        "lr": [0.003, 0.01, 0.03, 0.1]}
FIXED = {"epochs": 12, "decay": "cosine", "seed": 0}
SPEC = {
    "name": "bench-overhead", "objective": "digits_cnn",
    "nuisance": {k: v for k, v in GRID.items()}, "fixed": FIXED,
    "budget": {"trials": 24, "seeds": 0, "max_concurrent": 2},
    "search": {"sampler": "grid", "pruner": "none"}, "resources": {"cpu": 1, "gpu": 0},
}


def configs() -> list[dict]:
    return [{"batch_size": b, "optimizer": o, "lr": lr, **FIXED}
            for b in GRID["batch_size"] for o in GRID["optimizer"] for lr in GRID["lr"]]


def bare(threads: int) -> dict:
    torch.set_num_threads(threads)
    objective = resolve("digits_cnn")
    times = []
    t0 = time.perf_counter()
    for config in configs():
        t = time.perf_counter()
        for _ in objective(config):
            pass
        times.append(time.perf_counter() - t)
    return {"wall_s": time.perf_counter() - t0, "trial_s": times, "threads": threads}


def plain_optuna(threads: int, db: Path) -> dict:
    torch.set_num_threads(threads)
    objective = resolve("digits_cnn")

    def run(trial: optuna.Trial) -> float:
        params = {"batch_size": trial.suggest_categorical("batch_size", GRID["batch_size"]),
                  "optimizer": trial.suggest_categorical("optimizer", GRID["optimizer"]),
                  "lr": trial.suggest_categorical("lr", GRID["lr"]), **FIXED}
        value = 0.0
        for metrics in objective(params):
            value = metrics["val_accuracy"]
            trial.report(value, metrics["epoch"])
        return value

    study = optuna.create_study(storage=f"sqlite:///{db}", direction="maximize",
                                sampler=optuna.samplers.GridSampler(GRID))
    t0 = time.perf_counter()
    study.optimize(run, n_trials=24)
    return {"wall_s": time.perf_counter() - t0, "threads": threads}


def plain_optuna_cold(db: Path) -> dict:
    """Plain Optuna as a script run from a shell: interpreter start to exit."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child-optuna", str(db)], cwd=ROOT, check=True)
    return {"wall_s": time.perf_counter() - t0}


def liandan_cold(db: Path) -> dict:
    """`liandan run` from a shell: interpreter start to exit (no report: Optuna writes none)."""
    spec = db.with_suffix(".yaml")
    spec.write_text(yaml.safe_dump(SPEC))
    t0 = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "liandan"), "run", str(spec), "--storage",
                    f"sqlite:///{db}", "--no-progress", "--no-report"], cwd=db.parent,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"wall_s": time.perf_counter() - t0}


def liandan(db: Path) -> dict:
    from service.run.runner import run_study
    from service.spec import validate_spec

    spec = validate_spec(SPEC)
    cpu0 = time.process_time()
    result = run_study(spec, f"sqlite:///{db}", show_progress=False)  # starts and ends Ray
    run_s, driver_cpu_s = result.wall_s - result.ray_start_s, time.process_time() - cpu0
    study = optuna.load_study(study_name="bench-overhead", storage=f"sqlite:///{db}")
    # Time inside the objective, measured by the worker around each epoch's `next()`.
    per_trial = [t.user_attrs["compute_s"] for t in study.trials]
    # From ask to tell: the trial's record spans its compute, the round trip of each epoch's
    # result, and Tune's start and end of the trial (the first two: starting the workers).
    records = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    return {"wall_s": run_s, "ray_start_s": result.ray_start_s, "trial_compute_s": per_trial,
            "trial_record_s": records, "driver_cpu_s": driver_cpu_s,
            "n_trials": len(study.trials), "concurrency": 2}


def _pool_init() -> None:
    torch.set_num_threads(1)
    load("digits", "cpu")  # each process caches its data once, as a liandan worker does


def _pool_trial(config: dict) -> float:
    start = time.perf_counter()
    for _ in resolve("digits_cnn")(config):
        pass
    return time.perf_counter() - start


def bound(processes: int = 2) -> dict:
    """Two plain 1-thread processes pulling configurations from a queue (no Ray/Optuna)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(processes, initializer=_pool_init) as pool:
        pool.map(_pool_trial, [{**configs()[-1], "epochs": 1}] * processes)  # warm up
        t0 = time.perf_counter()
        times = pool.map(_pool_trial, configs(), chunksize=1)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "trial_s": times, "processes": processes}


def ray_actors(processes: int = 2) -> dict:
    """The bound's work on plain Ray actors: Ray's own cost, without Tune or Optuna."""
    import ray
    from ray.util import ActorPool

    from service.run.runner import ensure_ray, stop_ray

    ensure_ray(None)
    worker = ray.remote(num_cpus=1)(_Worker)
    actors = [worker.remote() for _ in range(processes)]
    ray.get([a.trial.remote({**configs()[-1], "epochs": 1}) for a in actors])  # warm up
    t0 = time.perf_counter()
    times = list(ActorPool(actors).map(lambda a, c: a.trial.remote(c), configs()))
    wall = time.perf_counter() - t0
    stop_ray()
    return {"wall_s": wall, "trial_s": times, "processes": processes}


class _Worker:
    def __init__(self) -> None:
        _pool_init()

    def trial(self, config: dict) -> float:
        return _pool_trial(config)


def loop_throughput(batch_size: int = 64, epochs: int = 6, repeats: int = 4) -> dict:
    """train_classifier's samples/s vs a hand-written loop, same model/batch/threads,
    alternating the two so that drift of the machine's speed hits both alike."""
    torch.set_num_threads(1)
    data = load("digits", "cpu")
    objective = resolve("digits_cnn")

    def ours(seed: int) -> list[float]:
        metrics = list(objective({"batch_size": batch_size, "optimizer": "momentum",
                                  "lr": 0.05, "epochs": epochs, "seed": seed}))
        return [m["samples_per_s"] for m in metrics[1:]]  # epoch 1 is warm-up

    def hand_written(seed: int) -> list[float]:
        torch.manual_seed(seed)
        model = SmallCNN(1, 10, 32, batchnorm=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        n = len(data.x_train)
        steps = n // batch_size
        rates = []
        for epoch in range(epochs):
            t = time.perf_counter()
            order = torch.randperm(n)
            for i in range(steps):
                idx = order[i * batch_size:(i + 1) * batch_size]
                loss = torch.nn.functional.cross_entropy(model(data.x_train[idx]),
                                                         data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if epoch > 0:
                rates.append(steps * batch_size / (time.perf_counter() - t))
        return rates

    our_rates: list[float] = []
    bare_rates: list[float] = []
    for r in range(repeats):
        our_rates += ours(r)
        bare_rates += hand_written(r)
    ours_med, bare_med = statistics.median(our_rates), statistics.median(bare_rates)
    return {"batch_size": batch_size, "threads": 1, "liandan_samples_per_s": ours_med,
            "bare_samples_per_s": bare_med, "ratio": ours_med / bare_med}


def quickstart_peak_memory(db: Path) -> dict:
    """Peak summed PSS of the `liandan run` process tree (driver + Ray processes)."""
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "liandan"), "run", str(ROOT / "search_spaces" /
         "quickstart.yaml"), "--storage", f"sqlite:///{db}", "--no-progress"],
        cwd=db.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = psutil.Process(proc.pid)
    peak, peak_procs, stop = 0, 0, threading.Event()

    def sample() -> None:
        nonlocal peak, peak_procs
        while not stop.is_set():
            total, count = 0, 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in procs:
                try:
                    total += p.memory_full_info().pss
                    count += 1
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            if total > peak:
                peak, peak_procs = total, count
            time.sleep(0.25)

    sampler = threading.Thread(target=sample)
    t0 = time.perf_counter()
    sampler.start()
    rc = proc.wait()
    stop.set()
    sampler.join()
    return {"returncode": rc, "wall_s": time.perf_counter() - t0,
            "peak_pss_gib": peak / 2**30, "processes_at_peak": peak_procs}


def one_round(order: list[str], tmp: Path) -> dict:
    """Each way once, in `order`."""
    threads = os.cpu_count() or 1
    ways = {"bare": lambda: bare(threads),
            "optuna": lambda: plain_optuna(threads, tmp / f"o{time.time_ns()}.db"),
            "optuna_1thread": lambda: plain_optuna(1, tmp / f"o1{time.time_ns()}.db"),
            "bound": bound,
            "ray": ray_actors,
            "liandan": lambda: liandan(tmp / f"l{time.time_ns()}.db"),
            "optuna_cold": lambda: plain_optuna_cold(tmp / f"oc{time.time_ns()}.db"),
            "liandan_cold": lambda: liandan_cold(tmp / f"lc{time.time_ns()}.db")}
    out = {}
    for name in order:
        out[name] = ways[name]()
        print(f"  {name:15s} {out[name]['wall_s']:6.1f} s", flush=True)
    lw = out["liandan"]
    ideal = sum(lw["trial_compute_s"]) / lw["concurrency"]
    out["ratios"] = {
        "speedup_vs_plain_optuna": out["optuna"]["wall_s"] / lw["wall_s"],
        "speedup_vs_plain_optuna_incl_ray_start":
            out["optuna"]["wall_s"] / (lw["wall_s"] + lw["ray_start_s"]),
        "speedup_cold": out["optuna_cold"]["wall_s"] / out["liandan_cold"]["wall_s"],
        "speedup_vs_plain_optuna_1thread": out["optuna_1thread"]["wall_s"] / lw["wall_s"],
        "bound_speedup_vs_plain_optuna": out["optuna"]["wall_s"] / out["bound"]["wall_s"],
        "liandan_share_of_bound": out["bound"]["wall_s"] / lw["wall_s"],
        "ray_actors_share_of_bound": out["bound"]["wall_s"] / out["ray"]["wall_s"],
        "optuna_over_bare": out["optuna"]["wall_s"] / out["bare"]["wall_s"],
        "added_wall_per_trial_fraction": (lw["wall_s"] - ideal) / ideal,
        "added_wall_per_trial_s": (lw["wall_s"] - ideal) / lw["n_trials"],
        # Trials slow each other down through the CPU that Ray, the driver and the other
        # trial take: their summed compute against the same trials alone in the bound.
        "trial_compute_over_bound": sum(lw["trial_compute_s"]) / sum(out["bound"]["trial_s"]),
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child-optuna", type=Path, help=argparse.SUPPRESS)  # for optuna_cold
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per plain-Optuna trial
    if args.child_optuna:
        plain_optuna(os.cpu_count() or 1, args.child_optuna)
        return
    out: dict = {"date": now(), "machine": machine(torch=torch.__version__, device="cpu"),
                 "study": "24 digits_cnn trials, grid 3x2x4, 12 epochs, no pruning",
                 "code_version": subprocess.run(
                     ["git", "describe", "--always", "--dirty"], cwd=ROOT,
                     capture_output=True, text=True).stdout.strip(),
                 "rounds": []}
    names = ["bare", "optuna", "optuna_1thread", "bound", "ray", "liandan", "optuna_cold",
             "liandan_cold"]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            print(f"round {r + 1}/{args.rounds}: {' -> '.join(order)}", flush=True)
            out["rounds"].append(one_round(order, Path(tmp)))
        rounds = out["rounds"]

        def med(name: str) -> float:
            return statistics.median(r[name]["wall_s"] for r in rounds)

        def ratio(key: str) -> dict:
            values = [r["ratios"][key] for r in rounds]
            return {"median": statistics.median(values), "min": min(values),
                    "max": max(values)}

        out["median_wall_s"] = {name: med(name) for name in names}
        out["ratios"] = {key: ratio(key) for key in rounds[0]["ratios"]}
        m, r = out["median_wall_s"], out["ratios"]
        ray_start = statistics.median(x["liandan"]["ray_start_s"] for x in rounds)
        print(f"\nmedians over {len(rounds)} rounds (ratios: median of per-round, [min-max])")
        print(f"bare loop, sequential:        {m['bare']:6.1f} s")
        print(f"plain Optuna, sequential:     {m['optuna']:6.1f} s (torch threads = "
              f"{os.cpu_count()}, the default)")
        print(f"plain Optuna, sequential:     {m['optuna_1thread']:6.1f} s "
              "(torch threads = 1, as each liandan trial)")
        print(f"bound, 2 bare processes:      {m['bound']:6.1f} s (no Ray, no Optuna)")
        print(f"plain Ray, 2 actors:          {m['ray']:6.1f} s (no Tune, no Optuna)")
        print(f"liandan, 2 concurrent:        {m['liandan']:6.1f} s "
              f"(+ {ray_start:.1f} s starting Ray)")

        def show(key: str, scale: float = 1.0, unit: str = "x") -> str:
            v = r[key]
            return (f"{scale * v['median']:.2f}{unit} "
                    f"[{scale * v['min']:.2f}-{scale * v['max']:.2f}]")

        print(f"speed-up vs plain Optuna:     {show('speedup_vs_plain_optuna')}"
              "   target >= 1.6x")
        print(f"  bound's speed-up (no runner): {show('bound_speedup_vs_plain_optuna')}; "
              f"liandan reaches {show('liandan_share_of_bound', 100, '%')} of the bound, "
              f"plain Ray actors {show('ray_actors_share_of_bound', 100, '%')}")
        print(f"  vs 1-thread Optuna: {show('speedup_vs_plain_optuna_1thread')}; "
              f"with Ray start: {show('speedup_vs_plain_optuna_incl_ray_start')}")
        print(f"from a shell, start to exit: plain Optuna script {m['optuna_cold']:.1f} s, "
              f"`liandan run` {m['liandan_cold']:.1f} s: {show('speedup_cold')}")
        print(f"  trials' own compute vs alone in the bound: "
              f"{show('trial_compute_over_bound')}")
        lw = [x["liandan"] for x in rounds]
        beyond = [[r - c for r, c in zip(x["trial_record_s"], x["trial_compute_s"], strict=True)]
                  for x in lw]  # per round, per trial: record time not spent computing
        compute = statistics.median(sum(x["trial_compute_s"]) for x in lw)
        in_records = statistics.median(sum(b) for b in beyond)
        per_trial = statistics.median(statistics.median(b) for b in beyond)
        outside = statistics.median(
            x["concurrency"] * x["wall_s"] - sum(x["trial_record_s"]) for x in lw)
        driver = statistics.median(x["driver_cpu_s"] for x in lw)
        print(f"  liandan's 2 slots: compute {compute:.1f} s, in a trial's record beyond its "
              f"compute {in_records:.1f} s ({1e3 * per_trial:.0f} ms per trial, median), "
              f"outside any record {outside:.1f} s; driver CPU {driver:.1f} s")
        print(f"wall added per trial:         "
              f"{show('added_wall_per_trial_fraction', 100, '%')} beyond "
              "compute/concurrency   target <= 25%")
        out["loop"] = loop_throughput()
        print(f"training loop samples/s:      {out['loop']['liandan_samples_per_s']:.0f} vs "
              f"bare {out['loop']['bare_samples_per_s']:.0f} = {out['loop']['ratio']:.3f}"
              "   target >= 0.95")
        out["quickstart_memory"] = quickstart_peak_memory(Path(tmp) / "qs.db")
        q = out["quickstart_memory"]
        print(f"quickstart peak memory (PSS): {q['peak_pss_gib']:.2f} GiB over "
              f"{q['processes_at_peak']} processes, {q['wall_s']:.0f} s   target <= 4 GiB")
    save(out, RESULTS / "overhead.json")


if __name__ == "__main__":
    main()
