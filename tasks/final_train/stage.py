"""Final training and evaluation stage: train the best config further with the final budget and early stopping (as
its plan says), and the search's next best configs and the default config the same way; keep the single model that
validates better (the tuned or the default config), or the ensemble of them that greedy selection finds when it
validates better still; evaluate it on the test split in the target's original units next to its baselines (the
default config and the naive forecasts); log curves, plots, the test predictions and the model (raw rows in: it
carries data prep's fitted preprocessing); refit it on every row when asked; register it. Each step is a module of
this package; this one runs them in order as a Prefect task.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from prefect import task

from automl.models import AUTO, FitResult, loss_for
from automl.models.ensemble import Ensemble
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.data_prep.preprocessing import preprocessing_from_dict
from automl.tasks.final_train.baselines import baseline_predictions
from automl.tasks.final_train.ensemble import Selection, keep_ensemble, select_ensemble
from automl.tasks.final_train.evaluation import (
    mixture_loss,
    raw_test_predictions,
    test_predictions,
    test_targets,
    validation_outputs,
)
from automl.tasks.final_train.job import FinalTrainJob
from automl.tasks.final_train.metrics import PRIMARY_METRIC, score
from automl.tasks.final_train.plan import DEFAULT_CONFIG, GBM, TUNED, Candidate
from automl.tasks.final_train.plots import log_ensemble_selection, log_learning_curves, log_test_predictions
from automl.tasks.final_train.refit import RefitResult, refit
from automl.tasks.final_train.registration import NonFiniteMetric, register
from automl.tasks.final_train.result import ENSEMBLE, FinalResult
from automl.tasks.final_train.runs import StageTrainer, Trained
from automl.tasks.final_train.training import choose_model, start_weights
from automl.tasks.registry.raw_model import log_raw_model
from automl.tasks.runtime.caching import pipeline_stage_key
from automl.tasks.runtime.interrupts import deferred_stop
from automl.tasks.summary import EnsembleSummary, RefitSummary, training_label
from automl.tasks.tracking.catalog import (
    BASELINE_METRIC_PREFIX,
    CHOSEN_TAG,
    DEFAULT_VAL_LOSS_METRIC,
    ENSEMBLE_FILE,
    ENSEMBLE_ROUNDS_PARAM,
    ENSEMBLE_TOP_K_PARAM,
    ENSEMBLE_VAL_LOSS_METRIC,
    EPOCHS_PARAM,
    EPOCHS_RUN_METRIC,
    GBM_BEATS_MODEL_TAG,
    INIT_PARAM,
    LOGGED_MODEL,
    PATIENCE_PARAM,
    REFIT_EPOCHS_TAG,
    REFIT_MODEL,
    REFIT_ROWS_TAG,
    REFIT_TAG,
    SINGLE_METRIC_PREFIX,
    SINGLE_VAL_LOSS_METRIC,
    START_VAL_LOSS_METRIC,
    TEST_METRIC_PREFIX,
    TEST_PREDICTIONS_FILE,
    TUNED_VAL_LOSS_METRIC,
    VAL_LOSS_METRIC,
)
from automl.tasks.tracking.runs import PipelineRun, log_frame, quiet_mlflow_warnings, stage_run

logger = logging.getLogger("automl")

MEMBER_PREFIX = "member_"  # an ensemble candidate's training: member_<its trial number>


@dataclass
class _Trainings:
    """What the stage trained on the split: the tuned config, the other candidates, the default config."""

    tuned: Trained
    members: list[Trained]
    default: Trained | None
    gbm: Trained | None = None  # the default-LightGBM baseline: tested beside the model, never part of it

    def pool(self) -> list[Trained]:
        """The ensemble's candidates: every training whose validation loss is finite."""
        every = (self.tuned, *self.members, *([self.default] if self.default else []))
        return [t for t in every if math.isfinite(t.fit.best_val_loss)]


