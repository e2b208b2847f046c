"""Final training and evaluation stage: train the best config further with the final budget and early stopping (as
its plan says), evaluate it on the test split in the target's original units next to its baselines (the default
config, trained the same way, and a naive predictor), keep whichever trained config validates better, log curves,
plots, the test predictions and the model (raw rows in: it carries data prep's fitted preprocessing), and register
it. Each step is a module of this package; this one runs them in order as a Prefect task.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import mlflow
from prefect import task

from models import FitResult
from tasks.data_prep.prepared import PreparedData
from tasks.data_prep.preprocessing import preprocessing_from_dict
from tasks.final_train.baselines import NAIVE, naive_predictions
from tasks.final_train.evaluation import raw_test_predictions, test_predictions, test_targets
from tasks.final_train.job import FinalTrainJob
from tasks.final_train.metrics import PRIMARY_METRIC, score
from tasks.final_train.plan import DEFAULT_CONFIG, TUNED
from tasks.final_train.plots import log_learning_curves, log_test_predictions
from tasks.final_train.registration import NonFiniteMetric, register
from tasks.final_train.result import FinalResult
from tasks.final_train.training import choose_model, start_weights, train_config
from tasks.registry.raw_model import log_raw_model
from tasks.runtime.caching import pipeline_stage_key
from tasks.tracking.catalog import (
    BASELINE_METRIC_PREFIX,
    CHOSEN_TAG,
    DEFAULT_VAL_LOSS_METRIC,
    EPOCHS_PARAM,
    EPOCHS_RUN_METRIC,
    INIT_PARAM,
    LOGGED_MODEL,
    PATIENCE_PARAM,
    START_VAL_LOSS_METRIC,
    TEST_METRIC_PREFIX,
    TEST_PREDICTIONS_FILE,
    TUNED_VAL_LOSS_METRIC,
    VAL_LOSS_METRIC,
)
from tasks.tracking.runs import PipelineRun, log_frame, quiet_mlflow_warnings, stage_run

logger = logging.getLogger("automl")


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
    plan = job.plan
    start_from = start_weights(job, best_weights)
    search_trained = not plan.trains_tuned  # PBT: the best member's weights, trained under its schedule, as they are
    tested_as_is = search_trained and start_from is not None
    with stage_run(pipeline, "final_train") as run:
        mlflow.log_params(
            {
                **best_params,
                EPOCHS_PARAM: 0 if tested_as_is else job.final.epochs,
                PATIENCE_PARAM: job.final.patience,
                INIT_PARAM: ("pbt_best_member" if search_trained else "best_trial") if start_from else "scratch",
            }
        )
        # The plan says what trains and its share of a budget: a best config that is the default config is trained
        # once and is its own baseline.
        trains_default = DEFAULT_CONFIG in plan.trainings(best_params)
        model, fitted = train_config(
            job,
            prepared,
            best_params,
            plan.training_seconds(TUNED, best_params, job.deadline),
            start_from,
            epochs=0 if tested_as_is else None,
        )
        if fitted.start_val_loss is not None:
            mlflow.log_metric(START_VAL_LOSS_METRIC, fitted.start_val_loss)
        _log_training(fitted, start_from is not None, tested_as_is)
        y_true = test_targets(prepared)
        predictions = {TUNED: test_predictions(model, prepared)}
        default_model, default_fit = None, None
        if trains_default:  # the family's default config, with the same budget and early stopping
            seconds = plan.training_seconds(DEFAULT_CONFIG, best_params, job.deadline)
            default_model, default_fit = train_config(job, prepared, {}, seconds)
            predictions[DEFAULT_CONFIG] = test_predictions(default_model, prepared)
        elif plan.default_baseline:
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
        log_learning_curves(tuned_fit, default_fit, chosen)
        log_test_predictions(prepared, y_true, predictions, chosen)
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
        params={**plan.default_config, **(best_params if chosen == TUNED else {})},
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


def _log_training(fitted: FitResult, from_weights: bool, tested_as_is: bool) -> None:
    """A line saying how the tuned config's final training went."""
    if tested_as_is:
        logger.info(
            "final training: none; the best PBT member's weights (val_loss %.5g), trained under its schedule, "
            "are the tuned model",
            fitted.best_val_loss,
        )
        return
    logger.info(
        "final training: %s, %d epochs (best %s, val_loss %.5g)%s",
        f"from the best trial's weights (val_loss {fitted.start_val_loss:.5g})" if from_weights else "from scratch",
        len(fitted.val_loss),
        fitted.best_epoch + 1 if fitted.best_epoch >= 0 else "its starting weights",
        fitted.best_val_loss,
        ", stopped early" if fitted.stopped_early else ", stopped by the budget" if fitted.out_of_time else "",
    )
