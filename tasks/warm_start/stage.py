"""Warm-start stage: every run makes the next one faster. The config store is MLflow itself: each finished
pipeline run carries its best config, model family, task type, search-space signature and the dataset's
meta-features. This stage finds the compatible past runs (and the configs named in ``warm_start``), lets
``tasks.warm_start.decision`` rank and fit them, and logs the decision; the search queues them as its first trials.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from prefect import task

from automl.configs import (
    ModelConfig,
    ParamSpec,
    PipelineConfig,
    TransferredConfig,
    WarmStartConfig,
    load_transferred_config,
)
from automl.models import AUTO
from automl.tasks.runtime.caching import pipeline_stage_key
from automl.tasks.search import SearchSpace
from automl.tasks.space import every_default, join_family, search_space
from automl.tasks.tracking.catalog import (
    BEST_CONFIG_FILE,
    BEST_VAL_LOSS,
    CANDIDATES_FILE,
    CANDIDATES_METRIC,
    ENABLED_PARAM,
    ENQUEUED_METRIC,
    FAMILY,
    IMPORTED_ROLE,
    META_FEATURES,
    PIPELINE_ROLE,
    QUEUED_CONFIGS_FILE,
    ROLE,
    SPACE_SIGNATURE,
    TASK_TYPE,
    TOP_K_PARAM,
)
from automl.tasks.tracking.runs import PipelineRun, json_tag, log_frame, stage_run
from automl.tasks.warm_start.decision import Candidate, WarmStartDecision, choose, meta_distance, space_overlap

logger = logging.getLogger("automl")


@dataclass(frozen=True)
class WarmStartJob:
    """The parts of the config the warm-start stage uses."""

    warm_start: WarmStartConfig
    model: ModelConfig
    space: dict[str, ParamSpec]
    families: tuple[str, ...] = ()  # model.family auto: the families searched (their past runs seed it too)

    @classmethod
    def of(cls, cfg: PipelineConfig) -> WarmStartJob:
        return cls(cfg.warm_start, cfg.model, dict(cfg.search.space or {}), tuple(cfg.search.families or ()))

    def sources(self) -> dict[str, str]:
        """The families whose past configs may seed this search, each with the family it is searched as: the
        config's family; under ``model.family: auto`` every searched family and past ``auto`` runs."""
        if not self.families:
            return {self.model.family: self.model.family}
        return {**{name: name for name in self.families}, AUTO: AUTO}

    def as_searched(self, params: dict[str, Any], family: str) -> dict[str, Any]:
        """A past config of ``family`` as a config of this search (prefixed by its family under auto)."""
        return join_family(family, params) if self.families and family != AUTO else dict(params)


def decide_warm_start(
    job: WarmStartJob, meta_features: dict[str, float], task_type: str, space: SearchSpace, exclude_run_id: str
) -> WarmStartDecision:
    """Find, rank and fit the configs to queue (reads MLflow; writes nothing)."""
    settings = job.warm_start
    defaults = every_default(job.families) if job.families else job.model.default_config()
    candidates: list[Candidate] = []
    if settings.from_file is not None:
        candidates.append(_from_transferred(load_transferred_config(settings.from_file), job, task_type, space))
    for run_id in settings.from_runs:
        candidates.append(_from_run_id(run_id, job, task_type, space))
    if settings.top_k > 0:
        explicit = {c.run_id for c in candidates}
        for family in job.sources():
            for run in find_past_runs(family, task_type, exclude={exclude_run_id, *explicit}):
                candidate = _candidate(run, "similar", space, job)
                candidate.distance = meta_distance(meta_features, json_tag(run, META_FEATURES) or {})
                if candidate.shared_params == 0:
                    candidate.verdict = "rejected: its search space shares no parameter with this one"
                candidates.append(candidate)
    ranked = choose(candidates, space, defaults, settings.top_k)
    return WarmStartDecision(candidates=ranked, skip_low_fidelity=settings.skip_low_fidelity)


def find_past_runs(family: str, task_type: str, exclude: set[str] = frozenset()) -> list[Run]:
    """Finished pipeline runs (and imported configs) of ``family`` and ``task_type`` in every experiment."""
    client = MlflowClient()
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    if not experiment_ids:
        return []
    query = f"tags.`{FAMILY}` = '{family}' and tags.`{TASK_TYPE}` = '{task_type}' and attributes.status = 'FINISHED'"
    runs = []
    for run in client.search_runs(experiment_ids, query, max_results=1000):
        if run.data.tags.get(ROLE) in (PIPELINE_ROLE, IMPORTED_ROLE) and run.info.run_id not in exclude:
            runs.append(run)
    return runs


