"""Cross-validation folds (``search.cv``): which of the train+validation rows each fold trains and validates on,
and the checks that the data allows them. The test rows are never part of a fold.

Series folds are scikit-learn's ``TimeSeriesSplit`` over the train+validation rows in time order: ``folds``
consecutive validation windows of ``n // (folds + 1)`` rows at the end, each fold training only on rows before its
window, less ``gap`` rows; ``expanding`` trains from the first row, ``rolling_origin`` on the same number of rows in
every fold (as many as the first fold has). Tabular folds are seeded ``KFold`` or ``StratifiedKFold`` (shuffled).
Data prep fits each fold's preprocessing on that fold's training rows only (``tasks.data_prep.prepare``).

Pure NumPy/scikit-learn, so ``automl run`` checks folds before it imports Prefect, MLflow or torch.

Example:
    >>> [(f.train.max(), f.val.min(), f.val.max()) for f in series_folds(60, 3, "expanding", gap=2)]
    [(12, 15, 29), (27, 30, 44), (42, 45, 59)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from automl.configs import CVConfig, DataError

# A series fold needs as many training and validation windows as the single split does (data_prep.MIN_WINDOWS).
MIN_TRAIN_WINDOWS, MIN_VAL_WINDOWS = 8, 2
MIN_VAL_ROWS = 2  # a tabular fold validates on at least this many rows


@dataclass(frozen=True)
class FoldRows:
    """Row positions (into the train+validation rows, in time order for series) a fold trains and validates on."""

    train: np.ndarray
    val: np.ndarray


def cv_kind(cv: CVConfig, kind: str, task: str) -> str:
    """The fold kind ``auto`` stands for: stratified (classification), kfold (tabular regression), rolling_origin
    (series).

    Example:
        >>> cv_kind(CVConfig(folds=5), "tabular", "classification")
        'stratified'
    """
    if cv.kind != "auto":
        return cv.kind
    if kind == "series":
        return "rolling_origin"
    return "stratified" if task == "classification" else "kfold"


def series_folds(n_rows: int, folds: int, kind: str, gap: int = 0) -> list[FoldRows]:
    """The folds of ``n_rows`` train+validation rows in time order (see the module's docstring)."""
    from sklearn.model_selection import TimeSeriesSplit

    width = n_rows // (folds + 1)
    first_train = n_rows - folds * width - gap
    max_train = first_train if kind == "rolling_origin" else None
    split = TimeSeriesSplit(n_splits=folds, gap=gap, max_train_size=max_train)
    return [FoldRows(train, val) for train, val in split.split(np.arange(n_rows))]


def check_series_folds(n_rows: int, cv: CVConfig, lookback: int, horizon: int) -> None:
    """Each fold must validate on ``MIN_VAL_WINDOWS`` windows and train on ``MIN_TRAIN_WINDOWS``: a one-line
    ``DataError`` naming ``search.cv.folds`` otherwise."""
    folds = cv.folds
    width = n_rows // (folds + 1)
    if width < 1:
        raise DataError(
            f"search.cv.folds: {folds} folds need more than {folds} train+validation rows; there are {n_rows}"
        )
    if width - horizon + 1 < MIN_VAL_WINDOWS:
        raise DataError(
            f"search.cv.folds: {folds} folds of {n_rows} train+validation rows give validation windows of {width} "
            f"rows, too short for horizon {horizon} (each needs at least {horizon + MIN_VAL_WINDOWS - 1}); "
            "use fewer folds"
        )
    first_train = n_rows - folds * width - cv.gap
    if first_train - lookback - horizon + 1 < MIN_TRAIN_WINDOWS:
        gap = f" and gap {cv.gap}" if cv.gap else ""
        raise DataError(
            f"search.cv.folds: with {folds} folds{gap} the first fold trains on {max(first_train, 0)} rows, fewer "
            f"than lookback {lookback} + horizon {horizon} + {MIN_TRAIN_WINDOWS - 1} ({MIN_TRAIN_WINDOWS} training "
            "windows); use fewer folds" + (" or a smaller gap" if cv.gap else "")
        )


def tabular_folds(n_rows: int, folds: int, kind: str, seed: int, labels: np.ndarray | None = None) -> list[FoldRows]:
    """Seeded, shuffled k-fold (or stratified k-fold on ``labels``) folds of ``n_rows`` rows."""
    from sklearn.model_selection import KFold, StratifiedKFold

    index = np.arange(n_rows)
    if kind == "stratified":
        split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(index, labels)
    else:
        split = KFold(n_splits=folds, shuffle=True, random_state=seed).split(index)
    return [FoldRows(train, val) for train, val in split]


def check_tabular_folds(cv: CVConfig, kind: str, task: str, target: str, labels: Any) -> None:
    """Enough train+validation rows for ``folds`` folds, and, for stratified folds, a classification target whose
    every class can be in every fold: a one-line ``DataError`` naming the key otherwise."""
    n_rows = len(labels)
    if kind == "stratified" and task != "classification":
        raise DataError(
            f"search.cv.kind: stratified keeps class shares; the target {target!r} is a regression target, use kfold"
        )
    if n_rows < cv.folds * MIN_VAL_ROWS:
        raise DataError(
            f"search.cv.folds: {cv.folds} folds need at least {cv.folds * MIN_VAL_ROWS} train+validation rows "
            f"({MIN_VAL_ROWS} per validation fold); there are {n_rows}"
        )
    if kind == "stratified":
        values, counts = np.unique(np.asarray(labels), return_counts=True)
        smallest = int(np.argmin(counts))
        if counts[smallest] < cv.folds:
            raise DataError(
                f"search.cv.folds: stratified folds put every class in every fold; class {values[smallest]!r} of "
                f"{target!r} has {counts[smallest]} train+validation rows, fewer than {cv.folds} folds; use fewer "
                "folds or kind kfold"
            )
