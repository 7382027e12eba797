"""The function Ray Tune runs in a worker: an objective's epochs, reported one by one.

It is the only place where Ray meets an objective. It pins torch threads to the CPUs
the trial was given, picks the device, and adds `node_id` and `device` to each report.
Objectives themselves stay free of Ray and Optuna.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

import ray
from ray import tune

from objectives import resolve

ERROR_KEY = "error"  # a result carrying it ends the trial as FAIL with the message kept


def _device() -> tuple[str, str]:
    """(kind for the objective, name for the record): a GPU only when Ray gave one."""
    if ray.get_gpu_ids():
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.get_device_name(0)
    return "cpu", "cpu"


def _clean(value: Any) -> Any:
    # Tune results must serialise; numpy/torch scalars become Python numbers.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def run_trial(config: dict[str, Any], objective: str, cpus: float) -> None:
    kind, device_name = _device()
    os.environ["LIANDAN_DEVICE"] = kind
    fn = resolve(objective)
    if "torch" in sys.modules:  # a pure-Python objective never pays for importing torch
        import torch

        torch.set_num_threads(max(1, int(cpus)))
    node_id = ray.get_runtime_context().get_node_id()
    compute_s = 0.0  # time spent inside the objective: what Ray and Optuna add is the rest
    epochs = iter(fn(dict(config)))
    while True:
        start = time.perf_counter()
        try:
            metrics = next(epochs, None)
        except Exception as exc:  # noqa: BLE001 - the objective's bug is the trial's outcome
            # Reported, not raised: Ray retries a trial whose *worker* died (FailureConfig),
            # but re-running a deterministic bug would only fail again, slower.
            tune.report({ERROR_KEY: f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc(limit=8)[-4000:],
                         "node_id": node_id, "device": device_name})
            return
        compute_s += time.perf_counter() - start
        if metrics is None:
            return
        report = {k: _clean(v) for k, v in metrics.items()}
        report.update(node_id=node_id, device=device_name, compute_s=compute_s)
        tune.report(report)
