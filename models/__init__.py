"""Torch model families and the one trainer they share. Knows nothing of Prefect, MLflow or Optuna.

Example:
    >>> from models import get_family, build_model, ModelShape
    >>> family = get_family("lstm")
    >>> model = build_model(family, ModelShape(n_features=1, n_outputs=1, lookback=24), family.defaults, seed=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from models import lstm, mlp, transformer
from models._family import TRAINING_PARAMS, DataKind, ModelFamily, ModelShape
from models.trainer import FitResult, TrainSettings, fit, loss_for, pick_device, predict

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (lstm.FAMILY, transformer.FAMILY, mlp.FAMILY)}


def get_family(name: str) -> ModelFamily:
    """The registered family called ``name``; ``KeyError`` names the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None


def build_model(family: ModelFamily, shape: ModelShape, params: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """Build ``family``'s module with weights initialised from ``seed``."""
    torch.manual_seed(seed)
    return family.build(shape, params)


__all__ = [
    "FAMILIES",
    "TRAINING_PARAMS",
    "DataKind",
    "FitResult",
    "ModelFamily",
    "ModelShape",
    "TrainSettings",
    "build_model",
    "fit",
    "get_family",
    "loss_for",
    "pick_device",
    "predict",
]
