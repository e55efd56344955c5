"""A tiny detector learns four images by heart: the whole chain -- batches, matcher, criterion,
postprocessing, COCO evaluation -- is wired so that the loss it minimises is the AP it is scored by."""

from __future__ import annotations

import pytest
import torch

from gemlab.data.domain import Domain
from gemlab.data.mixture import DomainMixture
from gemlab.engine.config import compose_config
from gemlab.engine.data import build_mixture
from gemlab.engine.tasks.detection import DETECTION
from gemlab.models.common import ModelParts
from gemlab.models.detection.spec import build_detector
from gemlab.moe.registry import stem_only_layers
from helpers import tiny_detection_overrides

SIZES = {
    "backbone": "conv",
    "backbone_checkpoint": None,
    "dim": 64,
    "hidden": 128,
    "heads": 4,
    "points": 4,
    "encoder_layers": 1,
    "decoder_layers": 2,
    "num_queries": 20,
    "dn_groups": 2,
    "label_noise": 0.0,
    "box_noise": 0.4,
    "experts_in": "none",
}


def _four_images(synth_uodb_dir) -> DomainMixture:
    """Four clipart images as both the train and the val split (val batches are not flipped)."""
    cfg = compose_config(tiny_detection_overrides(synth_uodb_dir, "unused", "data.domains=[clipart]"))
    clipart = build_mixture(cfg.data, 0).domains[0]
    four = clipart.split("train")[:4]
    return DomainMixture([Domain("clipart", "detection", clipart.categories, {"train": four, "val": four})])


@pytest.mark.slow
def test_a_tiny_detector_overfits_four_images(synth_uodb_dir):
    mixture = _four_images(synth_uodb_dir)
    torch.manual_seed(0)
    parts = ModelParts(len(mixture.labels.names), 64, stem_only_layers(1))
    model = build_detector(parts, **SIZES).train()
    data = DETECTION.data(mixture, 64)
    batch = data.batch([(0, i) for i in range(4)], "val")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(300):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = DETECTION.loss(model, batch)
        loss.backward()
        optimizer.step()
    (result,) = DETECTION.evaluate(model, data, [0], "val", batch_size=4).values()
    assert result["ap"] >= 0.9, result
