"""Fitted preprocessing: what data prep learns from the training rows (imputation values, scalers, category
encodings, column order and the columns left out, lookback and horizon, a series' cadence, the target transform)
as plain JSON values, and the transforms that apply it. Data prep fits it and applies it to every split; the
registered model applies the same code to the raw rows a user sends, so both see identical arrays.

Pure pandas/NumPy: no torch, MLflow or Prefect, so a served model imports little.

Example:
    >>> pre = preprocessing_from_dict(json.loads(Path("preprocessing.json").read_text()))
    >>> X = pre.encode(pre.check(raw_rows))          # tabular: (rows, encoded features), float32
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
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


def _coerce_numeric(column: pd.Series, name: str, booleans: bool = False) -> pd.Series:
    """``column`` as float; a value that is present but not a number, or not finite, or larger than
    ``MAX_ABS_VALUE``, is a ``RawInputError`` naming the column and the data row. ``booleans``: True/False are
    1/0 (a series trained on a boolean covariate: pandas counts booleans as numbers, so training took it)."""
    if pd.api.types.is_bool_dtype(column):
        if booleans:
            return column.astype(float)
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


def _require_columns(
    frame: pd.DataFrame, expected: list[str], extra_allowed: bool, dropped: dict[str, str] | None = None
) -> None:
    """``expected`` are there; with ``extra_allowed`` false, nothing else but the columns training ``dropped`` (a
    file like the training's has them; they are ignored, whatever their values)."""
    if not isinstance(frame, pd.DataFrame):
        raise RawInputError(f"expected a table of rows with columns {expected}, got {type(frame).__name__}")
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise RawInputError(f"column {missing[0]!r} is missing (expected columns: {', '.join(expected)})")
    if not extra_allowed:
        extra = [str(c) for c in frame.columns if c not in expected and c not in (dropped or {})]
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
    dropped: dict[str, str] = field(default_factory=dict)  # columns of the file training left out, and why
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
        dropped: dict[str, str] | None = None,
    ) -> TabularPreprocessing:
        """Learn imputation values, scalers and encodings (and the target's scaling) from the training rows;
        ``dropped`` records the file's columns training left out (ignored in rows to score)."""
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
            dropped=dict(dropped or {}),
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
        _require_columns(frame, self.features, extra_allowed, self.dropped)
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
    regular: bool = False  # every training interval a whole number of steps (older files: unknown, so not assumed)
    dropped: dict[str, str] = field(default_factory=dict)  # columns of the file training left out, and why
    kind: Literal["series"] = "series"
    format: str = FORMAT

    @classmethod
    def fit(
        cls,
        times: pd.Series,
        values: pd.DataFrame,
        train_rows: int,
        time_column: str,
        lookback: int,
        horizon: int,
        dropped: dict[str, str] | None = None,
    ) -> SeriesPreprocessing:
        """Scalers from the first ``train_rows`` of the ordered, filled ``values`` (the target first), and the
        series' cadence from its ordered ``times``; ``dropped`` records the file's columns training left out."""
        train = values.iloc[:train_rows]
        mean = train.mean().to_numpy()
        std = train.std(ddof=0).replace(0, 1.0).fillna(1.0).to_numpy()
        cadence = Cadence.of(times)
        return cls(
            time_column=time_column,
            target=str(values.columns[0]),
            features=[str(c) for c in values.columns],
            mean=mean.tolist(),
            std=std.tolist(),
            lookback=lookback,
            horizon=horizon,
            time_kind="numeric" if cadence.numeric else "datetime",
            freq=cadence.freq,
            step=cadence.step,
            regular=cadence.regular,
            dropped=dict(dropped or {}),
        )

    @property
    def columns(self) -> list[str]:
        """The input columns of the raw model: the time column, the target, then the covariates."""
        return [self.time_column, *self.features]

    @property
    def cadence(self) -> Cadence:
        return Cadence(self.time_kind == "numeric", self.freq, self.step, self.regular)

    @staticmethod
    def parse_times(column: pd.Series, name: str) -> pd.Series:
        """Numeric times as they are, anything else as datetimes; missing or unparseable values, booleans and
        numbers that are not finite (or absurdly large) are an error."""
        if pd.api.types.is_bool_dtype(column):
            raise RawInputError(f"column {name!r} must hold dates/times or numbers (got booleans)")
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column):
            if column.isna().any():
                raise RawInputError(f"column {name!r} has missing values")
            if pd.api.types.is_numeric_dtype(column):
                check_magnitude(column.astype(float), name)
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
        ``lookback + horizon`` for rolling predictions (every window whose targets lie inside it). Columns
        training dropped are ignored."""
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
        of ``features`` as floats. Its times must keep the training's cadence (``Cadence.check``)."""
        _require_columns(frame, self.columns, extra_allowed, self.dropped)
        times = self.parse_times(frame[self.time_column], self.time_column)
        if self.time_kind == "numeric" and pd.api.types.is_datetime64_any_dtype(times):
            raise RawInputError(f"column {self.time_column!r} must be numeric, as in training")
        if self.time_kind == "datetime" and not pd.api.types.is_datetime64_any_dtype(times):
            raise RawInputError(f"column {self.time_column!r} must hold dates/times, as in training")
        self.check_unique(times, self.time_column)
        self.cadence.check(times, self.time_column)
        numbers = frame.assign(**{c: _coerce_numeric(frame[c], c, booleans=True) for c in self.features})
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
        """The ``steps`` timestamps after ``last``: ``last`` plus 1, 2, ... training steps (``Cadence.after``)."""
        return self.cadence.after(last, steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Preprocessing = TabularPreprocessing | SeriesPreprocessing


# Month-based offsets step by whole months: their steps differ in seconds, so a history is checked and a forecast
# dated by calendar months (``pd.DateOffset(months=...)``), never by a fixed number of seconds. (Business-month
# offsets are calendar rules, like business days: their day of the month moves.)
_MONTHS_PER_STEP: dict[type, int] = {
    pd.offsets.MonthBegin: 1,
    pd.offsets.MonthEnd: 1,
    pd.offsets.QuarterBegin: 3,
    pd.offsets.QuarterEnd: 3,
    pd.offsets.YearBegin: 12,
    pd.offsets.YearEnd: 12,
}
_MONTH_END_OFFSETS = (pd.offsets.MonthEnd, pd.offsets.QuarterEnd, pd.offsets.YearEnd)
# Hours, minutes, days and weeks are fixed lengths: a forecast is the origin plus whole steps, not the next day the
# offset is anchored to (a W-SAT model forecasting a Sunday history dates its forecast on Sundays).
_FIXED_LENGTH_OFFSETS = (pd.offsets.Tick, pd.offsets.Day, pd.offsets.Week)
# Irregular training times have no exact step, and the median interval of two samples of one process differs: a
# history is refused only when its median interval is off by more than half again (twice or half the training's
# cadence still is).
_IRREGULAR_TOLERANCE = 1.5
_WHOLE = 1e-6  # relative: float times (0.1 steps) and float seconds land this close to a whole number of steps
_DAY = 86400.0
_MONTH_SECONDS = 365.2425 / 12 * _DAY


@dataclass(frozen=True)
class Cadence:
    """The step between a series' rows, learnt from its training times: a pandas offset alias (``freq``) when the
    times are regular, the median interval (``step``: seconds, or units of numeric times), and whether every
    training interval was a whole number of steps (``regular``: gaps of missing rows allowed). A history to
    forecast from must keep it (``check``); forecasts are the origin plus whole steps (``after``).

    Example:
        >>> cadence = Cadence.of(pd.Series(pd.date_range("2001-01-06", periods=20, freq="W-SAT")))
        >>> cadence.after(pd.Timestamp("2001-06-03"), 2)          # a Sunday origin: Sundays, not Saturdays
        [Timestamp('2001-06-10 00:00:00'), Timestamp('2001-06-17 00:00:00')]
    """

    numeric: bool
    freq: str | None
    step: float | None
    regular: bool

    @classmethod
    def of(cls, times: pd.Series) -> Cadence:
        """The cadence of ordered, unique ``times`` (numbers or datetimes)."""
        numeric = not pd.api.types.is_datetime64_any_dtype(times)
        if len(times) < 2:
            return cls(numeric, None, None, False)
        step = float(np.median(_intervals(times)))
        if not numeric and step >= _DAY:  # days and longer are calendar days: a DST change keeps a daily step
            step = float(np.median(_intervals(times, wall_clock=True)))
        freq = None
        if not numeric and len(times) >= 3:
            try:
                with warnings.catch_warnings():  # pandas 3 announces an offset instead of a string; both are read
                    warnings.simplefilter("ignore")
                    inferred = pd.infer_freq(pd.DatetimeIndex(times))
                freq = getattr(inferred, "freqstr", inferred)
            except (TypeError, ValueError):
                freq = None
        # regular when every training interval is a whole number of steps as ``check`` measures them (a
        # semi-monthly or business-month freq is not: its intervals vary by days)
        regular = step > 0 and bool(cls(numeric, freq, step, True)._steps(times)[1].all())
        return cls(numeric, freq, step, regular)

    @property
    def months(self) -> int | None:
        """Months per step, for a month-based ``freq`` (MS, ME, QS, YS, ...)."""
        offset = self._offset()
        if offset is None or type(offset) not in _MONTHS_PER_STEP:
            return None
        return _MONTHS_PER_STEP[type(offset)] * offset.n

    def check(self, times: pd.Series, name: str) -> None:
        """Refuse unique ``times`` (in any order) whose typical interval is not the training's step, or (when the
        training's intervals were whole steps) with an interval that is not a whole number of steps; gaps of
        whole steps pass, as they did in training. ``RawInputError`` names the column and both steps."""
        if not self.step or len(times) < 2:
            return
        times = times.sort_values(kind="stable").reset_index(drop=True)
        steps, whole = self._steps(times)
        typical = float(np.median(steps))
        if self.regular:
            off = abs(typical - 1.0) > _WHOLE
        else:
            off = not 1 / _IRREGULAR_TOLERANCE <= typical <= _IRREGULAR_TOLERANCE
        if off:
            months = self.months
            in_months = months and whole.all()
            apart = _plural(typical * months, "month") if in_months else self._length(np.median(self._intervals(times)))
            raise RawInputError(
                f"column {name!r}: rows are {apart} apart; the model was trained on steps of {self.describe()}"
            )
        if self.regular and not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            a, b = times.iloc[i], times.iloc[i + 1]
            raise RawInputError(
                f"column {name!r}: {_show(a)} to {_show(b)} is {self._length(self._intervals(times)[i])}, not a whole "
                f"number of the model's steps of {self.describe()}"
            )

    def after(self, last: Any, steps: int) -> list[Any]:
        """The ``steps`` times after ``last``: ``last`` plus 1, 2, ... training steps exactly (whole numbers stay
        whole; months add calendar months, a month end staying one for an end-anchored ``freq``)."""
        ahead = range(1, steps + 1)
        if self.numeric:
            step = self.step or 1.0
            if float(step).is_integer() and float(last).is_integer():
                return [int(last) + k * int(step) for k in ahead]
            return [last + k * step for k in ahead]
        offset = self._offset()
        if self.months:
            month_end = isinstance(offset, _MONTH_END_OFFSETS) and last.is_month_end
            return [_add_months(last, k * self.months, month_end) for k in ahead]
        if offset is not None and not isinstance(offset, _FIXED_LENGTH_OFFSETS):
            return [last + k * offset for k in ahead]  # calendar rules (business days) are the cadence itself
        step = self.step or 0.0
        if step >= _DAY and float(step / _DAY).is_integer():  # calendar days: the same clock time across DST
            return [last + pd.DateOffset(days=k * int(step / _DAY)) for k in ahead]
        return [last + pd.Timedelta(seconds=k * step) for k in ahead]

    def describe(self) -> str:
        """The step in words: ``7 days``, ``1 month``, ``0.5`` (numeric times)."""
        if self.months:
            return _plural(self.months, "month")
        return self._length(self.step or 0.0)

    def _offset(self) -> pd.DateOffset | None:
        if self.numeric or not self.freq:
            return None
        try:
            return pd.tseries.frequencies.to_offset(self.freq)
        except ValueError:
            return None

    def _steps(self, times: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Each interval of ``times`` in training steps, and whether it is a whole number (at least one) of them."""
        months = self.months
        if not months:
            steps = self._intervals(times) / float(self.step or 1.0)
            return steps, _whole_steps(steps)
        a, b = times.iloc[:-1].reset_index(drop=True), times.iloc[1:].reset_index(drop=True)
        moved = ((b.dt.year - a.dt.year) * 12 + b.dt.month - a.dt.month).to_numpy()
        same_time = (a - a.dt.normalize()).to_numpy() == (b - b.dt.normalize()).to_numpy()
        # Jan 31 + 1 month is Feb 28: a day the month lacks lands on its last day, as pd.DateOffset adds months
        same_day = (b.dt.day == np.minimum(a.dt.day, b.dt.days_in_month)) | (a.dt.is_month_end & b.dt.is_month_end)
        whole = (moved > 0) & (moved % months == 0) & same_time & same_day.to_numpy()
        steps = np.where(whole, moved / months, self._intervals(times) / (months * _MONTH_SECONDS))
        return steps, whole

    def _intervals(self, times: pd.Series) -> np.ndarray:
        return _intervals(times, wall_clock=not self.numeric and (self.step or 0.0) >= _DAY)

    def _length(self, amount: float) -> str:
        return f"{float(amount):.6g}" if self.numeric else _duration(float(amount))


def _intervals(times: pd.Series, wall_clock: bool = False) -> np.ndarray:
    """The intervals between consecutive ``times``: seconds for datetimes (on the local clock with ``wall_clock``),
    units for numbers."""
    if pd.api.types.is_datetime64_any_dtype(times):
        if wall_clock and times.dt.tz is not None:
            times = times.dt.tz_localize(None)
        return times.diff().iloc[1:].dt.total_seconds().to_numpy(dtype=float)
    return np.diff(times.to_numpy(dtype=float))


def _whole_steps(steps: np.ndarray) -> np.ndarray:
    nearest = np.round(steps)
    return (nearest >= 1) & (np.abs(steps - nearest) <= _WHOLE * np.maximum(1.0, nearest))


def _add_months(time: pd.Timestamp, months: int, month_end: bool) -> pd.Timestamp:
    moved = time + pd.DateOffset(months=months)
    return moved + pd.offsets.MonthEnd(0) if month_end else moved


def _duration(seconds: float) -> str:
    """Seconds in the largest unit they fill: ``14 days``, ``1 hour``, ``1.5 hours``, ``30 seconds``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return _plural(seconds / size, unit)
    return _plural(seconds, "second")


def _plural(amount: float, unit: str) -> str:
    shown = f"{amount:.0f}" if float(amount).is_integer() else f"{amount:.3g}"
    return f"{shown} {unit}{'' if amount == 1 else 's'}"


def _show(time: Any) -> str:
    """A time as a user wrote it: the date alone at midnight."""
    if isinstance(time, pd.Timestamp):
        return time.date().isoformat() if time == time.normalize() else time.isoformat(sep=" ")
    return f"{time:g}" if isinstance(time, float) else str(time)


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
