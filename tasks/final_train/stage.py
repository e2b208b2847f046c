"""Final training and evaluation stage: retrain the best config with the final budget and early stopping,
evaluate on the test split in the target's original units next to two baselines (the family's default config
with the same budget, and a naive predictor), log curves, plots, the test predictions and the model (raw rows
in: it carries data prep's fitted preprocessing), and register it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect import task

from configs import FinalConfig, ModelConfig, PipelineConfig, RegistryConfig, TrainingConfig
from models import FitResult, ModelShape, TrainSettings, build_model, fit, get_family, loss_for, pick_device, predict
from tasks.data_prep.prepared import PreparedData
from tasks.data_prep.preprocessing import Preprocessing, preprocessing_from_dict
from tasks.registry.champion import current_champion, move_champion, version_metrics
from tasks.registry.raw_model import PROBA_PREFIX, log_raw_model, predict_raw
from tasks.runtime.budget import FINAL_OVERHEAD_SECONDS
from tasks.runtime.caching import pipeline_stage_key
from tasks.summary import RegisteredVersion
from tasks.tracking.catalog import (
    BASELINE_METRIC_PREFIX,
    CHAMPION_TAG,
    CHOSEN_TAG,
    DEFAULT_VAL_LOSS_METRIC,
    EPOCH_TRAIN_LOSS_METRIC,
    EPOCH_VAL_LOSS_METRIC,
    EPOCHS_PARAM,
    EPOCHS_RUN_METRIC,
    FINGERPRINT,
    INIT_PARAM,
    LEARNING_CURVES_PLOT,
    LOGGED_MODEL,
    PATIENCE_PARAM,
    PER_CLASS_METRICS_FILE,
    PIPELINE_RUN_TAG,
    PREDICTED_VS_ACTUAL_PLOT,
    PRIMARY_METRIC_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    START_VAL_LOSS_METRIC,
    TEST_METRIC_PREFIX,
    TEST_PREDICTIONS_FILE,
    TUNED_VAL_LOSS_METRIC,
    VAL_LOSS_METRIC,
)
from tasks.tracking.plotting import pyplot
from tasks.tracking.runs import PipelineRun, log_frame, quiet_mlflow_warnings, stage_run

logger = logging.getLogger("automl")
MAX_CONFUSION_CLASSES = 30  # beyond this a confusion matrix is unreadable; per_class_metrics.csv says it all
# The test metric that decides champions, and whether lower is better.
PRIMARY_METRIC = {"regression": ("rmse", True), "classification": ("f1_macro", False)}
DEFAULT_CONFIG, NAIVE = "default_config", "naive"  # the baselines (final.baselines)
TUNED = "tuned"  # the search's best config, trained on


class NonFiniteMetric(RuntimeError):
    """The tuned model's test metric is NaN or infinite: nothing is registered."""


@dataclass
class FinalResult:
    """Test metrics of the tuned model and its baselines, and where the model went."""

    params: dict[str, Any]  # those of the chosen model
    chosen: str  # tuned, or default_config when the default config's validation loss was lower
    chosen_note: str
    test_metrics: dict[str, float]  # the chosen model's
    baseline_metrics: dict[str, dict[str, float]]
    primary_metric: str
    model_uri: str
    registered_model: RegisteredVersion | None
    champion: bool
    champion_note: str
    epochs_run: int
    best_epoch: int
    val_loss: float
    run_id: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class FinalTrainJob:
    """The parts of the config the final training stage uses; ``model_name`` is the registered model's name;
    ``deadline`` (``time.time()``) is when the run's budget ends, if it has one."""

    final: FinalConfig
    model: ModelConfig
    training: TrainingConfig
    registry: RegistryConfig
    seed: int
    model_name: str
    deadline: float | None = None
    # search.strategy pbt: the best member's weights, trained under its schedule, are the tuned model as they are
    search_trained: bool = False

    @classmethod
    def of(cls, cfg: PipelineConfig, deadline: float | None = None) -> FinalTrainJob:
        name = cfg.registry.model_name or cfg.name
        trained = cfg.search.strategy == "pbt"
        return cls(cfg.final, cfg.model, cfg.training, cfg.registry, cfg.seed, name, deadline, trained)

    def training_seconds(self, share: float) -> float | None:
        """Seconds a training may take, ``share`` of what the budget leaves besides the stage's overhead."""
        if self.deadline is None:
            return None
        return max(0.0, share * (self.deadline - time.time() - FINAL_OVERHEAD_SECONDS))


