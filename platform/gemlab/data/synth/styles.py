"""Visual styles: how a scene of given objects is painted.

Each style differs the way UODB's datasets differ: textured photos, top-down
aerial views full of small objects, flat comic and clipart colours with
outlines, blurred watercolour on paper, faint blobs in grayscale medical
scans, road scenes with signs, faces. A style chooses the background, the
objects' size range and colours, and a finishing pass; the layout (where the
objects go, without heavy overlap) is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from gemlab.data.synth.shapes import ASPECT, SHAPES, Box, Look, random_colour

_MAX_OVERLAP = 0.25  # intersection over the smaller box: every annotated object stays visible


@dataclass(frozen=True)
class Style:
    background: Callable[[np.random.Generator, int], np.ndarray]
    look: Callable[[np.random.Generator], Look]
    size_range: tuple[float, float]  # object width as a fraction of the image
    finish: Callable[[np.random.Generator, Image.Image], Image.Image]
    zone: Callable[[str], tuple[float, float]] = lambda category: (0.0, 1.0)  # vertical band of a category


def _noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    return rng.normal(0.0, scale, (size, size, 1))


def _photo_background(rng, size):
    top, bottom = np.array(random_colour(rng)), np.array(random_colour(rng))
    ramp = np.linspace(0, 1, size)[:, None, None]
    return np.clip(top * (1 - ramp) + bottom * ramp + _noise(rng, size, 18), 0, 255).astype(np.uint8)


def _aerial_background(rng, size):
    coarse = rng.normal(0, 1, (size // 16 + 1, size // 16 + 1))
    field = np.kron(coarse, np.ones((16, 16)))[:size, :size, None]
    base = np.array([90, 110, 70]) + field * np.array([15, 20, 10])
    return np.clip(base + _noise(rng, size, 8), 0, 255).astype(np.uint8)


def _flat_background(rng, size):
    return np.full((size, size, 3), random_colour(rng, 200, 255), dtype=np.uint8)


def _paper_background(rng, size):
    return np.clip(np.array([240, 232, 215]) + _noise(rng, size, 6), 0, 255).astype(np.uint8)


def _scan_background(rng, size):
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    body = 70 + 50 * np.exp(-(xx**2 + yy**2) * 6)
    return np.clip(body[..., None] + _noise(rng, size, 5), 0, 255).astype(np.uint8).repeat(3, axis=2)


def _road_background(rng, size):
    image = np.zeros((size, size, 3))
    horizon = size // 2
    image[:horizon] = np.array([120, 170, 230]) + _noise(rng, size, 4)[:horizon]
    image[horizon:] = np.array([80, 80, 85]) + _noise(rng, size, 6)[horizon:]
    for x in range(size // 8, size, size // 4):
        image[horizon + size // 3 : horizon + size // 3 + 2, x : x + size // 10] = 230
    return np.clip(image, 0, 255).astype(np.uint8)


def _shaded_look(rng):
    return Look(random_colour(rng), random_colour(rng))


def _comic_look(rng):
    return Look(random_colour(rng, 60, 255), random_colour(rng, 60, 255), (0, 0, 0), 3)


def _clipart_look(rng):
    return Look(random_colour(rng, 30, 255), random_colour(rng, 30, 255), (20, 20, 20), 1)


def _pastel_look(rng):
    return Look(random_colour(rng, 120, 230), random_colour(rng, 120, 230))


def _skin_look(rng):
    tone = int(rng.integers(140, 235))
    return Look((tone, int(tone * 0.8), int(tone * 0.65)), (0, 0, 0), (60, 40, 30), 1)


def _texture(rng, image):
    pixels = np.asarray(image, dtype=np.float64) + _noise(rng, image.size[0], 10)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _halftone(rng, image):
    pixels = np.asarray(image).copy()
    pixels[::4, ::4] = (pixels[::4, ::4] * 0.6).astype(np.uint8)
    return Image.fromarray(pixels)


def _watercolour(rng, image):
    blurred = image.filter(ImageFilter.GaussianBlur(radius=1.6))
    return _texture(rng, blurred)


def _identity(rng, image):
    return image


def _road_zone(category: str) -> tuple[float, float]:
    return (0.05, 0.45) if category.endswith("_sign") else (0.45, 1.0)


STYLES: dict[str, Style] = {
    "photo": Style(_photo_background, _shaded_look, (0.18, 0.45), _texture),
    "aerial": Style(_aerial_background, _shaded_look, (0.06, 0.13), _texture),
    "comic": Style(_flat_background, _comic_look, (0.25, 0.5), _halftone),
    "clipart": Style(_flat_background, _clipart_look, (0.25, 0.5), _identity),
    "watercolour": Style(_paper_background, _pastel_look, (0.25, 0.5), _watercolour),
    "medical": Style(_scan_background, _shaded_look, (0.08, 0.2), _identity),
    "road": Style(_road_background, _shaded_look, (0.1, 0.25), _texture, _road_zone),
    "portrait": Style(_photo_background, _skin_look, (0.2, 0.4), _texture),
}


def _overlap(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return w * h / smaller


def _place(rng, style: Style, category: str, size: int, taken: list[Box]) -> Box | None:
    for _ in range(20):
        width = max(4, int(size * rng.uniform(*style.size_range)))
        height = max(4, min(size - 1, int(width * ASPECT.get(category, 1.0))))
        top_band, bottom_band = style.zone(category)
        y_low, y_high = int(size * top_band), int(size * bottom_band) - height
        if y_high <= y_low or width >= size:
            continue
        x0, y0 = int(rng.integers(0, size - width)), int(rng.integers(y_low, y_high))
        box = (x0, y0, x0 + width - 1, y0 + height - 1)
        if all(_overlap(box, other) <= _MAX_OVERLAP for other in taken):
            return box
    return None


def _lesion(pixels: np.ndarray, rng, box: Box) -> None:
    """A faint Gaussian blob: 10-25 grey levels above the tissue around it."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    cx, cy, sx, sy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0 + 1) / 4, (y1 - y0 + 1) / 4
    blob = np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2) / 2) * rng.uniform(10, 25)
    pixels[y0 : y1 + 1, x0 : x1 + 1] = np.clip(pixels[y0 : y1 + 1, x0 : x1 + 1] + blob[..., None], 0, 255)


def paint(
    style_name: str, rng: np.random.Generator, size: int, categories: Sequence[str]
) -> tuple[Image.Image, list[Box | None]]:
    """Paint a scene holding ``categories`` (in that order); returns the image and each object's box.

    An object with no room left (too much overlap after 20 tries) gets None and is not drawn.
    """
    style = STYLES[style_name]
    pixels = style.background(rng, size).astype(np.float64)
    boxes: list[Box | None] = []
    for category in categories:
        box = _place(rng, style, category, size, [b for b in boxes if b is not None])
        boxes.append(box)
        if box is not None and category == "lesion":
            _lesion(pixels, rng, box)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for category, box in zip(categories, boxes, strict=True):
        if box is not None and category != "lesion":
            SHAPES[category](draw, box, style.look(rng))
    return style.finish(rng, image), boxes
