"""Reading a classification split from class sub-folders (torchvision's ImageFolder layout).

``ROOT/<class>/.../<image>``: class folders sorted by name get category ids
0..K-1, and each folder's images are found recursively in sorted order --
the labels and order of ``torchvision.datasets.ImageFolder``, so results line
up with code built on it. Files with other suffixes are ignored. Only each
image's header is read (for its size), never its pixels.

An optional ``ROOT/metadata.csv`` attaches per-image metadata (WILDS-style
columns such as hospital or region, for ``metadata_columns``): a ``path``
column holding each image's path relative to ROOT with ``/`` separators
(``cat/001.png``), and one column per metadata key, kept as strings.

Symbolic links are followed (WILDS-style folders are arranged with links),
but a link back to a folder that holds it -- ``cat/up -> ..`` -- is a loop:
followed, it would read the images again and again, other classes' images
labelled as this one. Such a link is a bad record: an error naming the link,
or under ``lenient`` not followed and listed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from PIL import Image

from gemlab.data.checks import BadRecords
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample, SplitReading

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what torchvision.io decodes (no BMP)
METADATA_NAME = "metadata.csv"


def _loop(folder: str, outer: tuple[str, ...]) -> str | None:
    """The real path of ``folder`` if it is, or holds, one of the ``outer`` real paths (a link loop), else None."""
    real = os.path.realpath(folder)
    return real if any(os.path.commonpath([real, path]) == real for path in outer) else None


def _images_under(folder: Path, root: str, bad: BadRecords) -> list[Path]:
    """Image files under ``folder``, recursively, in torchvision's order (sorted walk, sorted names).

    Links are followed, except one that leads back to the split's root, an
    ancestor of it, or a folder on the way down to it: walking that again
    and again would read the same images many times under the wrong class.
    Such a link is reported to ``bad`` (an error, or skipped when lenient);
    so is a folder that cannot be listed.
    """
    outer = {str(folder): (root, os.path.realpath(folder))}  # per folder: real paths from the root down to it
    walked = []
    for parent, folders, names in os.walk(folder, followlinks=True, onerror=lambda error: _unlisted(error, bad)):
        kept = []
        for name in folders:
            child = os.path.join(parent, name)
            loop = _loop(child, outer[parent])
            if loop is None:
                kept.append(name)
                outer[child] = (*outer[parent], os.path.realpath(child))
            else:
                bad.report(Path(child), "folder link", f"leads back to {loop}, which holds it (a loop)")
        folders[:] = kept
        walked.append((parent, names))
    return [
        Path(parent, name)
        for parent, names in sorted(walked)
        for name in sorted(names)
        if name.lower().endswith(IMAGE_SUFFIXES)
    ]


def _unlisted(error: OSError, bad: BadRecords) -> None:
    bad.report(Path(error.filename), "folder", f"cannot be listed: {error.strerror}")


def _read_metadata(root: Path, images: set[str], bad: BadRecords) -> dict[str, dict[str, str]]:
    """Metadata per image path (relative, ``/``-separated); empty when there is no metadata.csv."""
    file = root / METADATA_NAME
    if not file.is_file():
        return {}
    rows: dict[str, dict[str, str]] = {}
    with file.open(newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream, restval="")
        try:
            if "path" not in (reader.fieldnames or ()):
                raise DataError(f"{file}: needs a 'path' column (image paths relative to {root})")
            for row in reader:
                path = row.pop("path")
                if None in row:
                    bad.report(file, f"line {reader.line_num}", "more fields than the header")
                elif path not in images:
                    bad.report(file, f"line {reader.line_num}", f"no image {path!r} in the class folders")
                else:
                    rows[path] = row
        except (UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"{file}: not UTF-8 CSV: {error}") from None
    return rows


def read_imagefolder_split(root: Path, *, lenient: bool = False) -> SplitReading:
    """Read one classification split: one sub-folder of images per class.

    Samples carry ``label`` = the class's category id and ids counting from 1
    in folder order (kept when a lenient read skips an image). Raises
    DataError when ``root`` is missing, has no class folders, has a class
    folder without images or one that is a link back to ``root`` (named), or
    has a metadata.csv that is not UTF-8 CSV or has no ``path`` column; and
    naming the file and record -- unless ``lenient``, which skips and lists
    them -- for an unreadable image, a metadata row that is too long or names
    no image of the folders, a folder that cannot be listed, and a link to a
    folder that holds it (a loop, which is never followed).
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    root = root.resolve()
    with os.scandir(root) as entries:
        classes = sorted(entry.name for entry in entries if entry.is_dir())
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/<images>)")
    found: list[tuple[int, Path, str]] = []  # (label, path, path relative to root)
    bad = BadRecords(lenient)
    for label, name in enumerate(classes):
        loop = _loop(str(root / name), (str(root),))
        if loop is not None:
            raise DataError(f"{root / name}: class folder leads back to {loop}, which holds it (a link loop)")
        paths = _images_under(root / name, str(root), bad)
        if not paths:
            raise DataError(f"{root / name}: class folder {name!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        found.extend((label, path, path.relative_to(root).as_posix()) for path in paths)
    metadata = _read_metadata(root, {relative for _, _, relative in found}, bad)
    samples = []
    for image_id, (label, path, relative) in enumerate(found, start=1):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, Image.DecompressionBombError) as error:
            bad.report(path, f"image id {image_id}", f"unreadable image: {error}")
            continue
        samples.append(Sample(path, width, height, image_id, label=label, metadata=metadata.get(relative, {})))
    categories = tuple(Category(label, name) for label, name in enumerate(classes))
    return SplitReading(categories, tuple(samples), tuple(bad.skipped))
