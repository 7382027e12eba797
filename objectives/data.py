"""Data sets as in-memory tensors, loaded once per worker process and kept on the device.

Every built-in data set is small enough to hold whole (CIFAR-10's training images are 600 MB as
float32), so batches are cut by index from tensors already on the device, as in airbench:
no DataLoader, no worker processes, no per-batch host-to-device copies. Images are normalized
with the training split's own per-channel mean and std, so the validation split stays unseen.

Validation is always held out of the *training* split (digits: a stratified 20%; the
torchvision sets: the last 10%), never the test split, so that tuning on it leaves the test
split clean for whoever reports a final number.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

DATA_ROOT_ENV = "LIANDAN_DATA_ROOT"
DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10")
TORCHVISION_DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")

_VAL_FRACTION = 0.1  # torchvision sets: the last tenth of the training split
# scikit-learn's stratified train_test_split(test_size=0.2, random_state=0), frozen as indices:
# the split is part of the benchmark and must never change (tests check it against sklearn).
_DIGITS_SPLIT = Path(__file__).with_name("digits_split.json")
_TORCHVISION_CLASS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


# eq=False: tensors have no single truth value, so compare data sets by identity.
@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """Normalized float32 images ``[N, C, H, W]`` with int64 labels ``[N]``, on one device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    name: str

    def to(self, device: torch.device | str) -> Dataset:
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
        )


class DatasetNotFound(FileNotFoundError):
    """A data set's files are not under the data root; the message says where and how to fix."""


def data_root() -> Path:
    """The folder holding the torchvision data sets: ``$LIANDAN_DATA_ROOT``, else ``./data``."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "data")


def load(name: str, device: torch.device | str) -> Dataset:
    """The data set ``name`` on ``device``, loaded at most once per process, root and device."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    # Digits ship with scikit-learn, so the data root must not split its cache entries.
    root = "" if name == "digits" else str(data_root().resolve())
    return _load_cached(name, root, str(torch.device(device)))


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str, device: str) -> Dataset:
    # Trials reuse Ray worker processes: caching here turns every load after the first into a
    # dictionary look-up, with the tensors already on the device.
    dataset = load_digits() if name == "digits" else load_torchvision(name, Path(root))
    return dataset.to(device)


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download), split 80/20 stratified."""
    data = np.loadtxt(_digits_file(), delimiter=",", dtype=np.float32)
    images = torch.from_numpy(data[:, :-1].reshape(-1, 1, 8, 8))  # [N, 1, 8, 8], values 0..16
    target = torch.from_numpy(data[:, -1]).long()
    split = json.loads(_DIGITS_SPLIT.read_text())
    train, val = torch.tensor(split["train"]), torch.tensor(split["val"])
    return _normalized(images[train], target[train], images[val], target[val],
                       num_classes=10, name="digits")


def _digits_file() -> Path:
    # Located, not imported: each fresh worker would import scikit-learn and SciPy, on its
    # first trial's path, to read one 30 kB file.
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFound("data set 'digits' ships with scikit-learn, which is not "
                              "installed: pip install scikit-learn")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def load_torchvision(name: str, root: Path | str) -> Dataset:
    """MNIST, Fashion-MNIST or CIFAR-10's training split from ``root``, in torchvision's layout.

    The last 10% of the training split is the validation set. Raises DatasetNotFound when the
    files are missing: this never downloads, because workers often have no internet.
    """
    root = Path(root)
    if name == "cifar10":
        images, labels = _read_cifar10(root)
    elif name in ("mnist", "fashion_mnist"):
        images, labels = _read_mnist_like(name, root)
    else:
        raise ValueError(f"unknown torchvision data set {name!r}; known: {TORCHVISION_DATASETS}")

    x = images.float().div_(255.0)
    n_val = max(1, round(len(x) * _VAL_FRACTION))
    n_train = len(x) - n_val
    return _normalized(
        x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], num_classes=10, name=name
    )


def _read_mnist_like(name: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision  # Imported here: only these two data sets need it.

    cls = getattr(torchvision.datasets, _TORCHVISION_CLASS[name])
    try:
        dataset = cls(str(root), train=True, download=False)
    except RuntimeError as error:
        folder = root / cls.__name__ / "raw"
        # torchvision expects the unpacked idx files its own download writes.
        expected = [Path(url).stem for url, _ in cls.resources]
        missing = [file for file in expected if not (folder / file).is_file()]
        raise DatasetNotFound(
            _not_found_message(name, folder, missing, cls.__name__, root, cls.__name__)
        ) from error
    return dataset.data.unsqueeze(1), dataset.targets.long()  # [N, 1, 28, 28] uint8


def _read_cifar10(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    # torchvision's CIFAR10 class md5-checks every file on construction, which rejects anything
    # but the original archive; the pickles are read directly, in the same on-disk format.
    folder = root / _CIFAR_FOLDER
    missing = [file for file in _CIFAR_TRAIN_FILES if not (folder / file).is_file()]
    if missing:
        raise DatasetNotFound(
            _not_found_message("cifar10", folder, missing, "CIFAR10", root, _CIFAR_FOLDER)
        )
    images, labels = [], []
    for file in _CIFAR_TRAIN_FILES:
        with open(folder / file, "rb") as f:
            # The data root is trusted like any installed package: pickle runs code on load.
            entry = pickle.load(f, encoding="latin1")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(entry["labels"])
    return torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.long)


def _not_found_message(
    name: str, searched: Path, missing: list[str], cls_name: str, root: Path, folder: str
) -> str:
    return (
        f"data set {name!r} not found: searched {searched} (missing: {', '.join(missing)}). "
        f"Download it once on a machine with internet with `python -c 'import torchvision; "
        f'torchvision.datasets.{cls_name}("{root}", download=True)\'` and copy the folder '
        f"{root / folder} to this machine, or set {DATA_ROOT_ENV} to the folder that holds it."
    )


def _normalized(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    num_classes: int,
    name: str,
) -> Dataset:
    # Per-channel statistics of the training split only: the validation set must stay unseen.
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset(
        x_train=((x_train - mean) / std).contiguous(),
        y_train=y_train.contiguous(),
        x_val=((x_val - mean) / std).contiguous(),
        y_val=y_val.contiguous(),
        num_classes=num_classes,
        name=name,
    )
