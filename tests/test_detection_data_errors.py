"""Bad detection data read through a collection index: DataError naming the file and the record."""

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from gemlab.data.coco_writer import write_coco
from gemlab.data.collection import load_collection
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample


def _image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (200, 40, 40)).save(path)
    return path


def _index(folder: Path, domain: dict) -> Path:
    (folder / "gemlab-data.yaml").write_text(yaml.safe_dump({"domains": [domain]}))
    return folder / "gemlab-data.yaml"


def _coco(folder: Path) -> Path:
    """A COCO domain of two 16 x 12 images with one car each; returns its annotation file."""
    images = folder / "road" / "images"
    samples = [
        Sample(_image(images / f"{i}.png", 16, 12), 16, 12, i + 1, ((1.0, 1.0, 4.0, 4.0),), (1,)) for i in range(2)
    ]
    write_coco(folder / "road" / "train.json", [Category(1, "car")], samples, images)
    split = {"annotations": "road/train.json", "images": "road/images"}
    _index(folder, {"name": "road", "task": "detection", "format": "coco", "splits": {"train": split}})
    return folder / "road" / "train.json"


def _change_annotation(file: Path, **fields) -> None:
    data = json.loads(file.read_text())
    data["annotations"][1].update(fields)
    file.write_text(json.dumps(data))


def _refused(folder: Path, message: str) -> None:
    with pytest.raises(DataError) as error:
        load_collection(folder)
    assert str(error.value) == message


def test_coco_box_outside_its_image(tmp_path):
    annotations = _coco(tmp_path)
    _change_annotation(annotations, bbox=[10.0, 2.0, 8.0, 4.0])
    _refused(
        tmp_path,
        f"{annotations}: annotation id 2 (image id 2): bbox [10.0, 2.0, 8.0, 4.0]: box outside the 16x12 image",
    )


def test_coco_unknown_category_id(tmp_path):
    annotations = _coco(tmp_path)
    _change_annotation(annotations, category_id=4)
    _refused(tmp_path, f"{annotations}: annotation id 2 (image id 2): unknown category id 4")


def test_coco_empty_annotation_file(tmp_path):
    annotations = _coco(tmp_path)
    annotations.write_bytes(b"")
    _refused(tmp_path, f"{annotations}: not JSON: the file is empty (0 bytes)")
    with pytest.raises(DataError, match="the file is empty"):
        load_collection(tmp_path, lenient=True)  # not a record to skip: the whole file is unusable


VOC_XML = (
    "<annotation><filename>{stem}.png</filename><size><width>40</width><height>30</height></size>"
    "<object><name>{name}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>{xmax}</xmax><ymax>10</ymax></bndbox>"
    "</object></annotation>"
)


def _voc(folder: Path, val_name: str = "car", val_xmax: int = 10) -> Path:
    """A VOC domain: train image 000001 (a car), val image 000002 (``val_name``); returns the val XML."""
    root = folder / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, name, xmax, split in (("000001", "car", 10, "train"), ("000002", val_name, val_xmax, "val")):
        _image(root / "JPEGImages" / f"{stem}.png", 40, 30)
        (root / "Annotations" / f"{stem}.xml").write_text(VOC_XML.format(stem=stem, name=name, xmax=xmax))
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(f"{stem}\n")
    splits = {"train": {"root": "voc", "image_set": "train"}, "val": {"root": "voc", "image_set": "val"}}
    _index(folder, {"name": "v", "task": "detection", "format": "voc", "splits": splits})
    return root / "Annotations" / "000002.xml"


def test_voc_box_outside_its_image(tmp_path):
    xml = _voc(tmp_path, val_xmax=41)
    _refused(tmp_path, f"{xml}: object 1 (car): bndbox (1, 1, 41, 10): box outside the 40x30 image")


def test_voc_unknown_category(tmp_path):
    # The val split takes the train split's label space, so a name train never had is unknown there.
    xml = _voc(tmp_path, val_name="bus")
    _refused(tmp_path, f"{xml}: object 1 (bus): category 'bus' is not one of the given categories")


def test_voc_empty_annotation_file(tmp_path):
    xml = _voc(tmp_path)
    xml.write_bytes(b"")
    _refused(tmp_path, f"{xml}: image: empty file (0 bytes)")
    mixture, skipped = load_collection(tmp_path, lenient=True)
    assert skipped == [f"{xml}: image: empty file (0 bytes)"] and mixture.domains[0].split("val") == ()


def test_voc_empty_image_set(tmp_path):
    _voc(tmp_path)
    (tmp_path / "voc" / "ImageSets" / "Main" / "train.txt").write_bytes(b"")
    splits = {"train": {"root": "voc", "image_set": "train"}}  # alone: a val split would fail first (empty labels)
    _index(tmp_path, {"name": "v", "task": "detection", "format": "voc", "splits": splits})
    _refused(tmp_path, f"{tmp_path / 'gemlab-data.yaml'}: domain 'v': the train split is empty")
