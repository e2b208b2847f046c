"""Test metrics: regression and classification scores in the target's units, and the metric that decides champions
(compared in ``tasks.final_train.promotion``). NumPy and scikit-learn only."""

from __future__ import annotations

import numpy as np

# The test metric that decides champions, and whether lower is better.
PRIMARY_METRIC = {"regression": ("rmse", True), "classification": ("f1_macro", False)}


def score(task_type: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Regression: rmse, mae, mse over every horizon step; classification: accuracy, f1_macro, log_loss."""
    from sklearn import metrics

    if task_type == "classification":
        labels = list(range(y_pred.shape[1]))
        chosen = y_pred.argmax(axis=1)
        return {
            "accuracy": float(metrics.accuracy_score(y_true, chosen)),
            "f1_macro": float(metrics.f1_score(y_true, chosen, average="macro", labels=labels, zero_division=0)),
            "log_loss": float(metrics.log_loss(y_true, np.clip(y_pred, 1e-15, 1), labels=labels)),
        }
    error = np.asarray(y_pred, dtype=float) - np.asarray(y_true, dtype=float)
    mse = float(np.mean(error**2))
    return {"rmse": float(np.sqrt(mse)), "mae": float(np.mean(np.abs(error))), "mse": mse}