def load_best_config(run_id: str) -> dict[str, Any]:
    """The best config a finished pipeline run recorded (``best_config.json``)."""
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/{BEST_CONFIG_FILE}")


@task(name="warm_start", cache_key_fn=pipeline_stage_key, persist_result=True)
def warm_start(
    job: WarmStartJob, meta_features: dict[str, float], task_type: str, pipeline: PipelineRun
) -> WarmStartDecision:
    """Prefect stage: decide the warm start and log the candidate table, queued configs and adaptations."""
    space = search_space(job.space, job.families)
    settings = job.warm_start
    with stage_run(pipeline, "warm_start"):
        if not settings.enabled:
            decision = WarmStartDecision(candidates=[])
            logger.info("warm start: disabled (warm_start.enabled=false); starting cold")
        else:
            decision = decide_warm_start(job, meta_features, task_type, space, exclude_run_id=pipeline.run_id)
        table = decision.table()
        mlflow.log_params({ENABLED_PARAM: settings.enabled, TOP_K_PARAM: settings.top_k})
        mlflow.log_metrics({CANDIDATES_METRIC: len(decision.candidates), ENQUEUED_METRIC: len(decision.queued)})
        log_frame(table, CANDIDATES_FILE)
        mlflow.log_dict(
            {
                "queued": [
                    {"source_run_id": c.run_id, "params": c.queued_params, "adaptations": c.adaptations}
                    for c in decision.queued
                ]
            },
            QUEUED_CONFIGS_FILE,
        )
        if not decision.candidates and settings.enabled:
            logger.info("warm start: no past runs of %s/%s found; starting cold", job.model.family, task_type)
        for c in decision.candidates:
            distance = "-" if c.distance is None else f"{c.distance:.3f}"
            logger.info(
                "warm start: %s %s (%s, distance %s): %s", c.source, c.run_id[:12], c.run_name, distance, c.verdict
            )
            for note in c.adaptations if c.queued_params else []:
                logger.info("warm start:   adapted %s", note)
    return decision


# --- loading candidates -------------------------------------------------------------------------------------


def _candidate(run: Run, source: str, space: SearchSpace, job: WarmStartJob) -> Candidate:
    client = MlflowClient()
    experiment = client.get_experiment(run.info.experiment_id).name
    signature = json_tag(run, SPACE_SIGNATURE)
    candidate = Candidate(
        run_id=run.info.run_id,
        source=source,
        experiment=experiment,
        run_name=run.info.run_name or "",
        val_loss=run.data.metrics.get(BEST_VAL_LOSS),
        shared_params=space_overlap(signature, space),
    )
    try:
        candidate.params = job.as_searched(load_best_config(run.info.run_id), run.data.tags.get(FAMILY, ""))
        if job.families:  # its space's names are its family's; this search's carry the family as a prefix
            candidate.shared_params = len(set(candidate.params) & set(space.names))
    except Exception as exc:  # an unreadable past run must not stop this one
        candidate.verdict = f"rejected: cannot read {BEST_CONFIG_FILE} ({type(exc).__name__})"
    return candidate


def _from_run_id(run_id: str, job: WarmStartJob, task_type: str, space: SearchSpace) -> Candidate:
    try:
        run = MlflowClient().get_run(run_id)
    except Exception:
        return Candidate(run_id=run_id, source="from_runs", verdict="rejected: no such MLflow run")
    candidate = _candidate(run, "from_runs", space, job)
    tags = run.data.tags
    if tags.get(FAMILY) not in job.sources() or tags.get(TASK_TYPE) != task_type:
        candidate.verdict = (
            f"rejected: it is a {tags.get(FAMILY, '?')}/{tags.get(TASK_TYPE, '?')} run; "
            f"this is {job.model.family}/{task_type}"
        )
    return candidate


def _from_transferred(config: TransferredConfig, job: WarmStartJob, task_type: str, space: SearchSpace) -> Candidate:
    params = job.as_searched(dict(config.params), config.model_family)
    candidate = Candidate(
        run_id=config.source_run_id or "file",
        source="from_file",
        experiment=config.experiment or "",
        val_loss=config.metrics.get(BEST_VAL_LOSS),
        params=params,
        shared_params=len(set(params) & set(space.names)),
    )
    if config.model_family not in job.sources() or config.task_type != task_type:
        candidate.verdict = (
            f"rejected: the file holds a {config.model_family}/{config.task_type} config; "
            f"this is {job.model.family}/{task_type}"
        )
    return candidate
