"""``search.strategy: sample``: a sampler backend (Optuna or hyperopt) proposes configs and a fidelity scheduler
decides how far each goes, on the search engine (``tasks.search``); each trial is an MLflow run under the ``search``
run, and the search's report (Optuna's plots, importances, the trials table) is logged there. The warm-start configs
are queued first, or else the family's default config."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import mlflow
from optuna.trial import TrialState

from automl.configs import SearchConfig
from automl.tasks.final_train.plan import Candidate
from automl.tasks.runtime.state import local_state
from automl.tasks.search import (
    FOLD_LOSSES_ATTR,
    SOURCE_ATTR,
    FullFidelity,
    Hyperband,
    Observers,
    PrefectExecutor,
    SearchEngine,
    make_backend,
    make_scheduler,
    params_key,
)
from automl.tasks.search_stage.checkpoints import trial_weights_path
from automl.tasks.search_stage.objective import TrainerObjective
from automl.tasks.search_stage.report import log_fold_scores, log_search_report
from automl.tasks.search_stage.strategy import SearchContext, StrategyOutcome
from automl.tasks.search_stage.studies import (
    BRACKETS_ATTR,
    DEFAULT_CONFIG_SOURCE,
    enqueue_default_configs,
    enqueue_warm_start,
)
from automl.tasks.search_stage.trial_runs import MlflowTrialObserver, SearchPace
from automl.tasks.space import default_configs
from automl.tasks.tracking.catalog import (
    BACKEND_PARAM,
    BRACKETS_PARAM,
    CONTINUATION_PARAM,
    COST_AWARE_PARAM,
    CV_FOLDS_PARAM,
    CV_GAP_PARAM,
    CV_KIND_PARAM,
    CV_PRUNING_PARAM,
    ENGINE_OVERHEAD_SHARE_METRIC,
    EPOCHS_PARAM,
    FIDELITY_PARAM,
    N_STARTUP_TRIALS_PARAM,
    N_TRIALS_PARAM,
    RUNG_FRACTIONS_PARAM,
    SAMPLER_PARAM,
    SCHEDULER_PARAM,
    TIMEOUT_PARAM,
    TRIAL_TIMEOUT_PARAM,
)
from automl.tasks.tracking.prefect_ui import SearchProgress, publish_trials

logger = logging.getLogger("automl")


def default_n_startup(n_trials: int | None) -> int:
    """Random configs before the model-based sampler takes over: a third of the budget, between 3 and 10."""
    return 10 if n_trials is None else max(3, min(10, n_trials // 3))


class Sampling:
    """Configs proposed by a sampler backend, each trained as far as the fidelity scheduler lets it."""

    name = "sample"

    def run(self, context: SearchContext) -> StrategyOutcome:
        job, prepared, study, space = context.job, context.prepared, context.study, context.space
        search, pipeline = job.search, context.pipeline
        enqueued = enqueue_warm_start(study, context.warm_start, space if context.narrowed else None)
        # Not for the grid sampler: it gives trial n grid point n, so a queued trial would push a point out.
        if search.try_default_first and not enqueued and search.sampler != "grid":
            defaults = [space.fit({}, d)[0] for d in default_configs(job.model, job.search.families)]
            if enqueue_default_configs(study, defaults):
                for default_config in defaults:
                    logger.info("search: the default config goes first: %s", default_config)
        n_startup = (
            search.n_startup_trials if search.n_startup_trials is not None else default_n_startup(search.n_trials)
        )
        # A continued study must not replay the same random configs; numpy's seeds end at 2**32 - 1 (config.seed's too).
        sampler_seed = (job.seed + len(study.trials)) % 2**32
        backend = make_backend(search.backend, search.sampler, study, space, sampler_seed, n_startup)
        scheduler = make_scheduler(
            search.fidelity,
            search.eta,
            search.min_fraction,
            search.promotion == "deferred",
            folds=len(prepared.folds) or 1,
            fold_pruning=search.cv.pruning,
            n_configs=search.n_trials,
            cost_aware=search.cost_aware,
            brackets=study.user_attrs.get(BRACKETS_ATTR),  # a continued study keeps the brackets it started with
        )
        if isinstance(scheduler, Hyperband) and BRACKETS_ATTR not in study.user_attrs:
            study.set_user_attr(BRACKETS_ATTR, scheduler.brackets)
        weights_dir = local_state().trial_weights(study.study_name)
        rung_dir = _rung_dir(search, study.study_name, pipeline.run_id, scheduler)
        objective = TrainerObjective.of(
            job,
            prepared,
            threads=context.threads,
            deadline=context.deadline,
            weights_dir=None if prepared.folds else weights_dir,
            rung_dir=rung_dir,
            tracking_uri=mlflow.get_tracking_uri(),
        )
        cv = prepared.cv
        mlflow.log_params(
            {
                BACKEND_PARAM: search.backend,
                SAMPLER_PARAM: search.sampler,
                FIDELITY_PARAM: search.fidelity,
                RUNG_FRACTIONS_PARAM: ",".join(f"{f:.4g}" for f in scheduler.fractions),
                SCHEDULER_PARAM: scheduler.name,
                BRACKETS_PARAM: getattr(scheduler, "brackets", 1),
                CONTINUATION_PARAM: search.continuation,
                COST_AWARE_PARAM: search.cost_aware,
                N_TRIALS_PARAM: search.n_trials,
                TIMEOUT_PARAM: search.timeout,
                EPOCHS_PARAM: search.epochs,
                N_STARTUP_TRIALS_PARAM: n_startup,
                TRIAL_TIMEOUT_PARAM: search.trial_timeout,
                CV_FOLDS_PARAM: scheduler.folds,
                **(
                    {CV_KIND_PARAM: cv.kind, CV_GAP_PARAM: search.cv.gap, CV_PRUNING_PARAM: search.cv.pruning}
                    if cv
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
            f"; {scheduler.folds} {cv.kind} folds" if cv else "",
            search.n_trials if search.n_trials is not None else "unlimited",
            enqueued,
        )
        progress = SearchProgress(job.config_name, search.n_trials, search.timeout, pipeline.prefect_flow_run_id)
        pace = SearchPace(search.n_trials, search.timeout, context.deadline)
        tracker = MlflowTrialObserver(
            pipeline.experiment_id, context.search_run_id, progress, pace, in_training=objective.trial_runs
        )
        engine = SearchEngine(
            objective,
            backend,
            scheduler,
            n_trials=search.n_trials,
            timeout=search.timeout,
            executor=PrefectExecutor(search.parallelism),
            observer=Observers(tracker, context.deadline) if context.deadline is not None else tracker,
            run_id=pipeline.run_id,
            storage=context.storage,
            deadline=context.deadline,
        )
        result = engine.run()
        progress.finish()
        if rung_dir is not None:  # the search is over: no config will continue from a rung any more
            shutil.rmtree(rung_dir, ignore_errors=True)
        publish_trials(job.config_name, result.trials, pipeline.prefect_flow_run_id)
        importances = log_search_report(study, job.seed)
        if cv:
            log_fold_scores(study)
        best_weights = trial_weights_path(weights_dir, result.best_params)
        return StrategyOutcome(
            best_params=result.best_params,
            best_value=result.best_value,
            best_trial=result.best_trial,
            counts=result.counts,
            seconds=result.seconds,
            enqueued=enqueued,
            best_weights=best_weights if best_weights.is_file() else None,
            metrics={ENGINE_OVERHEAD_SHARE_METRIC: result.overhead_share},
            overhead_share=result.overhead_share,
            importances=importances,
            cv_fold_losses=_fold_losses(study, result.best_trial) if cv else {},
            candidates=best_candidates(study, job.final_plan.members + 1, weights_dir),
        )


def best_candidates(study: Any, k: int, weights_dir: Path) -> list[Candidate]:
    """The study's ``k`` best distinct complete configs, best first (the study's best trial first), each with its
    weights trained on all the data where the search kept them."""
    best = study.best_trial.number
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    done = sorted(
        (t for t in complete if t.value is not None and math.isfinite(t.value)),
        key=lambda t: (t.number != best, t.value, t.number),
    )
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for trial in done:
        key = params_key(trial.params)
        if key in seen:
            continue
        seen.add(key)
        weights = trial_weights_path(weights_dir, trial.params)
        candidates.append(
            Candidate(dict(trial.params), float(trial.value), trial.number, str(weights) if weights.is_file() else None)
        )
        if len(candidates) == k:
            break
    return candidates


def _rung_dir(search: SearchConfig, study_name: str, run_id: str, scheduler: Any) -> Path | None:
    """Where this pipeline run's configs keep their rung checkpoints (``search.continuation``): per run, so another
    run continuing the study (``--study-name``), perhaps on other data, never continues from them, and one run's
    clean-up never removes another's. None without rungs, or on a remote Dask cluster, whose workers would each keep
    them on their own disk."""
    if not search.continuation or scheduler.name == FullFidelity.name:
        return None
    if search.cluster_address:
        logger.info("search: continuation is off on a remote Dask cluster (rung checkpoints are local files)")
        return None
    return local_state().rung_checkpoints(study_name) / run_id


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