@dataclass
class _Choice:
    """What goes on: ``chosen`` (tuned, default_config or ensemble) and why, the single model (tuned or default
    config) and the selection it was compared with, the module to test and register and its trainings."""

    chosen: str
    note: str
    single: Trained
    ensemble: EnsembleSummary | None
    model: torch.nn.Module
    members: list[Trained]


@task(name="final_train", cache_key_fn=pipeline_stage_key, persist_result=True)
def final_train(
    job: FinalTrainJob,
    prepared: PreparedData,
    best_params: dict[str, Any],
    best_weights: str | None,
    pipeline: PipelineRun,
    candidates: list[Candidate] | None = None,
) -> FinalResult:
    """Prefect stage: train the best config further (from the weights its search evaluation kept, unless
    ``final.init`` is scratch or there are none), and the search's next best ``candidates`` (``final.ensemble``) and
    the default config beside it; keep the best single model or their ensemble on validation loss; evaluate against
    the baselines, log plots and the model, refit it on every row (``final.refit: all``), register it."""
    plan = job.plan
    start_from = start_weights(job, best_weights)
    tested_as_is = not plan.trains_tuned and start_from is not None  # PBT: its best member's weights as they are
    with stage_run(pipeline, "final_train") as run:
        _log_settings(job, best_params, start_from, tested_as_is)
        split_end, refit_end = plan.ends(job.deadline, best_params)
        trainer = StageTrainer(job, prepared, pipeline.experiment_id, run.info.run_id)
        trained = _train(trainer, best_params, start_from, tested_as_is, candidates or [], split_end)
        choice = _choose(job, prepared, trained)
        _compare_with_gbm(trained, choice)
        y_true = test_targets(prepared)
        predictions = _test_predictions(job, prepared, trained, choice)
        scores = {name: score(prepared.task, y_true, pred) for name, pred in predictions.items()}
        primary = _log_scores(job, prepared, trained, choice, scores)
        log_learning_curves(trained.tuned.fit, trained.default.fit if trained.default else None)
        log_test_predictions(prepared, y_true, predictions, choice.chosen)
        pre = preprocessing_from_dict(prepared.preprocessing)
        test_rows = raw_test_predictions(choice.model, pre, prepared, predictions[choice.chosen])
        log_frame(test_rows, TEST_PREDICTIONS_FILE)
        with quiet_mlflow_warnings():
            registered_uri = log_raw_model(choice.model, pre, prepared.raw_test_input, name=LOGGED_MODEL).model_uri
        refitted = None
        if job.final.refit == "all":
            refitted = _refit(job, prepared, trainer, choice, refit_end)
            with quiet_mlflow_warnings():
                refit_pre = preprocessing_from_dict(prepared.refit.preprocessing)
                registered_uri = log_raw_model(
                    refitted.model, refit_pre, prepared.raw_test_input, name=REFIT_MODEL
                ).model_uri
        refit_tags = _refit_tags(refitted)
        mlflow.set_tags({k: v for k, v in refit_tags.items() if k != REFIT_TAG})
        registered, model_uri, champion_note, promotion = None, registered_uri, "registry disabled", None
        if job.registry.enabled:
            with deferred_stop():  # seconds of registry writes: a stop lands after them, never inside one
                registered, model_uri, champion_note, promotion = register(
                    registered_uri,
                    job.model_name,
                    prepared,
                    scores[choice.chosen],
                    pipeline,
                    test_rows,
                    job.registry.promote,
                    tags=refit_tags,
                )
        logger.info(
            "test %s: %s",
            primary,
            " | ".join(f"{name.replace('_', ' ')} {value[primary]:.5g}" for name, value in scores.items()),
        )
    fitted = choice.single.fit
    return FinalResult(
        params=_delivered_params(job, choice.single),
        chosen=choice.chosen,
        chosen_note=choice.note,
        test_metrics=scores[choice.chosen],
        baseline_metrics={name: scores[name] for name in job.final.baselines},
        primary_metric=primary,
        model_uri=model_uri,
        registered_model=registered,
        champion=promotion is not None and promotion.promoted,
        champion_note=champion_note,
        promotion=promotion,
        epochs_run=len(fitted.val_loss),
        best_epoch=fitted.best_epoch,
        val_loss=_registered_val_loss(choice),
        run_id=run.info.run_id,
        curves={"train_loss": fitted.train_loss, "val_loss": fitted.val_loss},
        single=choice.single.name,
        ensemble=choice.ensemble,
        refit=RefitSummary(refitted.rows, refitted.epochs) if refitted is not None else None,
    )


