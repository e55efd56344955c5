"""``gemlab data`` against bad inputs: one line ``gemlab data: error: <path>: <what>``, exit 2, no traceback,
nothing written -- a malformed index, records that lead out of their folder, link loops, bad destinations."""

import contextlib
import copy
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from gemlab.cli import main
from gemlab.data.coco import read_coco_split
from gemlab.data.coco_writer import write_coco
from gemlab.data.errors import DataError
from gemlab.data.imagefolder import read_imagefolder_split
from gemlab.data.records import Category, Sample

GOOD_INDEX = {
    "domains": [
        {
            "name": "road",
            "task": "detection",
            "format": "coco",
            "splits": {"train": {"annotations": "road/train.json", "images": "road/images"}},
        },
        {"name": "pets", "task": "classification", "format": "imagefolder", "splits": {"train": {"root": "pets"}}},
    ]
}


def _image(path: Path, width: int = 8, height: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 30, 200)).save(path)
    return path


def _collection(folder: Path, index: dict | str | bytes = GOOD_INDEX) -> Path:
    """Two small domains (COCO detection, an image folder) and the index ``index`` beside them."""
    images = folder / "road" / "images"
    samples = [
        Sample(_image(images / f"{i}.png", 16, 12), 16, 12, i + 1, ((1.0, 1.0, 4.0, 4.0),), (1,)) for i in range(2)
    ]
    write_coco(folder / "road" / "train.json", [Category(1, "car")], samples, images)
    for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"):
        _image(folder / "pets" / name)
    text = yaml.safe_dump(index) if isinstance(index, dict) else index
    (folder / "gemlab-data.yaml").write_bytes(text.encode() if isinstance(text, str) else text)
    return folder / "gemlab-data.yaml"


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders and links): what an error must not change."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() or p.is_symlink() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def _refused(tmp_path: Path, capsys, arguments: list[str], *fragments: str) -> None:
    """``gemlab data`` exits 2 with one line holding every fragment, no traceback, and nothing written."""
    before = _tree(tmp_path)
    assert main(["data", *arguments]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemlab data: error: "), captured.err
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in captured.out + captured.err
    assert _tree(tmp_path) == before  # no manifest, no temp file, no folder


def _ids(cases: list) -> list[str]:
    return [getattr(case, "values", case)[0] for case in cases]


def _changed(change) -> dict:
    index = copy.deepcopy(GOOD_INDEX)
    change(index)
    return index


def _road(index: dict) -> dict:
    return index["domains"][0]


# --- the index: (id, change to the good index, what the message says after "<index>: ") ------------------------------

BAD_FIELDS = [
    ("no domains", lambda d: d.pop("domains"), "domains: missing"),
    ("domains empty", lambda d: d.update(domains=[]), "domains: must be a non-empty list, got []"),
    ("domains a mapping", lambda d: d.update(domains={"road": 1}), "domains: must be a non-empty list"),
    ("unknown key", lambda d: d.update(alpah=0), "unknown field(s) ['alpah']; expected some of ['domains', 'alpha']"),
    ("alpha text", lambda d: d.update(alpha="high"), "alpha: must be a finite number >= 0, got 'high'"),
    ("alpha negative", lambda d: d.update(alpha=-1), "alpha: must be a finite number >= 0, got -1"),
    ("alpha boolean", lambda d: d.update(alpha=True), "alpha: must be a finite number >= 0, got True"),
    ("alpha NaN", lambda d: d.update(alpha=float("nan")), "alpha: must be a finite number >= 0, got nan"),
    ("domain a string", lambda d: d["domains"].insert(0, "road"), "domains[0]: must be a mapping"),
    ("no name", lambda d: _road(d).pop("name"), "domains[0]: name: missing"),
    ("name a number", lambda d: _road(d).update(name=3), "domains[0]: name: must be a non-empty string, got 3"),
    ("repeated name", lambda d: d["domains"][1].update(name="road"), "domains[1]: name 'road' is used by an earlier"),
    ("unknown domain key", lambda d: _road(d).update(formt="coco"), "domain 'road': unknown field(s) ['formt']"),
    ("no task", lambda d: _road(d).pop("task"), "domain 'road': task: missing"),
    ("unknown task", lambda d: _road(d).update(task="segmentation"), "task: must be one of detection, classification"),
    ("unknown format", lambda d: _road(d).update(format="yolo"), "format: must be one of coco, voc, imagefolder"),
    ("format a list", lambda d: _road(d).update(format=["coco"]), "domain 'road': format: must be one of"),
    ("splits a list", lambda d: _road(d).update(splits=["train"]), "splits: must be a mapping of split names"),
    ("no train split", lambda d: _road(d)["splits"].update(val=_road(d)["splits"].pop("train")), "no train split"),
    ("unknown split", lambda d: _road(d)["splits"].update(tests={}), "splits: unknown field(s) ['tests']"),
    ("split a string", lambda d: _road(d)["splits"].update(train="road/train.json"), "splits.train: must be a mapping"),
    ("split key missing", lambda d: _road(d)["splits"]["train"].pop("images"), "splits.train.images: missing"),
    (
        "split key typo",
        lambda d: _road(d)["splits"]["train"].update(image="x"),
        "splits.train: unknown field(s) ['image']",
    ),
    (
        "path a number",
        lambda d: _road(d)["splits"]["train"].update(images=5),
        "splits.train.images: must be a non-empty",
    ),
    ("path empty", lambda d: _road(d)["splits"]["train"].update(images=""), "splits.train.images: must be a non-empty"),
    (
        "annotations absent",
        lambda d: _road(d)["splits"]["train"].update(annotations="none.json"),
        "splits.train.annotations: no such file {tmp}/none.json",
    ),
    (
        "annotations a folder",
        lambda d: _road(d)["splits"]["train"].update(annotations="road"),
        "no such file {tmp}/road (it is a folder)",
    ),
    (
        "images absent",
        lambda d: _road(d)["splits"]["train"].update(images="/nowhere"),
        "splits.train.images: no such folder /nowhere",
    ),
    ("root a file", lambda d: d["domains"][1]["splits"]["train"].update(root="road/train.json"), "(it is a file)"),
    (
        "voc categories",
        lambda d: d["domains"].append(
            {
                "name": "v",
                "task": "detection",
                "format": "voc",
                "splits": {"train": {"root": "road", "categories": "car"}},
            }
        ),
        "splits.train.categories: must be a list of names, got 'car'",
    ),
    (
        "metadata columns",
        lambda d: _road(d).update(metadata_columns="site"),
        "metadata_columns: must be a list of names",
    ),
    (
        "metadata absent",
        lambda d: d["domains"][1].update(metadata_columns=["site"]),
        "domain 'pets', split train: {tmp}/pets/cat/a.png lacks metadata ['site']",
    ),
]


@pytest.mark.parametrize(("name", "change", "message"), BAD_FIELDS, ids=_ids(BAD_FIELDS))
@pytest.mark.parametrize("action", ["stats", "manifest"])
def test_bad_index_field(tmp_path, capsys, action, name, change, message):
    index = _collection(tmp_path, _changed(change))
    _refused(tmp_path, capsys, [action, str(tmp_path)], f"error: {index}: ", message.format(tmp=tmp_path))


# (id, the index file's bytes, what the message says after "<index>: ")
BAD_TEXT = [
    (
        "not YAML",
        "domains: [\n",
        "not valid YAML: expected the node content, but found '<stream end>' (line 2, column 1)",
    ),
    ("not UTF-8", b"domains: \xff\n", "not UTF-8 text (byte 9)"),
    ("a PNG", b"\x89PNG\r\n\x1a\n", "not UTF-8 text (byte 0)"),
    ("a list", "- road\n", "expected a mapping at the top level, got list"),
    ("empty", "", "expected a mapping at the top level, got an empty file"),
    ("impossible date", "alpha: 2024-13-01\n", "not valid YAML: month must be in 1..12"),
    (
        "python tag",
        "domains: !!python/object/apply:os.system [echo]\n",
        "not valid YAML: could not determine a constructor",
    ),
    (
        "tab indentation",
        "domains:\n\t- name: road\n",
        "not valid YAML: found character '\\t' that cannot start any token",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_TEXT, ids=_ids(BAD_TEXT))
def test_index_that_is_not_a_yaml_mapping(tmp_path, capsys, name, text, message):
    index = _collection(tmp_path, text)
    _refused(tmp_path, capsys, ["stats", str(index)], f"error: {index}: {message}")


def test_missing_index(tmp_path, capsys):
    _refused(tmp_path, capsys, ["stats", str(tmp_path)], f"error: {tmp_path / 'gemlab-data.yaml'}: no such index file")


# --- records that lead out of their folder ------------------------------------------------------------------------


def _escaping_coco(folder: Path, file_name: str) -> Path:
    index = _collection(folder)
    _image(folder / "road" / "secret.png", 16, 12)  # exists: only the folder rule refuses it
    data = json.loads((folder / "road" / "train.json").read_text())
    data["images"][0]["file_name"] = file_name.format(tmp=folder)
    (folder / "road" / "train.json").write_text(json.dumps(data))
    return index


@pytest.mark.parametrize(
    "file_name", ["../secret.png", "{tmp}/road/secret.png", "sub/../../secret.png"], ids=["dotdot", "absolute", "deep"]
)
def test_coco_file_name_outside_the_images_folder(tmp_path, capsys, file_name):
    _escaping_coco(tmp_path, file_name)
    annotations, images = tmp_path / "road" / "train.json", tmp_path / "road" / "images"
    record = f"image id 1 ({file_name.format(tmp=tmp_path)})"
    _refused(tmp_path, capsys, ["stats", str(tmp_path)], f"error: {annotations}: {record}: file_name leads out of")
    reading = read_coco_split(annotations, images, lenient=True)
    assert [s.image_id for s in reading.samples] == [2]
    assert reading.skipped == (f"{annotations}: {record}: file_name leads out of the images folder {images}",)


def test_coco_file_name_may_go_down_and_up_inside_the_folder(tmp_path):
    _escaping_coco(tmp_path, "sub/../0.png")
    reading = read_coco_split(tmp_path / "road" / "train.json", tmp_path / "road" / "images")
    assert reading.samples[0].path == tmp_path / "road" / "images" / "0.png"


def _voc(folder: Path, filename: str, image_id: str = "000001") -> Path:
    root = folder / "voc"
    _image(root / "JPEGImages" / "a.png", 40, 30)
    _image(folder / "outside.png", 40, 30)
    (root / "Annotations").mkdir(parents=True)
    xml = f"<annotation><filename>{filename}</filename><size><width>40</width><height>30</height></size></annotation>"
    (root / "Annotations" / "000001.xml").write_text(xml)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text(f"{image_id}\n")
    split = {"root": "voc", "image_set": "train"}
    return _collection(
        folder, {"domains": [{"name": "v", "task": "detection", "format": "voc", "splits": {"train": split}}]}
    )


@pytest.mark.parametrize(
    ("filename", "image_id", "message"),
    [
        (
            "../../outside.png",
            "000001",
            "{tmp}/voc/Annotations/000001.xml: image: <filename> '../../outside.png' leads out",
        ),
        (
            "{tmp}/outside.png",
            "000001",
            "{tmp}/voc/Annotations/000001.xml: image: <filename> '{tmp}/outside.png' leads out of {tmp}/voc/JPEGImages",
        ),
        (
            "a.png",
            "../../escape",
            "{tmp}/voc/ImageSets/Main/train.txt: id ../../escape: leads out of {tmp}/voc/Annotations",
        ),
    ],
    ids=["filename dotdot", "filename absolute", "id dotdot"],
)
def test_voc_names_outside_their_folders(tmp_path, capsys, filename, image_id, message):
    _voc(tmp_path, filename.format(tmp=tmp_path), image_id)
    _refused(tmp_path, capsys, ["stats", str(tmp_path)], f"error: {message.format(tmp=tmp_path)}")


# --- image folders: link loops ------------------------------------------------------------------------------------


def _pets(root: Path) -> Path:
    for name in ("cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"):
        _image(root / name)
    return root


@pytest.mark.parametrize("target", ["..", "../..", "."], ids=["to the split", "above the split", "to itself"])
def test_a_link_loop_is_refused_or_skipped_never_walked(tmp_path, target):
    root = _pets(tmp_path / "pets" / "train")
    _image(tmp_path / "pets" / "val" / "dog" / "e.png")  # reachable through ../.. : must not become a cat
    link = root / "cat" / "up"
    link.symlink_to(target)
    message = f"{link}: folder link: leads back to {(link.parent / target).resolve()}, which holds it (a loop)"
    with pytest.raises(DataError) as error:
        read_imagefolder_split(root)
    assert str(error.value) == message
    reading = read_imagefolder_split(root, lenient=True)
    got = [(s.path.relative_to(root).as_posix(), s.label) for s in reading.samples]
    assert got == [("cat/a.png", 0), ("cat/b.png", 0), ("dog/c.png", 1), ("dog/d.png", 1)]
    assert reading.skipped == (message,)


def test_a_loop_of_two_links_ends(tmp_path):
    root = _pets(tmp_path / "train")
    (root / "cat" / "x").mkdir()
    (root / "cat" / "y").mkdir()
    (root / "cat" / "x" / "to-y").symlink_to("../y")
    (root / "cat" / "y" / "to-x").symlink_to("../x")
    reading = read_imagefolder_split(root, lenient=True)
    assert len(reading.samples) == 4
    assert [line.split(": ")[0] for line in reading.skipped] == [
        str(root / "cat" / "x" / "to-y" / "to-x"),
        str(root / "cat" / "y" / "to-x" / "to-y"),
    ]


def test_a_class_folder_that_links_to_its_split_is_an_error(tmp_path):
    root = _pets(tmp_path / "train")
    (root / "all").symlink_to(".")
    with pytest.raises(DataError, match=rf"{root / 'all'}: class folder leads back to {root}, which holds it"):
        read_imagefolder_split(root, lenient=True)


def test_links_that_make_no_loop_are_followed(tmp_path):
    root = _pets(tmp_path / "train")
    _image(tmp_path / "elsewhere" / "kitten" / "k.png")
    (root / "cat" / "more").symlink_to(tmp_path / "elsewhere")
    reading = read_imagefolder_split(root)
    assert [s.path.relative_to(root).as_posix() for s in reading.samples if s.label == 0] == [
        "cat/a.png",
        "cat/b.png",
        "cat/more/kitten/k.png",
    ]


def test_stats_names_the_link_loop_and_lenient_lists_it(tmp_path, capsys):
    index = {
        "domains": [
            {"name": "p", "task": "classification", "format": "imagefolder", "splits": {"train": {"root": "pets"}}}
        ]
    }
    _collection(tmp_path, index)
    link = tmp_path / "pets" / "cat" / "up"
    link.symlink_to("..")
    _refused(
        tmp_path, capsys, ["stats", str(tmp_path)], f"error: {link}: folder link: leads back to {tmp_path / 'pets'}"
    )
    assert main(["data", "stats", str(tmp_path), "--lenient"]) == 0
    captured = capsys.readouterr()
    assert "p                classification       4" in captured.out
    assert "skipped 1 bad record(s)" in captured.err and str(link) in captured.err


def test_metadata_csv_that_is_not_utf8(tmp_path, capsys):
    _collection(tmp_path)
    (tmp_path / "pets" / "metadata.csv").write_bytes(b"path,site\ncat/a.png,\xff\n")
    metadata = tmp_path / "pets" / "metadata.csv"
    _refused(tmp_path, capsys, ["stats", str(tmp_path)], f"error: {metadata}: not UTF-8 CSV")


# --- destinations: (id, arguments with {tmp}, what the message says) ------------------------------------------------

DESTINATIONS = [
    (
        "synth into a file",
        ["synth", "--out", "{tmp}/road/train.json"],
        "{tmp}/road/train.json: exists and is not a folder",
    ),
    (
        "digits into a file",
        ["digits", "--out", "{tmp}/gemlab-data.yaml"],
        "gemlab-data.yaml: exists and is not a folder",
    ),
    ("synth into a full folder", ["synth", "--out", "{tmp}/road"], "{tmp}/road: exists and is not empty"),
    (
        "digits under a file",
        ["digits", "--out", "{tmp}/gemlab-data.yaml/d"],
        "{tmp}/gemlab-data.yaml/d: {tmp}/gemlab-data.yaml is not a folder",
    ),
    ("synth negative seed", ["synth", "--out", "{tmp}/new", "--seed", "-1"], "synth-uodb: need seed >= 0"),
    ("synth no workers", ["synth", "--out", "{tmp}/new", "--workers", "0"], "workers >= 1 (got 0, 128, 1.0, 0)"),
    ("synth NaN scale", ["synth", "--out", "{tmp}/new", "--scale", "nan"], "scale > 0"),
    (
        "digits negative seed",
        ["digits", "--out", "{tmp}/new", "--seed", "-4"],
        "digits: need seed >= 0 and image_size >= 8 (got -4, 28)",
    ),
    ("digits tiny", ["digits", "--out", "{tmp}/new", "--image-size", "4"], "(got 0, 4)"),
    (
        "manifest into a folder",
        ["manifest", "{tmp}", "--out", "{tmp}/road"],
        "{tmp}/road: is a folder; give a file name",
    ),
    (
        "manifest under a file",
        ["manifest", "{tmp}", "--out", "{tmp}/road/train.json/m.parquet"],
        "{tmp}/road/train.json is not a folder",
    ),
    pytest.param(
        "manifest in /proc",
        ["manifest", "{tmp}", "--out", "/proc/m.parquet"],
        "/proc/m.parquet: cannot write in /proc",
        marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc"),
    ),
    pytest.param(
        "digits in /proc",
        ["digits", "--out", "/proc/gemlab/digits"],
        "/proc/gemlab/digits: cannot write in /proc",
        marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc"),
    ),
    pytest.param(
        "synth in a read-only folder",
        ["synth", "--out", "{tmp}/locked/new"],
        "cannot write in {tmp}/locked",
        marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders"),
    ),
]


@pytest.mark.parametrize(("name", "arguments", "message"), DESTINATIONS, ids=_ids(DESTINATIONS))
def test_bad_destination(tmp_path, capsys, name, arguments, message):
    _collection(tmp_path)
    (tmp_path / "locked").mkdir(mode=0o500)
    arguments = [argument.format(tmp=tmp_path) for argument in arguments]
    _refused(tmp_path, capsys, arguments, message.format(tmp=tmp_path))


def test_manifest_into_a_new_folder_still_works(tmp_path, capsys):
    _collection(tmp_path)
    out = tmp_path / "new" / "m.parquet"
    assert main(["data", "manifest", str(tmp_path), "--out", str(out)]) == 0
    assert f"wrote {out} (6 images)" in capsys.readouterr().out


# --- any text, any structure: exit 0 or 2, never an exception -----------------------------------------------------

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _stats_outcome(folder: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(["data", "stats", str(folder)])
    assert rc in (0, 2)
    if rc == 2:
        assert len(err.getvalue().splitlines()) == 1 and err.getvalue().startswith("gemlab data: error: ")


@FUZZ
@given(text=st.text(max_size=200))
def test_any_text_as_an_index(tmp_path, text):
    (tmp_path / "gemlab-data.yaml").write_text(text, encoding="utf-8")
    _stats_outcome(tmp_path)


_KEYS = ["domains", "alpha", "name", "task", "format", "splits", "train", "val", "annotations", "images", "root"]
_VALUES = ["detection", "classification", "coco", "voc", "imagefolder", "road/train.json", "road/images", "pets", ""]
_INDEX_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2) | st.floats(-2, 2) | st.sampled_from(_VALUES),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5),
    max_leaves=25,
)