def train_config(
    job: FinalTrainJob,
    prepared: PreparedData,
    params: dict[str, Any],
    stop_after: float | None = None,
    start_from: Path | None = None,
    epochs: int | None = None,
) -> tuple[torch.nn.Module, FitResult]:
    """Train ``params`` (merged over the family's defaults) with the final budget and early stopping, ending after
    ``stop_after`` seconds if given (keeping the best epoch). With ``start_from`` (weights the search kept for this
    config), training continues from them, and they stand unless an epoch beats them on validation. ``epochs`` 0
    validates ``start_from`` without training."""
    full = {**job.model.default_config(), **params}
    shape = ModelShape(prepared.n_features, prepared.n_outputs, prepared.lookback)
    model = build_model(get_family(job.model.family), shape, full, job.seed)
    if start_from is not None:
        model.load_state_dict(torch.load(start_from, map_location="cpu", weights_only=True))
    settings = TrainSettings(
        epochs=job.final.epochs if epochs is None else epochs,
        lr=float(full["lr"]),
        batch_size=int(full["batch_size"]),
        weight_decay=float(full.get("weight_decay", 0.0)),
        loss=loss_for(prepared.task, job.training.loss),
        optimizer=job.training.optimizer,
        grad_clip=job.training.grad_clip,
        patience=job.final.patience,
        stop_after=stop_after,
        seed=job.seed,
    )
    result = fit(
        model,
        (prepared.train.X, prepared.train.y),
        (prepared.val.X, prepared.val.y),
        settings,
        pick_device(job.training.device),
        validate_first=start_from is not None,
    )
    return result.model, result


def _start_from(job: FinalTrainJob, best_weights: str | None) -> Path | None:
    if job.final.init == "scratch" and not job.search_trained:
        return None
    if best_weights is None or not Path(best_weights).is_file():
        logger.info(
            "final training: the search kept no weights of the best config here (%s); training it from scratch",
            "the best PBT member's are missing"
            if job.search_trained
            else "none are kept under search.cv, whose fold models each trained on other rows",
        )
        return None
    return Path(best_weights)


def choose_model(tuned: FitResult, default: FitResult | None) -> tuple[str, str]:
    """Which of the two trained models goes on, on validation loss alone (the test split decides nothing): the
    tuned config, unless the default config, trained with the same budget and early stopping, did better (under a
    tight budget the tuned config may have had one epoch). Returns the choice and a line saying why."""
    if default is None:
        return TUNED, "the tuned config goes on (no default-config baseline trained)"
    if default.best_val_loss < tuned.best_val_loss or (
        math.isfinite(default.best_val_loss) and not math.isfinite(tuned.best_val_loss)
    ):
        return DEFAULT_CONFIG, (
            f"the default config goes on: its validation loss {default.best_val_loss:.5g} beat the tuned config's "
            f"{tuned.best_val_loss:.5g}"
        )
    return TUNED, (
        f"the tuned config goes on: validation loss {tuned.best_val_loss:.5g} against the default config's "
        f"{default.best_val_loss:.5g}"
    )


def test_predictions(model: torch.nn.Module, prepared: PreparedData) -> np.ndarray:
    """Test predictions in the target's original units (regression) or class probabilities (classification)."""
    raw = predict(model, prepared.test.X)
    if prepared.task == "classification":
        return torch.softmax(torch.as_tensor(raw), dim=1).numpy()
    return prepared.to_original_units(raw)


