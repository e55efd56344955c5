"""A model's trunk from a local weights file: GEM's affinity backbone and ``trainer.init_from`` read it alike.

    load_trunk(model, "runs/pretrain-gem-1a2b3c4d/checkpoint-0000300/shared.pt", "trainer.init_from")

The file is a state dict with the model's own key names, or a gemlab
checkpoint shard (``shared.pt``: the weights under ``"model"``), read with
``torch.load(weights_only=True)``: tensors, never code, and nothing is
downloaded. What the trunk is, the model declares (``trunk_names``, see
:func:`gemlab.models.common.trunk_parameters`). The load is strict on the
trunk -- every trunk weight and buffer must be in the file, with its shape,
and the file may hold no other key under the trunk's names -- and ignores
every key outside it (a ``shared.pt`` also holds routers and the head).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from gemlab.engine.config import ConfigError
from gemlab.engine.data import resolve
from gemlab.models.common import in_trunk


def read_weights(path: str, key: str) -> tuple[Path, dict[str, torch.Tensor]]:
    """The resolved file and its state dict; raises ConfigError naming ``key``, the file and why it will not load."""
    file = resolve(path)
    if not file.is_file():
        raise ConfigError(f"{key}={path!r}: no such file {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{key}={path!r}: {file} is not a loadable weights file ({reason})") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ConfigError(f"{key}={path!r}: {file} holds no state dict (names -> tensors)")
    return file, state


def load_trunk(model: nn.Module, path: str, key: str) -> None:
    """Copy the trunk of ``model`` (its ``trunk_names()``) from the weights file at ``path``.

    Raises ConfigError naming ``key`` and the file when it is missing or unreadable, holds none of the
    trunk's weights, lacks some or has unexpected ones under the trunk's names (both listed), or holds
    one of another shape, or a model that declares no trunk.
    """
    names = getattr(model, "trunk_names", None)
    if names is None:
        raise ConfigError(f"{key}={path!r}: model {type(model).__name__} declares no trunk (trunk_names) to load")
    file, state = read_weights(path, key)
    trunk = tuple(names())
    wanted = {k for k in model.state_dict() if in_trunk(k, trunk)}
    given = {k: v for k, v in state.items() if in_trunk(k, trunk)}
    if not given:
        raise ConfigError(
            f"{key}={path!r}: {file} holds no weights of the trunk of model {type(model).__name__} ({', '.join(trunk)})"
        )
    missing, unexpected = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing or unexpected:
        raise ConfigError(
            f"{key}={path!r}: {file} does not fit this model's trunk: missing {_listed(missing)}, "
            f"unexpected {_listed(unexpected)}"
        )
    try:
        model.load_state_dict(given, strict=False)
    except RuntimeError as error:  # a shape that differs
        reason = " ".join(str(error).split())
        raise ConfigError(f"{key}={path!r}: {file} does not fit this model's trunk: {reason}") from None


def _listed(keys: list[str], shown: int = 8) -> str:
    """The first ``shown`` keys and how many more: an error line stays readable for a file of another model."""
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"{keys[:shown]}{more}"
