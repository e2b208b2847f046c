"""Column checks both kinds of data share: a column that must be there, numbers that must be finite, what task the
target makes, and the target's summary for the data card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automl.configs import DataConfig, DataError
from automl.tasks.data_prep.preprocessing import RawInputError, check_magnitude

AUTO_CLASSIFICATION_MAX_CLASSES = 10


def require_column(frame: pd.DataFrame, name: str | None, key: str, path: Path) -> None:
    if name not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12]))
        raise DataError(f"{key}: column {name!r} not found in {Path(path).name} (columns: {shown})")


def check_finite(frame: pd.DataFrame, columns: list[str]) -> None:
    """The rule rows to score follow too (``check_magnitude``): finite numbers of a sensible size."""
    for name in columns:
        try:
            check_magnitude(pd.to_numeric(frame[name], errors="coerce").astype(float), name)
        except RawInputError as exc:
            raise DataError(str(exc)) from None


def resolve_task(target: pd.Series, data: DataConfig, allowed: tuple[str, ...]) -> str:
    values = target.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and values.dtype != bool
    if data.task == "regression":
        if not numeric:
            coerced = pd.to_numeric(values, errors="coerce")
            bad = values[coerced.isna()]
            example = f" such as {bad.iloc[0]!r}" if len(bad) else ""
            raise DataError(
                f"data.target: column {data.target!r} must be numeric for regression; found values{example}"
            )
        return "regression"
    if data.task == "classification" or not numeric:
        task = "classification"
    else:
        with np.errstate(invalid="ignore"):  # an inf is reported by the finite-value check, naming its row
            integral = np.all(np.equal(np.mod(values.to_numpy(dtype=float), 1), 0))
        few = values.nunique() <= AUTO_CLASSIFICATION_MAX_CLASSES
        task = "classification" if (integral and few and "classification" in allowed) else "regression"
    if task not in allowed:
        bad = values[pd.to_numeric(values, errors="coerce").isna()]
        example = f"; found values such as {bad.iloc[0]!r}" if len(bad) else ""
        raise DataError(f"data.target: column {data.target!r} must be numeric for this model family{example}")
    return task


def describe_target(y: np.ndarray, name: str) -> dict[str, Any]:
    y = y[~np.isnan(y)]
    return {
        "name": name,
        "mean": float(y.mean()),
        "std": float(y.std()),
        "min": float(y.min()),
        "max": float(y.max()),
    }
