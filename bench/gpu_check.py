"""One prepared GPU check (issue: scale): finishes in under 8 minutes on one GPU.

1. R1 throughput per batch size of `cifar10_resnet` on synthetic CIFAR-shaped data
   (written in torchvision's on-disk format, so the real loading path runs): powers of two
   against their neighbours (30/32, 60/64, 100/128, 120/128, 250/256) and 512, samples/s
   over epochs 2+ (epoch 1 is cuDNN autotuning and warm-up), 3 repeats each.
2. Packing: trials per hour with 1, 2, 4 and 8 trials sharing the GPU through fractional
   `resources: {gpu: 1/k}` in a real `run_study` on Ray.

    bash bench/gpu_check.sh             # on the GPU machine; writes bench/results/gpu_check.json
    .venv/bin/python bench/gpu_check.py --smoke   # tiny CPU run that checks the script works
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from record import RESULTS, now, save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAIRS = [(30, 32), (60, 64), (100, 128), (120, 128), (250, 256)]


def write_synthetic_cifar(root: Path, per_batch: int) -> None:
    """Random images/labels as `cifar-10-batches-py/data_batch_{1..5}` pickles."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(entry, f)


def throughput(batch_sizes: list[int], epochs: int, repeats: int) -> dict[int, list[float]]:
    from objectives import resolve

    objective = resolve("cifar10_resnet")
    rates: dict[int, list[float]] = {}
    for bs in batch_sizes:
        for r in range(repeats):
            metrics = list(objective({"batch_size": bs, "optimizer": "momentum", "lr": 0.01,
                                      "epochs": epochs, "seed": r, "decay": "constant"}))
            rates.setdefault(bs, []).extend(m["samples_per_s"] for m in metrics[1:])
        print(f"  batch {bs:4d}: {statistics.median(rates[bs]):9.0f} samples/s", flush=True)
    return rates


def packing(ks: list[int], trials_per_k: int, epochs: int, gpu: bool) -> dict[int, dict]:
    import ray

    from service.runner import ensure_ray, run_study
    from service.spec import validate_spec

    ensure_ray(None)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            spec = validate_spec({
                "name": f"pack-{k}", "objective": "cifar10_resnet",
                "nuisance": {"lr": {"low": 0.003, "high": 0.1, "log": True}},
                "fixed": {"epochs": epochs, "batch_size": 256},
                "budget": {"trials": trials_per_k * k, "max_concurrent": k},
                "search": {"sampler": "random", "pruner": "none", "seed": 0},
                "resources": {"cpu": 1, "gpu": round(1 / k, 4) if gpu else 0},
            })
            t0 = time.perf_counter()
            run_study(spec, f"sqlite:///{Path(tmp) / 'pack.db'}", show_progress=False)
            wall = time.perf_counter() - t0
            n = trials_per_k * k
            out[k] = {"trials": n, "wall_s": wall, "trials_per_hour": 3600 * n / wall}
            print(f"  {k} per GPU: {n} trials in {wall:.0f} s = "
                  f"{out[k]['trials_per_hour']:.0f} trials/h", flush=True)
    ray.shutdown()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run to check the script")
    args = ap.parse_args()
    gpu = torch.cuda.is_available() and not args.smoke
    device = torch.cuda.get_device_name(0) if gpu else "cpu"
    per_batch = 200 if args.smoke else 10_000  # 50k images: the real CIFAR-10 size
    with tempfile.TemporaryDirectory() as data_root:
        os.environ["LIANDAN_DATA_ROOT"] = data_root
        os.environ["LIANDAN_DEVICE"] = "cuda" if gpu else "cpu"
        write_synthetic_cifar(Path(data_root), per_batch)
        print(f"device: {device}")
        print("R1 throughput (cifar10_resnet, synthetic CIFAR-10):")
        sizes = sorted({b for pair in PAIRS for b in pair} | {512})
        if args.smoke:
            sizes = [30, 32]
        rates = throughput(sizes, epochs=2 if args.smoke else 4, repeats=1 if args.smoke else 3)
        pairs = {f"{a}/{b}": statistics.median(rates[b]) / statistics.median(rates[a])
                 for a, b in PAIRS if a in rates and b in rates}
        for name, ratio in pairs.items():
            print(f"  {name}: power of two / neighbour = {ratio:.3f}")
        print("Trials per hour, k trials packed on one GPU:")
        ks = [1, 2] if args.smoke else [1, 2, 4, 8]
        pack = packing(ks, trials_per_k=1 if args.smoke else 2, epochs=1 if args.smoke else 3,
                       gpu=gpu)
    out = {"date": now(), "device": device,
           "smoke": args.smoke, "samples_per_s": {str(k): v for k, v in rates.items()},
           "pair_ratios": pairs, "packing": {str(k): v for k, v in pack.items()}}
    name = "gpu_check_smoke.json" if args.smoke else "gpu_check.json"
    save(out, RESULTS / name)


if __name__ == "__main__":
    main()
