"""The COCO, VOC and image-folder readers: round trips, VOC ≡ COCO twins, every bad input, lenient reads."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gemlab.data.coco import read_coco_split
from gemlab.data.coco_writer import coco_dict, write_coco
from gemlab.data.collection import load_collection
from gemlab.data.errors import DataError
from gemlab.data.imagefolder import IMAGE_SUFFIXES, read_imagefolder_split
from gemlab.data.records import Category, Sample
from gemlab.data.voc import read_voc_split


def _image(path: Path, width: int, height: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 30, 200)).save(path)
    return path


def _write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# --- COCO ---------------------------------------------------------------------------------------------------------


def _coco_samples(images: Path) -> tuple[tuple[Category, ...], tuple[Sample, ...]]:
    categories = (Category(3, "person"), Category(7, "car"))
    samples = (
        Sample(_image(images / "a.png", 40, 30), 40, 30, 1, ((0.0, 0.0, 40.0, 30.0), (2.5, 3.0, 4.0, 5.5)), (7, 3)),
        Sample(_image(images / "sub" / "b.png", 20, 10), 20, 10, 2, (), (), metadata={"site": "x", "year": 2020}),
        Sample(_image(images / "c.png", 16, 16), 16, 16, 5, ((1.0, 1.0, 8.0, 8.0),), (3,), metadata={"site": "y"}),
    )
    return categories, samples


@pytest.fixture
def coco_split(tmp_path):
    """A good split written by gemlab's writer: (annotation file, images folder, categories, samples)."""
    images = tmp_path / "images"
    categories, samples = _coco_samples(images)
    write_coco(tmp_path / "train.json", categories, samples, images)
    return tmp_path / "train.json", images, categories, samples


def test_coco_round_trip_gives_the_written_records(coco_split):
    annotations, images, categories, samples = coco_split
    reading = read_coco_split(annotations, images)
    assert reading.categories == categories
    assert reading.samples == samples
    assert reading.skipped == ()
    assert all(sample.path.is_absolute() for sample in reading.samples)


def test_coco_sorts_categories_and_images_by_id_and_keeps_crowds_apart(tmp_path):
    _image(tmp_path / "a.png", 10, 10)
    _image(tmp_path / "b.png", 10, 10)
    data = {
        "images": [
            {"id": 9, "file_name": "b.png", "width": 10, "height": 10},
            {"id": 4, "file_name": "a.png", "width": 10, "height": 10},
        ],
        "annotations": [
            {"id": 1, "image_id": 9, "category_id": 2, "bbox": [1, 1, 2, 2]},
            {"id": 2, "image_id": 9, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 3, "image_id": 9, "category_id": 1, "bbox": [3, 3, 2, 2], "iscrowd": 0},
        ],
        "categories": [{"id": 2, "name": "b"}, {"id": 1, "name": "a"}],
    }
    reading = read_coco_split(_write_json(tmp_path / "s.json", data), tmp_path)
    assert reading.categories == (Category(1, "a"), Category(2, "b"))
    assert [s.image_id for s in reading.samples] == [4, 9]
    assert reading.samples[1].boxes == ((1.0, 1.0, 2.0, 2.0), (3.0, 3.0, 2.0, 2.0))
    assert reading.samples[1].category_ids == (2, 1)
    assert reading.samples[1].crowd_boxes == ((0.0, 0.0, 10.0, 10.0),) and reading.samples[1].crowd_category_ids == (1,)


def test_coco_accepts_boxes_within_the_tolerance(tmp_path):
    _image(tmp_path / "a.png", 10, 10)
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [-0.0005, 0, 10.0009, 10.0004]}],
        "categories": [{"id": 1, "name": "a"}],
    }
    assert len(read_coco_split(_write_json(tmp_path / "s.json", data), tmp_path).samples[0].boxes) == 1


def _mutate(data: dict, change) -> dict:
    data = json.loads(json.dumps(data))
    change(data)
    return data


