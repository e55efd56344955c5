"""Objects drawn with PIL: one function per category, each returning the exact box it covered.

Every function draws inside the box it is given and returns that box, so
annotations are tight by construction. ``look`` carries the style's choices
(fill colours, outline width and colour) so one shape serves every style.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive pixel corners for PIL)


@dataclass(frozen=True)
class Look:
    fill: tuple[int, int, int]
    accent: tuple[int, int, int]
    outline: tuple[int, int, int] | None = None
    outline_width: int = 0


def _line(look: Look) -> dict:
    return {"outline": look.outline, "width": look.outline_width} if look.outline else {}


def car(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    body_top = y0 + (y1 - y0) // 3
    draw.rectangle((x0, body_top, x1, y1), fill=look.fill, **_line(look))
    draw.rectangle((x0 + (x1 - x0) // 4, y0, x1 - (x1 - x0) // 4, body_top), fill=look.accent, **_line(look))


def person(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    head = (y1 - y0) // 4
    cx = (x0 + x1) // 2
    draw.ellipse((cx - head // 2, y0, cx + head // 2, y0 + head), fill=look.accent, **_line(look))
    draw.rectangle((x0, y0 + head, x1, y1), fill=look.fill, **_line(look))


def plane(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    wing, body = max(1, (y1 - y0) // 6), max(1, (x1 - x0) // 6)
    draw.rectangle((x0, cy - wing, x1, cy + wing), fill=look.fill, **_line(look))
    draw.rectangle((cx - body, y0, cx + body, y1), fill=look.accent, **_line(look))


def ship(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    draw.polygon(
        [(x0, y0), (x1, y0), ((x0 + 3 * x1) // 4, y1), ((3 * x0 + x1) // 4, y1)], fill=look.fill, **_line(look)
    )


def animal(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    """Dogs, cats and birds: an ellipse body and a round head (colour tells them apart)."""
    x0, y0, x1, y1 = box
    head = (y1 - y0) // 2
    draw.ellipse((x0, y0 + head // 2, x1 - head // 2, y1), fill=look.fill, **_line(look))
    draw.ellipse((x1 - head, y0, x1, y0 + head), fill=look.accent, **_line(look))


def bottle(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    neck = (x1 - x0) // 3
    draw.rectangle((x0 + neck, y0, x1 - neck, y0 + (y1 - y0) // 3), fill=look.accent, **_line(look))
    draw.rectangle((x0, y0 + (y1 - y0) // 3, x1, y1), fill=look.fill, **_line(look))


def stop_sign(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cut_x, cut_y = w * 0.29, h * 0.29
    points = [
        (x0 + cut_x, y0),
        (x1 - cut_x, y0),
        (x1, y0 + cut_y),
        (x1, y1 - cut_y),
        (x1 - cut_x, y1),
        (x0 + cut_x, y1),
        (x0, y1 - cut_y),
        (x0, y0 + cut_y),
    ]
    draw.polygon(points, fill=(200, 20, 20), outline=(250, 250, 250))


def speed_sign(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    draw.ellipse(box, fill=(245, 245, 245), outline=(200, 20, 20), width=max(1, (box[2] - box[0]) // 6))


def warning_sign(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=(240, 200, 30), outline=(20, 20, 20))


def face(draw: ImageDraw.ImageDraw, box: Box, look: Look) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    draw.ellipse(box, fill=look.fill, **_line(look))
    eye = max(1, w // 8)
    for ex in (x0 + w * 0.3, x0 + w * 0.7):
        draw.ellipse((ex - eye, y0 + h * 0.35 - eye, ex + eye, y0 + h * 0.35 + eye), fill=(30, 30, 30))
    draw.arc(
        (x0 + w * 0.3, y0 + h * 0.5, x0 + w * 0.7, y0 + h * 0.8), 20, 160, fill=(120, 20, 20), width=max(1, w // 12)
    )


SHAPES: dict[str, Callable[[ImageDraw.ImageDraw, Box, Look], None]] = {
    "car": car,
    "person": person,
    "pedestrian": person,
    "cyclist": person,
    "plane": plane,
    "ship": ship,
    "dog": animal,
    "cat": animal,
    "bird": animal,
    "bottle": bottle,
    "stop_sign": stop_sign,
    "speed_sign": speed_sign,
    "warning_sign": warning_sign,
    "face": face,
}

# Aspect ratios (height / width) that make each category recognisable at any size.
ASPECT = {
    "car": 0.6,
    "person": 2.2,
    "pedestrian": 2.4,
    "cyclist": 1.6,
    "plane": 1.0,
    "ship": 0.5,
    "dog": 0.8,
    "cat": 0.9,
    "bird": 0.9,
    "bottle": 2.5,
    "stop_sign": 1.0,
    "speed_sign": 1.0,
    "warning_sign": 0.9,
    "face": 1.25,
}


def random_colour(rng: np.random.Generator, low: int = 40, high: int = 230) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))
