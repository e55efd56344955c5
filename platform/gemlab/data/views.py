"""Random augmented views of decoded images, each with the parameters that made it.

A self-supervised objective needs two views of every image (an invariant
loss makes them agree) and, for an equivariant loss, *how* each view was
made: here a vector ω of six numbers in [-1, 1] per view,

    ω = (crop side, crop centre x, crop centre y, rotation, brightness, contrast)

each the view's setting relative to its range: the crop's side runs from
√crop_scale_min (ω₀ = -1) to the whole image (ω₀ = 1), its centre from the
leftmost (topmost) to the rightmost position the smallest crop can take,
the rotation from -max_rotation to +max_rotation degrees, and the
brightness and contrast factors from 1 - jitter to 1 + jitter. Every
component is in the same units so that one squared error weighs them alike,
and every one is always drawn (no zero-width range), so each is readable
from the image. No flips: a mirrored digit is another symbol.

Images are torchvision v2 functional ops on the decoded tensors (the task's
[-0.5, 0.5] range, shifted to [0, 1] for the colour ops and back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

PARAMETERS = ("crop_side", "crop_x", "crop_y", "rotation", "brightness", "contrast")


@dataclass(frozen=True)
class ViewAugment:
    """Draws one view of each image of a batch; its ranges are checked by :meth:`checked`."""

    crop_scale_min: float = 0.5  # the smallest crop's area, as a fraction of the image
    max_rotation: float = 20.0  # degrees either way
    jitter: float = 0.4  # brightness and contrast factors in [1 - jitter, 1 + jitter]

    @classmethod
    def checked(cls, crop_scale_min: float, max_rotation: float, jitter: float, where: str) -> ViewAugment:
        """The augmentation, or ValueError naming ``<where>.<key>`` for a range that is empty or breaks images."""
        for key, value, ok, expected in (
            ("crop_scale_min", crop_scale_min, 0 < crop_scale_min < 1, "in (0, 1)"),
            ("max_rotation", max_rotation, 0 < max_rotation <= 180, "in (0, 180] degrees"),
            ("jitter", jitter, 0 < jitter < 1, "in (0, 1)"),
        ):
            if not ok:
                raise ValueError(f"{where}.{key}={value!r}: expected {expected}")
        return cls(float(crop_scale_min), float(max_rotation), float(jitter))

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (B, C, S, S) in [-0.5, 0.5] -> (views (B, C, S, S), ω (B, 6)); random draws from ``generator``
        (None: torch's global stream, which the worker seeds per step). Raises nothing."""
        batch, size = images.shape[0], images.shape[-1]
        u = torch.rand(batch, len(PARAMETERS), generator=generator) * 2 - 1  # (B, 6) in [-1, 1)
        side_min = math.sqrt(self.crop_scale_min)
        sides = side_min + (1 - side_min) * (u[:, 0] + 1) / 2  # crop side as a fraction of the image
        # the centre's offset from the image centre, in units of the smallest crop's largest offset
        omega = u.clone()
        omega[:, 1:3] = u[:, 1:3] * ((1 - sides) / (1 - side_min)).unsqueeze(1)
        shift = (1 - side_min) / 2 * size  # the smallest crop's largest offset from the centre, in pixels
        views = []
        for image, side, w in zip(images, sides.tolist(), omega.tolist(), strict=True):
            crop = max(1, round(side * size))
            top = min(max(round((size - crop) / 2 + w[2] * shift), 0), size - crop)
            left = min(max(round((size - crop) / 2 + w[1] * shift), 0), size - crop)
            view = TF.resized_crop(image + 0.5, top, left, crop, crop, [size, size], antialias=True)
            view = TF.rotate(view, w[3] * self.max_rotation)
            view = TF.adjust_brightness(view.clamp(0, 1), 1 + self.jitter * w[4])
            view = TF.adjust_contrast(view, 1 + self.jitter * w[5])
            views.append(view - 0.5)
        return torch.stack(views), omega
