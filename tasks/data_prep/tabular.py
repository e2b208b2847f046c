"""Tabular data: checks (enough rows with a target, every class in every split), and the preparation (a seeded
split, stratified for classification; median/mode imputation, scaling and one-hot encoding fitted on train;
cross-validation folds of the train+validation rows, each with its own preprocessing). Series are in
``tasks.data_prep.series``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from automl.configs import CVConfig, DataConfig, DataError, SplitConfig
from automl.tasks.data_prep.columns import describe_target
from automl.tasks.data_prep.folds import check_tabular_folds, cv_kind, tabular_folds
from automl.tasks.data_prep.job import DataPlan, DataPrepJob
from automl.tasks.data_prep.meta_features import tabular_meta_features
from automl.tasks.data_prep.prepared import CVSettings, Fold, PreparedData, RefitData, Split
from automl.tasks.data_prep.preprocessing import TabularPreprocessing


class TabularData:
    """The tabular kind of data (``mlp``): what data prep checks and does for it."""

    name = "tabular"

    def check_columns(self, frame: pd.DataFrame, data: DataConfig) -> None:
        return None  # the target is the one column a table needs

    def choose_features(
        self, frame: pd.DataFrame, data: DataConfig, candidates: list[str]
    ) -> tuple[list[str], list[str], dict[str, str]]:
        """Every candidate column; the non-numeric and boolean ones are categorical. Only a ``data.time_column``
        is dropped: a table model (``mlp``) reads rows, not their time."""
        categorical = [c for c in candidates if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool]
        if not candidates:
            raise DataError(f"data.path: no feature columns besides the target {data.target!r}")
        dropped = {}
        if data.time_column is not None and data.time_column in frame.columns:
            dropped[data.time_column] = "data.time_column; a table model reads no time"
        return list(candidates), categorical, dropped

    def check_rows(self, frame: pd.DataFrame, data: DataConfig, task: str) -> None:
        _check_tabular_size(frame, frame[data.target], data, task)

    def check_folds(self, frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan) -> None:
        """``search.cv`` must fit the train+validation rows (see ``tasks.data_prep.folds``)."""
        data = job.data
        rows = frame[frame[data.target].notna()].reset_index(drop=True)
        y_all, _, stratify = _encode_target(rows[data.target], plan.task)
        train_idx, val_idx, _ = _holdout_rows(y_all, stratify, data, job.seed)
        labels = y_all[np.concatenate([train_idx, val_idx])]
        check_tabular_folds(job.cv, cv_kind(job.cv, "tabular", plan.task), plan.task, data.target, labels)

    def prepare(
        self, frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan
    ) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
        prepared, frames = _prepare_tabular(frame, job.data, job.seed, plan, job.cv)
        if job.refit:
            prepared.refit = _refit_data(frame, job.data, plan)
        return prepared, frames


TABULAR = TabularData()


MAX_CATEGORIES = 30


def holdout_sizes(rows: int, split: SplitConfig) -> dict[str, int]:
    """Rows the test and val splits of a table get, as ``train_test_split`` sizes them in ``_prepare_tabular``.

    Example:
        >>> holdout_sizes(44, SplitConfig(train=0.7, val=0.15, test=0.15))
        {'test': 7, 'val': 7}
    """
    holdout = split.val + split.test
    rest = math.ceil(holdout * rows)
    test = math.ceil(split.test / holdout * rest)
    return {"test": test, "val": rest - test}


def _check_tabular_size(frame: pd.DataFrame, target: pd.Series, data: DataConfig, task: str) -> None:
    rows = int(target.notna().sum())
    split = data.split
    smallest = min(split.val, split.test) * rows
    if rows < 20 or smallest < 2:
        raise DataError(
            f"data.path: too few rows with a target ({rows}) for a {split.train:g}/{split.val:g}/{split.test:g} split;"
            " need at least 20"
        )
    if task != "classification":
        return
    classes = target.nunique()
    if classes < 2:
        raise DataError(f"data.target: column {data.target!r} has a single class; nothing to classify")
    for name, size in holdout_sizes(rows, split).items():
        if size < classes:
            raise DataError(
                f"data.split: the {name} split gets {size} of {rows} rows, fewer than the {classes} classes of "
                f"{data.target!r}; raise data.split.{name} or give more rows"
            )


def _encode_target(y_raw: pd.Series, task: str) -> tuple[np.ndarray, list[Any] | None, np.ndarray | None]:
    """The target as class codes (classification) or floats, the class list, and the labels to stratify on."""
    if task != "classification":
        return y_raw.to_numpy(dtype=float), None, None
    classes = sorted(y_raw.unique().tolist(), key=str)
    codes = {c: i for i, c in enumerate(classes)}
    y_all = y_raw.map(codes).to_numpy(dtype=np.int64)
    return y_all, classes, y_all if y_raw.value_counts().min() >= 3 else None


def _holdout_rows(
    y_all: np.ndarray, stratify: np.ndarray | None, data: DataConfig, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test row positions (stratified when ``stratify`` is given)."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y_all))
    holdout = data.split.val + data.split.test
    train_idx, rest_idx = train_test_split(index, test_size=holdout, random_state=seed, stratify=stratify)
    rest_stratify = stratify[rest_idx] if stratify is not None else None
    if rest_stratify is not None and np.bincount(rest_stratify).min() < 2:
        rest_stratify = None
    val_idx, test_idx = train_test_split(
        rest_idx, test_size=data.split.test / holdout, random_state=seed, stratify=rest_stratify
    )
    return train_idx, val_idx, test_idx


def _prepare_tabular(
    frame: pd.DataFrame, data: DataConfig, seed: int, plan: DataPlan, cv: CVConfig
) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
    rows = frame[frame[data.target].notna()].reset_index(drop=True)
    dropped_targets = len(frame) - len(rows)
    y_raw = rows[data.target]
    y_all, classes, stratify = _encode_target(y_raw, plan.task)
    train_idx, val_idx, test_idx = _holdout_rows(y_all, stratify, data, seed)
    features = rows[plan.features]
    preprocessing = _fit_tabular(features, y_all, train_idx, data, plan, classes)
    encoding = {"numeric": preprocessing.numeric, "categorical": preprocessing.categorical}
    X_all, names = preprocessing.encode(features), preprocessing.encoded_features
    target_mean, target_std = preprocessing.target_mean, preprocessing.target_std
    y_model = _model_target(y_all, preprocessing)
    splits = {
        name: Split(X_all[idx], y_model[idx])
        for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))
    }
    frames = {name: rows.iloc[idx] for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    missing = {c: int(n) for c, n in features.isna().sum().items() if n}
    meta = tabular_meta_features(features, y_raw, plan.task, plan.categorical)
    card = {
        "kind": "tabular",
        "task": plan.task,
        "n_rows": len(frame),
        "n_columns": frame.shape[1],
        "n_features": len(plan.features),
        "n_encoded_features": len(names),
        "features": plan.features,
        "dropped_columns": plan.dropped,
        "categorical_features": plan.categorical,
        "encoded_features": names,
        "rows_without_target": dropped_targets,
        "target": (
            describe_target(y_all.astype(float), data.target)
            if plan.task == "regression"
            else {
                "name": data.target,
                "classes": [str(c) for c in classes or []],
                "counts": {str(k): int(v) for k, v in y_raw.value_counts().items()},
            }
        ),
        "missing_imputed": missing,
        "missing_imputed_total": int(sum(missing.values())),
        "rows": {name: len(s) for name, s in splits.items()},
        "stratified": stratify is not None,
        "encoding": encoding,
        "meta_features": meta,
    }
    folds: list[Fold] = []
    if cv.folds > 1:
        trainval = np.concatenate([train_idx, val_idx])
        folds, card["cv"] = _tabular_fold_data(features, y_all, trainval, data, seed, plan, classes, cv)
    prepared = PreparedData(
        kind="tabular",
        task=plan.task,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        feature_names=names,
        n_outputs=len(classes) if classes else 1,
        lookback=None,
        target=data.target,
        target_mean=target_mean,
        target_std=target_std,
        classes=classes,
        test_index=[str(i) for i in test_idx.tolist()],
        card=card,
        preprocessing=preprocessing.to_dict(),
        raw_test_input=features.iloc[test_idx].reset_index(drop=True),
        folds=folds,
        cv=CVSettings(card["cv"]["kind"], cv.folds, cv.gap) if folds else None,
    )
    return prepared, frames


def _refit_data(frame: pd.DataFrame, data: DataConfig, plan: DataPlan) -> RefitData:
    """Every row with a target, encoded (and a regression target scaled) with a preprocessing fitted on all of them:
    what the production refit trains on. Categories seen only outside the train split get their columns here."""
    rows = frame[frame[data.target].notna()].reset_index(drop=True)
    y_all, classes, _ = _encode_target(rows[data.target], plan.task)
    features = rows[plan.features]
    every = np.arange(len(rows))
    fitted = _fit_tabular(features, y_all, every, data, plan, classes)
    return RefitData(Split(fitted.encode(features), _model_target(y_all, fitted)), fitted.to_dict())


def _fit_tabular(
    features: pd.DataFrame,
    y_all: np.ndarray,
    train: np.ndarray,
    data: DataConfig,
    plan: DataPlan,
    classes: list[Any] | None,
) -> TabularPreprocessing:
    """The table's preprocessing fitted on the rows ``train`` only (the train split, or a fold's training rows)."""
    return TabularPreprocessing.fit(
        features.iloc[train],
        plan.features,
        plan.categorical,
        plan.task,
        data.target,
        MAX_CATEGORIES,
        classes=classes,
        y_train=y_all[train] if plan.task == "regression" else None,
        dropped=plan.dropped,
    )


def _model_target(y_all: np.ndarray, fitted: TabularPreprocessing) -> np.ndarray:
    """What the model trains on: a regression target scaled with ``fitted``'s statistics (a column), class codes."""
    if fitted.task != "regression":
        return y_all
    return ((y_all - fitted.target_mean) / fitted.target_std).astype(np.float32).reshape(-1, 1)


