"""From an index on disk to tensors: datasets, transforms, the manifest and ``gemlab data``."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from gemlab.cli import main
from gemlab.data.coco_writer import write_coco
from gemlab.data.collection import load_collection, write_index
from gemlab.data.dataset import DomainDataset, MixtureDataset
from gemlab.data.errors import DataError
from gemlab.data.records import Category, Sample
from gemlab.data.sampler import MixtureSampler
from gemlab.data.transforms import classification_transforms, detection_transforms


def _write_domain(root: Path, name: str, categories: list[str], count: int) -> dict:
    images = root / name / "images"
    images.mkdir(parents=True)
    cats = [Category(i + 1, c) for i, c in enumerate(categories)]
    samples = []
    for i in range(count):
        path = images / f"{i:03d}.png"
        pixels = np.zeros((24, 32, 3), dtype=np.uint8)
        pixels[4:12, 2:10] = 255  # the object: x 2..10, y 4..12
        Image.fromarray(pixels).save(path)
        samples.append(Sample(path, 32, 24, i + 1, ((2.0, 4.0, 8.0, 8.0),), (cats[i % len(cats)].id,)))
    write_coco(root / name / "train.json", cats, samples, images)
    return {
        "name": name,
        "task": "detection",
        "format": "coco",
        "splits": {"train": {"annotations": f"{name}/train.json", "images": f"{name}/images"}},
    }


@pytest.fixture
def collection(tmp_path):
    write_index(
        tmp_path,
        [_write_domain(tmp_path, "road", ["car", "person"], 6), _write_domain(tmp_path, "sky", ["plane", "car"], 3)],
    )
    return tmp_path


def test_domain_dataset_decodes_images_and_boxes_lazily(collection):
    mixture, _ = load_collection(collection)
    image, target = DomainDataset(mixture.domains[0])[0]
    assert isinstance(image, tv_tensors.Image) and image.shape == (3, 24, 32) and image.dtype == torch.uint8
    assert target["boxes"].tolist() == [[2.0, 4.0, 10.0, 12.0]]  # XYXY
    assert target["labels"].tolist() == [1]
    assert image[:, 4:12, 2:10].min() == 255 and image[:, 12:, :].max() == 0


def test_mixture_dataset_uses_the_unified_label_space_and_tags_the_domain(collection):
    mixture, _ = load_collection(collection)
    dataset = MixtureDataset(mixture)
    _, target = dataset[(1, 1)]  # sky, second image: its category 2 is 'car'
    assert target["domain"] == 1
    assert mixture.labels.names[target["labels"].item()] == "car"
    assert target["labels"].item() == mixture.labels.local_to_global[0][1]  # the same id as road's car


def test_detection_transforms_move_boxes_with_the_image(collection):
    mixture, _ = load_collection(collection)
    image, target = DomainDataset(mixture.domains[0], transform=detection_transforms(64, train=False))[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and image.max() <= 1.0
    assert target["boxes"].tolist() == [[4.0, pytest.approx(10.6667, abs=1e-3), 20.0, 32.0]]
    torch.manual_seed(0)
    flipped, moved = DomainDataset(mixture.domains[0], transform=detection_transforms(64, train=True))[0]
    x0, y0, x1, y1 = moved["boxes"][0].round().int().tolist()
    assert flipped[:, y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].min() > 0.5  # the box still frames the object


def test_classification_transforms_output_size():
    image = tv_tensors.Image(torch.randint(0, 255, (3, 28, 28), dtype=torch.uint8))
    out = classification_transforms(32, train=True)(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


def test_sampler_batches_load_through_a_dataloader(collection):
    mixture, _ = load_collection(collection)
    sampler = MixtureSampler(mixture, batch_size=4, seed=0, domain_ids=[1])
    loader = torch.utils.data.DataLoader(
        MixtureDataset(mixture, transform=detection_transforms(32, False)),
        batch_sampler=[sampler.batch(s) for s in range(3)],
        collate_fn=lambda batch: batch,
    )
    batches = list(loader)
    assert len(batches) == 3 and all(t["domain"] == 1 for batch in batches for _, t in batch)


def test_a_deleted_image_is_reported_with_its_path(collection):
    mixture, _ = load_collection(collection)
    sample = mixture.domains[0].split("train")[0]
    sample.path.unlink()
    with pytest.raises(DataError, match=f"domain 'road': cannot read image {sample.path}"):
        DomainDataset(mixture.domains[0])[0]


def test_manifest_has_one_row_per_image(collection, capsys):
    assert main(["data", "manifest", str(collection)]) == 0
    table = pq.read_table(collection / "manifest.parquet")
    assert table.num_rows == 9
    rows = table.to_pylist()
    assert rows[0]["domain"] == "road" and rows[0]["split"] == "train"
    assert rows[0]["boxes"] == [[2.0, 4.0, 8.0, 8.0]] and rows[0]["category_names"] == ["car"]
    assert "9 images" in capsys.readouterr().out


def test_stats_prints_counts_label_spaces_and_weights(collection, capsys):
    assert main(["data", "stats", str(collection), "--alpha", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 domains" in out and "3 categories in the unified label space" in out
    road = next(line for line in out.splitlines() if line.startswith("road"))
    assert road.split()[2:7] == ["6", "0", "0", "0", "0.5000"]  # train, val, calib, test, weight


def test_stats_on_a_missing_index_fails_cleanly(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path)]) == 2
    assert "gemlab-data.yaml: no such index file" in capsys.readouterr().err


def test_lenient_stats_lists_skipped_records(collection, capsys):
    (collection / "road" / "images" / "002.png").unlink()
    assert main(["data", "stats", str(collection)]) == 2
    assert "002.png" in capsys.readouterr().err
    assert main(["data", "stats", str(collection), "--lenient"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 bad record(s)" in captured.err and "002.png" in captured.err
