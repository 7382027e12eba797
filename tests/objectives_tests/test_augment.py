from __future__ import annotations

import pytest
import torch

from objectives.augment import Augmentation, augmentation_for


def _images(shape: tuple[int, ...] = (16, 3, 32, 32)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(123))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(16, 1, 8, 8), (16, 1, 28, 28), (16, 3, 32, 32)])
def test_preserves_shape_and_dtype_and_changes_the_images(shape: tuple[int, ...]) -> None:
    images = _images(shape)
    augmented = augmentation_for("cifar10", shape[-1])(images, _generator(0))
    assert augmented.shape == images.shape and augmented.dtype == images.dtype
    # Every image is moved, and none into garbage: values stay in the input's range.
    per_image_change = (augmented - images).abs().flatten(1).mean(dim=1)
    assert (per_image_change > 1e-3).all()
    assert augmented.min() >= images.min() - 1e-5 and augmented.max() <= images.max() + 1e-5


def test_deterministic_under_a_generator() -> None:
    augment, images = augmentation_for("digits", 8), _images((8, 1, 8, 8))
    first = augment(images, _generator(7))
    assert torch.equal(first, augment(images, _generator(7)))
    assert not torch.equal(first, augment(images, _generator(8)))


def test_draws_advance_the_generator() -> None:
    # Successive batches of one run must get fresh transforms, not the same one again.
    augment, images = augmentation_for("digits", 8), _images((8, 1, 8, 8))
    generator = _generator(0)
    assert not torch.equal(augment(images, generator), augment(images, generator))


def test_identity_when_every_range_is_zero() -> None:
    images = _images()
    unchanged = Augmentation(max_shift_px=0.0, max_rotation_deg=0.0)(images, _generator(0))
    assert torch.allclose(unchanged, images, atol=1e-5)


def test_flip_alone_mirrors_about_half_the_images() -> None:
    images = _images((64, 3, 32, 32))
    flipped = Augmentation(max_shift_px=0.0, max_rotation_deg=0.0, hflip=True)(
        images, _generator(0)
    )
    is_mirror = [
        torch.allclose(f, x.flip(-1), atol=1e-5) for f, x in zip(flipped, images, strict=True)
    ]
    is_same = [torch.allclose(f, x, atol=1e-5) for f, x in zip(flipped, images, strict=True)]
    assert all(
        m != s for m, s in zip(is_mirror, is_same, strict=True)
    )  # each one or the other, exactly
    assert 16 < sum(is_mirror) < 48


def test_shift_alone_moves_by_at_most_the_limit() -> None:
    # A single bright pixel in the middle of a dark image must land within 1 px of its start.
    images = torch.zeros(32, 1, 8, 8)
    images[:, 0, 4, 4] = 1.0
    shifted = Augmentation(max_shift_px=1.0, max_rotation_deg=0.0)(images, _generator(0))
    rows = torch.arange(8.0).view(1, 8, 1)
    cols = torch.arange(8.0).view(1, 1, 8)
    mass = shifted[:, 0].sum(dim=(1, 2))
    centre_row = (shifted[:, 0] * rows).sum(dim=(1, 2)) / mass
    centre_col = (shifted[:, 0] * cols).sum(dim=(1, 2)) / mass
    assert ((centre_row - 4).abs() <= 1 + 1e-4).all()
    assert ((centre_col - 4).abs() <= 1 + 1e-4).all()
    assert ((centre_row - 4).abs() > 0.1).any()


def test_policy_per_dataset() -> None:
    assert augmentation_for("digits", 8) == Augmentation(max_shift_px=1.0, hflip=False)
    assert augmentation_for("mnist", 28) == Augmentation(max_shift_px=2.0, hflip=False)
    assert augmentation_for("fashion_mnist", 28).hflip is False
    assert augmentation_for("cifar10", 32) == Augmentation(max_shift_px=2.0, hflip=True)
    assert augmentation_for("cifar10", 32).max_rotation_deg == 10.0