def naive_predictions(prepared: PreparedData) -> np.ndarray:
    """Series: the last observed value for every horizon step; tabular: the train mean or class frequencies."""
    n = len(prepared.test)
    if prepared.kind == "series":
        last = prepared.test.X[:, -1, 0:1]  # the target is the first input column
        return prepared.to_original_units(np.repeat(last, prepared.n_outputs, axis=1))
    if prepared.task == "classification":
        counts = np.bincount(prepared.train.y, minlength=prepared.n_outputs).astype(float)
        return np.tile(counts / counts.sum(), (n, 1))
    return np.full((n, 1), prepared.to_original_units(prepared.train.y).mean())


def test_targets(prepared: PreparedData) -> np.ndarray:
    if prepared.task == "classification":
        return prepared.test.y
    return prepared.to_original_units(prepared.test.y)


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


def beats(task_type: str, new: dict[str, float], old: dict[str, float]) -> bool:
    name, lower_is_better = PRIMARY_METRIC[task_type]
    if name not in old:
        return True
    return new[name] < old[name] if lower_is_better else new[name] > old[name]


@task(name="final_train", cache_key_fn=pipeline_stage_key, persist_result=True)
def final_train(
    job: FinalTrainJob,
    prepared: PreparedData,
    best_params: dict[str, Any],
    best_weights: str | None,
    pipeline: PipelineRun,
) -> FinalResult:
    """Prefect stage: train the best config further (from the weights its search evaluation kept, unless
    ``final.init`` is scratch or there are none), evaluate against the baselines, log plots and the model,
    register it."""
    start_from = _start_from(job, best_weights)
    with stage_run(pipeline, "final_train") as run:
        mlflow.log_params(
            {
                **best_params,
                EPOCHS_PARAM: 0 if job.search_trained and start_from else job.final.epochs,
                PATIENCE_PARAM: job.final.patience,
                INIT_PARAM: ("pbt_best_member" if job.search_trained else "best_trial") if start_from else "scratch",
            }
        )
        # With a budget, the tuned model may take half of what is left; the default-config baseline gets the rest.
        # When the search's best is the default config itself, it is trained once and is its own baseline.
        default_params = job.model.default_config()
        is_default = {**default_params, **best_params} == default_params
        trains_default = DEFAULT_CONFIG in job.final.baselines and not is_default
        tested_as_is = job.search_trained and start_from is not None
        model, fitted = train_config(
            job,
            prepared,
            best_params,
            job.training_seconds(0.5 if trains_default else 1.0),
            start_from,
            epochs=0 if tested_as_is else None,
        )
        if fitted.start_val_loss is not None:
            mlflow.log_metric(START_VAL_LOSS_METRIC, fitted.start_val_loss)
        if tested_as_is:
            logger.info(
                "final training: none; the best PBT member's weights (val_loss %.5g), trained under its schedule, "
                "are the tuned model",
                fitted.best_val_loss,
            )
        else:
            logger.info(
                "final training: %s, %d epochs (best %s, val_loss %.5g)%s",
                f"from the best trial's weights (val_loss {fitted.start_val_loss:.5g})"
                if start_from
                else "from scratch",
                len(fitted.val_loss),
                fitted.best_epoch + 1 if fitted.best_epoch >= 0 else "its starting weights",
                fitted.best_val_loss,
                ", stopped early" if fitted.stopped_early else ", stopped by the budget" if fitted.out_of_time else "",
            )
        y_true = test_targets(prepared)
        predictions = {TUNED: test_predictions(model, prepared)}
        default_model, default_fit = None, None
        if trains_default:  # the family's default config, with the same budget and early stopping
            default_model, default_fit = train_config(job, prepared, {}, job.training_seconds(1.0))
            predictions[DEFAULT_CONFIG] = test_predictions(default_model, prepared)
        elif DEFAULT_CONFIG in job.final.baselines:
            logger.info("final training: the tuned config is the default config; it is its own baseline")
            predictions[DEFAULT_CONFIG] = predictions[TUNED]
        if NAIVE in job.final.baselines:
            predictions[NAIVE] = naive_predictions(prepared)
        scores = {name: score(prepared.task, y_true, pred) for name, pred in predictions.items()}
        chosen, note = choose_model(fitted, default_fit)
        tuned_fit = fitted
        if chosen == DEFAULT_CONFIG:
            model, fitted = default_model, default_fit
        logger.info("final training: %s", note)
        mlflow.set_tag(CHOSEN_TAG, chosen)  # a tag: a resumed stage run may choose again
        mlflow.log_metrics({f"{TEST_METRIC_PREFIX}{k}": v for k, v in scores[chosen].items()})
        for baseline in job.final.baselines:
            mlflow.log_metrics({f"{BASELINE_METRIC_PREFIX}{baseline}_{k}": v for k, v in scores[baseline].items()})
        mlflow.log_metrics(
            {
                VAL_LOSS_METRIC: fitted.best_val_loss,
                EPOCHS_RUN_METRIC: len(fitted.val_loss),
                TUNED_VAL_LOSS_METRIC: tuned_fit.best_val_loss,
                **({DEFAULT_VAL_LOSS_METRIC: default_fit.best_val_loss} if default_fit is not None else {}),
            }
        )
        primary, _ = PRIMARY_METRIC[prepared.task]
        if not math.isfinite(scores[chosen][primary]):
            raise NonFiniteMetric(
                f"test {primary} of the {'tuned' if chosen == TUNED else 'default-config'} model is "
                f"{scores[chosen][primary]}; a model whose test metric is not finite is neither registered nor made "
                "champion"
            )
        _log_curves(tuned_fit, default_fit, chosen)
        _log_predictions(prepared, y_true, predictions, chosen)
        pre = preprocessing_from_dict(prepared.preprocessing)
        log_frame(raw_test_predictions(model, pre, prepared, predictions[chosen]), TEST_PREDICTIONS_FILE)
        with quiet_mlflow_warnings():
            model_info = log_raw_model(model, pre, prepared.raw_test_input, name=LOGGED_MODEL)
        registered, model_uri, champion, champion_note = None, model_info.model_uri, False, "registry disabled"
        if job.registry.enabled:
            registered, model_uri, champion, champion_note = register(
                model_info.model_uri, job.model_name, prepared, scores[chosen], pipeline
            )
        logger.info(
            "test %s: %s",
            primary,
            " | ".join(f"{name.replace('_', ' ')} {value[primary]:.5g}" for name, value in scores.items()),
        )
    return FinalResult(
        params={**default_params, **(best_params if chosen == TUNED else {})},
        chosen=chosen,
        chosen_note=note,
        test_metrics=scores[chosen],
        baseline_metrics={name: scores[name] for name in job.final.baselines},
        primary_metric=primary,
        model_uri=model_uri,
        registered_model=registered,
        champion=champion,
        champion_note=champion_note,
        epochs_run=len(fitted.val_loss),
        best_epoch=fitted.best_epoch,
        val_loss=fitted.best_val_loss,
        run_id=run.info.run_id,
        curves={"train_loss": fitted.train_loss, "val_loss": fitted.val_loss},
    )