# (id, change to the good COCO dict, words the message must hold besides the file name)
BAD_COCO = [
    ("no images", lambda d: d.pop("images"), ["not COCO detection JSON", "'images' is missing"]),
    ("no annotations", lambda d: d.pop("annotations"), ["not COCO", "'annotations' is missing"]),
    ("width string", lambda d: d["images"][0].update(width="40"), ["images[0]", "'width' must be a positive"]),
    ("bbox of 3", lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), ["annotations[0]", "'bbox'"]),
    ("no file_name", lambda d: d["images"][1].pop("file_name"), ["images[1]", "'file_name'"]),
    ("metadata list", lambda d: d["images"][1].update(metadata=[1]), ["images[1]", "'metadata'"]),
    ("category name", lambda d: d["categories"][0].update(name=None), ["categories[0]", "'name'"]),
    ("duplicate category", lambda d: d["categories"][1].update(id=3), ["duplicate category id(s) [3]"]),
    ("unknown image", lambda d: d["annotations"][1].update(image_id=99), ["annotation id 2", "unknown image id 99"]),
    ("unknown category", lambda d: d["annotations"][2].update(category_id=4), ["annotation id 3", "category id 4"]),
    ("zero width box", lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 5]), ["annotation id 1", "degenerate"]),
    ("negative height", lambda d: d["annotations"][0].update(bbox=[1, 1, 5, -2]), ["annotation id 1", "degenerate"]),
    ("beyond right", lambda d: d["annotations"][0].update(bbox=[30, 1, 10.01, 5]), ["annotation id 1", "40x30"]),
    ("beyond bottom", lambda d: d["annotations"][2].update(bbox=[1, 9, 2, 8]), ["annotation id 3", "outside"]),
    ("negative x", lambda d: d["annotations"][0].update(bbox=[-1, 1, 2, 2]), ["annotation id 1", "outside"]),
    ("missing file", lambda d: d["images"][1].update(file_name="gone.png"), ["image id 2 (gone.png)", "missing"]),
    ("duplicate image", lambda d: d["images"][2].update(id=1), ["image id 1 (a.png)", "duplicate image id"]),
]


@pytest.mark.parametrize(("change", "words"), [case[1:] for case in BAD_COCO], ids=[case[0] for case in BAD_COCO])
def test_coco_bad_input_names_file_and_record(coco_split, change, words):
    annotations, images, _, _ = coco_split
    bad = _write_json(annotations.with_name("bad.json"), _mutate(json.loads(annotations.read_text()), change))
    with pytest.raises(DataError) as error:
        read_coco_split(bad, images)
    assert str(bad) in str(error.value)
    for word in words:
        assert word in str(error.value)


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe", ""])
def test_coco_file_that_is_not_json_is_an_error_even_when_lenient(tmp_path, text):
    path = tmp_path / "x.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}: not JSON"):
        read_coco_split(path, tmp_path, lenient=True)


def test_coco_json_that_is_not_an_object_is_not_coco(tmp_path):
    path = _write_json(tmp_path / "list.json", [{"images": []}])
    with pytest.raises(DataError, match=rf"{path}: not COCO detection JSON: expected an object"):
        read_coco_split(path, tmp_path, lenient=True)


def test_coco_missing_file_or_images_folder_is_an_error(coco_split):
    annotations, images, _, _ = coco_split
    with pytest.raises(DataError, match=rf"{annotations.with_name('none.json')}: cannot read"):
        read_coco_split(annotations.with_name("none.json"), images)
    with pytest.raises(DataError, match=r"images folder .*nowhere does not exist"):
        read_coco_split(annotations, images / "nowhere")


def test_coco_not_coco_is_an_error_even_when_lenient(coco_split):
    annotations, images, _, _ = coco_split
    bad = _write_json(annotations.with_name("bad.json"), {"images": [], "annotations": {}, "categories": []})
    with pytest.raises(DataError, match="not COCO detection JSON: 'annotations'"):
        read_coco_split(bad, images, lenient=True)


