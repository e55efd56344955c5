"""Models by name, for ``experiments/model/<name>.yaml`` and the ``model=`` override.

    spec = model_spec("vit")
    model = spec.build(ModelParts(num_classes=10, image_size=28, moe=layers), dim=64, depth=2)

Each model module declares one ``SPEC`` (:class:`gemlab.models.common.ModelSpec`)
naming the config keys it reads; the engine refuses any other key, so a key
set for another model is an error, not silently ignored.
"""

from __future__ import annotations

from gemlab.models import resnet, star, vit
from gemlab.models.common import ModelSpec
from gemlab.models.detection import spec as detection

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (vit.SPEC, resnet.SPEC, star.SPEC, detection.SPEC)}


def model_spec(name: str) -> ModelSpec:
    """The spec of model ``name``; raises ValueError naming the known models for an unknown one."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]