def raw_test_predictions(
    model: torch.nn.Module, pre: Preprocessing, prepared: PreparedData, expected: np.ndarray
) -> pd.DataFrame:
    """The test predictions as the registered model gives them from the raw test rows, with the actual values.

    They must equal the ones the test metrics were computed from (``expected``): the raw model applies the same
    fitted preprocessing to the same rows. A difference is a bug in the preprocessing, so it fails the stage.
    """
    frame = predict_raw(model, pre, prepared.raw_test_input, rolling=prepared.kind == "series")
    if prepared.task == "classification":
        got = frame[[f"{PROBA_PREFIX}{c}" for c in prepared.classes or []]].to_numpy()
        frame["actual"] = [(prepared.classes or [])[i] for i in prepared.test.y]
    else:
        got = frame["prediction"].to_numpy()
        if prepared.kind == "tabular":
            frame["actual"] = prepared.to_original_units(prepared.test.y)[:, 0]
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size else 1.0)
    if got.size != expected.size or not np.allclose(
        got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-6 * scale, equal_nan=True
    ):
        raise RuntimeError("the raw-data model does not reproduce the test predictions; not registering it")
    return frame


def register(
    model_uri: str, name: str, prepared: PreparedData, metrics: dict[str, float], pipeline: PipelineRun
) -> tuple[RegisteredVersion, str, bool, str]:
    """Register the model; move the ``champion`` alias to it when it beats the champion on the same data. Returns
    the version, its source (the model's URI), whether it is champion, and why."""
    client = MlflowClient()
    version = _registered_by(client, name, pipeline.run_id) or mlflow.register_model(
        model_uri, name, tags={PIPELINE_RUN_TAG: pipeline.run_id}
    )
    primary, _ = PRIMARY_METRIC[prepared.task]
    tags = {
        FINGERPRINT: prepared.fingerprint,
        PRIMARY_METRIC_TAG: primary,
        **{f"{TEST_METRIC_PREFIX}{k}": v for k, v in metrics.items()},
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, str(value))
    current = current_champion(client, name)
    moved = False  # this version may be champion already (a rerun after a kill): no second move then
    if current is None:
        champion, note = True, "first version of this model: champion"
    elif str(current.version) == str(version.version):
        champion, note, moved = True, "champion already (moved before the run was interrupted)", True
    elif current.tags.get(FINGERPRINT) != prepared.fingerprint:
        champion, note = False, f"champion v{current.version} was trained on other data; not compared"
    else:
        old = version_metrics(current)
        champion = beats(prepared.task, metrics, old)
        verb = "beats" if champion else "does not beat"
        theirs = old.get(primary, float("nan"))
        note = f"{verb} champion v{current.version} on test {primary} ({metrics[primary]:.5g} vs {theirs:.5g})"
    if champion and not moved:
        move_champion(client, name, version.version, by=f"pipeline run {pipeline.run_id}", note=note)
    mlflow.set_tags({REGISTERED_MODEL_TAG: name, REGISTERED_VERSION_TAG: version.version, CHAMPION_TAG: str(champion)})
    logger.info("registry: %s version %s; %s", name, version.version, note)
    return RegisteredVersion(name, int(version.version)), version.source, champion, note


