"""Series data: checks (a parseable, unique time column, a numeric target, enough rows for the windows of each
split, a season no longer than the training rows, test rows at the file's step; columns that are not numbers are
dropped, each with its reason), and the preparation (ordered by time, gaps filled forward, split
chronologically, scaled with train statistics, cut into windows of ``lookback`` steps predicting the next
``horizon``; the season resolved; cross-validation folds of the train+validation rows, each with its own scaling).
Tables are in ``tasks.data_prep.tabular``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from automl.configs import CVConfig, DataConfig, DataError
from automl.tasks.data_prep.columns import describe_target, require_column
from automl.tasks.data_prep.folds import check_series_folds, cv_kind, series_folds
from automl.tasks.data_prep.job import DataPlan, DataPrepJob
from automl.tasks.data_prep.meta_features import infer_season, series_meta_features
from automl.tasks.data_prep.prepared import CVSettings, Fold, PreparedData, RefitData, Split
from automl.tasks.data_prep.preprocessing import (
    Cadence,
    RawInputError,
    SeriesPreprocessing,
    fill_gaps,
    make_windows,
    order_by_time,
)


class SeriesData:
    """The series kind of data (``lstm``, ``transformer``): what data prep checks and does for it."""

    name = "series"

    def check_columns(self, frame: pd.DataFrame, data: DataConfig) -> None:
        require_column(frame, data.time_column, "data.time_column", data.path)

    def choose_features(
        self, frame: pd.DataFrame, data: DataConfig, candidates: list[str]
    ) -> tuple[list[str], list[str], dict[str, str]]:
        """The target and the numeric covariates (features, no categorical ones); other columns are dropped, with
        the reason, unless ``data.features`` named them."""
        numeric = [c for c in candidates if pd.api.types.is_numeric_dtype(frame[c])]
        non_numeric = [c for c in candidates if c not in numeric]
        if data.features is not None and non_numeric:
            raise DataError(f"data.features: column {non_numeric[0]!r} is not numeric; series covariates must be")
        dropped = {c: f"{_not_numeric(frame[c])}; series use numeric covariates only" for c in non_numeric}
        return [data.target, *numeric], [], dropped

    def check_rows(self, frame: pd.DataFrame, data: DataConfig, task: str) -> None:
        _check_series(frame, data)

    def check_folds(self, frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan) -> None:
        """``search.cv`` must fit the train+validation rows (see ``tasks.data_prep.folds``)."""
        data = job.data
        check_series_folds(_split_rows(len(frame), data)[1], job.cv, data.lookback, data.horizon)

    def prepare(
        self, frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan
    ) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
        prepared, frames = _prepare_series(frame, job.data, plan, job.cv)
        if job.refit:
            prepared.refit = _refit_data(frame, job.data, plan)
        return prepared, frames


SERIES = SeriesData()


def _not_numeric(column: pd.Series) -> str:
    """What a column that is not numbers holds, in words."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return "dates/times"
    if isinstance(column.dtype, pd.CategoricalDtype):
        return "categories"
    return "text"


# Series need at least this many windows in each split to train, validate and test on.
MIN_WINDOWS = {"train": 8, "val": 2, "test": 2}


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
    train_rows, val_end = _split_rows(len(frame), data)
    if isinstance(data.season, int) and data.season > train_rows:
        raise DataError(f"data.season: {data.season} is longer than the training rows ({train_rows})")
    # The registered model forecasts the test rows from the lookback before them (its input example, the logged
    # test predictions): a cadence it would refuse there is refused here, before hours of training.
    ordered = times.sort_values(kind="stable").reset_index(drop=True)
    try:
        Cadence.of(ordered).check(ordered.iloc[max(0, val_end - data.lookback) :], data.time_column)
    except RawInputError as exc:
        raise DataError(
            f"data.time_column: the test rows and the {data.lookback} before them do not keep the file's step ({exc})"
        ) from None


def _parse_times(column: pd.Series, name: str) -> pd.Series:
    try:
        return SeriesPreprocessing.parse_times(column, name)
    except RawInputError as exc:
        raise DataError(f"data.time_column: {exc}") from None


def _split_rows(n: int, data: DataConfig) -> tuple[int, int]:
    n_train = int(n * data.split.train)
    n_val = int(n * data.split.val)
    return n_train, n_train + n_val


def _resolve_season(times: pd.Series, data: DataConfig, train_rows: int) -> tuple[int, str | None]:
    """``data.season``, or the season its time column's step implies (auto), and a note when auto's is longer than
    the training rows: then 1, as a seasonal-naive forecast needs one season of history before the first target."""
    if isinstance(data.season, int):
        return data.season, None
    season = infer_season(times)
    if season > train_rows:
        note = f"data.season auto: the time step implies {season}, more than the training rows ({train_rows})"
        return 1, f"{note}; 1 is used"
    return season, None


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
    preprocessing = SeriesPreprocessing.fit(
        ordered[data.time_column], values, train_end, data.time_column, lb, h, plan.dropped
    )
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
    raw_history = values.assign(**{data.time_column: raw_times})[preprocessing.columns]
    raw_test_input = raw_history.iloc[start:]
    target = values[data.target].to_numpy()
    meta = series_meta_features(ordered[data.time_column], target, n_features=len(plan.features))
    test_times = ordered[data.time_column].iloc[first_target[masks["test"]]].astype(str).tolist()
    season, season_note = _resolve_season(ordered[data.time_column], data, train_end)
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
        "season": season,
        **({"season_note": season_note} if season_note else {}),
        "target": describe_target(target, data.target),
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
        season=season,
        target_history=target,
        test_first_rows=first_target[masks["test"]],
        preprocessing=preprocessing.to_dict(),
        raw_test_input=raw_test_input.reset_index(drop=True),
        raw_history=raw_history,
        folds=folds,
        cv=CVSettings(card["cv"]["kind"], cv.folds, cv.gap) if folds else None,
    )
    return prepared, frames


def _refit_data(frame: pd.DataFrame, data: DataConfig, plan: DataPlan) -> RefitData:
    """Every window of the whole series, scaled with statistics of all its rows: what the production refit trains
    on, up to the most recent values."""
    times = _parse_times(frame[data.time_column], data.time_column)
    ordered = order_by_time(frame, data.time_column, times)
    values = fill_gaps(ordered[plan.features].astype(float))
    fitted = SeriesPreprocessing.fit(
        ordered[data.time_column], values, len(values), data.time_column, data.lookback, data.horizon, plan.dropped
    )
    X, y = make_windows(fitted.scale(values), data.lookback, data.horizon)
    return RefitData(Split(X, y), fitted.to_dict())


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
