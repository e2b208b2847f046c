"""Search stage: narrow the space by the learning-rate range test when asked, open (or continue) the run's study and
its ``search`` run, run the search strategy (``search.strategy``: ``sample`` or ``pbt``), log the best config, its
loss and weights, and build what later stages need. One body for every strategy; each strategy is a class behind the
interface in ``tasks.search_stage.strategy``.

The Prefect wrapper is a subflow rather than a task because it owns the task runner its trial evaluations are
submitted through (threads, or Dask worker processes for parallel evaluations).
"""

from __future__ import annotations

import logging
import statistics
import time

import mlflow
from prefect import flow

from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.runtime.interrupts import stops_outside_database_calls
from automl.tasks.search_stage.deadline import SearchDeadline
from automl.tasks.search_stage.job import SearchJob
from automl.tasks.search_stage.lr_range import find_lr_range
from automl.tasks.search_stage.pbt import PopulationBasedSearch
from automl.tasks.search_stage.result import SearchStageResult
from automl.tasks.search_stage.sampling import Sampling
from automl.tasks.search_stage.strategy import SearchContext, SearchStrategy
from automl.tasks.search_stage.studies import make_storage, open_study, redact, storage_url
from automl.tasks.search_stage.task_runners import local_dask_settings, task_runner_for, torch_threads
from automl.tasks.space import search_space
from automl.tasks.tracking.catalog import (
    BEST_PARAMS_FILE,
    BEST_TRIAL_METRIC,
    BEST_TRIAL_WEIGHTS_FILE,
    BEST_VAL_LOSS,
    PARALLELISM_PARAM,
    SEARCH_SECONDS_METRIC,
    STRATEGY_PARAM,
    STUDY_NAME_PARAM,
    TRIALS_METRIC_PREFIX,
)
from automl.tasks.tracking.prefect_ui import logs_also_in
from automl.tasks.tracking.runs import PipelineRun, log_file, stage_run, stage_run_record
from automl.tasks.warm_start.decision import WarmStartDecision

logger = logging.getLogger("automl")

# search.strategy -> the class that searches that way
STRATEGIES: dict[str, type[SearchStrategy]] = {"sample": Sampling, "pbt": PopulationBasedSearch}


def run_search_stage(
    job: SearchJob, prepared: PreparedData, warm_start_decision: WarmStartDecision, pipeline: PipelineRun
) -> SearchStageResult:
    """The search stage as a plain function (the ``search`` subflow calls it)."""
    search = job.search
    strategy = STRATEGIES[search.strategy]()
    lr_range = find_lr_range(job, prepared, stage_run_record(pipeline, "search")) if search.lr_range == "auto" else None
    space = search_space(lr_range.space if lr_range else search.space, search.families)
    deadline = (
        SearchDeadline(job.budget, job.final_plan, train_scale=_train_scale(prepared))
        if job.budget is not None
        else None
    )
    url = storage_url(search)
    with stage_run(pipeline, "search") as run:
        if lr_range is not None:
            lr_range.log()
        storage = make_storage(url)
        study = open_study(search, pipeline.study_name, storage)
        mlflow.log_params(
            {STRATEGY_PARAM: strategy.name, STUDY_NAME_PARAM: study.study_name, PARALLELISM_PARAM: search.parallelism}
        )
        context = SearchContext(
            job=job,
            prepared=prepared,
            space=space,
            narrowed=lr_range is not None,
            study=study,
            storage=storage,
            pipeline=pipeline,
            search_run_id=run.info.run_id,
            warm_start=warm_start_decision,
            deadline=deadline,
            threads=torch_threads(search.parallelism),
        )
        outcome = strategy.run(context)
        if deadline is not None:
            logger.info(
                "search: %.0f s of the %.0f s budget left; the final stage needs about %.0f s",
                job.budget.deadline - time.time(),
                job.budget.seconds,
                deadline.final_reserve(),
            )
        mlflow.log_metrics(
            {
                BEST_VAL_LOSS: outcome.best_value,
                BEST_TRIAL_METRIC: outcome.best_trial,
                **{f"{TRIALS_METRIC_PREFIX}{k}": v for k, v in outcome.counts.as_dict().items()},
                SEARCH_SECONDS_METRIC: outcome.seconds,
                **outcome.metrics,
            }
        )
        mlflow.log_dict(outcome.best_params, BEST_PARAMS_FILE)
        if outcome.best_weights is not None:
            log_file(outcome.best_weights, BEST_TRIAL_WEIGHTS_FILE)
    return SearchStageResult(
        study_name=study.study_name,
        storage=redact(url),
        best_params=outcome.best_params,
        best_value=outcome.best_value,
        best_trial=outcome.best_trial,
        counts=outcome.counts,
        enqueued=outcome.enqueued,
        search_run_id=run.info.run_id,
        seconds=outcome.seconds,
        overhead_share=outcome.overhead_share,
        importances=outcome.importances,
        best_weights=str(outcome.best_weights) if outcome.best_weights is not None else None,
        cv_kind=prepared.cv.kind if prepared.cv else None,
        cv_fold_losses=outcome.cv_fold_losses,
        strategy=strategy.name,
        pbt=outcome.pbt,
        candidates=outcome.candidates,
    )


def _train_scale(prepared: PreparedData) -> float:
    """Training rows of the final stage per training row of a full-fidelity search evaluation (1 without folds)."""
    if not prepared.folds:
        return 1.0
    return len(prepared.train) / statistics.fmean(len(fold.train) for fold in prepared.folds)


@flow(name="search", flow_run_name="search-{pipeline.study_name}", validate_parameters=False)
def _search_flow(
    job: SearchJob, prepared: PreparedData, warm_start_decision: WarmStartDecision, pipeline: PipelineRun
) -> SearchStageResult:
    # the trial lines in the pipeline run's Logs tab too; Prefect's SIGTERM handler, which this subflow's engine
    # installed again, waits for database calls to end
    with logs_also_in(pipeline.prefect_flow_run_id), stops_outside_database_calls():
        return run_search_stage(job, prepared, warm_start_decision, pipeline)


def search_stage(
    job: SearchJob, prepared: PreparedData, warm_start_decision: WarmStartDecision, pipeline: PipelineRun
) -> SearchStageResult:
    """Prefect stage: the search as a subflow; its trial evaluations are tasks submitted through the subflow's
    task runner (threads, or Dask worker processes for ``search.parallelism`` > 1 or a ``cluster_address``)."""
    with local_dask_settings():
        return _search_flow.with_options(task_runner=task_runner_for(job.search))(
            job, prepared, warm_start_decision, pipeline
        )
