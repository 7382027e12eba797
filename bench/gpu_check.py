"""The stages of the one prepared GPU check (issue 14); `bench/gpu_check.sh` runs them.

Each stage is its own command and writes its own JSON into the output folder, so a stage
that fails or runs out of time leaves the others' numbers:

    machine   nvidia-smi's name and driver, torch, Python, the date       -> machine.json
    torch     stage 1, torch only: `cifar10_resnet` on synthetic CIFAR-shaped data on CUDA
              (channels_last, bf16 autocast, as `objectives.training` does): seconds per
              epoch and samples/s through the objective itself; then R1's throughput per
              batch size (30/32, 60/64, 100/128, 120/128, 250/256, and 512) of the bare
              training step, timed with CUDA events, warm-up excluded     -> stage1_torch.json
    packing   stage 2: 1, 2, 4, 8 trial processes sharing the GPU at once (what Ray's
              fractional `gpu: 1/k` does): trials per hour, GPU utilisation -> stage2_packing.json
    liandan   stage 3: `python -m service.cli run bench/gpu_spec.yaml` (4 trials at
              `gpu: 0.25` on a local Ray, SQLite), then each trial's `device` user
              attribute, which should name the GPU                         -> stage3_liandan.json
    summary   gpu_check.json: the machine, the date and each stage's status and numbers

Without CUDA, stages 1 and 2 print "no CUDA" and record status "skipped"; `--cpu` runs them
on the CPU with tiny sizes instead (to test the script, not to measure). Stage 3 with
`--cpu` runs the spec with `gpu: 0` on tiny data. Only stage 3 needs Ray and Optuna (the
bundle); stages 1 and 2 need torch alone. Service code is reached only through the CLI
(`python -m service.cli run`) and `service.spec`, never by its module paths.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import pickle
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from record import now

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = ROOT / "bench" / "gpu_spec.yaml"
PAIRS = [(30, 32), (60, 64), (100, 128), (120, 128), (250, 256)]
STAGE_FILES = {"torch": "stage1_torch.json", "packing": "stage2_packing.json",
               "liandan": "stage3_liandan.json"}
# airbench94 (KellerJordan/cifar10-airbench README): 94.01% in 3.83 s on one A100, 9.9
# epochs of the 50,000 training images at batch 1024; block widths 64/256/256 as ours.
AIRBENCH = {"seconds": 3.83, "epochs": 9.9, "images": 50_000, "gpu": "A100",
            "accuracy": 0.9401, "script": "airbench94.py"}


def write_json(out: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


def write_synthetic_cifar(root: Path, per_file: int) -> None:
    """Random images/labels as `cifar-10-batches-py/data_batch_{1..5}` pickles: the
    objective then reads them through its real on-disk loading path."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(1, 6):
        entry = {"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_file).tolist()}
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(entry, f)


def cuda_or_skip(args: argparse.Namespace, stage: str) -> str | None:
    """'cuda', 'cpu' (with --cpu) or None after recording the stage as skipped."""
    import torch

    if torch.cuda.is_available() and not args.cpu:
        return "cuda"
    if args.cpu:
        print(f"{stage}: on CPU (--cpu): tiny sizes that test the script, not numbers")
        return "cpu"
    print(f"{stage}: no CUDA (torch {torch.__version__} sees no GPU): skipped; "
          "--cpu runs it on the CPU")
    write_json({"stage": stage, "status": "skipped", "reason": "no CUDA", "date": now()},
               Path(args.out) / STAGE_FILES[stage])
    return None


# ── machine ──────────────────────────────────────────────────────────────────────────────


def nvidia_smi(*fields: str) -> list[list[str]] | None:
    try:
        text = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [[v.strip() for v in line.split(",")] for line in text.strip().splitlines()]


def machine_info() -> dict:
    info: dict = {"python": platform.python_version(), "platform": platform.platform(),
                  "cpus": os.cpu_count(), "hostname": platform.node()}
    gpus = nvidia_smi("name", "driver_version", "memory.total")
    info["gpus"] = [{"name": g[0], "driver": g[1], "memory_mib": g[2]} for g in gpus or []]
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            info["torch_device"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001 - recorded, not fatal
        info["torch"] = f"import failed: {exc}"
    info["packages"] = package_versions()
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                        capture_output=True, text=True, timeout=10,
                                        check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a child started with start_new_session=True and everything in its session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def cmd_unpack(args: argparse.Namespace) -> None:
    """The bundle's zips into `--site`, keeping the executables' modes (raylet, gcs_server):
    plain `zipfile.extractall` would drop them. Standard library only."""
    import zipfile

    bundle = Path(args.bundle)
    archives = sorted(bundle.glob("ray-*.zip")) + sorted((bundle / "wheels").glob("*.whl"))
    if not archives:
        raise SystemExit(f"no bundle in {bundle}: build it with bash bench/gpu_bundle.sh")
    t0 = time.perf_counter()
    for path in archives:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                target = z.extract(info, args.site)
                mode = info.external_attr >> 16
                if mode and not info.is_dir():
                    os.chmod(target, mode & 0o777)
        print(f"  {path.name}")
    seconds = time.perf_counter() - t0
    print(f"unpacked {len(archives)} archives into {args.site} in {seconds:.1f} s")
    write_json({"stage": "unpack", "status": "ok", "archives": [p.name for p in archives],
                "unpack_s": seconds}, Path(args.out) / "stage0_unpack.json")


def package_versions() -> dict[str, str | None]:
    """Versions of what the check runs on, and whether each came from the bundle."""
    import importlib.metadata as md

    site = os.environ.get("PYTHONPATH", "").split(os.pathsep)[0]
    out: dict[str, str | None] = {}
    for name in ("torch", "numpy", "ray", "optuna", "sqlalchemy", "pydantic", "pydantic-core",
                 "jsonschema", "tensorboardX", "typer", "rich", "pyyaml", "pandas", "pyarrow"):
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            out[name] = None
            continue
        where = str(dist.locate_file(""))
        from_bundle = bool(site) and where.startswith(site)
        out[name] = dist.version + (" (bundle)" if from_bundle else "")
    return out


def cmd_machine(args: argparse.Namespace) -> None:
    info = machine_info()
    for key, value in info.items():
        print(f"  {key}: {value}")
    write_json({"date": now(), **info}, Path(args.out) / "machine.json")


# ── stage 1: torch only ──────────────────────────────────────────────────────────────────


def epoch_timing(device: str, cpu: bool) -> dict:
    """The objective itself (real loading path, real loop) on synthetic CIFAR-10."""
    from objectives import resolve

    per_file = 200 if cpu else 10_000  # 5 files: 50,000 images, CIFAR-10's training split
    batch, epochs = (64, 2) if cpu else (512, 4)
    with tempfile.TemporaryDirectory() as data_root:
        write_synthetic_cifar(Path(data_root), per_file)
        os.environ["LIANDAN_DATA_ROOT"] = data_root
        os.environ["LIANDAN_DEVICE"] = device
        t0 = time.perf_counter()
        metrics = []
        for m in resolve("cifar10_resnet")({"batch_size": batch, "epochs": epochs, "lr": 0.01,
                                            "optimizer": "momentum", "decay": "constant"}):
            metrics.append({k: m[k] for k in ("epoch", "epoch_time_s", "samples_per_s",
                                              "train_loss", "val_accuracy", "diverged")})
            print(f"  epoch {m['epoch']}: {m['epoch_time_s']:.3f} s (train + eval), "
                  f"{m['samples_per_s']:.0f} samples/s", flush=True)
        total = time.perf_counter() - t0
    later = metrics[1:] or metrics  # epoch 1 holds cuDNN's autotuning
    n_train = round(per_file * 5 * 0.9)
    rate = statistics.median(m["samples_per_s"] for m in later)
    out = {"batch_size": batch, "epochs": epochs, "train_images": n_train,
           "first_call_s": total, "epochs_run": metrics,
           "seconds_per_epoch": statistics.median(m["epoch_time_s"] for m in later),
           "train_seconds_per_epoch": n_train / rate, "samples_per_s": rate}
    if not cpu:
        # airbench94's epoch is 50,000 images; ours trains on 45,000 (10% held out).
        ours = 50_000 / rate
        theirs = AIRBENCH["seconds"] / AIRBENCH["epochs"]
        out["airbench"] = {**AIRBENCH, "seconds_per_50k_epoch": theirs,
                           "ours_seconds_per_50k_epoch": ours, "ours_over_airbench": ours / theirs}
        print(f"  per 50k-image epoch: {ours:.3f} s here vs airbench94's {theirs:.3f} s "
              f"(3.83 s / 9.9 epochs on an A100)")
    return out


def train_step(model, opt, x, y) -> None:
    """One step as `objectives.training` takes it: bf16 autocast on CUDA, float32 loss."""
    import torch
    import torch.nn.functional as F

    with (torch.autocast("cuda", dtype=torch.bfloat16) if x.is_cuda
          else contextlib.nullcontext()):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_throughput(device: str, cpu: bool) -> dict:
    """Samples/s of the bare training step per batch size, CUDA events, warm-up excluded."""
    import torch

    from objectives.models import CifarResNet
    from objectives.optimizers import make_optimizer

    sizes = [30, 32] if cpu else sorted({b for pair in PAIRS for b in pair} | {512})
    cuda = device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    rates: dict[int, list[float]] = {}
    for bs in sizes:
        torch.manual_seed(0)
        model = CifarResNet(10).to(device)
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer("momentum", model.parameters(), 0.01, 0.9, 0.0)
        x = torch.randn(bs, 3, 32, 32, device=device)
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (bs,), device=device)
        step = functools.partial(train_step, model, opt, x, y)

        warmup, steps, repeats = (2, 3, 2) if cpu else (20, max(40, 8192 // bs), 3)
        for _ in range(warmup):  # cuDNN autotuning for this shape, allocator warm-up
            step()
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                    enable_timing=True)
                torch.cuda.synchronize()
                start.record()
                for _ in range(steps):
                    step()
                end.record()
                end.synchronize()
                seconds = start.elapsed_time(end) / 1000
            else:
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                seconds = time.perf_counter() - t0
            rates.setdefault(bs, []).append(bs * steps / seconds)
        print(f"  batch {bs:4d}: {statistics.median(rates[bs]):9.0f} samples/s "
              f"({steps} steps x {repeats})", flush=True)
    medians = {bs: statistics.median(r) for bs, r in rates.items()}
    pairs = {f"{a}/{b}": {"samples_per_s": [medians[a], medians[b]],
                          "ratio_power_of_two_over_neighbour": medians[b] / medians[a]}
             for a, b in PAIRS if a in medians and b in medians}
    for name, p in pairs.items():
        print(f"  {name}: samples/s ratio (power of two / neighbour) = "
              f"{p['ratio_power_of_two_over_neighbour']:.3f}")
    return {"timer": "cuda events" if cuda else "perf_counter",
            "samples_per_s": {str(bs): medians[bs] for bs in sizes},
            "repeats": {str(bs): rates[bs] for bs in sizes}, "pairs": pairs}


def cmd_torch(args: argparse.Namespace) -> None:
    device = cuda_or_skip(args, "torch")
    if device is None:
        return
    import torch

    out: dict = {"stage": "torch", "status": "running", "date": now(), "device": device,
                 "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
                 "torch": torch.__version__, "autocast": "bf16" if device == "cuda" else None,
                 "channels_last": device == "cuda"}
    path = Path(args.out) / STAGE_FILES["torch"]
    print("stage 1a: cifar10_resnet through the objective (synthetic CIFAR-10)", flush=True)
    out["epoch"] = epoch_timing(device, args.cpu)
    write_json(out, path)  # kept if the next part fails
    print("stage 1b: R1 throughput per batch size (bare training step)", flush=True)
    out["throughput"] = step_throughput(device, args.cpu)
    out["status"] = "ok"
    write_json(out, path)


# ── stage 2: packing ─────────────────────────────────────────────────────────────────────


class GpuSampler:
    """GPU utilisation and memory every 0.25 s, from pynvml when importable, else nvidia-smi."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem_mib: list[float] = []
        self.source = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.source = "pynvml"
            while not self._stop.wait(0.25):
                self.util.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                self.mem_mib.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
            return
        except Exception:  # noqa: BLE001 - no pynvml (or no NVML): fall back to nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            self.source = "none (no pynvml, no nvidia-smi)"
            return
        self.source = "nvidia-smi"
        proc = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-i", "0", "-lms", "250"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        reader.start()
        self._stop.wait()
        proc.terminate()
        reader.join(timeout=2)

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:
                continue
            self.util.append(util)
            self.mem_mib.append(mem)

    def summary(self) -> dict:
        if not self.util:
            return {"source": self.source, "samples": 0}
        return {"source": self.source, "samples": len(self.util),
                "util_mean_pct": statistics.fmean(self.util),
                "util_median_pct": statistics.median(self.util),
                "util_max_pct": max(self.util), "memory_max_mib": max(self.mem_mib)}


def cmd_trial(args: argparse.Namespace) -> None:
    """One packed trial: a fresh process, as a Ray worker would be (internal to stage 2)."""
    t_start = time.time()
    from objectives import resolve

    os.environ["LIANDAN_DATA_ROOT"] = args.data_root
    os.environ["LIANDAN_DEVICE"] = args.device
    import torch

    torch.set_num_threads(1)
    t_import = time.time()
    epochs = []
    for m in resolve("cifar10_resnet")({"batch_size": args.batch_size, "epochs": args.epochs,
                                        "lr": 0.01, "optimizer": "momentum",
                                        "decay": "constant", "seed": args.seed}):
        epochs.append({"epoch_time_s": m["epoch_time_s"], "samples_per_s": m["samples_per_s"],
                       "t": time.time()})
    Path(args.result).write_text(json.dumps(
        {"started": args.launched, "process_start": t_start, "imported": t_import,
         "finished": time.time(), "epochs": epochs}))


def cmd_packing(args: argparse.Namespace) -> None:
    device = cuda_or_skip(args, "packing")
    if device is None:
        return
    cpu = args.cpu
    ks = [1, 2] if cpu else [1, 2, 4, 8]
    per_file, batch, epochs = (100, 64, 1) if cpu else (10_000, 512, 4)
    per_k_timeout = 60 if cpu else 80
    # Ends before the shell's own timeout, so no trial process outlives the stage.
    stage_deadline = time.time() + args.budget
    path = Path(args.out) / STAGE_FILES["packing"]
    out: dict = {"stage": "packing", "status": "running", "date": now(), "device": device,
                 "trial": {"objective": "cifar10_resnet", "batch_size": batch, "epochs": epochs,
                           "train_images": round(per_file * 5 * 0.9),
                           "process": "fresh python per trial: import, load, train"},
                 "k": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        write_synthetic_cifar(data_root, per_file)
        for k in ks:
            if time.time() > stage_deadline - 10:
                print(f"  {k} at once: not started, the stage's {args.budget:.0f} s are spent")
                break
            launched = time.time()
            files = [Path(tmp) / f"k{k}-{i}.json" for i in range(k)]
            with GpuSampler() as sampler:
                procs = [subprocess.Popen(
                    [sys.executable, __file__, "trial", "--data-root", str(data_root),
                     "--device", device, "--batch-size", str(batch), "--epochs", str(epochs),
                     "--seed", str(i), "--launched", str(launched), "--result", str(f)],
                    start_new_session=True) for i, f in enumerate(files)]
                failed = 0
                deadline = min(launched + per_k_timeout, stage_deadline)
                for p in procs:
                    try:
                        rc = p.wait(timeout=max(1.0, deadline - time.time()))
                    except subprocess.TimeoutExpired:
                        kill_group(p)
                        rc = -9
                    failed += rc != 0
            wall = time.time() - launched
            trials = [json.loads(f.read_text()) for f in files if f.exists()]
            done = len(trials)
            row = {"trials": k, "finished": done, "failed": failed, "wall_s": wall,
                   "trials_per_hour": 3600 * done / wall, "gpu": sampler.summary()}
            if trials:
                train = [t["finished"] - t["epochs"][0]["t"] + t["epochs"][0]["epoch_time_s"]
                         for t in trials]
                row["per_trial"] = {
                    "median_start_to_first_epoch_s": statistics.median(
                        t["epochs"][0]["t"] - t["epochs"][0]["epoch_time_s"] - t["started"]
                        for t in trials),
                    "median_train_s": statistics.median(train),
                    "median_samples_per_s": statistics.median(
                        e["samples_per_s"] for t in trials
                        for e in (t["epochs"][1:] or t["epochs"])),
                }
                row["aggregate_samples_per_s"] = (done * epochs * out["trial"]["train_images"]
                                                  / wall)
            out["k"][str(k)] = row
            g = row["gpu"]
            util = f", GPU util mean {g['util_mean_pct']:.0f}%" if "util_mean_pct" in g else ""
            print(f"  {k} at once: {done}/{k} done in {wall:.1f} s = "
                  f"{row['trials_per_hour']:.0f} trials/h{util}", flush=True)
            write_json(out, path)
    out["status"] = "ok" if len(out["k"]) == len(ks) and all(
        r["finished"] == r["trials"] for r in out["k"].values()) else "partial"
    write_json(out, path)


# ── stage 3: liandan run ─────────────────────────────────────────────────────────────────


def cmd_liandan(args: argparse.Namespace) -> None:
    import yaml

    cpu = args.cpu
    outdir = Path(args.out)
    path = outdir / STAGE_FILES["liandan"]
    out: dict = {"stage": "liandan", "status": "running", "date": now(), "spec": str(
        SPEC.relative_to(ROOT))}
    import torch

    gpu = torch.cuda.is_available() and not cpu
    if not gpu and not cpu:
        print("liandan: no CUDA: running the spec with gpu: 0 (as --cpu)")
        cpu = True
    spec = yaml.safe_load(SPEC.read_text())
    per_file = 2_000  # 10,000 images: this stage tests the path, stage 1 the speed
    if cpu:  # the same study, on the CPU and small: it tests the path, not the speed
        spec["resources"]["gpu"] = 0
        spec["fixed"]["batch_size"] = 32
        spec["budget"].update(trials=4, max_concurrent=2)
        per_file = 60
    out["resources"] = spec["resources"]
    out["cpu_mode"] = cpu
    with tempfile.TemporaryDirectory() as tmp:
        data_root = Path(tmp) / "data"
        write_synthetic_cifar(data_root, per_file)
        spec_path = Path(tmp) / "gpu_spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        db = Path(tmp) / "gpu_check.db"
        url = f"sqlite:///{db}"
        # The report comes back too; its dashboard note is not saved there (no
        # optuna-dashboard on that machine), which the run prints as a warning.
        cmd = [sys.executable, "-m", "service.cli", "run", str(spec_path), "--storage", url,
               "--data-root", str(data_root), "--no-progress",
               "--out", str(outdir / "stage3_reports")]
        out["command"] = " ".join(cmd[1:]).replace(tmp, "$TMP")
        print("$ python " + out["command"], flush=True)
        t0 = time.perf_counter()
        logfile = outdir / "stage3_liandan.log"
        with open(logfile, "w") as log_out:
            # Its own session: on timeout the run and the Ray it started are killed together.
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                returncode = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
                returncode = "timeout"
        out["wall_s"] = time.perf_counter() - t0
        out["returncode"] = returncode
        log = logfile.read_text(errors="replace")
        print(log[-6000:], flush=True)
        out["output_tail"] = log[-3000:]
        if db.exists():
            shutil.copy(db, outdir / "stage3_liandan.db")
            out["trials"] = read_trials(url)
    trials = out.get("trials", [])
    devices = sorted({str(t["device"]) for t in trials if t.get("device")})
    out["devices"] = devices
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    expect = torch.cuda.get_device_name(0) if gpu else "cpu"
    out["expected_device"] = expect
    ok = (returncode == 0 and complete and len(complete) == len(trials)
          and devices == [expect])
    out["status"] = "ok" if ok else "failed"
    print(f"liandan run: rc {returncode}, {len(complete)}/{len(trials)} trials complete, "
          f"devices {devices} (expected {expect!r}), {out['wall_s']:.1f} s: {out['status']}")
    write_json(out, path)
    if not ok:
        sys.exit(1)


def read_trials(url: str) -> list[dict]:
    import optuna

    rows = []
    for name in optuna.get_all_study_names(url):
        for t in optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False):
            rows.append({
                "study": name, "number": t.number, "state": t.state.name, "value": t.value,
                "params": {k: v for k, v in t.params.items() if k in ("lr", "batch_size")},
                "device": t.user_attrs.get("device"), "node_id": t.user_attrs.get("node_id"),
                "compute_s": t.user_attrs.get("compute_s"),
                "duration_s": t.duration.total_seconds() if t.duration else None})
    return rows


# ── summary ──────────────────────────────────────────────────────────────────────────────


def cmd_summary(args: argparse.Namespace) -> None:
    """Merge the stages' JSON and the shell's exit codes into gpu_check.json."""
    outdir = Path(args.out)
    rcs = dict(s.split("=", 1) for s in args.rc)  # name=rc:seconds
    machine_file = outdir / "machine.json"
    machine = json.loads(machine_file.read_text()) if machine_file.exists() else machine_info()
    stages = {}
    for name in ("unpack", "torch", "packing", "liandan"):
        rc, _, seconds = rcs.get(name, "not run:").partition(":")
        data = {}
        file = outdir / STAGE_FILES.get(name, f"stage0_{name}.json")
        if file.exists():
            data = json.loads(file.read_text())
        status = data.get("status")
        if rc == "not run":
            status = "not run"
        elif rc in ("124", "137"):
            status = "timeout" + (", partial results kept" if data else "")
        elif rc != "0":
            status = f"failed (exit {rc})" + (
                ", partial results kept" if status in ("running", "partial") else "")
        elif status in (None, "running"):
            status = f"exit 0 but {status or 'no result'}"
        stages[name] = {"status": status, "seconds": float(seconds) if seconds else None,
                        **{k: v for k, v in data.items() if k not in ("status", "stage")}}
    out = {"date": now(), "machine": {k: v for k, v in machine.items() if k != "date"},
           "cpu_flag": args.cpu, **({"note": args.note} if args.note else {}),
           "stages": stages}
    print("summary:")
    for name, s in stages.items():
        print(f"  {name:8s} {s['status']}"
              + (f" ({s['seconds']:.0f} s)" if s["seconds"] is not None else ""))
    write_json(out, outdir / "gpu_check.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("unpack", "machine", "torch", "packing", "liandan", "summary"):
        p = sub.add_parser(name)
        p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu"))
        p.add_argument("--cpu", action="store_true", help="run on the CPU, tiny (a test)")
        if name == "unpack":
            p.add_argument("--site", required=True, help="the folder named in PYTHONPATH")
            p.add_argument("--bundle", default=str(ROOT / "bench" / "gpu_bundle"))
        if name == "liandan":
            p.add_argument("--timeout", type=float, default=130,
                           help="seconds for `liandan run` (then it and its Ray are killed)")
        if name == "packing":
            p.add_argument("--budget", type=float, default=165,
                           help="seconds for the whole stage (a k that cannot start is left)")
        if name == "summary":
            p.add_argument("--rc", nargs="*", default=[], help="stage=exitcode:seconds")
            p.add_argument("--note", default=os.environ.get("GPU_CHECK_NOTE"),
                           help="what ran where, kept in the summary ($GPU_CHECK_NOTE)")
    t = sub.add_parser("trial")
    for opt in ("--data-root", "--device", "--result"):
        t.add_argument(opt, required=True)
    t.add_argument("--batch-size", type=int, required=True)
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--launched", type=float, required=True)
    args = ap.parse_args()
    if hasattr(args, "out"):
        Path(args.out).mkdir(parents=True, exist_ok=True)
    {"unpack": cmd_unpack, "machine": cmd_machine, "torch": cmd_torch, "packing": cmd_packing,
     "liandan": cmd_liandan, "summary": cmd_summary, "trial": cmd_trial}[args.cmd](args)


if __name__ == "__main__":
    main()
