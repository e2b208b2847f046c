"""Dataset meta-features for the data card and for ranking past runs by similarity (warm start)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Seasonal period (in steps) implied by a sampling interval, for the usual calendars.
_PERIODS = (  # (seconds per step, steps per season)
    (900, 96),
    (1800, 48),
    (3600, 24),
    (86400, 7),
    (7 * 86400, 52),
    (30.4 * 86400, 12),
    (91.3 * 86400, 4),
)


def autocorrelation(x: np.ndarray, lag: int) -> float:
    """Pearson autocorrelation of ``x`` at ``lag`` (0 when undefined)."""
    if lag <= 0 or lag >= len(x) - 2:
        return 0.0
    a, b = x[:-lag], x[lag:]
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def season_of_step(step_seconds: float | None) -> int:
    """Steps per season for a sampling interval within 10% of a usual calendar's (15 min -> 96, 30 min -> 48,
    hourly -> 24, daily -> 7, weekly -> 52, monthly -> 12, quarterly -> 4); 1 for any other (yearly, irregular).

    Example:
        >>> season_of_step(86400.0)
        7
    """
    for seconds, period in _PERIODS:
        if step_seconds and abs(step_seconds - seconds) / seconds < 0.1:
            return period
    return 1


def infer_season(times: pd.Series) -> int:
    """Steps per season of a series from its time column's median step (``data.season: auto``); 1 when none fits.

    Example:
        >>> infer_season(pd.Series(pd.date_range("2024-01-01", periods=48, freq="h")))
        24
    """
    return season_of_step(_median_step_seconds(times))


def seasonal_period(step_seconds: float | None, n: int) -> int | None:
    """Steps per season for a regular sampling interval (weekly -> 52, daily -> 7, ...), if two seasons fit."""
    period = season_of_step(step_seconds)
    return period if period > 1 and n >= 2 * period + 1 else None


def decomposition_strengths(x: np.ndarray, period: int | None) -> tuple[float, float]:
    """Trend and seasonality strength in [0, 1] (Wang, Smith & Hyndman 2006) from a moving-average split."""
    n = len(x)
    window = period if period else max(3, min(n // 10, 25))
    if n < 2 * window + 1:
        return 0.0, 0.0
    trend = pd.Series(x).rolling(window, center=True, min_periods=window).mean().to_numpy()
    ok = ~np.isnan(trend)
    detrended = x[ok] - trend[ok]
    if period:
        phase = np.arange(n)[ok] % period
        means = pd.Series(detrended).groupby(phase).transform("mean").to_numpy()
    else:
        means = np.zeros_like(detrended)
    remainder = detrended - means
    var_r = remainder.var()
    trend_strength = 1 - var_r / max((trend[ok] - trend[ok].mean() + remainder).var(), 1e-12)
    season_strength = 1 - var_r / max((means + remainder).var(), 1e-12) if period else 0.0
    return float(np.clip(trend_strength, 0, 1)), float(np.clip(season_strength, 0, 1))


def series_meta_features(times: pd.Series, target: np.ndarray, n_features: int) -> dict[str, float]:
    """Size, sampling interval, autocorrelation at a few lags, trend and seasonality strength of a series."""
    step = _median_step_seconds(times)
    period = seasonal_period(step, len(target))
    trend, season = decomposition_strengths(target, period)
    features = {
        "n_rows": float(len(target)),
        "n_features": float(n_features),
        "step_seconds": float(step or 0.0),
        "seasonal_period": float(period or 0),
        "acf_1": autocorrelation(target, 1),
        "acf_2": autocorrelation(target, 2),
        "acf_season": autocorrelation(target, period) if period else 0.0,
        "trend_strength": trend,
        "seasonality_strength": season,
    }
    features.update(_target_stats(target))
    return features


def tabular_meta_features(
    frame: pd.DataFrame, target: pd.Series, task: str, categorical_columns: list[str]
) -> dict[str, float]:
    """Size, share of categorical columns, class balance (classification) or target shape (regression)."""
    n_columns = max(frame.shape[1], 1)
    features = {
        "n_rows": float(len(frame)),
        "n_features": float(frame.shape[1]),
        "categorical_share": len(categorical_columns) / n_columns,
        "missing_share": float(frame.isna().to_numpy().mean()) if frame.size else 0.0,
    }
    if task == "classification":
        counts = target.value_counts()
        features["n_classes"] = float(len(counts))
        features["class_balance"] = float(counts.min() / counts.max()) if len(counts) else 0.0
    else:
        features.update(_target_stats(target.to_numpy(dtype=float)))
    return features


def _target_stats(y: np.ndarray) -> dict[str, float]:
    mean, std = float(np.mean(y)), float(np.std(y))
    skew = float(np.mean(((y - mean) / std) ** 3)) if std > 0 else 0.0
    return {
        "target_mean": mean,
        "target_std": std,
        "target_cv": std / abs(mean) if mean else 0.0,
        "target_skew": skew if math.isfinite(skew) else 0.0,
    }


def _median_step_seconds(times: pd.Series) -> float | None:
    if len(times) < 2:
        return None
    if pd.api.types.is_datetime64_any_dtype(times):
        diffs = times.diff().dropna().dt.total_seconds()
    else:
        diffs = pd.Series(np.diff(times.to_numpy(dtype=float)))
    return float(diffs.median()) if len(diffs) else None
