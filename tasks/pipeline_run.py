"""The pipeline execution as MLflow sees it: the parent run (new, or resumed after a failure), the stage clock,
and the summary recorded on the parent run (best config, metrics, baselines, lookup tags) and in Prefect."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import mlflow
import yaml
from mlflow.tracking import MlflowClient
from prefect.context import FlowRunContext
from rich.filesize import decimal

from automl.configs import PipelineConfig, config_hash
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.final_train.plan import TUNED
from automl.tasks.final_train.result import FinalResult
from automl.tasks.runtime.budget import RunBudget
from automl.tasks.runtime.interrupts import raise_if_stopped, stops_outside_database_calls
from automl.tasks.runtime.retention import clean_up_finished_run
from automl.tasks.runtime.state import LocalState, local_state
from automl.tasks.search_stage.result import SearchStageResult
from automl.tasks.search_stage.studies import storage_url
from automl.tasks.space import FAMILY_KEY, search_space, split_family
from automl.tasks.summary import BudgetSummary, CVSummary, PipelineSummary, WarmStartSummary, render_markdown
from automl.tasks.tracking.catalog import (
    BACKEND_PARAM,
    BASELINE_METRIC_PREFIX,
    BEST_CONFIG_FILE,
    BEST_PARAM_PREFIX,
    BEST_VAL_LOSS,
    CHOSEN_FAMILY_TAG,
    CHOSEN_TAG,
    CONFIG_FILE,
    CONFIG_HASH,
    CONFIG_NAME,
    CV_MEAN_METRIC,
    CV_STD_METRIC,
    DATA_SOURCE,
    FAMILY,
    FIDELITY_PARAM,
    FINGERPRINT,
    META_FEATURES,
    MODEL_FAMILY_PARAM,
    N_TRIALS_PARAM,
    PBT_SCHEDULE_FILE,
    SAMPLER_PARAM,
    SINGLE_METRIC_PREFIX,
    SPACE_SIGNATURE,
    STAGES,
    SUMMARY_JSON_FILE,
    SUMMARY_MD_FILE,
    TASK_TYPE,
    TEST_METRIC_PREFIX,
    TOTAL_SECONDS_METRIC,
    TRIALS_METRIC_PREFIX,
)
from automl.tasks.tracking.prefect_ui import publish_summary
from automl.tasks.tracking.runs import (
    INTERRUPTED_NOTE,
    PipelineRun,
    close_run,
    close_stale_children,
    configure_mlflow,
    ensure_experiment,
    find_resumable_run,
    open_pipeline_run,
    was_interrupted,
)
from automl.tasks.warm_start.decision import WarmStartDecision

logger = logging.getLogger("automl")


@dataclass
class StageClock:
    """Wall-clock seconds per stage in this invocation (a stage reused from cache costs about nothing). Every stage
    starts through it, so it is also where a stop that a library swallowed surfaces again: no stage starts after
    Ctrl-C or SIGTERM."""

    started: float = field(default_factory=time.monotonic)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        raise_if_stopped()
        begin = time.monotonic()
        try:
            yield
        finally:
            self.seconds[stage] = round(time.monotonic() - begin, 3)

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


@contextmanager
def pipeline_run(
    cfg: PipelineConfig, fingerprint: str, task_type: str, study_name: str | None
) -> Iterator[tuple[PipelineRun, StageClock]]:
    """Open the parent run (resuming an unfinished one of the same config and data) and close it FINISHED,
    FAILED or KILLED as the pipeline ends."""
    state = local_state()
    configure_mlflow(state)
    experiment_id = ensure_experiment(cfg.name, state, cfg.description)
    digest = config_hash(cfg)
    resumable = find_resumable_run(experiment_id, digest, fingerprint, study_name)
    tags = {
        FAMILY: cfg.model.family,
        TASK_TYPE: task_type,
        FINGERPRINT: fingerprint,
        CONFIG_HASH: digest,
        CONFIG_NAME: cfg.name,
        DATA_SOURCE: cfg.data.path.name,
    }
    pipeline = open_pipeline_run(experiment_id, cfg.name, tags, study_name, resumable)
    flow_run = FlowRunContext.get()
    if flow_run is not None:
        pipeline = replace(pipeline, prefect_flow_run_id=str(flow_run.flow_run.id))
    if pipeline.resumed:
        closed = close_stale_children(pipeline, "closed when the pipeline was resumed: its process had stopped")
        logger.info(
            "resuming pipeline run %s (study %s); %d stale runs closed", pipeline.run_id, pipeline.study_name, closed
        )
    else:
        logger.info("pipeline run %s in experiment %s (study %s)", pipeline.run_id, cfg.name, pipeline.study_name)
    clock = StageClock()
    try:
        with stops_outside_database_calls():  # Prefect's SIGTERM handler too, in this flow run
            yield pipeline, clock
        raise_if_stopped()  # a stopped pipeline is never closed FINISHED
    except BaseException as exc:
        try:
            if was_interrupted(exc):
                close_run(pipeline.run_id, "KILLED", INTERRUPTED_NOTE)
            else:
                close_run(
                    pipeline.run_id, "FAILED", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                )
        except Exception as error:  # the original failure matters more; a rerun closes the run as stale
            logger.warning("could not close pipeline run %s (%s)", pipeline.run_id, error)
        raise
    finish(cfg, state, pipeline)


def finish(cfg: PipelineConfig, state: LocalState, pipeline: PipelineRun) -> None:
    """Close the run FINISHED, then (``final.clean_up``; only now: a run stopped before FINISHED resumes from these
    files) remove its own trial weights and checkpoints. The work is done here: a Ctrl-C or SIGTERM from now on
    only ends the clean-up early, and the summary still comes; raised, it would lose the summary and ask for a
    rerun that starts a whole new pipeline. (``deferred_stop`` would raise it at the end all the same.)"""
    with _stop_ends_clean_up() as stopped:
        close_run(pipeline.run_id, "FINISHED")
        if cfg.final.clean_up and not stopped():
            _clean_up(cfg, state, pipeline, stopped)
        if stopped():
            logger.warning(
                "clean-up stopped: pipeline run %s is FINISHED; automl gc removes what is left", pipeline.run_id
            )


@contextmanager
def _stop_ends_clean_up() -> Iterator[Callable[[], bool]]:
    """Ctrl-C and SIGTERM only noted (in the main thread, where Python handles signals) while the block runs; yields
    whether one came. A SIGINT the process ignores (``nohup``) stays ignored."""
    received: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, lambda number, frame: received.append(number))
    try:
        yield lambda: bool(received)
    finally:
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not installed from Python, which cannot be put back
                signal.signal(signum, handler)


def _clean_up(cfg: PipelineConfig, state: LocalState, pipeline: PipelineRun, stopped: Callable[[], bool]) -> None:
    """Remove the finished run's own trial weights and checkpoints; a failure here is a warning, not a failed run
    (``automl gc`` removes what is left once the run is beyond the last few)."""
    try:
        removed = clean_up_finished_run(state, pipeline, storage_url(cfg.search), cfg.final.ensemble.top_k, stopped)
    except Exception as exc:
        logger.warning("clean-up of pipeline run %s failed (%s); automl gc removes what is left", pipeline.run_id, exc)
        return
    if removed:
        logger.info(
            "clean-up: removed %d files or folders (%s) of trial weights, checkpoints and Prefect results",
            len(removed),
            decimal(sum(r.size for r in removed)),
        )


def record_summary(
    cfg: PipelineConfig,
    pipeline: PipelineRun,
    prepared: PreparedData,
    warm_start_decision: WarmStartDecision,
    search_result: SearchStageResult,
    final: FinalResult,
    clock: StageClock,
    budget: RunBudget | None = None,
) -> PipelineSummary:
    """Log the summary on the parent run and as a Prefect artifact; return it (the flow's result)."""
    summary = PipelineSummary(
        experiment=pipeline.experiment_name,
        experiment_id=pipeline.experiment_id,
        pipeline_run_id=pipeline.run_id,
        resumed=pipeline.resumed,
        study_name=search_result.study_name,
        storage=search_result.storage,
        backend=cfg.search.backend,
        sampler=cfg.search.sampler,
        fidelity=cfg.search.fidelity,
        model_family=cfg.model.family,
        family=split_family(final.params, cfg.model.family)[0],
        task_type=prepared.task,
        dataset_fingerprint=prepared.fingerprint,
        trials=search_result.counts,
        best_trial=search_result.best_trial,
        best_params=search_result.best_params,
        best_val_loss=search_result.best_value,
        warm_start=WarmStartSummary(enqueued=search_result.enqueued, source_run_ids=warm_start_decision.source_run_ids),
        chosen=final.chosen,
        test_metrics=final.test_metrics,
        primary_metric=final.primary_metric,
        baseline_metrics=final.baseline_metrics,
        model_uri=final.model_uri,
        registered_model=final.registered_model,
        champion=final.champion,
        champion_note=final.champion_note,
        search_seconds=round(search_result.seconds, 3),
        search_overhead_share=round(search_result.overhead_share, 4),
        param_importances=search_result.importances,
        stage_seconds={stage: clock.seconds.get(stage, 0.0) for stage in STAGES},
        total_seconds=clock.total,
        mlflow_tracking_uri=mlflow.get_tracking_uri(),
        budget=BudgetSummary(budget.seconds, round(budget.used(), 3)) if budget is not None else None,
        cv=_cv_summary(search_result, final.single),
        strategy=search_result.strategy,
        pbt=search_result.pbt,
        ensemble=final.ensemble,
        refit=final.refit,
        promotion=final.promotion,
    )
    markdown = render_markdown(summary)
    space = search_space(cfg.search.space, cfg.search.families)
    client = MlflowClient()
    run_id = pipeline.run_id
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params(
            {
                **_prefixed(search_result.best_params),
                MODEL_FAMILY_PARAM: cfg.model.family,
                BACKEND_PARAM: cfg.search.backend,
                SAMPLER_PARAM: cfg.search.sampler,
                FIDELITY_PARAM: cfg.search.fidelity,
                N_TRIALS_PARAM: cfg.search.n_trials,
            }
        )
        mlflow.log_metrics(
            {
                BEST_VAL_LOSS: search_result.best_value,
                **{f"{TEST_METRIC_PREFIX}{k}": v for k, v in final.test_metrics.items()},
                **{
                    f"{BASELINE_METRIC_PREFIX}{name}_{k}": v
                    for name, metrics in final.baseline_metrics.items()
                    for k, v in metrics.items()
                },
                **{f"{TRIALS_METRIC_PREFIX}{k}": v for k, v in search_result.counts.as_dict().items()},
                TOTAL_SECONDS_METRIC: clock.total,
                **({CV_MEAN_METRIC: summary.cv.mean, CV_STD_METRIC: summary.cv.std} if summary.cv else {}),
                # the single config's own test metrics when an ensemble was tried: what an exported config scored
                **(
                    {f"{SINGLE_METRIC_PREFIX}{k}": v for k, v in final.ensemble.single_test_metrics.items()}
                    if final.ensemble is not None
                    else {}
                ),
            }
        )
        # The config a later run warm-starts from, or `automl configs export` exports next to these test metrics:
        # the model's, i.e. the default config's when it beat the tuned one on validation.
        mlflow.log_dict(_chosen_config(search_result.best_params, final), BEST_CONFIG_FILE)
        if search_result.pbt is not None and final.single == TUNED:  # the schedule that trained the model
            mlflow.log_dict(search_result.pbt.schedule, PBT_SCHEDULE_FILE)
        mlflow.set_tags({CHOSEN_TAG: final.chosen, CHOSEN_FAMILY_TAG: summary.family})
        mlflow.log_dict(summary.to_json(), SUMMARY_JSON_FILE)
        mlflow.log_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), CONFIG_FILE)
        mlflow.log_text(markdown, SUMMARY_MD_FILE)
    client.set_tag(run_id, META_FEATURES, json.dumps(prepared.meta_features, sort_keys=True))
    client.set_tag(run_id, SPACE_SIGNATURE, json.dumps(space.signature(), sort_keys=True, default=str))
    publish_summary(cfg.name, markdown, pipeline.prefect_flow_run_id)
    return summary


def _cv_summary(search_result: SearchStageResult, chosen: str) -> CVSummary | None:
    """The chosen model's config's cross-validation score, when the search had folds and scored that config."""
    losses = search_result.cv_fold_losses.get(chosen)
    if not search_result.cv_kind or not losses:
        return None
    return CVSummary.of(search_result.cv_kind, losses)


def _chosen_config(best_params: dict[str, Any], final: FinalResult) -> dict[str, Any]:
    """The search's best params, or the chosen default config's values of the same params."""
    if final.single == TUNED:
        return best_params
    if FAMILY_KEY in final.params:  # auto: the default config is a whole config of its own family
        return dict(final.params)
    return {name: final.params[name] for name in best_params if name in final.params}


def _prefixed(params: dict[str, Any]) -> dict[str, Any]:
    return {f"{BEST_PARAM_PREFIX}{k}": v for k, v in params.items()}
