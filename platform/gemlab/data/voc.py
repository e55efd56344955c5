"""Reading a split from a Pascal VOC folder, converted to COCO records in memory.

Layout: ``ROOT/Annotations/<id>.xml`` per image; the image itself is
``ROOT/JPEGImages/<filename>`` with the XML's ``<filename>`` (any image
extension); ``ROOT/ImageSets/Main/<image_set>.txt`` lists a split's ids, one
per line (the first word of each line, so the per-class lists work too).

Coordinates: VOC pixel coordinates are 1-based and inclusive -- a box with
xmin = 1 and xmax = 10 covers the first ten pixel columns -- while COCO boxes
are 0-based with an exclusive extent. Hence x = xmin - 1, y = ymin - 1,
w = xmax - xmin + 1, h = ymax - ymin + 1, and a box lies inside its image
when 1 <= xmin <= xmax <= width (likewise for y). Files written with 0-based
coordinates (xmin = 0) thus have boxes outside the image: fix them, or read
leniently to drop those boxes.

``difficult`` objects are kept as ordinary boxes: trained on, and counted by
gemlab's COCO evaluation (Pascal's own evaluation ignores them, so gemlab's
AP on VOC is a little lower than the VOC devkit's). They are not turned into
``Sample.crowd_boxes``: a crowd region is left out of training, which would
teach the detector that a difficult object is background, and COCO matches a
crowd region by the share of the *detection* inside it, which is not VOC's
rule for a difficult box.

Image ids are positions in the id list counted from 1, so they stay the same
when a lenient read skips an image; objects in messages count from 1 too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from gemlab.data.checks import BadRecords, ExistingFiles, box_problem, path_inside
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample, SplitReading


class _Invalid(Exception):
    """A field of one VOC record is missing or malformed; the message says which."""


@dataclass(frozen=True)
class _Image:
    image_id: int
    path: Path
    width: int
    height: int
    objects: tuple[tuple[str, tuple[float, float, float, float]], ...]  # (name, COCO box)


def _text(element: ElementTree.Element, path: str) -> str:
    text = element.findtext(path)
    if text is None or not text.strip():
        raise _Invalid(f"missing <{path}>")
    return text.strip()


def _number(element: ElementTree.Element, path: str) -> float:
    text = _text(element, path)
    try:
        return float(text)
    except ValueError:
        raise _Invalid(f"<{path}> is not a number: {text!r}") from None


def _pixels(element: ElementTree.Element, path: str) -> int:
    value = _number(element, path)
    if not (value > 0 and value.is_integer()):
        raise _Invalid(f"<{path}> must be a positive whole number of pixels, got {value:g}")
    return int(value)


def _image_ids(root: Path, image_set: str | None) -> tuple[list[str], Path]:
    """The split's ids and the file that listed them (the image set, or Annotations/ for every XML)."""
    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise DataError(f"{root}: not a VOC folder (no Annotations/)")
    if image_set is None:
        return sorted(path.stem for path in annotations.glob("*.xml")), annotations
    listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataError(f"{listing}: cannot read image set {image_set!r}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{listing}: image set {image_set!r} is not UTF-8 text (byte {error.start})") from None
    return [line.split()[0] for line in lines if line.strip()], listing


def _read_image(
    xml: Path, image_id: int, images: Path, known: frozenset[str] | None, files: ExistingFiles, bad: BadRecords
) -> _Image | None:
    """The image an XML describes with its usable objects, or None when the image itself is bad.

    ``known`` is the fixed label space, or None when every name is welcome.
    """
    try:
        if xml.stat().st_size == 0:
            raise _Invalid("empty file (0 bytes)")
        annotation = ElementTree.parse(xml).getroot()
        filename = _text(annotation, "filename")
        width, height = _pixels(annotation, "size/width"), _pixels(annotation, "size/height")
    except ElementTree.ParseError as error:
        bad.report(xml, "image", f"not well-formed XML: {error}")
        return None
    except (_Invalid, OSError) as error:
        bad.report(xml, "image", str(error))
        return None
    path = path_inside(images, filename)
    if path is None:
        bad.report(xml, "image", f"<filename> {filename!r} leads out of {images}")
        return None
    if path not in files:
        bad.report(xml, "image", f"image file {path} is missing")
        return None
    objects = []
    for number, element in enumerate(annotation.iterfind("object"), start=1):
        try:
            name = _text(element, "name")
            xmin, ymin, xmax, ymax = (_number(element, f"bndbox/{key}") for key in ("xmin", "ymin", "xmax", "ymax"))
        except _Invalid as error:
            bad.report(xml, f"object {number}", str(error))
            continue
        box = (xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1)
        problem = box_problem(box, width, height)
        if problem:
            bad.report(xml, f"object {number} ({name})", f"bndbox ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}): {problem}")
        elif known is not None and name not in known:
            bad.report(xml, f"object {number} ({name})", f"category {name!r} is not one of the given categories")
        else:
            objects.append((name, box))
    return _Image(image_id, path, width, height, tuple(objects))


def read_voc_split(
    root: Path, image_set: str | None, *, categories: Sequence[str] | None = None, lenient: bool = False
) -> SplitReading:
    """Read one split of a VOC folder as COCO records.

    ``image_set`` names ``ImageSets/Main/<image_set>.txt``; None reads every
    XML in ``Annotations/`` in sorted order. ``categories`` fixes the label
    space (ids 1..K in the given order); without it the label space is every
    object name read, sorted, ids 1..K -- give it when splits must share one.
    Raises DataError when ``categories`` repeats a name, ``root`` has no
    ``Annotations/`` or the image set file cannot be read or is not UTF-8
    (always), and naming the file and the record -- unless ``lenient``,
    which skips and lists them -- for an id without an XML, an id or a
    ``<filename>`` that leads out of its folder (``..``, an absolute path),
    an empty (0-byte) or unparsable XML, missing fields, non-numeric coordinates, a missing image
    file (the image goes with its objects), and degenerate or out-of-image
    boxes or names outside ``categories`` (the object goes alone).
    """
    root = root.resolve()
    if categories is not None and (isinstance(categories, str) or len(set(categories)) != len(categories)):
        raise DataError(f"{root}: categories must be a list of distinct names, got {categories!r}")
    ids, listing = _image_ids(root, image_set)
    known = frozenset(categories) if categories is not None else None
    bad, files = BadRecords(lenient), ExistingFiles()
    images = []
    for image_id, stem in enumerate(ids, start=1):
        xml = path_inside(root / "Annotations", f"{stem}.xml")
        if xml is None:
            bad.report(listing, f"id {stem}", f"leads out of {root / 'Annotations'}")
            continue
        if xml not in files:
            bad.report(listing, f"id {stem}", f"no annotation file {xml}")
            continue
        image = _read_image(xml, image_id, root / "JPEGImages", known, files, bad)
        if image is not None:
            images.append(image)
    names = list(categories) if categories is not None else sorted({n for i in images for n, _ in i.objects})
    category_ids = {name: number for number, name in enumerate(names, start=1)}
    samples = tuple(
        Sample(
            path=image.path,
            width=image.width,
            height=image.height,
            image_id=image.image_id,
            boxes=tuple(box for _, box in image.objects),
            category_ids=tuple(category_ids[name] for name, _ in image.objects),
        )
        for image in images
    )
    return SplitReading(tuple(Category(i, n) for n, i in category_ids.items()), samples, tuple(bad.skipped))
