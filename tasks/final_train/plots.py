"""What the final stage draws into its MLflow run: both trainings' learning curves (each training's per-epoch metrics
are on its own run, logged as it trains: ``tasks.final_train.runs``), the test predictions against the actual values,
and for classification the per-class report and the confusion matrix."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd

from automl.models import FitResult
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.final_train.baselines import NAIVE, SEASONAL_NAIVE
from automl.tasks.final_train.ensemble import Selection
from automl.tasks.final_train.plan import DEFAULT_CONFIG, TUNED
from automl.tasks.tracking.catalog import (
    CONFUSION_MATRIX_PLOT,
    ENSEMBLE_PLOT,
    LEARNING_CURVES_PLOT,
    PER_CLASS_METRICS_FILE,
    PREDICTED_VS_ACTUAL_PLOT,
)
from automl.tasks.tracking.plotting import pyplot
from automl.tasks.tracking.runs import log_frame

MAX_CONFUSION_CLASSES = 30  # beyond this a confusion matrix is unreadable; per_class_metrics.csv says it all


def log_learning_curves(tuned: FitResult, default: FitResult | None) -> None:
    """Both final trainings' curves in one plot."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(tuned.train_loss, label="tuned: train")
    ax.plot(tuned.val_loss, label="tuned: validation")
    if default is not None:
        ax.plot(default.val_loss, label="default config: validation", linestyle="--")
    if tuned.start_val_loss is not None:
        ax.axhline(
            tuned.start_val_loss, color="grey", linestyle=":", linewidth=0.8, label="start: best trial's weights"
        )
    if tuned.best_epoch >= 0:
        ax.axvline(tuned.best_epoch, color="grey", linewidth=0.8, label=f"best epoch ({tuned.best_epoch + 1})")
    ax.set(xlabel="epoch", ylabel="loss", title="Learning curves (final training)")
    ax.set_yscale("log")
    ax.legend()
    figure.tight_layout()
    mlflow.log_figure(figure, LEARNING_CURVES_PLOT)
    plt.close(figure)


def log_ensemble_selection(selection: Selection, single_val_loss: float, single: str) -> None:
    """Validation loss of the ensemble against selection rounds, the single chosen model's as a line, and the
    prefix kept marked."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(7, 4))
    rounds = range(1, len(selection.losses) + 1)
    ax.plot(rounds, selection.losses, marker="o", markersize=3, label="ensemble")
    ax.axhline(single_val_loss, color="grey", linestyle="--", linewidth=0.8, label=f"single model ({single})")
    ax.axvline(selection.kept_rounds, color="grey", linewidth=0.8, label=f"kept: {selection.kept_rounds} picks")
    ax.set(xlabel="selection round", ylabel="validation loss", title="Ensemble selection (greedy, with replacement)")
    ax.legend()
    figure.tight_layout()
    mlflow.log_figure(figure, ENSEMBLE_PLOT)
    plt.close(figure)


def log_test_predictions(
    prepared: PreparedData, y_true: np.ndarray, predictions: dict[str, np.ndarray], chosen: str
) -> None:
    """The chosen model's test predictions against the actual values (and the naive and seasonal-naive forecasts',
    for a series)."""
    plt = pyplot()
    label = {TUNED: "tuned", DEFAULT_CONFIG: "default config"}.get(chosen, chosen)
    if prepared.task == "classification":
        log_classification_report(prepared, y_true, predictions[chosen], label)
        return
    if prepared.kind == "series":
        figure, ax = plt.subplots(figsize=(10, 4.5))
        x = np.arange(len(y_true))
        ax.plot(x, y_true[:, 0], label="actual", color="black")
        ax.plot(x, predictions[chosen][:, 0], label=label)
        if NAIVE in predictions:
            ax.plot(x, predictions[NAIVE][:, 0], label="naive (last value)", alpha=0.6)
        if SEASONAL_NAIVE in predictions:
            seasonal = f"seasonal naive (season {prepared.season})"
            ax.plot(x, predictions[SEASONAL_NAIVE][:, 0], label=seasonal, alpha=0.6)
        step = max(1, len(x) // 8)
        ax.set_xticks(x[::step], [t[:10] for t in prepared.test_index[::step]], rotation=30)
        ax.set(ylabel=prepared.target, title="Test set: predicted vs actual (first horizon step)")
        ax.legend()
    else:
        figure, ax = plt.subplots(figsize=(5.5, 5.5))
        ax.scatter(y_true[:, 0], predictions[chosen][:, 0], s=12, label=label)
        low, high = float(np.min(y_true)), float(np.max(y_true))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8)
        ax.set(xlabel=f"actual {prepared.target}", ylabel="predicted", title="Test set: predicted vs actual")
    figure.tight_layout()
    mlflow.log_figure(figure, PREDICTED_VS_ACTUAL_PLOT)
    plt.close(figure)


def log_classification_report(prepared: PreparedData, y_true: np.ndarray, proba: np.ndarray, label: str) -> None:
    """Per-class precision, recall, F1 and support (every class, also those absent from the test split or never
    predicted), and a confusion matrix over all classes when there are at most ``MAX_CONFUSION_CLASSES``."""
    plt = pyplot()
    from sklearn.metrics import ConfusionMatrixDisplay, classification_report

    names = [str(c) for c in prepared.classes or []]
    labels = list(range(len(names)))
    chosen = proba.argmax(axis=1)
    report = classification_report(y_true, chosen, labels=labels, target_names=names, output_dict=True, zero_division=0)
    per_class = pd.DataFrame([{"class": name, **report[name]} for name in names])
    log_frame(per_class, PER_CLASS_METRICS_FILE)
    if len(names) > MAX_CONFUSION_CLASSES:
        return
    display = ConfusionMatrixDisplay.from_predictions(
        y_true, chosen, labels=labels, display_labels=names, xticks_rotation=45 if len(names) > 8 else "horizontal"
    )
    display.ax_.set_title(f"Test set: {label} model")
    display.figure_.set_size_inches(max(5.5, 0.45 * len(names) + 2), max(5.5, 0.45 * len(names) + 2))
    display.figure_.tight_layout()
    mlflow.log_figure(display.figure_, CONFUSION_MATRIX_PLOT)
    plt.close(display.figure_)
