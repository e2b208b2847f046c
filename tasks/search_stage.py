"""Search stage: open (or continue) the study, queue warm-start configs, run the engine with the torch
objective, and log the trials and the report to the ``search`` run.

The Prefect wrapper is a subflow rather than a task because it owns the task runner its trial evaluations
are submitted through.
"""

from __future__ import annotations

import logging
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlflow
import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner
from sqlalchemy.exc import SQLAlchemyError

from configs import ConfigError, PipelineConfig, SearchConfig
from models import get_family, loss_for
from tasks.artifacts import SearchProgress, publish_trials
from tasks.prepared_data import PreparedData
from tasks.search._backends import make_backend
from tasks.search._engine import (
    FULL_FIDELITY_ATTR,
    HEARTBEAT_SECONDS,
    OUTCOME_ATTR,
    RUN_ATTR,
    SOURCE_ATTR,
    SearchEngine,
    requeue_stale_trial,
)
from tasks.search._executors import PrefectExecutor
from tasks.search._report import log_search_report
from tasks.search._scheduler import OptunaPruning, make_scheduler, rung_fractions
from tasks.search._space import SearchSpace
from tasks.search._tracker import MlflowTrialObserver
from tasks.search.trainer_objective import TrainerObjective
from tasks.state import enable_wal, first_use_lock, local_state
from tasks.tracking import PipelineRun, stage_run
from tasks.warm_start import WarmStartPlan

logger = logging.getLogger("automl")


@dataclass
class SearchSummary:
    """What later stages and the summary need from the search."""

    study_name: str
    storage: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    trials: dict[str, int]
    enqueued: int
    search_run_id: str
    seconds: float
    overhead_share: float
    importances: dict[str, float] = field(default_factory=dict)


def storage_url(cfg: PipelineConfig) -> str:
    return cfg.search.storage or local_state().ensure().optuna_storage


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: SQLite (the default, in WAL mode and waiting on locks), PostgreSQL/MySQL,
    or ``journal:///path/file.log`` (Optuna's journal file). RDB storages keep a heartbeat per running trial,
    so trials of an engine that died on another machine are failed and queued again."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:").removeprefix("//")))
    if url.startswith("sqlite"):
        enable_wal(url)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    kwargs = {
        "engine_kwargs": engine_kwargs,
        "heartbeat_interval": int(HEARTBEAT_SECONDS),
        "grace_period": int(4 * HEARTBEAT_SECONDS),
        "heartbeat_stale_trial_callback": requeue_stale_trial,
    }
    with first_use_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        for attempt in range(3):
            try:
                return RDBStorage(url, **kwargs)
            except SQLAlchemyError:
                # Workers on other machines may be creating the same schema right now: let them finish.
                if attempt == 2:
                    raise
                time.sleep(1 + random.random())


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


def open_study(cfg: PipelineConfig, study_name: str, url: str) -> optuna.Study:
    """Create or continue the study; its pruner follows ``search.fidelity`` for the Optuna backend."""
    storage = make_storage(url)
    search = cfg.search
    kind = search.fidelity if search.backend == "optuna" else "none"
    pruner = OptunaPruning.make_pruner(kind, search.eta, search.min_fraction)
    study = optuna.create_study(
        study_name=study_name, storage=storage, direction="minimize", pruner=pruner, load_if_exists=True
    )
    recorded = study.user_attrs.get("rung_fractions")
    if recorded is None:
        study.set_user_attr("rung_fractions", _rungs(search))
        study.set_user_attr("backend", search.backend)
    _check_rungs(search, study_name, recorded)
    return study


def check_study(cfg: PipelineConfig, study_name: str | None) -> None:
    """A study continued by name (``--study-name``) must have been run with this config's rungs: checked before
    any run or trial exists, without creating the study."""
    if not study_name:
        return
    storage = make_storage(storage_url(cfg))
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return  # a new study of that name will be created
    _check_rungs(cfg.search, study_name, storage.get_study_user_attrs(study_id).get("rung_fractions"))


def _rungs(search: SearchConfig) -> list[float]:
    return list(rung_fractions(search.eta, search.min_fraction)) if search.fidelity != "none" else [1.0]


def _check_rungs(search: SearchConfig, study_name: str, recorded: list[float] | None) -> None:
    rungs = _rungs(search)
    if recorded is not None and [round(r, 9) for r in recorded] != [round(r, 9) for r in rungs]:
        raise ConfigError(
            f"search.fidelity: study {study_name!r} was run with rungs {recorded}; this config gives {rungs}. "
            "Use another --study-name or the same fidelity settings"
        )


def enqueue_warm_start(study: optuna.Study, plan: WarmStartPlan) -> int:
    """Queue the plan's configs as the study's next trials (skipping ones the study already has)."""
    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    for candidate in plan.queued:
        study.enqueue_trial(
            candidate.queued,
            user_attrs={SOURCE_ATTR: f"warm_start:{candidate.run_id}", FULL_FIDELITY_ATTR: plan.skip_low_fidelity},
            skip_if_exists=True,
        )
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) - before