def test_coco_lenient_skips_bad_records_and_lists_them(coco_split):
    annotations, images, categories, samples = coco_split

    def damage(data):
        data["images"][0]["file_name"] = "gone.png"  # image 1 and its two annotations go
        data["annotations"][2]["bbox"] = [10, 10, 10, 10]  # image 5's only box leaves its image
        data["annotations"].append({"id": 9, "image_id": 77, "category_id": 3, "bbox": [0, 0, 1, 1]})

    bad = _write_json(annotations.with_name("bad.json"), _mutate(json.loads(annotations.read_text()), damage))
    reading = read_coco_split(bad, images, lenient=True)
    assert reading.categories == categories
    assert reading.samples == (samples[1], Sample(samples[2].path, 16, 16, 5, metadata={"site": "y"}))
    assert len(reading.skipped) == 3
    assert reading.skipped[0].startswith(f"{bad}: image id 1 (gone.png): image file ")
    assert reading.skipped[1].startswith(f"{bad}: annotation id 3 (image id 5): bbox [10, 10, 10, 10]: box outside")
    assert reading.skipped[2] == f"{bad}: annotation id 9 (image id 77): unknown image id 77"


def test_coco_lenient_skips_every_copy_of_a_duplicate_image(coco_split):
    annotations, images, _, samples = coco_split
    data = _mutate(json.loads(annotations.read_text()), lambda d: d["images"][2].update(id=1))
    reading = read_coco_split(_write_json(annotations.with_name("dup.json"), data), images, lenient=True)
    assert reading.samples == (samples[1],)
    assert [line.split(": ", 1)[1] for line in reading.skipped] == [
        "image id 1 (a.png): duplicate image id",
        "image id 1 (c.png): duplicate image id",
        "annotation id 3 (image id 5): unknown image id 5",  # c.png's box still names its old id
    ]


