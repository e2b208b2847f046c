"""Data prep: read CSV/Parquet, check it against the config, split without leakage, scale, window.

``read_table`` and ``plan_data`` are the checks run before any training or tracking (``load_and_check`` runs them
all); ``prepare`` is the pure transformation. Only pandas and numpy: ``automl run`` checks the data with this module
before it imports Prefect, MLflow or torch. The Prefect task that also writes the outputs to MLflow is
``tasks.data_prep.stage.data_prep``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from configs import CVConfig, DataConfig, DataError, PipelineConfig, SplitConfig, check_environment
from models import get_family
from tasks.data_prep.folds import check_series_folds, check_tabular_folds, cv_kind, series_folds, tabular_folds
from tasks.data_prep.meta_features import series_meta_features, tabular_meta_features
from tasks.data_prep.prepared import Fold, PreparedData, Split
from tasks.data_prep.preprocessing import (
    RawInputError,
    SeriesPreprocessing,
    TabularPreprocessing,
    check_magnitude,
    fill_gaps,
    make_windows,
    order_by_time,
)

# Series need at least this many windows in each split to train, validate and test on.
MIN_WINDOWS = {"train": 8, "val": 2, "test": 2}
MAX_CATEGORIES = 30
AUTO_CLASSIFICATION_MAX_CLASSES = 10


@dataclass(frozen=True)
class DataPrepJob:
    """The parts of the config the data prep stage uses."""

    data: DataConfig
    family: str
    seed: int
    config_name: str  # names the MLflow datasets
    cv: CVConfig = field(default_factory=CVConfig)  # search.cv: the folds data prep also makes

    @classmethod
    def of(cls, cfg: PipelineConfig) -> DataPrepJob:
        return cls(cfg.data, cfg.model.family, cfg.seed, cfg.name, cfg.search.cv)


@dataclass
class DataPlan:
    """What ``plan_data`` decided from the config and the file: task type and the columns to use."""

    kind: Literal["series", "tabular"]
    task: Literal["regression", "classification"]
    features: list[str]
    categorical: list[str]
    dropped: list[str]


def read_table(path: Path, key: str = "data.path") -> pd.DataFrame:
    """Read a CSV or Parquet file; any failure is a one-line ``DataError`` naming ``key`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path, engine="pyarrow")
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{key}: {path.name}: unsupported file type {suffix!r}; use .csv or .parquet")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path}: the file is empty") from None
    except Exception as exc:  # every parser error becomes one line naming the file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{key}: cannot read {path}: {reason}") from None
    if frame.empty:
        raise DataError(f"{key}: {path}: no data rows")
    if frame.shape[1] == 1 and "," not in str(frame.columns[0]) and any(s in str(frame.columns[0]) for s in ";\t|"):
        raise DataError(
            f"{key}: {path}: read one column {str(frame.columns[0])!r}; the file does not look comma-separated"
        )
    return frame


def fingerprint(path: Path) -> str:
    """Content fingerprint of the input file (SHA-256 of its bytes, first 16 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def plan_data(frame: pd.DataFrame, job: DataPrepJob) -> DataPlan:
    """Check the table against the config (columns, types, size) and decide task type and features."""
    data = job.data
    family = get_family(job.family)
    columns = list(frame.columns)
    _require_column(frame, data.target, "data.target", data.path)
    if family.kind == "series":
        _require_column(frame, data.time_column, "data.time_column", data.path)
    target = frame[data.target]
    if target.isna().all():
        raise DataError(f"data.target: column {data.target!r} has no values (all missing)")
    task = _resolve_task(target, data, family.tasks)
    if family.kind == "series" and task != "regression":
        raise DataError(f"data.target: column {data.target!r} must be numeric to forecast it")
    excluded = {data.target, data.time_column}
    if data.features is not None:
        for name in data.features:
            _require_column(frame, name, f"data.features ({name})", data.path)
            if name in excluded:
                raise DataError(f"data.features: {name!r} is the target or time column; remove it")
        candidates = list(data.features)
    else:
        candidates = [c for c in columns if c not in excluded]
    for name in candidates:
        if frame[name].isna().all():
            raise DataError(f"column {name!r}: all values are missing; drop it or list data.features")
    dropped: list[str] = []
    if family.kind == "series":
        numeric = [c for c in candidates if pd.api.types.is_numeric_dtype(frame[c])]
        non_numeric = [c for c in candidates if c not in numeric]
        if data.features is not None and non_numeric:
            raise DataError(f"data.features: column {non_numeric[0]!r} is not numeric; series covariates must be")
        dropped = non_numeric
        features, categorical = [data.target, *numeric], []
        _check_series(frame, data)
    else:
        features = candidates
        categorical = [c for c in candidates if not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool]
        if not features:
            raise DataError(f"data.path: no feature columns besides the target {data.target!r}")
        _check_tabular_size(frame, target, data, task)
    numeric_inputs = [c for c in features if c not in categorical and c != data.target]
    _check_finite(frame, ([data.target] if task == "regression" else []) + numeric_inputs)
    plan = DataPlan(kind=family.kind, task=task, features=features, categorical=categorical, dropped=dropped)
    if job.cv.folds > 1:
        _check_folds(frame, job, plan)
    elif job.cv.kind == "stratified" and task != "classification":
        check_tabular_folds(job.cv, "stratified", task, data.target, frame[data.target])
    return plan


def _check_folds(frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan) -> None:
    """``search.cv`` must fit the train+validation rows (see ``tasks.data_prep.folds``)."""
    data = job.data
    if plan.kind == "series":
        check_series_folds(_split_rows(len(frame), data)[1], job.cv, data.lookback, data.horizon)
        return
    rows = frame[frame[data.target].notna()].reset_index(drop=True)
    y_all, _, stratify = _encode_target(rows[data.target], plan.task)
    train_idx, val_idx, _ = _holdout_rows(y_all, stratify, data, job.seed)
    labels = y_all[np.concatenate([train_idx, val_idx])]
    check_tabular_folds(job.cv, cv_kind(job.cv, "tabular", plan.task), plan.task, data.target, labels)


def _check_finite(frame: pd.DataFrame, columns: list[str]) -> None:
    """The rule rows to score follow too (``check_magnitude``): finite numbers of a sensible size."""
    for name in columns:
        try:
            check_magnitude(pd.to_numeric(frame[name], errors="coerce").astype(float), name)
        except RawInputError as exc:
            raise DataError(str(exc)) from None


def prepare(
    frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan, source_fingerprint: str = ""
) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
    """Split, impute, scale and (for series) window the table. Returns the arrays and the split rows.

    Example:
        >>> job = DataPrepJob.of(cfg)
        >>> frame = read_table(job.data.path)
        >>> prepared, split_rows = prepare(frame, job, plan_data(frame, job))
        >>> prepared.train.X.shape
    """
    if plan.kind == "series":
        prepared, frames = _prepare_series(frame, job.data, plan, job.cv)
    else:
        prepared, frames = _prepare_tabular(frame, job.data, job.seed, plan, job.cv)
    prepared.fingerprint = source_fingerprint
    prepared.card["fingerprint"] = source_fingerprint
    prepared.card["source"] = str(job.data.path)
    return prepared, frames


# --- series -------------------------------------------------------------------------------------------------


def _check_series(frame: pd.DataFrame, data: DataConfig) -> None:
    times = _parse_times(frame[data.time_column], data.time_column)
    try:
        SeriesPreprocessing.check_unique(times, data.time_column)
    except RawInputError as exc:
        raise DataError(f"data.time_column: {exc}") from None
    if not pd.api.types.is_numeric_dtype(frame[data.target]):
        raise DataError(f"data.target: column {data.target!r} must be numeric to forecast it")
    windows = _window_counts(len(frame), data)
    short = [name for name, need in MIN_WINDOWS.items() if windows[name] < need]
    if short:
        need_rows = _rows_needed(data)
        raise DataError(
            f"data.path: too few rows ({len(frame)}) for lookback {data.lookback} + horizon {data.horizon} and a "
            f"{data.split.train:g}/{data.split.val:g}/{data.split.test:g} split: need at least {need_rows}"
        )


def _parse_times(column: pd.Series, name: str) -> pd.Series:
    try:
        return SeriesPreprocessing.parse_times(column, name)
    except RawInputError as exc:
        raise DataError(f"data.time_column: {exc}") from None


def _split_rows(n: int, data: DataConfig) -> tuple[int, int]:
    n_train = int(n * data.split.train)
    n_val = int(n * data.split.val)
    return n_train, n_train + n_val


def _window_counts(n: int, data: DataConfig) -> dict[str, int]:
    """Windows per split: a window belongs to a split when all its targets fall inside that split's rows."""
    train_end, val_end = _split_rows(n, data)
    lb, h = data.lookback, data.horizon
    return {
        "train": max(0, train_end - h + 1 - lb),
        "val": max(0, val_end - h + 1 - max(lb, train_end)),
        "test": max(0, n - h + 1 - max(lb, val_end)),
    }


def _rows_needed(data: DataConfig) -> int:
    n = data.lookback + data.horizon
    while n < 10**7:
        if all(_window_counts(n, data)[k] >= v for k, v in MIN_WINDOWS.items()):
            return n
        n += max(1, n // 50)
    return n


def _prepare_series(
    frame: pd.DataFrame, data: DataConfig, plan: DataPlan, cv: CVConfig
) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
    times = _parse_times(frame[data.time_column], data.time_column)
    ordered = order_by_time(frame, data.time_column, times)
    values = ordered[plan.features].astype(float)
    missing = {c: int(n) for c, n in values.isna().sum().items() if n}
    values = fill_gaps(values)
    n = len(values)
    train_end, val_end = _split_rows(n, data)
    lb, h = data.lookback, data.horizon
    preprocessing = SeriesPreprocessing.fit(ordered[data.time_column], values, train_end, data.time_column, lb, h)
    mean, std = np.asarray(preprocessing.mean), np.asarray(preprocessing.std)
    X_all, y_all = make_windows(preprocessing.scale(values), lb, h)
    first_target = np.arange(len(X_all)) + lb  # row index of each window's first target
    last_target = first_target + h - 1
    masks = {
        "train": last_target < train_end,
        "val": (first_target >= train_end) & (last_target < val_end),
        "test": first_target >= val_end,
    }
    splits = {name: Split(X_all[m], y_all[m]) for name, m in masks.items()}
    row_ranges = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, n)}
    frames = {
        name: ordered.iloc[a:b].assign(**{c: values[c].iloc[a:b] for c in plan.features})
        for name, (a, b) in row_ranges.items()
    }
    # The history the raw model needs to predict every test window: the test rows and the lookback before them,
    # times as in the file (the target and covariates gap-filled, as the windows saw them).
    start = max(0, val_end - lb)
    raw_times = frame[data.time_column].loc[times.sort_values(kind="stable").index].reset_index(drop=True)
    raw_test_input = values.iloc[start:].assign(**{data.time_column: raw_times.iloc[start:]})[preprocessing.columns]
    target = values[data.target].to_numpy()
    meta = series_meta_features(ordered[data.time_column], target, n_features=len(plan.features))
    test_times = ordered[data.time_column].iloc[first_target[masks["test"]]].astype(str).tolist()
    card = {
        "kind": "series",
        "task": "regression",
        "n_rows": n,
        "n_columns": frame.shape[1],
        "n_features": len(plan.features),
        "features": plan.features,
        "dropped_columns": plan.dropped,
        "time_column": data.time_column,
        "time_range": [str(ordered[data.time_column].iloc[0]), str(ordered[data.time_column].iloc[-1])],
        "lookback": lb,
        "horizon": h,
        "target": _describe_target(target, data.target),
        "missing_filled": missing,
        "missing_filled_total": int(sum(missing.values())),
        "rows": {name: b - a for name, (a, b) in row_ranges.items()},
        "windows": {name: len(s) for name, s in splits.items()},
        "scaling": {
            "mean": dict(zip(plan.features, mean.tolist(), strict=True)),
            "std": dict(zip(plan.features, std.tolist(), strict=True)),
        },
        "meta_features": meta,
    }
    folds: list[Fold] = []
    if cv.folds > 1:
        folds, card["cv"] = _series_fold_data(ordered[data.time_column], values, data, cv, val_end)
    prepared = PreparedData(
        kind="series",
        task="regression",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        feature_names=plan.features,
        n_outputs=h,
        lookback=lb,
        target=data.target,
        target_mean=float(mean[0]),
        target_std=float(std[0]),
        test_index=test_times,
        card=card,
        preprocessing=preprocessing.to_dict(),
        raw_test_input=raw_test_input.reset_index(drop=True),
        folds=folds,
    )
    return prepared, frames


def _series_fold_data(
    times: pd.Series, values: pd.DataFrame, data: DataConfig, cv: CVConfig, n_rows: int
) -> tuple[list[Fold], dict[str, Any]]:
    """Each fold's windows, scaled with statistics of its own training rows: a training window lies wholly inside
    the fold's training rows; a validation window's targets lie inside its validation rows (its inputs are the
    rows before, as at forecast time)."""
    lb, h = data.lookback, data.horizon
    kind = cv_kind(cv, "series", "regression")
    folds, boundaries = [], []
    for rows in series_folds(n_rows, cv.folds, kind, cv.gap):
        a, b, c, d = int(rows.train[0]), int(rows.train[-1]) + 1, int(rows.val[0]), int(rows.val[-1]) + 1
        fitted = SeriesPreprocessing.fit(times.iloc[a:b], values.iloc[a:b], b - a, data.time_column, lb, h)
        X, y = make_windows(fitted.scale(values.iloc[:d]), lb, h)
        start = np.arange(len(X))
        first_target, last_target = start + lb, start + lb + h - 1
        train = (start >= a) & (last_target < b)
        val = (first_target >= c) & (last_target < d)
        folds.append(Fold(Split(X[train], y[train]), Split(X[val], y[val]), fitted.to_dict()))
        boundaries.append(
            {
                "train_rows": [a, b - 1],
                "val_rows": [c, d - 1],
                "train_times": [str(times.iloc[a]), str(times.iloc[b - 1])],
                "val_times": [str(times.iloc[c]), str(times.iloc[d - 1])],
                "train_windows": int(train.sum()),
                "val_windows": int(val.sum()),
            }
        )
    return folds, {"folds": cv.folds, "kind": kind, "gap": cv.gap, "boundaries": boundaries}


# --- tabular ------------------------------------------------------------------------------------------------


def _resolve_task(target: pd.Series, data: DataConfig, allowed: tuple[str, ...]) -> str:
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
        "categorical_features": plan.categorical,
        "encoded_features": names,
        "rows_without_target": dropped_targets,
        "target": (
            _describe_target(y_all.astype(float), data.target)
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
    )
    return prepared, frames


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


# --- shared -------------------------------------------------------------------------------------------------


def _require_column(frame: pd.DataFrame, name: str | None, key: str, path: Path) -> None:
    if name not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12]))
        raise DataError(f"{key}: column {name!r} not found in {Path(path).name} (columns: {shown})")


def _describe_target(y: np.ndarray, name: str) -> dict[str, Any]:
    y = y[~np.isnan(y)]
    return {
        "name": name,
        "mean": float(y.mean()),
        "std": float(y.std()),
        "min": float(y.min()),
        "max": float(y.max()),
    }


# --- checked input --------------------------------------------------------------------------------------------------


class CheckedData:
    """The data file, read and checked once per run: the table, what ``plan_data`` decided, and the file's
    fingerprint. Handed from the CLI's checks to the flow; Prefect stores a flow parameter of this type as a
    placeholder, not as the table (it has no ``__dict__`` for Prefect's JSON encoder to walk)."""

    __slots__ = ("fingerprint", "frame", "plan")

    def __init__(self, frame: pd.DataFrame, plan: DataPlan, fingerprint: str):
        self.frame, self.plan, self.fingerprint = frame, plan, fingerprint


def load_and_check(cfg: PipelineConfig) -> CheckedData:
    """Read the data and check it (and what the config asks of this machine) before any training or tracking."""
    check_environment(cfg)
    frame = read_table(cfg.data.path)
    plan = plan_data(frame, DataPrepJob.of(cfg))
    return CheckedData(frame, plan, fingerprint(cfg.data.path))
