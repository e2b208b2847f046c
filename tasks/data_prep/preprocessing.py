"""Fitted preprocessing: what data prep learns from the training rows (imputation values, scalers, category
encodings, column order, lookback and horizon, the target transform) as plain JSON values, and the transforms
that apply it. Data prep fits it and applies it to every split; the registered model applies the same code to
the raw rows a user sends, so both see identical arrays.

Pure pandas/NumPy: no torch, MLflow or Prefect, so a served model imports little.

Example:
    >>> pre = preprocessing_from_dict(json.loads(Path("preprocessing.json").read_text()))
    >>> X = pre.encode(pre.check(raw_rows))          # tabular: (rows, encoded features), float32
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

FORMAT = "automl-preprocessing/v1"
MAX_ABS_VALUE = 1e30  # larger numbers in a numeric column are data errors (overflow in float32 and in squared errors)


class RawInputError(ValueError):
    """Rows that do not fit what the model was trained on. ``str(error)`` is one line naming the column."""


def _row(column: pd.Series, label: Any) -> int:
    """The 1-based position of a row (its line among the data rows of a file)."""
    return int(column.index.get_loc(label)) + 1


def _coerce_numeric(column: pd.Series, name: str) -> pd.Series:
    """``column`` as float; a value that is present but not a number, or not finite, or larger than
    ``MAX_ABS_VALUE``, is a ``RawInputError`` naming the column and the data row."""
    if pd.api.types.is_bool_dtype(column):
        raise RawInputError(f"column {name!r} must be numeric (got booleans)")
    if pd.api.types.is_numeric_dtype(column):
        numbers = column.astype(float)
    else:
        numbers = pd.to_numeric(column, errors="coerce").astype(float)
        bad = column[numbers.isna() & column.notna()]
        if len(bad):
            raise RawInputError(
                f"column {name!r} must be numeric; found {bad.iloc[0]!r} in data row {_row(column, bad.index[0])}"
            )
    check_magnitude(numbers, name)
    return numbers


def check_magnitude(numbers: pd.Series, name: str) -> None:
    """Infinite or absurdly large numbers overflow the float32 tensors and squared errors (NaN losses and
    predictions): refuse them, naming the column and the data row. One rule for training data and rows to score."""
    bad = numbers.index[numbers.notna() & ~(numbers.abs() <= MAX_ABS_VALUE)]
    if len(bad):
        raise RawInputError(
            f"column {name!r}: data row {_row(numbers, bad[0])} holds {float(numbers[bad[0]])!r}; values must be "
            f"finite and at most {MAX_ABS_VALUE:g} in size"
        )


def _require_columns(frame: pd.DataFrame, expected: list[str], extra_allowed: bool) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise RawInputError(f"expected a table of rows with columns {expected}, got {type(frame).__name__}")
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise RawInputError(f"column {missing[0]!r} is missing (expected columns: {', '.join(expected)})")
    if not extra_allowed:
        extra = [str(c) for c in frame.columns if c not in expected]
        if extra:
            raise RawInputError(f"column {extra[0]!r} is not an input of this model (expected: {', '.join(expected)})")
    if frame.empty:
        raise RawInputError("no rows to predict")


@dataclass(frozen=True)
class TabularPreprocessing:
    """Median imputation and standard scaling of numeric columns, mode imputation and one-hot encoding of
    categorical ones (at most the training's most frequent categories; unseen ones encode as all zeros),
    and the regression target's scaling or the classification's class list."""

    task: Literal["regression", "classification"]
    target: str
    features: list[str]
    numeric: dict[str, dict[str, float]]
    categorical: dict[str, dict[str, Any]]
    classes: list[Any] | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    kind: Literal["tabular"] = "tabular"
    format: str = FORMAT

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        features: list[str],
        categorical: list[str],
        task: Literal["regression", "classification"],
        target: str,
        max_categories: int,
        classes: list[Any] | None = None,
        y_train: np.ndarray | None = None,
    ) -> TabularPreprocessing:
        """Learn imputation values, scalers and encodings (and the target's scaling) from the training rows."""
        numeric_stats = {}
        for c in (c for c in features if c not in categorical):
            col = train[c].astype(float)
            median = float(col.median()) if col.notna().any() else 0.0
            filled = col.fillna(median)
            numeric_stats[c] = {"median": median, "mean": float(filled.mean()), "std": float(filled.std(ddof=0)) or 1.0}
        categorical_stats = {}
        for c in categorical:
            col = train[c].astype("string")
            mode = col.mode()
            fill = str(mode.iloc[0]) if len(mode) else "missing"
            categories = col.fillna(fill).value_counts().index[:max_categories].tolist()
            categorical_stats[c] = {"mode": fill, "categories": [str(v) for v in categories]}
        target_mean, target_std = 0.0, 1.0
        if task == "regression" and y_train is not None:
            target_mean = float(y_train.mean())
            target_std = float(y_train.std()) or 1.0
        return cls(
            task=task,
            target=target,
            features=list(features),
            numeric=numeric_stats,
            categorical=categorical_stats,
            classes=[_plain(c) for c in classes] if classes is not None else None,
            target_mean=target_mean,
            target_std=target_std,
        )

    @property
    def encoded_features(self) -> list[str]:
        return [*self.numeric, *(f"{c}={v}" for c, s in self.categorical.items() for v in s["categories"])]

    def validate(self, frame: pd.DataFrame, rolling: bool = False, extra_allowed: bool = True) -> pd.DataFrame:
        """``check`` for rows to score: also refuses ``rolling`` (a series option) and names the target when a
        file to score still has it."""
        if rolling:
            raise RawInputError("rolling predictions are for time-series models; this model scores table rows")
        if not extra_allowed and self.target in getattr(frame, "columns", ()):
            raise RawInputError(
                f"column {self.target!r} is the target this model predicts; drop it from the rows to score"
            )
        return self.check(frame, extra_allowed)

    def check(self, frame: pd.DataFrame, extra_allowed: bool = True) -> pd.DataFrame:
        """The model's input columns of ``frame``, numeric ones as floats; a ``RawInputError`` names the first
        missing column or non-numeric value."""
        _require_columns(frame, self.features, extra_allowed)
        checked = {c: _coerce_numeric(frame[c], c) for c in self.numeric}
        checked.update({c: frame[c] for c in self.categorical})
        return pd.DataFrame(checked, index=frame.index)[self.features]

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Impute, scale and one-hot encode checked rows: (rows, encoded features), float32."""
        blocks: list[np.ndarray] = []
        for c, stats in self.numeric.items():
            col = frame[c].astype(float).fillna(stats["median"]).to_numpy()
            blocks.append(((col - stats["mean"]) / stats["std"]).reshape(-1, 1))
        for c, stats in self.categorical.items():
            col = frame[c].astype("string").fillna(stats["mode"]).to_numpy()
            for category in stats["categories"]:
                blocks.append((col == category).astype(float).reshape(-1, 1))
        return np.hstack(blocks).astype(np.float32)

    def target_to_original(self, y: np.ndarray) -> np.ndarray:
        return y * self.target_std + self.target_mean

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeriesPreprocessing:
    """Time parsing and ordering, forward/backward filling of gaps, standard scaling of the target and numeric
    covariates with training statistics, and the window shape (``lookback`` steps in, ``horizon`` out)."""

    time_column: str
    target: str
    features: list[str]  # the target first, then the numeric covariates
    mean: list[float]
    std: list[float]
    lookback: int
    horizon: int
    time_kind: Literal["datetime", "numeric"]
    freq: str | None = None  # a pandas offset alias inferred from the training times, when they are regular
    step: float | None = None  # median interval: seconds (datetime) or units (numeric)
    kind: Literal["series"] = "series"
    format: str = FORMAT

    @classmethod
    def fit(
        cls, times: pd.Series, values: pd.DataFrame, train_rows: int, time_column: str, lookback: int, horizon: int
    ) -> SeriesPreprocessing:
        """Scalers from the first ``train_rows`` of the ordered, filled ``values`` (the target first), and the
        series' interval from its ordered ``times``."""
        train = values.iloc[:train_rows]
        mean = train.mean().to_numpy()
        std = train.std(ddof=0).replace(0, 1.0).fillna(1.0).to_numpy()
        datetime = pd.api.types.is_datetime64_any_dtype(times)
        freq, step = None, None
        if len(times) > 1:
            diffs = times.diff().dropna()
            step = float(diffs.median().total_seconds()) if datetime else float(diffs.median())
        if datetime and len(times) >= 3:
            try:
                with warnings.catch_warnings():  # pandas 3 announces an offset instead of a string; both are read
                    warnings.simplefilter("ignore")
                    inferred = pd.infer_freq(pd.DatetimeIndex(times))
                freq = getattr(inferred, "freqstr", inferred)
            except (TypeError, ValueError):
                freq = None
        return cls(
            time_column=time_column,
            target=str(values.columns[0]),
            features=[str(c) for c in values.columns],
            mean=mean.tolist(),
            std=std.tolist(),
            lookback=lookback,
            horizon=horizon,
            time_kind="datetime" if datetime else "numeric",
            freq=freq,
            step=step,
        )

    @property
    def columns(self) -> list[str]:
        """The input columns of the raw model: the time column, the target, then the covariates."""
        return [self.time_column, *self.features]

    @staticmethod
    def parse_times(column: pd.Series, name: str) -> pd.Series:
        """Numeric times as they are, anything else as datetimes; missing or unparseable values are an error."""
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
            if column.isna().any():
                raise RawInputError(f"column {name!r} has missing values")
            return column
        try:
            times = pd.to_datetime(column, format="mixed")
        except (ValueError, TypeError, OverflowError) as exc:
            raise RawInputError(f"column {name!r} is not a date/time ({str(exc).splitlines()[0]})") from None
        if times.isna().any():
            raise RawInputError(f"column {name!r} has missing or unparseable values")
        return times

    def validate(
        self, frame: pd.DataFrame, rolling: bool = False, extra_allowed: bool = True
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``clean`` a history to predict from, and check it is long enough: ``lookback`` rows for a forecast,
        ``lookback + horizon`` for rolling predictions (every window whose targets lie inside it)."""
        ordered, values = self.clean(frame, extra_allowed)
        need = self.lookback + self.horizon if rolling else self.lookback
        if len(values) < need:
            what = f"lookback {self.lookback} + horizon {self.horizon}" if rolling else f"lookback {self.lookback}"
            raise RawInputError(
                f"too little history: {len(values)} rows of {self.time_column!r}; this model needs at least {need} "
                f"({what})"
            )
        return ordered, values

    def clean(self, frame: pd.DataFrame, extra_allowed: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Check, order by time and fill a history. Returns the ordered rows (times parsed) and the filled values
        of ``features`` as floats."""
        _require_columns(frame, self.columns, extra_allowed)
        times = self.parse_times(frame[self.time_column], self.time_column)
        if self.time_kind == "numeric" and pd.api.types.is_datetime64_any_dtype(times):
            raise RawInputError(f"column {self.time_column!r} must be numeric, as in training")
        if self.time_kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(times):
            raise RawInputError(f"column {self.time_column!r} must hold dates/times, as in training")
        self.check_unique(times, self.time_column)
        numbers = frame.assign(**{c: _coerce_numeric(frame[c], c) for c in self.features})
        ordered = order_by_time(numbers, self.time_column, times)
        values = ordered[self.features]
        empty = [c for c in self.features if values[c].isna().all()]
        if empty:
            raise RawInputError(f"column {empty[0]!r} has no values")
        return ordered, fill_gaps(values)

    @staticmethod
    def check_unique(times: pd.Series, name: str) -> None:
        duplicated = times[times.duplicated()]
        if len(duplicated):
            raise RawInputError(f"column {name!r} has duplicate timestamps (first: {duplicated.iloc[0]})")

    def scale(self, values: pd.DataFrame) -> np.ndarray:
        """Standardise with the training statistics: (rows, features), float32."""
        return ((values.to_numpy() - np.asarray(self.mean)) / np.asarray(self.std)).astype(np.float32)

    def target_to_original(self, y: np.ndarray) -> np.ndarray:
        return y * self.std[0] + self.mean[0]

    def future_times(self, last: Any, steps: int) -> list[Any]:
        """The ``steps`` timestamps after ``last``, one training interval apart (whole numbers stay whole)."""
        if self.time_kind == "numeric":
            step = self.step or 1.0
            if float(step).is_integer() and float(last).is_integer():
                return [int(last) + (k + 1) * int(step) for k in range(steps)]
            return [last + (k + 1) * step for k in range(steps)]
        if self.freq:
            offset = pd.tseries.frequencies.to_offset(self.freq)
            return [last + (k + 1) * offset for k in range(steps)]
        return [last + pd.Timedelta(seconds=(k + 1) * (self.step or 0.0)) for k in range(steps)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Preprocessing = TabularPreprocessing | SeriesPreprocessing


def order_by_time(frame: pd.DataFrame, time_column: str, times: pd.Series) -> pd.DataFrame:
    """The rows sorted by their parsed ``times`` (stable), with the time column holding the parsed values."""
    return frame.assign(**{time_column: times}).sort_values(time_column, kind="stable").reset_index(drop=True)


def fill_gaps(values: pd.DataFrame) -> pd.DataFrame:
    """Missing values take the last observed one; leading gaps the first observed one."""
    return values.ffill().bfill()


def make_windows(scaled: np.ndarray, lookback: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of a scaled series: inputs (n, lookback, features) and the target's next ``horizon``
    values (n, horizon); window i reads rows i .. i+lookback-1 and predicts rows i+lookback onwards."""
    windows = np.lib.stride_tricks.sliding_window_view(scaled, lookback + horizon, axis=0)  # (n, f, lb+h)
    X = np.ascontiguousarray(windows[:, :, :lookback].transpose(0, 2, 1))
    y = np.ascontiguousarray(windows[:, 0, lookback:])
    return X, y


def preprocessing_from_dict(raw: dict[str, Any]) -> Preprocessing:
    """The fitted preprocessing saved with a model (``to_dict`` of either kind)."""
    if raw.get("format") != FORMAT:
        raise ValueError(f"not a fitted preprocessing of format {FORMAT!r} (got {raw.get('format')!r})")
    kind = raw.get("kind")
    if kind == "tabular":
        return TabularPreprocessing(**raw)
    if kind == "series":
        return SeriesPreprocessing(**raw)
    raise ValueError(f"unknown preprocessing kind {kind!r}")


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value