def test_ground_truth_as_detections_scores_ap_one(coco_split):
    annotations, images, categories, _ = coco_split
    reading = read_coco_split(annotations, images)
    out = annotations.with_name("again.json")
    write_coco(out, reading.categories, reading.samples, images)
    detections = [{**a, "score": 1.0} for a in coco_dict(categories, reading.samples, images)["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(out))
        evaluation = COCOeval(truth, truth.loadRes([dict(d) for d in detections]), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]
    assert evaluation.stats[1] == pytest.approx(1.0)  # AP@.5


# --- VOC ----------------------------------------------------------------------------------------------------------

BNDBOX = ("xmin", "ymin", "xmax", "ymax")


def _voc_xml(filename="a.png", size=("40", "30"), objects=(("car", ("1", "2", "10", "12")),)) -> str:
    """A VOC annotation; None leaves an element out."""
    parts = ["<annotation><folder>VOC</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append("<size>")
        parts += [f"<{k}>{v}</{k}>" for k, v in zip(("width", "height"), size, strict=True) if v is not None]
        parts.append("<depth>3</depth></size>")
    for name, coords in objects:
        parts.append("<object>" + (f"<name>{name}</name>" if name is not None else ""))
        parts.append("<pose>Left</pose><truncated>0</truncated><difficult>1</difficult><bndbox>")
        parts += [f"<{k}>{v}</{k}>" for k, v in zip(BNDBOX, coords, strict=True) if v is not None]
        parts.append("</bndbox></object>")
    return "".join([*parts, "</annotation>"])


# One VOC image per entry: (id, file name, width, height, objects as (name, VOC xmin, ymin, xmax, ymax)).
VOC_IMAGES = [
    ("000001", "000001.png", 40, 30, [("car", 1, 2, 10, 12), ("person", 5, 5, 40, 30)]),
    ("000002", "000002.jpg", 20, 20, [("person", 1, 1, 20, 20)]),
    ("000003", "000003.PNG", 16, 8, []),
]


def _voc_folder(root: Path, images=VOC_IMAGES, image_set=("train", ["000001", "000002", "000003"])) -> Path:
    (root / "Annotations").mkdir(parents=True)
    for stem, filename, width, height, objects in images:
        _image(root / "JPEGImages" / filename, width, height)
        xml = _voc_xml(filename, (str(width), str(height)), [(n, tuple(map(str, c))) for n, *c in objects])
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{image_set[0]}.txt").write_text("".join(f"{i}\n" for i in image_set[1]))
    return root


def _coco_twin(path: Path, images, names) -> Path:
    """The COCO JSON of the same images and boxes, written by hand from the VOC numbers."""
    ids = {name: number for number, name in enumerate(names, start=1)}
    data = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for image_id, (_, filename, width, height, objects) in enumerate(images, start=1):
        data["images"].append({"id": image_id, "file_name": filename, "width": width, "height": height})
        for name, xmin, ymin, xmax, ymax in objects:
            bbox = [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]
            data["annotations"].append(
                {"id": len(data["annotations"]) + 1, "image_id": image_id, "category_id": ids[name], "bbox": bbox}
            )
    return _write_json(path, data)


@pytest.mark.parametrize(("image_set", "categories"), [("train", None), (None, None), ("train", ["person", "car"])])
def test_voc_converts_to_the_same_records_as_its_coco_twin(tmp_path, image_set, categories):
    root = _voc_folder(tmp_path / "voc")
    twin = _coco_twin(tmp_path / "twin.json", VOC_IMAGES, categories or ["car", "person"])
    voc = read_voc_split(root, image_set, categories=categories)
    coco = read_coco_split(twin, root / "JPEGImages")
    assert voc == coco
    assert voc.samples[0].boxes == ((0.0, 1.0, 10.0, 11.0), (4.0, 4.0, 36.0, 26.0))
    assert voc.samples[1].boxes == ((0.0, 0.0, 20.0, 20.0),)  # difficult objects are kept


def test_voc_image_ids_follow_the_image_set_order(tmp_path):
    root = _voc_folder(tmp_path / "voc", image_set=("val", ["000003", "000001 1"]))
    reading = read_voc_split(root, "val")
    assert [(s.path.name, s.image_id) for s in reading.samples] == [("000003.PNG", 1), ("000001.png", 2)]


def _voc_with(root: Path, xml: str) -> Path:
    """A one-image VOC folder (id 000001, image a.png 40x30) with the given XML."""
    _voc_folder(root, images=[], image_set=("train", ["000001"]))
    _image(root / "JPEGImages" / "a.png", 40, 30)
    (root / "Annotations" / "000001.xml").write_text(xml)
    return root


# (id, XML, categories, words the message must hold besides the XML file name)
BAD_VOC = [
    ("no filename", _voc_xml(filename=None), None, ["image: missing <filename>"]),
    ("no size", _voc_xml(size=None), None, ["image: missing <size/width>"]),
    ("no height", _voc_xml(size=("40", None)), None, ["image: missing <size/height>"]),
    ("size text", _voc_xml(size=("40", "big")), None, ["<size/height> is not a number: 'big'"]),
    ("no name", _voc_xml(objects=[(None, ("1", "1", "5", "5"))]), None, ["object 1: missing <name>"]),
    ("no xmax", _voc_xml(objects=[("car", ("1", "1", None, "5"))]), None, ["object 1: missing <bndbox/xmax>"]),
    ("coord text", _voc_xml(objects=[("car", ("1", "x", "5", "5"))]), None, ["object 1", "'x'"]),
    (
        "degenerate",
        _voc_xml(objects=[("car", ("1", "1", "5", "5")), ("car", ("6", "1", "5", "5"))]),
        None,
        ["object 2 (car): bndbox (6, 1, 5, 5): degenerate"],
    ),
    ("zero-based", _voc_xml(objects=[("car", ("0", "1", "5", "5"))]), None, ["object 1 (car)", "outside the 40x30"]),
    ("beyond", _voc_xml(objects=[("car", ("1", "1", "5", "31"))]), None, ["object 1 (car)", "outside"]),
    ("unknown name", _voc_xml(), ["person"], ["object 1 (car): category 'car' is not one of the given"]),
    ("missing image", _voc_xml(filename="gone.jpg"), None, ["image: image file", "gone.jpg is missing"]),
    ("bad xml", "<annotation><filename>a.png</annotation>", None, ["image: not well-formed XML"]),
]


@pytest.mark.parametrize(("xml", "categories", "words"), [c[1:] for c in BAD_VOC], ids=[c[0] for c in BAD_VOC])
def test_voc_bad_input_names_file_and_record(tmp_path, xml, categories, words):
    root = _voc_with(tmp_path / "voc", xml)
    with pytest.raises(DataError) as error:
        read_voc_split(root, "train", categories=categories)
    assert str(error.value).startswith(f"{root / 'Annotations' / '000001.xml'}: ")
    for word in words:
        assert word in str(error.value)


def test_voc_bad_folder_or_image_set_is_an_error(tmp_path):
    root = _voc_folder(tmp_path / "voc", image_set=("train", ["000001", "000404"]))
    with pytest.raises(DataError, match=r"train\.txt: id 000404: no annotation file .*000404\.xml"):
        read_voc_split(root, "train")
    with pytest.raises(DataError, match=r"test\.txt: cannot read image set 'test'"):
        read_voc_split(root, "test", lenient=True)
    with pytest.raises(DataError, match="not a VOC folder"):
        read_voc_split(tmp_path, None, lenient=True)
    with pytest.raises(DataError, match="categories must be a list of distinct names"):
        read_voc_split(root, None, categories=["car", "person", "car"])


def test_voc_lenient_skips_bad_images_and_objects_and_lists_them(tmp_path):
    images = [
        *VOC_IMAGES,
        ("000004", "000004.png", 10, 10, [("car", 1, 1, 11, 5)]),  # box leaves the image: object dropped
    ]
    root = _voc_folder(tmp_path / "voc", images, image_set=("train", ["000001", "000002", "000004", "000005"]))
    (root / "JPEGImages" / "000002.jpg").unlink()  # image 2 goes with its object
    reading = read_voc_split(root, "train", lenient=True)
    assert [(s.image_id, len(s.boxes)) for s in reading.samples] == [(1, 2), (3, 0)]
    assert reading.categories == (Category(1, "car"), Category(2, "person"))
    assert len(reading.skipped) == 3
    assert reading.skipped[0].startswith(f"{root / 'Annotations' / '000002.xml'}: image: image file")
    assert reading.skipped[1].startswith(f"{root / 'Annotations' / '000004.xml'}: object 1 (car): bndbox (1, 1, 11")
    assert reading.skipped[2].startswith(f"{root / 'ImageSets' / 'Main' / 'train.txt'}: id 000005: no annotation")


# --- image folders ------------------------------------------------------------------------------------------------


def _classes(root: Path) -> Path:
    _image(root / "dog" / "b.JPG", 12, 7)
    _image(root / "dog" / "a.png", 8, 8)
    _image(root / "cat" / "deep" / "z.webp", 5, 6)
    _image(root / "cat" / "x.webp", 4, 3)
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_imagefolder_labels_follow_sorted_class_folders(tmp_path):
    root = _classes(tmp_path / "train")
    reading = read_imagefolder_split(root)
    assert reading.categories == (Category(0, "cat"), Category(1, "dog"))
    got = [(s.path.relative_to(root).as_posix(), s.label, s.image_id, s.width, s.height) for s in reading.samples]
    assert got == [
        ("cat/x.webp", 0, 1, 4, 3),
        ("cat/deep/z.webp", 0, 2, 5, 6),
        ("dog/a.png", 1, 3, 8, 8),
        ("dog/b.JPG", 1, 4, 12, 7),
    ]
    assert all(s.boxes == () and s.metadata == {} for s in reading.samples)


def test_imagefolder_order_matches_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    root = _classes(tmp_path / "train")
    theirs = ImageFolder(str(root), is_valid_file=lambda path: path.lower().endswith(IMAGE_SUFFIXES))
    ours = read_imagefolder_split(root)
    assert [(Path(p), label) for p, label in theirs.samples] == [(s.path, s.label) for s in ours.samples]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such folder"):
        read_imagefolder_split(tmp_path / "nowhere", lenient=True)
    (tmp_path / "flat").mkdir()
    _image(tmp_path / "flat" / "a.png", 4, 4)
    with pytest.raises(DataError, match="flat: no class folders"):
        read_imagefolder_split(tmp_path / "flat")
    root = _classes(tmp_path / "train")
    (root / "emu").mkdir()
    (root / "emu" / "readme.md").write_text("")
    with pytest.raises(DataError, match="class folder 'emu' holds no images"):
        read_imagefolder_split(root, lenient=True)


def test_imagefolder_unreadable_image_is_an_error_or_skipped(tmp_path):
    root = _classes(tmp_path / "train")
    broken = root / "dog" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"{broken}: image id 5: unreadable image"):
        read_imagefolder_split(root)
    reading = read_imagefolder_split(root, lenient=True)
    assert len(reading.samples) == 4 and [s.image_id for s in reading.samples] == [1, 2, 3, 4]
    assert len(reading.skipped) == 1 and reading.skipped[0].startswith(f"{broken}: image id 5: unreadable image")


def test_imagefolder_metadata_csv(tmp_path):
    root = _classes(tmp_path / "train")
    (root / "metadata.csv").write_text(
        "path,hospital,year\ncat/x.webp,h1,2019\ndog/a.png,h2,2020\ncat/gone.png,h3,2021\ndog/b.JPG,h1,2020,extra\n"
    )
    with pytest.raises(DataError, match=r"metadata\.csv: line 4: no image 'cat/gone.png'"):
        read_imagefolder_split(root)
    reading = read_imagefolder_split(root, lenient=True)
    assert [dict(s.metadata) for s in reading.samples] == [
        {"hospital": "h1", "year": "2019"},
        {},
        {"hospital": "h2", "year": "2020"},
        {},
    ]
    assert [line.split(": ")[1] for line in reading.skipped] == ["line 4", "line 5"]
    (root / "metadata.csv").write_text("file,hospital\n")
    with pytest.raises(DataError, match="needs a 'path' column"):
        read_imagefolder_split(root, lenient=True)


# --- through an index file ----------------------------------------------------------------------------------------


def test_an_index_reads_all_three_formats(tmp_path, coco_split):
    annotations, _, _, samples = coco_split
    _voc_folder(tmp_path / "voc")
    _classes(tmp_path / "folders" / "train")
    index = {
        "domains": [
            {
                "name": "c",
                "task": "detection",
                "format": "coco",
                "splits": {"train": {"annotations": annotations.name, "images": "images"}},
            },
            {
                "name": "v",
                "task": "detection",
                "format": "voc",
                "splits": {
                    "train": {"root": "voc", "image_set": "train", "categories": ["car", "person"]},
                    "val": {"root": str(tmp_path / "voc"), "categories": ["car", "person"]},
                },
            },
            {
                "name": "f",
                "task": "classification",
                "format": "imagefolder",
                "splits": {"train": {"root": "folders/train"}},
            },
        ]
    }
    (tmp_path / "gemlab-data.yaml").write_text(yaml.safe_dump(index))
    mixture, skipped = load_collection(tmp_path)
    assert skipped == []
    assert mixture.names == ("c", "v", "f")
    assert mixture.domains[0].split("train") == samples
    assert [d.size for d in mixture.domains] == [3, 3, 4]
    assert mixture.labels.names == ("person", "car", "cat", "dog")


def test_voc_val_split_takes_the_train_label_space(tmp_path):
    # val holds only persons: on its own it would number 'person' 1, while train numbers it 2.
    _voc_folder(tmp_path / "train")
    _voc_folder(tmp_path / "val", images=[VOC_IMAGES[1]], image_set=("val", ["000002"]))
    index = {
        "domains": [
            {
                "name": "v",
                "task": "detection",
                "format": "voc",
                "splits": {
                    "train": {"root": "train", "image_set": "train"},
                    "val": {"root": "val", "image_set": "val"},
                },
            }
        ]
    }
    (tmp_path / "gemlab-data.yaml").write_text(yaml.safe_dump(index))
    mixture, _ = load_collection(tmp_path)
    domain = mixture.domains[0]
    assert domain.category_names == {1: "car", 2: "person"}
    assert domain.split("val")[0].category_ids == (2,)
