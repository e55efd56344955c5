"""The shipped detection configs: every variant composes and builds, and the UODB index example reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gemlab.data.index import read_index
from gemlab.engine.config import ConfigError, as_plain, compose_config
from gemlab.engine.model import configured_model, uses_experts
from gemlab.models.common import ModelParts
from gemlab.models.detection.params import parameter_counts
from gemlab.moe.registry import MoELayers, router_spec
from gemlab.moe.spec import RunFacts
from helpers import RoundRobinPlan

EXAMPLE_INDEX = Path(__file__).parent.parent / "docs" / "examples" / "uodb-gemlab-data.yaml"


@pytest.mark.parametrize(("model", "experts"), [("dino", False), ("gem_dino", True), ("gemgr_dino", True)])
def test_each_detector_variant_is_one_config(model, experts):
    cfg = compose_config(["experiment=uodb_mini", f"model={model}"])
    spec, options = configured_model(as_plain(cfg))
    assert spec.task == "detection" and uses_experts(as_plain(cfg)) == experts
    facts = RunFacts(num_experts=4, num_domains=9, class_counts=(1,) * 20, plan=RoundRobinPlan(9, 4))
    model = spec.build(ModelParts(20, 96, MoELayers(router_spec("gem"), facts)), **options)
    counts = parameter_counts(model)
    assert 0 < counts["active"] <= counts["total"] and (counts["active"] < counts["total"]) == experts


def test_a_key_no_detector_reads_is_refused():
    with pytest.raises(ConfigError, match=r"model\.depth: the dino model does not use it"):
        configured_model(as_plain(compose_config(["experiment=uodb_mini", "+model.depth=2"])))


def test_the_real_uodb_experiment_composes_at_paper_scale():
    cfg = compose_config(["experiment=uodb"])
    assert (cfg.model.backbone, cfg.model.dim, cfg.model.num_queries, cfg.moe.num_experts) == ("resnet50", 256, 900, 8)
    assert cfg.data.source == "collection" and cfg.trainer.use_gpu


def _layout(root: Path, index: dict) -> None:
    """Empty stand-ins for every file and folder the index names (the index check reads no annotation)."""
    for entry in index["domains"]:
        for split in entry["splits"].values():
            if entry["format"] == "voc":
                voc = root / split["root"]
                for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
                    (voc / folder).mkdir(parents=True, exist_ok=True)
                (voc / "ImageSets" / "Main" / f"{split['image_set']}.txt").write_text("")
            else:
                (root / split["annotations"]).parent.mkdir(parents=True, exist_ok=True)
                (root / split["annotations"]).write_text("{}")
                (root / split["images"]).mkdir(parents=True, exist_ok=True)


def test_the_uodb_index_example_names_twelve_detection_domains_and_passes_the_index_checks(tmp_path):
    index = yaml.safe_load(EXAMPLE_INDEX.read_text())
    _layout(tmp_path, index)
    shutil.copy(EXAMPLE_INDEX, tmp_path / "gemlab-data.yaml")
    read = read_index(tmp_path / "gemlab-data.yaml")
    names = [d.name for d in read.domains]
    assert len(names) == 12 and {"COCO", "LVIS", "DOTA", "DeepLesion"} <= set(names)
    assert all(d.task == "detection" for d in read.domains)
