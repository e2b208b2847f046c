"""What the data prep stage hands to training: model-ready arrays per split and what describes them.

Kept free of Prefect and MLflow so that processes which only train (Dask workers) import little.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd


@dataclass
class Split:
    """Model-ready arrays: series X is (n, lookback, features), y is (n, horizon); tabular X is (n, features)."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.X)


@dataclass
class Fold:
    """One cross-validation fold (``search.cv``): model-ready arrays made with a preprocessing fitted on the fold's
    training rows only (``preprocessing``, as JSON values)."""

    train: Split
    val: Split
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass
class RefitData:
    """Every row (train, validation and test) made model-ready with a preprocessing fitted on all of them, for the
    production refit (``final.refit: all``); ``preprocessing`` as JSON values."""

    rows: Split
    preprocessing: dict[str, Any]


@dataclass(frozen=True)
class CVSettings:
    """``search.cv`` as data prep made the folds: the fold kind it resolved (``kfold``, ``stratified``,
    ``rolling_origin`` or ``expanding``; never ``auto``), how many folds, and the rows left out between a series
    fold's training and validation rows (``gap``)."""

    kind: str
    folds: int
    gap: int = 0


@dataclass
class PreparedData:
    """Everything later stages need to train and evaluate, in memory."""

    kind: Literal["series", "tabular"]
    task: Literal["regression", "classification"]
    train: Split
    val: Split
    test: Split
    feature_names: list[str]
    n_outputs: int
    lookback: int | None
    target: str
    target_mean: float = 0.0
    target_std: float = 1.0
    classes: list[Any] | None = None
    test_index: list[str] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    # The fitted preprocessing (``tasks.data_prep.preprocessing``, as JSON values) and the raw rows that reproduce the
    # test predictions through it: what the registered raw-data model carries and is checked against.
    preprocessing: dict[str, Any] = field(default_factory=dict)
    raw_test_input: pd.DataFrame | None = None
    # Series: every row of the file, raw as raw_test_input (ordered, gap-filled): what the current champion forecasts
    # the test targets from when it looks back further than this run's lookback. None for tables.
    raw_history: pd.DataFrame | None = None
    folds: list[Fold] = field(default_factory=list)  # cross-validation folds of train+val; none for one split
    cv: CVSettings | None = None  # how the folds were made; None for one split
    refit: RefitData | None = None  # with final.refit all: every row, for the production refit
    season: int = 1  # steps per season (``data.season`` resolved): the seasonal-naive baseline's lag
    # Series: the gap-filled target of every row in original units, and the row of each test window's first target:
    # what the seasonal-naive baseline reads (a season may reach back past the windows' lookback). None for tables.
    target_history: np.ndarray | None = None
    test_first_rows: np.ndarray | None = None

    @property
    def n_features(self) -> int:
        return self.train.X.shape[-1]

    @property
    def meta_features(self) -> dict[str, float]:
        return self.card.get("meta_features", {})

    def to_original_units(self, y: np.ndarray) -> np.ndarray:
        """Undo the target scaling fitted on train (regression only)."""
        return y * self.target_std + self.target_mean
