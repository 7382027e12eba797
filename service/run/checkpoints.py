"""Checkpoints of a trial, so that one retried after its worker or node was lost resumes
from its last saved epoch instead of epoch 1.

The objective's side is two calls (◆ objective protocol, "Checkpoints (opt-in)"): an
objective whose second parameter is named `checkpoint` gets a `TrialCheckpoint`;
`load()` returns the dict it last saved (None on a first attempt) and `save(state)`
stores one, just before the epoch's metrics are yielded. The trainable hands the latest
saved state to Ray Tune with its next report (`tune.report(..., checkpoint=...)`), Tune
keeps one per trial under the run's storage path and gives it back to a retried trial
(`tune.get_checkpoint()`). A trial's checkpoints are deleted when it ends
(`CheckpointCleanup`), the run's folder when the run ends (`checkpoint_storage`).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune

__all__ = ["META_FILE", "CheckpointCleanup", "TrialCheckpoint", "checkpoint_storage",
           "takes_checkpoint"]

META_FILE = "liandan_checkpoint.json"  # {"step": epochs it covers, "compute_s": ...}
_TORCH_STATE, _PICKLE_STATE = "state.pt", "state.pkl"


def takes_checkpoint(fn: Callable[..., Any]) -> bool:
    """True when `fn`'s second parameter is named `checkpoint` (the opt-in protocol)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable without a signature
        return False
    return len(params) >= 2 and params[1].name == "checkpoint"


class TrialCheckpoint:
    """The `checkpoint` an objective is given: its last saved state, and where the next goes.

    `save` writes the state to a local folder at once (a model's `state_dict()` holds the
    live tensors, which the next epoch changes), and the trainable moves the latest folder
    to Tune's storage with its next report. Saving twice between reports keeps only the
    later state: a retried trial resumes from the last *reported* epoch, never past one
    the driver did not record.
    """

    def __init__(self, state: dict | None = None, step: int = 0, compute_s: float = 0.0):
        self._state = state
        self.step = step  # epochs the restored state covers (0: a first attempt)
        self.compute_s = compute_s  # seconds spent in the objective up to those epochs
        self.pending: Path | None = None  # the folder of the latest save not yet reported
        self.pending_step = 0
        self.error: str | None = None  # set when Tune's storage refused a checkpoint
        self._next_step, self._compute_before, self._started = 1, 0.0, 0.0

    # -- the objective's two calls ---------------------------------------------------------
    def load(self) -> dict | None:
        return self._state

    def save(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"checkpoint.save takes a dict, not {type(state).__name__}")
        if self.error is not None:
            return  # the storage is out of reach (see `report`): training goes on without
        folder = Path(tempfile.mkdtemp(prefix="liandan-ckpt-"))
        if "torch" in sys.modules:  # tensors, with their storage, the way torch reads them
            import torch

            torch.save(state, folder / _TORCH_STATE)
        else:
            with open(folder / _PICKLE_STATE, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
        compute_s = self._compute_before + (time.perf_counter() - self._started)
        (folder / META_FILE).write_text(json.dumps(
            {"step": self._next_step, "compute_s": compute_s}))
        self.drop_pending()
        self._state, self.pending, self.pending_step = state, folder, self._next_step

    # -- the trainable's side --------------------------------------------------------------
    def begin_epoch(self, step: int, compute_s: float, started: float) -> None:
        """The epoch numbered `step` is being computed: a save now covers it (the protocol
        saves just before yielding the epoch's metrics)."""
        self._next_step, self._compute_before, self._started = step, compute_s, started

    def drop_pending(self) -> None:
        if self.pending is not None:
            shutil.rmtree(self.pending, ignore_errors=True)
            self.pending = None

    def report(self, metrics: dict) -> None:
        """`tune.report(metrics)`, with the latest saved state when there is one."""
        if self.error is not None:
            metrics = {**metrics, "checkpoint_error": self.error}
        if self.pending is None:
            tune.report(metrics)
            return
        try:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(self.pending)))
        except RuntimeError as exc:
            # Tune checks that this node reaches the storage path before copying (a local
            # folder on the driver is not on another node); the metrics were not sent yet.
            # The trial trains on without checkpoints and its record says why.
            if "storage" not in str(exc):
                raise
            self.error = f"checkpoints off: the storage path is not reachable here ({exc})"
            self.drop_pending()
            tune.report({**metrics, "checkpoint_error": self.error})
        else:
            self.drop_pending()  # Tune copied it to the storage

    @classmethod
    def restored(cls) -> TrialCheckpoint:
        """The checkpoint Tune hands this attempt of the trial (empty on a first attempt)."""
        saved = tune.get_checkpoint()
        if saved is None:
            return cls()
        with saved.as_directory() as folder:
            meta = json.loads(Path(folder, META_FILE).read_text())
            if Path(folder, _TORCH_STATE).exists():
                import torch

                # Our own file, written by `save`; CPU first: the device may differ now.
                state = torch.load(Path(folder, _TORCH_STATE), map_location="cpu",
                                   weights_only=False)
            else:
                with open(Path(folder, _PICKLE_STATE), "rb") as f:
                    state = pickle.load(f)
        return cls(state, int(meta["step"]), float(meta["compute_s"]))


def _fs_and_path(location: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in location:  # a storage URI Ray accepts (s3://, gs://, ...)
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


def _delete(fs: pyarrow.fs.FileSystem, path: str) -> None:
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


class CheckpointCleanup(tune.Callback):
    """Keeps one checkpoint per running trial and none of a finished one.

    A retry resumes from the latest checkpoint only, so the one before is deleted once the
    next is stored. (Tune's `CheckpointConfig(num_to_keep=1)` would do it too, but forces a
    snapshot of the whole experiment state at every checkpoint, pickling every trial.) A
    trial's folder in Tune's storage goes when the trial ends, whichever way: completed,
    pruned, cancelled or failed after its retries. A study of thousands of trials then
    holds the running trials' latest checkpoints, nothing more.
    """

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        fs, trial_path = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        keep = Path(checkpoint.path).name
        for entry in fs.get_file_info(pyarrow.fs.FileSelector(trial_path, allow_not_found=True)):
            if (entry.type == pyarrow.fs.FileType.Directory
                    and entry.base_name.startswith("checkpoint_") and entry.base_name != keep):
                _delete(fs, entry.path)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._remove(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._remove(trial)

    @staticmethod
    def _remove(trial: Any) -> None:
        storage = getattr(trial, "storage", None)
        if storage is not None:
            _delete(storage.storage_filesystem, storage.trial_fs_path)


@contextmanager
def checkpoint_storage(checkpoint_dir: str | os.PathLike | None) -> Iterator[str]:
    """Tune's `storage_path` for one run, removed when the run ends.

    None: a temporary folder on this machine (enough for one machine, or a cluster on one
    machine). Otherwise a fresh folder inside `checkpoint_dir`, a path every node reaches
    or a storage URI, so two runs sharing it never see each other's trials.
    """
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="liandan-tune-") as folder:
            yield folder
        return
    base = str(checkpoint_dir)
    if "://" not in base:
        base = str(Path(base).expanduser().resolve())
    location = f"{base.rstrip('/')}/liandan-run-{uuid.uuid4().hex[:12]}"
    fs, path = _fs_and_path(location)
    fs.create_dir(path)
    try:
        yield location
    finally:
        _delete(fs, path)
