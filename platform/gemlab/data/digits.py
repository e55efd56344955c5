"""DomainBed-style digit domains from scikit-learn's bundled handwritten digits (no download).

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 digits. Each domain
applies one shift to all of them -- rotation by 0/15/30/45/60/75 degrees
(RotatedMNIST), a colour tint (ColoredMNIST-like), additive noise, or
inversion -- upsamples to ``image_size`` and writes an image folder per
split (70/20/10, stratified by class so every split holds every digit).

Each domain is also a *site* on the globe: every image carries ``lat`` and
``lon`` metadata (the site plus a little seeded scatter), so routers that
route on metadata (MoGE) run on the shipped data. Rotations lie along one
parallel in the order of their angles -- nearby sites, similar domains, the
premise of geographic routing -- and the other shifts sit on other
continents.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gemlab.data.checks import require_new_folder
from gemlab.data.collection import write_index
from gemlab.data.errors import DataError
from gemlab.files import staged_folder

ROTATIONS = (0, 15, 30, 45, 60, 75)
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.2, "calib": 0.1}
SITES = {  # (latitude, longitude) in degrees
    **{f"rot{angle}": (45.0, 2.0 * angle - 75.0) for angle in ROTATIONS},
    "colour": (-30.0, 140.0),
    "noise": (10.0, 20.0),
    "invert": (-35.0, -60.0),
}
SITE_SCATTER_DEGREES = 2.0
METADATA_COLUMNS = ("lat", "lon")


def _rotated(angle: int) -> Callable[[Image.Image, np.random.Generator], Image.Image]:
    return lambda image, rng: image.rotate(angle, resample=Image.Resampling.BILINEAR)


def _coloured(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    ink = np.asarray(image, dtype=np.float64)[..., None] / 255.0
    rgb = np.array([20, 30, 90]) * (1 - ink) + np.array([250, 120, 30]) * ink
    return Image.fromarray(rgb.astype(np.uint8))


def _noisy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 40, image.size[::-1])
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _inverted(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(255 - np.asarray(image))


DOMAINS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    **{f"rot{angle}": _rotated(angle) for angle in ROTATIONS},
    "colour": _coloured,
    "noise": _noisy,
    "invert": _inverted,
}


def _stratified_splits(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLIT_FRACTIONS}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        cut_train = round(len(members) * SPLIT_FRACTIONS["train"])
        cut_val = cut_train + round(len(members) * SPLIT_FRACTIONS["val"])
        for split, chunk in zip(parts, np.split(members, [cut_train, cut_val]), strict=True):
            parts[split].append(chunk)
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def _site_metadata(site: tuple[float, float], rng: np.random.Generator) -> list[str]:
    """One image's (lat, lon) as text: the site plus Gaussian scatter, rounded so the file is stable."""
    return [f"{value:.4f}" for value in np.asarray(site) + rng.normal(0.0, SITE_SCATTER_DEGREES, 2)]


def generate_digits(out: Path, *, seed: int = 0, image_size: int = 28) -> Path:
    """Write the nine digit domains to ``out`` and return the index file.

    Raises DataError if ``out`` is a file or a folder that is not empty, for a
    negative seed or an ``image_size`` < 8, and OSError naming ``out`` when
    its folder cannot be written.
    Written in a hidden sibling folder renamed at the end: nothing half-written.
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn: read from its package data

    if seed < 0 or image_size < 8:
        raise DataError(f"digits: need seed >= 0 and image_size >= 8 (got {seed}, {image_size})")
    out = require_new_folder(out)
    digits = load_digits()
    ink = (digits.images / 16.0 * 255).astype(np.uint8)
    with staged_folder(out) as staging:
        entries = []
        for d, (name, shift) in enumerate(DOMAINS.items()):
            rng = np.random.default_rng([seed, d])
            splits = {}
            for split, indices in _stratified_splits(digits.target, rng).items():
                metadata = io.StringIO()
                rows = csv.writer(metadata, lineterminator="\n")
                rows.writerow(["path", *METADATA_COLUMNS])
                for i in indices.tolist():
                    folder = staging / name / split / str(digits.target[i])
                    folder.mkdir(parents=True, exist_ok=True)
                    image = Image.fromarray(ink[i]).resize((image_size, image_size), Image.Resampling.BILINEAR)
                    shift(image, np.random.default_rng([seed, d, i])).save(folder / f"{i:04d}.png", optimize=False)
                    location = _site_metadata(SITES[name], np.random.default_rng([seed, d, i, 1]))
                    rows.writerow([f"{digits.target[i]}/{i:04d}.png", *location])
                (staging / name / split / "metadata.csv").write_text(metadata.getvalue())
                splits[split] = {"root": f"{name}/{split}"}
            entries.append(
                {
                    "name": name,
                    "task": "classification",
                    "format": "imagefolder",
                    "splits": splits,
                    "metadata_columns": list(METADATA_COLUMNS),
                }
            )
        write_index(staging, entries)
    return out / "gemlab-data.yaml"