def _delivered_params(job: FinalTrainJob, single: Trained) -> dict[str, Any]:
    """The whole config of the single model that went on: its params over the default config; under
    ``model.family: auto`` its own config (its family's; the default config's when it is the default config)."""
    if job.model.family == AUTO:
        return dict(single.params or job.plan.default_config)
    return {**job.plan.default_config, **single.params}


def _log_settings(job: FinalTrainJob, best_params: dict[str, Any], start_from: Path | None, tested_as_is: bool):
    """The stage run's params: the best config, the final training's settings, the ensemble's and the refit's."""
    search_trained = not job.plan.trains_tuned
    mlflow.log_params(
        {
            **best_params,
            EPOCHS_PARAM: 0 if tested_as_is else job.final.epochs,
            PATIENCE_PARAM: job.final.patience,
            INIT_PARAM: ("pbt_best_member" if search_trained else "best_trial") if start_from else "scratch",
            ENSEMBLE_TOP_K_PARAM: job.final.ensemble.top_k,
            ENSEMBLE_ROUNDS_PARAM: job.final.ensemble.rounds,
        }
    )
    mlflow.set_tag(REFIT_TAG, job.final.refit)


def _train(
    trainer: StageTrainer,
    best_params: dict[str, Any],
    start_from: Path | None,
    tested_as_is: bool,
    candidates: list[Candidate],
    split_end: float | None,
) -> _Trainings:
    """The tuned config, the search's next best configs, the default config, each an equal share of the split's time
    left as it starts. The plan says what trains: a best config (or a candidate) that is the default config is
    trained once and is its own baseline."""
    job, plan = trainer.job, trainer.job.plan
    trains_default = DEFAULT_CONFIG in plan.trainings(best_params)
    others = [c for c in candidates[1:] if not (trains_default and plan.is_default(c.params))][: plan.members]
    left = 1 + len(others) + int(trains_default) + int(plan.gbm_baseline)
    seconds = plan.training_seconds(left, split_end)
    tuned = trainer.train(TUNED, best_params, start_from, seconds, epochs=0 if tested_as_is else None)
    if tuned.fit.start_val_loss is not None:
        mlflow.log_metric(START_VAL_LOSS_METRIC, tuned.fit.start_val_loss)
    _log_training(tuned.fit, start_from is not None, tested_as_is)
    members = []
    for i, candidate in enumerate(others):
        kept = candidate.weights and job.final.init != "scratch" and Path(candidate.weights).is_file()
        seconds = plan.training_seconds(left - 1 - i, split_end)
        name = f"{MEMBER_PREFIX}{candidate.trial}"
        members.append(trainer.train(name, candidate.params, Path(candidate.weights) if kept else None, seconds))
    seconds = plan.training_seconds(1 + int(plan.gbm_baseline), split_end)
    default = trainer.train(DEFAULT_CONFIG, {}, None, seconds) if trains_default else None
    gbm = trainer.train(GBM, {}, None, plan.training_seconds(1, split_end), family=GBM) if plan.gbm_baseline else None
    return _Trainings(tuned, members, default, gbm)


