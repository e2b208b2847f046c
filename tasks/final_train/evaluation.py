"""A trained model on the test split: the targets and predictions in the target's original units (class
probabilities for classification), and the check that the registered raw-data model gives the same predictions
from the raw test rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from automl.models import predict
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.data_prep.preprocessing import Preprocessing
from automl.tasks.registry.raw_model import PROBA_PREFIX, predict_raw


def test_targets(prepared: PreparedData) -> np.ndarray:
    if prepared.task == "classification":
        return prepared.test.y
    return prepared.to_original_units(prepared.test.y)


def test_predictions(model: torch.nn.Module, prepared: PreparedData) -> np.ndarray:
    """Test predictions in the target's original units (regression) or class probabilities (classification)."""
    raw = predict(model, prepared.test.X)
    if prepared.task == "classification":
        return torch.softmax(torch.as_tensor(raw), dim=1).numpy()
    return prepared.to_original_units(raw)


def raw_test_predictions(
    model: torch.nn.Module, pre: Preprocessing, prepared: PreparedData, expected: np.ndarray
) -> pd.DataFrame:
    """The test predictions as the registered model gives them from the raw test rows, with the actual values.

    They must equal the ones the test metrics were computed from (``expected``): the raw model applies the same
    fitted preprocessing to the same rows. A difference is a bug in the preprocessing, so it fails the stage.
    """
    frame = predict_raw(model, pre, prepared.raw_test_input, rolling=prepared.kind == "series")
    if prepared.task == "classification":
        got = frame[[f"{PROBA_PREFIX}{c}" for c in prepared.classes or []]].to_numpy()
        frame["actual"] = [(prepared.classes or [])[i] for i in prepared.test.y]
    else:
        got = frame["prediction"].to_numpy()
        if prepared.kind == "tabular":
            frame["actual"] = prepared.to_original_units(prepared.test.y)[:, 0]
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    if got.size != expected.size or not np.allclose(
        got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6 * scale, equal_nan=True
    ):
        raise RuntimeError("the raw-data model does not reproduce the test predictions; not registering it")
    return frame


def validation_outputs(model: torch.nn.Module, prepared: PreparedData) -> np.ndarray:
    """What an ensemble mixes, on the validation split: the model's values in the training's (scaled) units for
    regression (the target's scaling is linear, so a mean there is the mean in the target's units), class
    probabilities for classification."""
    raw = predict(model, prepared.val.X)
    if prepared.task == "classification":
        return torch.softmax(torch.as_tensor(raw), dim=1).numpy()
    return raw


def mixture_loss(prepared: PreparedData, loss: str):
    """The training loss (``loss``, a ``models.trainer.LOSSES`` name) of mixed validation outputs: on the values for
    regression; for classification cross-entropy on the log of the mixed probabilities, i.e. the mixture's log
    loss (what the ensemble module's log-probability output gives the training loss too)."""
    from automl.models.trainer import LOSSES

    criterion = LOSSES[loss]()
    if prepared.task == "classification":
        target = torch.as_tensor(prepared.val.y, dtype=torch.long)

        def classification(mix: np.ndarray) -> float:
            return float(criterion(torch.log(torch.as_tensor(mix).clamp_min(1e-12)), target))

        return classification
    target = torch.as_tensor(prepared.val.y, dtype=torch.float32)

    def regression(mix: np.ndarray) -> float:
        return float(criterion(torch.as_tensor(mix, dtype=torch.float32), target))

    return regression
