"""Fixtures for the objectives tests: CPU only, and tiny data sets in torchvision's own formats."""

from __future__ import annotations

import dataclasses
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

# Sizes of the tiny data sets: small enough to write and train on in well under a second.
MNIST_TRAIN, MNIST_TEST = 60, 10
CIFAR_PER_BATCH = 6  # x 5 training batches = 30 images


@dataclasses.dataclass(frozen=True)
class TinyData:
    """A data root with tiny MNIST, FashionMNIST and CIFAR-10, and the raw arrays written."""

    root: Path
    mnist: tuple[np.ndarray, np.ndarray]  # training images [N, 28, 28] uint8, labels [N]
    fashion_mnist: tuple[np.ndarray, np.ndarray]
    cifar10: tuple[np.ndarray, np.ndarray]  # training images [N, 3072] uint8 rows, labels [N]


@pytest.fixture(autouse=True)
def _cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite checks exact CPU behaviour (determinism) and must not grab a GPU if one exists.
    monkeypatch.setenv("LIANDAN_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    return TinyData(
        root=root,
        mnist=_write_idx_dataset(root / "MNIST" / "raw", rng),
        fashion_mnist=_write_idx_dataset(root / "FashionMNIST" / "raw", rng),
        cifar10=_write_cifar10(root / "cifar-10-batches-py", rng),
    )


def _write_idx_dataset(folder: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Write the four unpacked idx files torchvision's MNIST/FashionMNIST classes look for."""
    folder.mkdir(parents=True)
    train = None
    for prefix, n in (("train", MNIST_TRAIN), ("t10k", MNIST_TEST)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        # Label-dependent brightness gives the tiny set something learnable.
        images = rng.integers(0, 128, size=(n, 28, 28), dtype=np.uint8)
        images[:, 4:24, 4:24] += (labels * 12)[:, None, None].astype(np.uint8)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
        if prefix == "train":
            train = (images, labels)
    assert train is not None
    return train


def _write_idx(path: Path, array: np.ndarray) -> None:
    # idx format: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions,
    # then each dimension as a big-endian uint32, then the raw data.
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_cifar10(folder: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Write CIFAR-10's python pickles: five training batches, the test batch and the meta."""
    folder.mkdir(parents=True)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(CIFAR_PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(label) for label in rng.integers(0, 10, size=CIFAR_PER_BATCH)]
        batch = {
            "batch_label": name,
            "labels": labels,
            "data": images,
            "filenames": [f"{name}_{i}.png" for i in range(CIFAR_PER_BATCH)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        if name != "test_batch":
            all_images.append(images)
            all_labels.extend(labels)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 6}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return np.concatenate(all_images), np.array(all_labels)