def _choose(job: FinalTrainJob, prepared: PreparedData, trained: _Trainings) -> _Choice:
    """The single model (the tuned or the default config, on validation loss), then the ensemble of the pool when it
    validates better still (not under PBT, whose best member is tested as it is)."""
    default_fit = trained.default.fit if trained.default is not None else None
    chosen, note = choose_model(trained.tuned.fit, default_fit)
    single = trained.default if chosen == DEFAULT_CONFIG and trained.default is not None else trained.tuned
    logger.info("final training: %s", note)
    pool = trained.pool()
    tries = job.plan.trains_tuned and job.final.ensemble.top_k > 1 and len(pool) > 1
    ensemble = _select(job, prepared, pool, single) if tries else None
    if ensemble is None or not ensemble.kept:
        return _Choice(chosen, note, single, ensemble, single.model, [single])
    by_name = {t.name: t for t in pool}
    members = [by_name[name] for name in ensemble.weights]
    module = Ensemble(
        [t.model.cpu() for t in members], list(ensemble.weights.values()), prepared.task == "classification"
    )
    note = (
        f"the ensemble of {len(members)} goes on: validation loss {ensemble.val_loss:.5g} against the single "
        f"{training_label(single.name)}'s {ensemble.single_val_loss:.5g}"
    )
    logger.info("final training: %s", note)
    return _Choice(ENSEMBLE, note, single, ensemble, module, members)


def _compare_with_gbm(trained: _Trainings, choice: _Choice) -> None:
    """Say so (a line and a tag) when the default LightGBM validated better than the model that goes on: a baseline
    is never registered, but a user should know the network was not worth it here."""
    if trained.gbm is None:
        return
    model_loss, gbm_loss = _registered_val_loss(choice), trained.gbm.fit.best_val_loss
    better = math.isfinite(gbm_loss) and not gbm_loss >= model_loss
    mlflow.set_tag(GBM_BEATS_MODEL_TAG, str(better).lower())
    if better:
        logger.warning(
            "final training: the default LightGBM validated better (%.5g) than the %s model (%.5g); "
            "consider model.family: gbm",
            gbm_loss,
            training_label(choice.chosen),
            model_loss,
        )


def _test_predictions(
    job: FinalTrainJob, prepared: PreparedData, trained: _Trainings, choice: _Choice
) -> dict[str, np.ndarray]:
    """Test predictions of the tuned and default configs, the naive baselines and the ensemble when it went on."""
    predictions = {TUNED: test_predictions(trained.tuned.model, prepared)}
    if trained.default is not None:
        predictions[DEFAULT_CONFIG] = test_predictions(trained.default.model, prepared)
    elif job.plan.default_baseline:
        logger.info("final training: the tuned config is the default config; it is its own baseline")
        predictions[DEFAULT_CONFIG] = predictions[TUNED]
    if trained.gbm is not None:
        predictions[GBM] = test_predictions(trained.gbm.model, prepared)
    predictions.update(baseline_predictions(prepared, job.final.baselines))
    if choice.chosen == ENSEMBLE:
        predictions[ENSEMBLE] = test_predictions(choice.model, prepared)
    return predictions


def _log_scores(
    job: FinalTrainJob,
    prepared: PreparedData,
    trained: _Trainings,
    choice: _Choice,
    scores: dict[str, dict[str, float]],
) -> str:
    """Log what went on, its test metrics, the baselines' and the validation losses; refuse a model whose test metric
    is not finite. Returns the primary metric's name."""
    ensemble, single = choice.ensemble, choice.single
    if ensemble is not None:
        ensemble.single_test_metrics.update(scores[single.name])
    mlflow.set_tag(CHOSEN_TAG, choice.chosen)  # a tag: a resumed stage run may choose again
    mlflow.log_metrics({f"{TEST_METRIC_PREFIX}{k}": v for k, v in scores[choice.chosen].items()})
    for baseline in job.final.baselines:
        mlflow.log_metrics({f"{BASELINE_METRIC_PREFIX}{baseline}_{k}": v for k, v in scores[baseline].items()})
    mlflow.log_metrics(
        {
            VAL_LOSS_METRIC: _registered_val_loss(choice),
            EPOCHS_RUN_METRIC: len(single.fit.val_loss),
            TUNED_VAL_LOSS_METRIC: trained.tuned.fit.best_val_loss,
            **({DEFAULT_VAL_LOSS_METRIC: trained.default.fit.best_val_loss} if trained.default is not None else {}),
            **(
                {
                    ENSEMBLE_VAL_LOSS_METRIC: ensemble.val_loss,
                    SINGLE_VAL_LOSS_METRIC: ensemble.single_val_loss,
                    **{f"{SINGLE_METRIC_PREFIX}{k}": v for k, v in scores[single.name].items()},
                }
                if ensemble is not None
                else {}
            ),
        }
    )
    primary, _ = PRIMARY_METRIC[prepared.task]
    value = scores[choice.chosen][primary]
    if not math.isfinite(value):
        raise NonFiniteMetric(
            f"test {primary} of the {training_label(choice.chosen)} model is {value}; a model whose test metric is "
            "not finite is neither registered nor made champion"
        )
    return primary


