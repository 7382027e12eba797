"""Data augmentation of an image batch as tensors, on the batch's own device.

Each image gets its own small random affine transform -- a rotation of up to +-10 degrees and a
shift of up to one pixel on 8x8 digits, two on 28x28 and 32x32 images -- and, for natural images
only, a random horizontal flip (a mirrored digit is a different glyph, a mirrored truck is not).
All three are folded into one ``affine_grid``/``grid_sample`` call, so augmentation costs one
resampling pass per batch whatever it does.

Randomness comes only from the ``torch.Generator`` passed in, so a seeded run replays exactly.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

# Data sets whose images may be mirrored left-right without changing their class.
_FLIPPABLE = frozenset({"cifar10"})


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Random per-image rotation, shift and (optionally) horizontal flip."""

    max_shift_px: float
    max_rotation_deg: float = 10.0
    hflip: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A transformed copy of ``images`` ``[N, C, H, W]``, drawn from ``generator``."""
        n, _, height, width = images.shape
        # One draw of all random numbers: [angle, shift_x, shift_y, flip] per image.
        u = torch.rand(n, 4, generator=generator, device=images.device, dtype=torch.float32)
        angle = (2 * u[:, 0] - 1) * math.radians(self.max_rotation_deg)
        # affine_grid works in [-1, 1] coordinates, where one pixel is 2 / size wide.
        shift_x = (2 * u[:, 1] - 1) * self.max_shift_px * 2 / width
        shift_y = (2 * u[:, 2] - 1) * self.max_shift_px * 2 / height
        flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0) if self.hflip else torch.ones_like(angle)

        cos, sin = torch.cos(angle), torch.sin(angle)
        # theta maps output coordinates to input coordinates; negating its first column mirrors
        # the image left-right in the same resampling pass.
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, shift_x], dim=1),
                torch.stack([sin * flip, cos, shift_y], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
        # Reflection fills the corners a rotation uncovers with plausible background, where
        # zero padding would paint a gray (mean-valued) border.
        return F.grid_sample(
            images, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )


def augmentation_for(dataset_name: str, image_size: int) -> Augmentation:
    """The augmentation used for a data set: shifts scale with image size, flips when harmless."""
    return Augmentation(
        max_shift_px=1.0 if image_size <= 8 else 2.0,
        hflip=dataset_name in _FLIPPABLE,
    )