def pipeline_trial_counts(study: optuna.Study, run_id: str) -> dict[str, int]:
    """Outcomes of the trials this pipeline execution ran (across resumes; interrupted ones not counted)."""
    counts = Counter(
        t.user_attrs.get(OUTCOME_ATTR)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        if t.user_attrs.get(RUN_ATTR) == run_id
    )
    return {"complete": counts["complete"], "pruned": counts["pruned"], "failed": counts["failed"]}


def default_n_startup(n_trials: int | None) -> int:
    """Random configs before the model-based sampler takes over: a third of the budget, between 3 and 10."""
    return 10 if n_trials is None else max(3, min(10, n_trials // 3))


def run_search_stage(
    cfg: PipelineConfig, prepared: PreparedData, plan: WarmStartPlan, pipeline: PipelineRun
) -> SearchSummary:
    """The search stage as a plain function (the ``search`` subflow calls it)."""
    search = cfg.search
    family = get_family(cfg.model.family)
    space = SearchSpace.from_config(search.space)
    url = storage_url(cfg)
    with stage_run(pipeline, "search") as run:
        study = open_study(cfg, pipeline.study_name, url)
        enqueued = enqueue_warm_start(study, plan)
        n_startup = (
            search.n_startup_trials if search.n_startup_trials is not None else default_n_startup(search.n_trials)
        )
        seed = cfg.seed + len(study.trials)  # a continued study must not replay the same random configs
        backend = make_backend(search.backend, search.sampler, study, space, seed, n_startup)
        scheduler = make_scheduler(search.fidelity, search.eta, search.min_fraction, study)
        objective = TrainerObjective(
            family.name,
            prepared,
            base_params={**family.defaults, **cfg.model.params},
            epochs=search.epochs,
            loss=loss_for(prepared.task, cfg.training.loss),
            optimizer=cfg.training.optimizer,
            grad_clip=cfg.training.grad_clip,
            seed=cfg.seed,
            device=cfg.training.device,
            threads=torch_threads(search.parallelism),
            time_limit=search.trial_timeout,
        )
        mlflow.log_params(
            {
                "backend": search.backend,
                "sampler": search.sampler,
                "fidelity": search.fidelity,
                "rung_fractions": ",".join(f"{f:.4g}" for f in scheduler.fractions),
                "scheduler": scheduler.name,
                "n_trials": search.n_trials,
                "timeout": search.timeout,
                "epochs": search.epochs,
                "n_startup_trials": n_startup,
                "study_name": study.study_name,
                "parallelism": search.parallelism,
                "trial_timeout": search.trial_timeout,
            }
        )
        logger.info(
            "search: study %s (%s/%s, fidelity %s, rungs %s), %s trials, %d warm-start configs queued",
            study.study_name,
            search.backend,
            search.sampler,
            search.fidelity,
            ", ".join(f"{f:.3g}" for f in scheduler.fractions),
            search.n_trials if search.n_trials is not None else "unlimited",
            enqueued,
        )
        progress = SearchProgress(cfg.name, search.n_trials, search.timeout, pipeline.prefect_flow_run_id)
        engine = SearchEngine(
            objective,
            backend,
            scheduler,
            n_trials=search.n_trials,
            timeout=search.timeout,
            executor=PrefectExecutor(search.parallelism),
            observer=MlflowTrialObserver(pipeline.experiment_id, run.info.run_id, progress),
            run_id=pipeline.run_id,
        )
        result = engine.run()
        progress.finish()
        publish_trials(cfg.name, result.trials, pipeline.prefect_flow_run_id)
        counts = pipeline_trial_counts(study, pipeline.run_id)
        mlflow.log_metrics(
            {
                "best_val_loss": result.best_value,
                "best_trial": result.best_trial,
                "trials_complete": counts["complete"],
                "trials_pruned": counts["pruned"],
                "trials_failed": counts["failed"],
                "search_seconds": result.seconds,
                "engine_overhead_share": result.overhead_share,
            }
        )
        mlflow.log_dict(result.best_params, "best_params.json")
        importances = log_search_report(study, cfg.seed)
    return SearchSummary(
        study_name=study.study_name,
        storage=_redact(url),
        best_params=result.best_params,
        best_value=result.best_value,
        best_trial=result.best_trial,
        trials=counts,
        enqueued=enqueued,
        search_run_id=run.info.run_id,
        seconds=result.seconds,
        overhead_share=result.overhead_share,
        importances=importances,
    )


@flow(name="search", flow_run_name="search-{pipeline.study_name}", validate_parameters=False)
def _search_flow(
    cfg: PipelineConfig, prepared: PreparedData, plan: WarmStartPlan, pipeline: PipelineRun
) -> SearchSummary:
    return run_search_stage(cfg, prepared, plan, pipeline)


def search_stage(
    cfg: PipelineConfig, prepared: PreparedData, plan: WarmStartPlan, pipeline: PipelineRun
) -> SearchSummary:
    """Prefect stage: the search as a subflow; its trial evaluations are tasks submitted through the subflow's
    task runner (threads, or Dask worker processes for ``search.parallelism`` > 1 or a ``cluster_address``)."""
    with local_dask_settings():
        return _search_flow.with_options(task_runner=task_runner_for(cfg.search))(cfg, prepared, plan, pipeline)


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


def _redact(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