def _registered_by(client: MlflowClient, name: str, pipeline_run_id: str):
    """The version this pipeline run registered already (a rerun after a kill between registering and the end
    of the stage): reused, so a resumed run never adds a second version. Training is seeded, so its weights are
    the ones the rerun trained again."""
    try:
        versions = client.search_model_versions(f"name = '{name}'", max_results=10_000)
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(PIPELINE_RUN_TAG) == pipeline_run_id), None)


def _log_curves(tuned: FitResult, default: FitResult | None, chosen: str) -> None:
    """Both final trainings' curves in one plot; the per-epoch metrics are the chosen model's."""
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
    went_on = default if chosen == DEFAULT_CONFIG and default is not None else tuned
    for epoch, (train_loss, val_loss) in enumerate(zip(went_on.train_loss, went_on.val_loss, strict=True)):
        mlflow.log_metrics({EPOCH_TRAIN_LOSS_METRIC: train_loss, EPOCH_VAL_LOSS_METRIC: val_loss}, step=epoch)


def _log_predictions(
    prepared: PreparedData, y_true: np.ndarray, predictions: dict[str, np.ndarray], chosen: str
) -> None:
    """The chosen model's test predictions against the actual values (and the naive forecast's, for a series)."""
    plt = pyplot()
    label = "tuned" if chosen == TUNED else "default config"
    if prepared.task == "classification":
        _log_classification(prepared, y_true, predictions[chosen], label)
        return
    if prepared.kind == "series":
        figure, ax = plt.subplots(figsize=(10, 4.5))
        x = np.arange(len(y_true))
        ax.plot(x, y_true[:, 0], label="actual", color="black")
        ax.plot(x, predictions[chosen][:, 0], label=label)
        if NAIVE in predictions:
            ax.plot(x, predictions[NAIVE][:, 0], label="naive (last value)", alpha=0.6)
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


def _log_classification(prepared: PreparedData, y_true: np.ndarray, proba: np.ndarray, label: str) -> None:
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
    mlflow.log_figure(display.figure_, PREDICTED_VS_ACTUAL_PLOT)
    plt.close(display.figure_)
