"""Search stage: open (or continue) the run's study, queue the warm-start configs, and run the search engine on
the torch objective, with each trial tracked in MLflow under the ``search`` run and the report logged there.

The Prefect wrapper is a subflow rather than a task because it owns the task runner its trial evaluations
are submitted through (threads, or Dask worker processes for parallel evaluations).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlflow
from optuna.trial import TrialState
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from configs import ModelConfig, PipelineConfig, SearchConfig, TrainingConfig
from tasks.data_prep.prepared import PreparedData
from tasks.runtime.budget import RunBudget, SearchDeadline
from tasks.runtime.state import local_state
from tasks.search import (
    FOLD_LOSSES_ATTR,
    SOURCE_ATTR,
    Observers,
    PrefectExecutor,
    SearchEngine,
    make_backend,
    make_scheduler,
)
from tasks.search_stage.lr_range import find_lr_range
from tasks.search_stage.objective import TrainerObjective, trial_weights_path
from tasks.search_stage.pbt import run_pbt
from tasks.search_stage.report import log_fold_scores, log_search_report
from tasks.search_stage.result import SearchStageResult
from tasks.search_stage.studies import (
    DEFAULT_CONFIG_SOURCE,
    enqueue_default_config,
    enqueue_warm_start,
    make_storage,
    open_study,
    redact,
    storage_url,
)
from tasks.search_stage.trial_runs import MlflowTrialObserver
from tasks.space import search_space
from tasks.tracking.catalog import (
    BACKEND_PARAM,
    BEST_PARAMS_FILE,
    BEST_TRIAL_METRIC,
    BEST_TRIAL_WEIGHTS_FILE,
    BEST_VAL_LOSS,
    CV_FOLDS_PARAM,
    CV_GAP_PARAM,
    CV_KIND_PARAM,
    CV_PRUNING_PARAM,
    ENGINE_OVERHEAD_SHARE_METRIC,
    EPOCHS_PARAM,
    FIDELITY_PARAM,
    N_STARTUP_TRIALS_PARAM,
    N_TRIALS_PARAM,
    PARALLELISM_PARAM,
    RUNG_FRACTIONS_PARAM,
    SAMPLER_PARAM,
    SCHEDULER_PARAM,
    SEARCH_SECONDS_METRIC,
    STRATEGY_PARAM,
    STUDY_NAME_PARAM,
    TIMEOUT_PARAM,
    TRIAL_TIMEOUT_PARAM,
    TRIALS_METRIC_PREFIX,
)
from tasks.tracking.prefect_ui import SearchProgress, publish_trials
from tasks.tracking.runs import PipelineRun, log_file, stage_run, stage_run_record
from tasks.warm_start.stage import WarmStartDecision

logger = logging.getLogger("automl")


@dataclass(frozen=True)
class SearchJob:
    """The parts of the config the search stage uses."""

    search: SearchConfig
    model: ModelConfig
    training: TrainingConfig
    seed: int
    config_name: str  # names the Prefect artifacts
    final_epochs: int  # what the final stage will train for (its share of a budget depends on it)
    final_trains_default: bool  # and whether it trains the default config too
    budget: RunBudget | None = None

    @classmethod
    def of(cls, cfg: PipelineConfig, budget: RunBudget | None = None) -> SearchJob:
        trains_default = "default_config" in cfg.final.baselines
        return cls(cfg.search, cfg.model, cfg.training, cfg.seed, cfg.name, cfg.final.epochs, trains_default, budget)


def task_runner_for(search: SearchConfig):
    """Threads for one evaluation at a time; Dask worker processes (a LocalCluster, or the scheduler at
    ``search.cluster_address``) for parallel evaluations."""
    if search.cluster_address or search.parallelism > 1:
        from prefect_dask import DaskTaskRunner

        if search.cluster_address:
            return DaskTaskRunner(address=search.cluster_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": search.parallelism,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": _worker_env(),
            }
        )
    return ThreadPoolTaskRunner(max_workers=1)


# Two Dask defaults that cost torch training dearly in local worker processes (measured on one LSTM trial in a
# plain LocalCluster, 2 workers x 1 thread): the worker's statistical profiler samples every thread's stack each
# 10 ms and made training 50-90% slower; the nanny's MALLOC_TRIM_THRESHOLD_=65536 makes glibc return memory after
# nearly every step, 20% slower with a third of the time in the kernel. Both are off for the clusters we start.
LOCAL_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


def _worker_env() -> dict[str, str]:
    """Environment for local Dask workers: the API this flow reports to. Without it, each worker process of a
    run on the ephemeral API would start an ephemeral Prefect server of its own (seconds of CPU each, and its
    task runs reported there instead of to the flow's API)."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url and (context := FlowRunContext.get()) is not None and context.client is not None:
        url = str(context.client.api_url)
    return {"PREFECT_API_URL": url} if url and url.startswith("http") and "ephem" not in url else {}


def torch_threads(parallelism: int) -> int:
    """Threads each evaluation may use so that parallel workers do not oversubscribe this machine's cores."""
    return max(1, (os.cpu_count() or 1) // parallelism)


def default_n_startup(n_trials: int | None) -> int:
    """Random configs before the model-based sampler takes over: a third of the budget, between 3 and 10."""
    return 10 if n_trials is None else max(3, min(10, n_trials // 3))


def run_search_stage(
    job: SearchJob, prepared: PreparedData, warm_start_decision: WarmStartDecision, pipeline: PipelineRun
) -> SearchStageResult:
    """The search stage as a plain function (the ``search`` subflow calls it)."""
    search, model, seed = job.search, job.model, job.seed
    lr_range = find_lr_range(job, prepared, stage_run_record(pipeline, "search")) if search.lr_range == "auto" else None
    space = search_space(lr_range.space if lr_range else search.space)
    deadline = (
        SearchDeadline(
            job.budget,
            job.final_epochs,
            trains_default=job.final_trains_default,
            train_scale=_train_scale(prepared),
            trains_tuned=search.strategy != "pbt",
        )
        if job.budget is not None
        else None
    )
    if search.strategy == "pbt":
        # the default config first (it may be the best start), then the warm-start configs, each once
        initial = [space.fit({}, model.default_config())[0]] if search.try_default_first else []
        for candidate in warm_start_decision.queued:
            if candidate.queued_params not in initial:
                initial.append(candidate.queued_params)
        result = run_pbt(
            job,
            prepared,
            initial,
            pipeline,
            space,
            deadline,
            torch_threads(search.parallelism),
            on_run=lr_range.log if lr_range else None,
        )
        warm_members = len(initial[int(search.try_default_first) : search.pbt.population])
        return dataclasses.replace(result, enqueued=warm_members)
    url = storage_url(search)
    with stage_run(pipeline, "search") as run:
        if lr_range is not None:
            lr_range.log()
        storage = make_storage(url)
        study = open_study(search, pipeline.study_name, storage)
        enqueued = enqueue_warm_start(study, warm_start_decision, space if lr_range else None)
        # Not for the grid sampler: it gives trial n grid point n, so a queued trial would push a point out.
        if search.try_default_first and not enqueued and search.sampler != "grid":
            default_config, _ = space.fit({}, model.default_config())
            if enqueue_default_config(study, default_config):
                logger.info("search: the default config goes first: %s", default_config)
        n_startup = (
            search.n_startup_trials if search.n_startup_trials is not None else default_n_startup(search.n_trials)
        )
        sampler_seed = seed + len(study.trials)  # a continued study must not replay the same random configs
        backend = make_backend(search.backend, search.sampler, study, space, sampler_seed, n_startup)
        scheduler = make_scheduler(
            search.fidelity,
            search.eta,
            search.min_fraction,
            search.promotion == "deferred",
            folds=len(prepared.folds) or 1,
            fold_pruning=search.cv.pruning,
        )
        objective = TrainerObjective.of(
            job,
            prepared,
            threads=torch_threads(search.parallelism),
            deadline=deadline,
            weights_dir=None if prepared.folds else local_state().trial_weights(study.study_name),
        )
        cv_kind = prepared.card.get("cv", {}).get("kind")
        mlflow.log_params(
            {
                BACKEND_PARAM: search.backend,
                SAMPLER_PARAM: search.sampler,
                FIDELITY_PARAM: search.fidelity,
                RUNG_FRACTIONS_PARAM: ",".join(f"{f:.4g}" for f in scheduler.fractions),
                SCHEDULER_PARAM: scheduler.name,
                N_TRIALS_PARAM: search.n_trials,
                TIMEOUT_PARAM: search.timeout,
                EPOCHS_PARAM: search.epochs,
                N_STARTUP_TRIALS_PARAM: n_startup,
                STUDY_NAME_PARAM: study.study_name,
                PARALLELISM_PARAM: search.parallelism,
                TRIAL_TIMEOUT_PARAM: search.trial_timeout,
                STRATEGY_PARAM: "sample",
                CV_FOLDS_PARAM: scheduler.folds,
                **(
                    {CV_KIND_PARAM: cv_kind, CV_GAP_PARAM: search.cv.gap, CV_PRUNING_PARAM: search.cv.pruning}
                    if cv_kind
                    else {}
                ),
            }
        )
        logger.info(
            "search: study %s (%s/%s, fidelity %s, rungs %s%s), %s trials, %d warm-start configs queued",
            study.study_name,
            search.backend,
            search.sampler,
            search.fidelity,
            ", ".join(f"{f:.3g}" for f in scheduler.fractions),
            f"; {scheduler.folds} {cv_kind} folds" if cv_kind else "",
            search.n_trials if search.n_trials is not None else "unlimited",
            enqueued,
        )
        progress = SearchProgress(job.config_name, search.n_trials, search.timeout, pipeline.prefect_flow_run_id)
        tracker = MlflowTrialObserver(pipeline.experiment_id, run.info.run_id, progress)
        engine = SearchEngine(
            objective,
            backend,
            scheduler,
            n_trials=search.n_trials,
            timeout=search.timeout,
            executor=PrefectExecutor(search.parallelism),
            observer=Observers(tracker, deadline) if deadline is not None else tracker,
            run_id=pipeline.run_id,
            storage=storage,
            deadline=deadline,
        )
        result = engine.run()
        progress.finish()
        if deadline is not None:
            logger.info(
                "search: %.0f s of the %.0f s budget left; the final stage needs about %.0f s",
                job.budget.deadline - time.time(),
                job.budget.seconds,
                deadline.final_reserve(),
            )
        publish_trials(job.config_name, result.trials, pipeline.prefect_flow_run_id)
        mlflow.log_metrics(
            {
                BEST_VAL_LOSS: result.best_value,
                BEST_TRIAL_METRIC: result.best_trial,
                **{f"{TRIALS_METRIC_PREFIX}{k}": v for k, v in result.counts.as_dict().items()},
                SEARCH_SECONDS_METRIC: result.seconds,
                ENGINE_OVERHEAD_SHARE_METRIC: result.overhead_share,
            }
        )
        mlflow.log_dict(result.best_params, BEST_PARAMS_FILE)
        best_weights = trial_weights_path(local_state().trial_weights(study.study_name), result.best_params)
        if best_weights.is_file():
            log_file(best_weights, BEST_TRIAL_WEIGHTS_FILE)
        importances = log_search_report(study, seed)
        if cv_kind:
            log_fold_scores(study)
    return SearchStageResult(
        study_name=study.study_name,
        storage=redact(url),
        best_params=result.best_params,
        best_value=result.best_value,
        best_trial=result.best_trial,
        counts=result.counts,
        enqueued=enqueued,
        search_run_id=run.info.run_id,
        seconds=result.seconds,
        overhead_share=result.overhead_share,
        importances=importances,
        best_weights=str(best_weights) if best_weights.is_file() else None,
        cv_kind=cv_kind,
        cv_fold_losses=_fold_losses(study, result.best_trial) if cv_kind else {},
    )


def _train_scale(prepared: PreparedData) -> float:
    """Training rows of the final stage per training row of a full-fidelity search evaluation (1 without folds)."""
    if not prepared.folds:
        return 1.0
    return len(prepared.train) / statistics.fmean(len(fold.train) for fold in prepared.folds)


def _fold_losses(study: Any, best_trial: int) -> dict[str, list[float]]:
    """The fold losses of the best trial ("tuned") and of the default config's complete trial ("default_config")."""
    losses = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        folds = trial.user_attrs.get(FOLD_LOSSES_ATTR)
        if not folds:
            continue
        if trial.number == best_trial:
            losses["tuned"] = list(folds)
        if trial.user_attrs.get(SOURCE_ATTR) == DEFAULT_CONFIG_SOURCE:
            losses.setdefault("default_config", list(folds))
    return losses


@flow(name="search", flow_run_name="search-{pipeline.study_name}", validate_parameters=False)
def _search_flow(
    job: SearchJob, prepared: PreparedData, warm_start_decision: WarmStartDecision, pipeline: PipelineRun
) -> SearchStageResult:
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


@contextmanager
def local_dask_settings() -> Iterator[None]:
    """``LOCAL_DASK_CONFIG`` for the clusters started inside this block.

    distributed is imported first so that its defaults are loaded: ``dask.config.set`` restores on exit what it
    found on entry, and a ``distributed`` section that was not there yet would be deleted whole, breaking every
    later cluster in this process (a second parallel search in ``automl serve`` or a benchmark).
    """
    import dask
    import distributed  # noqa: F401

    with dask.config.set(LOCAL_DASK_CONFIG):
        yield