def _registered_val_loss(choice: _Choice) -> float:
    if choice.chosen == ENSEMBLE and choice.ensemble is not None:
        return choice.ensemble.val_loss
    return choice.single.fit.best_val_loss


def _refit(
    job: FinalTrainJob, prepared: PreparedData, trainer: StageTrainer, choice: _Choice, refit_end: float | None
) -> RefitResult:
    """The registered model's trainings again on every row, each an equal share of the refit's time left as it
    starts; an ensemble keeps its weights."""
    weights = list(choice.ensemble.weights.values()) if choice.chosen == ENSEMBLE and choice.ensemble else [1.0]
    return refit(
        job,
        prepared,
        trainer.experiment_id,
        trainer.stage_run_id,
        choice.members,
        weights,
        lambda left: job.plan.training_seconds(left, refit_end),
    )


def _select(job: FinalTrainJob, prepared: PreparedData, pool: list[Trained], single: Trained) -> EnsembleSummary:
    """Greedy ensemble selection over ``pool``'s validation outputs; kept when it validates better than ``single``
    (the test split decides nothing). Logs the selection (``ENSEMBLE_FILE``) and its plot."""
    outputs = {t.name: validation_outputs(t.model, prepared) for t in pool}
    loss = mixture_loss(prepared, loss_for(prepared.task, job.training.loss))
    selection: Selection = select_ensemble(outputs, loss, job.final.ensemble.rounds)
    # a single model whose validation loss is not finite is not in the pool: any finite ensemble beats it
    single_val_loss = selection.single_losses.get(single.name, math.inf)
    kept = keep_ensemble(selection, single.name, single_val_loss)
    outcome = EnsembleSummary(
        members=selection.members,
        weights=selection.weights,
        val_loss=selection.val_loss,
        single_val_loss=single_val_loss,
        kept=kept,
        candidates=selection.single_losses,
        rounds=selection.kept_rounds,
    )
    mlflow.log_text(
        json.dumps(
            {**outcome.as_dict(), "losses": selection.losses, "params": {t.name: t.params for t in pool}},
            indent=2,
            default=str,
        ),
        ENSEMBLE_FILE,
    )
    log_ensemble_selection(selection, single_val_loss, training_label(single.name))
    logger.info(
        "ensemble: %s; validation loss %.5g against the single model's %.5g: %s",
        ", ".join(f"{training_label(n)} {w:.2f}" for n, w in selection.weights.items()),
        selection.val_loss,
        single_val_loss,
        "kept" if kept else "not kept (the single model goes on)",
    )
    return outcome


def _refit_tags(refitted: RefitResult | None) -> dict[str, str]:
    """What the version (and the stage run) records of a refit: that its weights are one, on how many rows, for
    how many epochs."""
    if refitted is None:
        return {REFIT_TAG: "none"}
    return {
        REFIT_TAG: "all",
        REFIT_ROWS_TAG: str(refitted.rows),
        REFIT_EPOCHS_TAG: ",".join(f"{name}={n}" for name, n in refitted.epochs.items()),
    }


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