@FUZZ
@given(index=_INDEX_LIKE)
def test_any_structure_as_an_index(tmp_path_factory, index):
    folder = tmp_path_factory.mktemp("fuzz")
    _collection(folder, yaml.safe_dump(index))
    _stats_outcome(folder)


@FUZZ
@given(domain=st.fixed_dictionaries({}, optional={key: _INDEX_LIKE for key in ("name", "task", "format", "splits")}))
def test_any_domain_entry(tmp_path_factory, domain):
    folder = tmp_path_factory.mktemp("fuzz")
    _collection(folder, yaml.safe_dump({"domains": [GOOD_INDEX["domains"][0], domain]}))
    _stats_outcome(folder)


_COCO_KEYS = ["images", "annotations", "categories", "id", "file_name", "width", "height", "image_id", "bbox"]
_COCO_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 20) | st.floats(allow_nan=True) | st.sampled_from(["0.png", "../x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_COCO_KEYS), inner, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(annotations=_COCO_LIKE)
def test_any_json_as_coco_annotations(tmp_path_factory, annotations):
    folder = tmp_path_factory.mktemp("fuzz")
    _collection(folder)
    (folder / "road" / "train.json").write_text(json.dumps(annotations))
    _stats_outcome(folder)


@FUZZ
@given(
    xml=st.lists(st.sampled_from([*"<>/=\"' a1.-\n&;", "filename", "size", "width", "object"]), max_size=40).map(
        "".join
    )
)
def test_any_text_as_a_voc_annotation(tmp_path_factory, xml):
    folder = tmp_path_factory.mktemp("fuzz")
    _voc(folder, "a.png")
    (folder / "voc" / "Annotations" / "000001.xml").write_text(xml, encoding="utf-8")
    _stats_outcome(folder)