def _tabular_fold_data(
    features: pd.DataFrame,
    y_all: np.ndarray,
    trainval: np.ndarray,
    data: DataConfig,
    seed: int,
    plan: DataPlan,
    classes: list[Any] | None,
    cv: CVConfig,
) -> tuple[list[Fold], dict[str, Any]]:
    """Each fold's arrays, imputed, scaled and encoded (and a regression target scaled) with a preprocessing
    fitted on the fold's training rows only. A category a fold's training rows lack encodes as zeros, so folds
    may have fewer encoded columns than the single split."""
    kind = cv_kind(cv, "tabular", plan.task)
    labels = None if plan.task == "regression" else y_all[trainval]
    folds, boundaries = [], []
    for rows in tabular_folds(len(trainval), cv.folds, kind, seed, labels):
        train, val = trainval[rows.train], trainval[rows.val]
        fitted = _fit_tabular(features, y_all, train, data, plan, classes)
        y = _model_target(y_all, fitted)
        folds.append(
            Fold(
                Split(fitted.encode(features.iloc[train]), y[train]),
                Split(fitted.encode(features.iloc[val]), y[val]),
                fitted.to_dict(),
            )
        )
        boundaries.append({"train_rows": len(train), "val_rows": len(val)})
    return folds, {"folds": cv.folds, "kind": kind, "seed": seed, "boundaries": boundaries}
