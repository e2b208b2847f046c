"""Torch model families and the one trainer they share. Knows nothing of Prefect, MLflow or Optuna.

Importing the package loads no torch: the family registry is plain data (``models.registry``); the names of the
trainer and of the learning-rate range test below load torch on first use, so that a config can be checked (and a
bad one refused) before torch's seconds of import are paid.

Example:
    >>> from automl.models import get_family, build_model, ModelShape
    >>> family = get_family("lstm")
    >>> model = build_model(family, ModelShape(n_features=1, n_outputs=1, lookback=24), family.defaults, seed=0)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from automl.models._family import MUTABLE_PARAMS, TRAINING_PARAMS, DataKind, ModelFamily, ModelShape
from automl.models.registry import AUTO, FAMILIES, data_kind, families_for, get_family

if TYPE_CHECKING:
    import torch

    from automl.models.lr_finder import LRRangeResult, lr_range_test
    from automl.models.trainer import FitResult, TrainSettings, fit, loss_for, pick_device, predict

_TRAINER_NAMES = frozenset({"FitResult", "TrainSettings", "fit", "loss_for", "pick_device", "predict"})
_LR_FINDER_NAMES = frozenset({"LRRangeResult", "lr_range_test"})


def __getattr__(name: str) -> Any:
    """The trainer's and the range test's names, imported (with torch) when first asked for."""
    if name in _TRAINER_NAMES:
        return getattr(importlib.import_module("automl.models.trainer"), name)
    if name in _LR_FINDER_NAMES:
        return getattr(importlib.import_module("automl.models.lr_finder"), name)
    raise AttributeError(f"module 'automl.models' has no attribute {name!r}")


def build_model(family: ModelFamily, shape: ModelShape, params: Mapping[str, Any], seed: int) -> torch.nn.Module:
    """Build ``family``'s module with weights initialised from ``seed``."""
    import torch

    torch.manual_seed(seed)
    return family.build(shape, params)


__all__ = [
    "AUTO",
    "FAMILIES",
    "MUTABLE_PARAMS",
    "TRAINING_PARAMS",
    "DataKind",
    "FitResult",
    "LRRangeResult",
    "ModelFamily",
    "ModelShape",
    "TrainSettings",
    "build_model",
    "data_kind",
    "families_for",
    "fit",
    "get_family",
    "loss_for",
    "lr_range_test",
    "pick_device",
    "predict",
]
