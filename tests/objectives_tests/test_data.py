from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from objectives.data import DatasetNotFound, data_root, load, load_digits, load_torchvision

from .conftest import CIFAR_PER_BATCH, MNIST_TRAIN, TinyData


def _assert_normalized_per_channel(x: torch.Tensor) -> None:
    assert x.dtype == torch.float32
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros_like(mean), atol=1e-4)
    assert torch.allclose(std, torch.ones_like(std), atol=1e-4)


def _standardize_like_train(train_raw: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """What normalization with the training split's statistics must produce for ``raw``."""
    mean = train_raw.mean(dim=(0, 2, 3), keepdim=True)
    std = train_raw.std(dim=(0, 2, 3), keepdim=True)
    return (raw - mean) / std


def test_digits_split_and_normalization() -> None:
    data = load_digits()
    assert data.name == "digits" and data.num_classes == 10
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_val.shape == (360, 1, 8, 8)
    assert data.y_train.dtype == torch.long and data.y_train.shape == (1437,)
    _assert_normalized_per_channel(data.x_train)
    # Stratified: every class holds its ~20% share of the validation set (about 36 each).
    counts = torch.bincount(data.y_val, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_split_never_changes() -> None:
    first, second = load_digits(), load_digits()
    assert torch.equal(first.x_val, second.x_val) and torch.equal(first.y_train, second.y_train)
    # Pinned: the fixed split's first labels. A change would make new results incomparable
    # with recorded studies, so it must be deliberate.
    assert first.y_val[:12].tolist() == [7, 6, 3, 7, 7, 3, 2, 8, 9, 3, 2, 6]
    assert first.y_train[:12].tolist() == [3, 9, 1, 3, 1, 9, 4, 4, 2, 8, 3, 5]



def test_digits_are_scikit_learns_with_its_stratified_split() -> None:
    # The frozen split must be what scikit-learn's stratified split gave, pixels and labels
    # in the same order: studies recorded before the split was frozen stay comparable.
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        torch.from_numpy(bunch.images.astype("float32"))[:, None], bunch.target,
        test_size=0.2, stratify=bunch.target, random_state=0)
    data = load_digits()
    assert data.y_train.tolist() == y_train.tolist() and data.y_val.tolist() == y_val.tolist()
    assert torch.equal(data.x_train, _standardize_like_train(x_train, x_train))
    assert torch.equal(data.x_val, _standardize_like_train(x_train, x_val))

@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_like_from_idx_files(name: str, tiny_data: TinyData) -> None:
    images, labels = getattr(tiny_data, name)
    data = load_torchvision(name, tiny_data.root)

    n_val = MNIST_TRAIN // 10  # the held-out last tenth of the training split
    n_train = MNIST_TRAIN - n_val
    assert data.name == name and data.num_classes == 10
    assert data.x_train.shape == (n_train, 1, 28, 28) and data.x_val.shape == (n_val, 1, 28, 28)
    assert data.y_train.tolist() == labels[:n_train].tolist()
    assert data.y_val.tolist() == labels[n_train:].tolist()
    _assert_normalized_per_channel(data.x_train)

    raw = torch.from_numpy(images).float().div(255).unsqueeze(1)
    expected_val = _standardize_like_train(raw[:n_train], raw[n_train:])
    assert torch.allclose(data.x_val, expected_val, atol=1e-5)


def test_cifar10_from_python_pickles(tiny_data: TinyData) -> None:
    rows, labels = tiny_data.cifar10
    data = load_torchvision("cifar10", tiny_data.root)

    n_total = 5 * CIFAR_PER_BATCH
    n_val = n_total // 10
    n_train = n_total - n_val
    assert data.x_train.shape == (n_train, 3, 32, 32) and data.x_val.shape == (n_val, 3, 32, 32)
    # Batches are read in order 1..5; the validation set is the tail of batch 5.
    assert data.y_train.tolist() == labels[:n_train].tolist()
    assert data.y_val.tolist() == labels[n_train:].tolist()
    _assert_normalized_per_channel(data.x_train)

    # CIFAR's row layout: 1024 red, then 1024 green, then 1024 blue values, row-major.
    raw = torch.from_numpy(rows.reshape(-1, 3, 32, 32)).float().div(255)
    expected = _standardize_like_train(raw[:n_train], raw)
    assert torch.allclose(data.x_train, expected[:n_train], atol=1e-5)
    assert torch.allclose(data.x_val, expected[n_train:], atol=1e-5)
    red_of_first = (rows[0, :1024].reshape(32, 32) / 255 - raw[:n_train, 0].mean().item()) / (
        raw[:n_train, 0].std().item()
    )
    assert np.allclose(data.x_train[0, 0].numpy(), red_of_first, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "folder", "command"),
    [
        ("mnist", "MNIST/raw", "torchvision.datasets.MNIST("),
        ("fashion_mnist", "FashionMNIST/raw", "torchvision.datasets.FashionMNIST("),
        ("cifar10", "cifar-10-batches-py", "torchvision.datasets.CIFAR10("),
    ],
)
def test_missing_data_names_the_path_and_the_fix(
    name: str, folder: str, command: str, tmp_path: Path
) -> None:
    root = tmp_path / "empty"
    with pytest.raises(DatasetNotFound) as error:
        load_torchvision(name, root)
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert str(root / folder) in message
    assert f'{command}"{root}", download=True)' in message
    assert "LIANDAN_DATA_ROOT" in message


def test_partly_missing_mnist_lists_the_missing_files(tiny_data: TinyData, tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for file in (tiny_data.root / "MNIST" / "raw").iterdir():
        if not file.name.startswith("t10k-labels"):
            (raw / file.name).write_bytes(file.read_bytes())
    with pytest.raises(DatasetNotFound, match="missing: t10k-labels-idx1-ubyte"):
        load_torchvision("mnist", tmp_path)


def test_data_root_comes_from_the_environment(
    tiny_data: TinyData, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIANDAN_DATA_ROOT", raising=False)
    assert data_root() == Path("data")
    monkeypatch.setenv("LIANDAN_DATA_ROOT", str(tiny_data.root))
    assert data_root() == tiny_data.root
    assert load("mnist", "cpu").x_train.shape[0] == MNIST_TRAIN - MNIST_TRAIN // 10


def test_load_is_cached_per_process(tiny_data: TinyData, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIANDAN_DATA_ROOT", str(tiny_data.root))
    assert load("fashion_mnist", "cpu") is load("fashion_mnist", torch.device("cpu"))
    assert load("digits", "cpu") is load("digits", "cpu")


def test_load_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        load("imagenet", "cpu")
