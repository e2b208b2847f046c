"""Warm-start stage: every run makes the next one faster. The config store is MLflow itself: each finished
pipeline run carries its best config, model family, task type, search-space signature and the dataset's
meta-features. A new run ranks compatible past runs by meta-feature distance, fits their best configs into
its own search space, and queues them as the first trials.

Distance: for the meta-features both datasets have (sizes and sampling interval on a log scale, the rest as
they are: autocorrelations, trend and seasonality strength, class balance, categorical share, target shape),
the root mean square of their differences. 0 means the same profile; about 1 means unrelated data.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from prefect import task

from configs import (
    ModelConfig,
    ParamSpec,
    PipelineConfig,
    TransferredConfig,
    WarmStartConfig,
    load_transferred_config,
)
from models import get_family
from tasks.runtime.caching import pipeline_stage_key
from tasks.search import SearchSpace
from tasks.space import search_space
from tasks.tracking.catalog import (
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
from tasks.tracking.runs import PipelineRun, json_tag, log_frame, stage_run

logger = logging.getLogger("automl")

# Meta-features compared on a log scale (sizes, intervals); all others are compared as they are.
LOG_SCALED = {"n_rows", "n_features", "step_seconds", "n_classes", "seasonal_period"}
# Target level and spread depend on units, so they never count towards similarity.
NOT_COMPARED = {"target_mean", "target_std"}


@dataclass
class Candidate:
    """A past config considered for warm start, and what became of it."""

    run_id: str
    source: str  # similar | from_runs | from_file
    experiment: str = ""
    run_name: str = ""
    distance: float | None = None
    val_loss: float | None = None
    shared_params: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    queued_params: dict[str, Any] | None = None  # its params fitted into this run's space, when queued
    adaptations: list[str] = field(default_factory=list)


@dataclass
class WarmStartDecision:
    """What the warm-start stage decided: every candidate with its verdict, and the configs to queue."""

    candidates: list[Candidate]
    skip_low_fidelity: bool = False

    @property
    def queued(self) -> list[Candidate]:
        return [c for c in self.candidates if c.queued_params is not None]

    @property
    def source_run_ids(self) -> list[str]:
        return [c.run_id for c in self.queued]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "run_id": c.run_id,
                    "source": c.source,
                    "experiment": c.experiment,
                    "run_name": c.run_name,
                    "distance": c.distance,
                    "val_loss": c.val_loss,
                    "shared_params": c.shared_params,
                    "verdict": c.verdict,
                    "params": json.dumps(c.params, sort_keys=True),
                    "queued_params": json.dumps(c.queued_params, sort_keys=True) if c.queued_params else "",
                    "adaptations": "; ".join(c.adaptations),
                }
                for c in self.candidates
            ],
            columns=[
                "run_id",
                "source",
                "experiment",
                "run_name",
                "distance",
                "val_loss",
                "shared_params",
                "verdict",
                "params",
                "queued_params",
                "adaptations",
            ],
        )


def meta_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Root-mean-square difference of the meta-features both have (sizes log-scaled); inf when none are shared.

    Example:
        >>> meta_distance({"n_rows": 1000, "acf_1": 0.9}, {"n_rows": 1000, "acf_1": 0.5})
        0.282...
    """
    shared = sorted((set(a) & set(b)) - NOT_COMPARED)
    diffs = []
    for name in shared:
        x, y = float(a[name]), float(b[name])
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        if name in LOG_SCALED:
            x, y = math.log1p(max(x, 0.0)), math.log1p(max(y, 0.0))
            diffs.append((x - y) / math.log(10))  # one decade apart counts as 1
        else:
            diffs.append(x - y)
    if not diffs:
        return math.inf
    return math.sqrt(sum(d * d for d in diffs) / len(diffs))


def space_overlap(signature: dict[str, Any] | None, space: SearchSpace) -> int:
    """How many parameters a past run's space shares with ``space`` (by name)."""
    if not signature:
        return 0
    return len(set(signature) & set(space.names))


def choose(
    candidates: list[Candidate],
    space: SearchSpace,
    defaults: dict[str, Any],
    top_k: int,
) -> list[Candidate]:
    """Fit candidates into ``space`` and queue distinct ones: every explicit source (``from_file``,
    ``from_runs``) first, then up to ``top_k`` similar runs by distance, then validation loss. Every candidate
    gets a verdict."""
    order = sorted(
        candidates,
        key=lambda c: (
            c.source == "similar",
            c.distance if c.distance is not None else math.inf,
            c.val_loss if c.val_loss is not None else math.inf,
        ),
    )
    seen: dict[str, str] = {}
    similar_queued = 0  # top_k limits configs found by similarity; the ones named explicitly come on top
    for candidate in order:
        if candidate.verdict:  # already rejected while loading
            continue
        if candidate.source == "similar" and similar_queued >= top_k:
            candidate.verdict = f"not chosen: beyond top_k={top_k}"
            continue
        fitted, notes = space.fit(candidate.params, defaults)
        candidate.adaptations = notes
        key = json.dumps(fitted, sort_keys=True, default=str)
        if key in seen:
            candidate.verdict = f"duplicate of {seen[key]} after adaptation"
            continue
        seen[key] = candidate.run_id
        candidate.queued_params = fitted
        candidate.verdict = "queued" + (" (adapted)" if notes else "")
        similar_queued += candidate.source == "similar"
    return order


@dataclass(frozen=True)
class WarmStartJob:
    """The parts of the config the warm-start stage uses."""

    warm_start: WarmStartConfig
    model: ModelConfig
    space: dict[str, ParamSpec]

    @classmethod
    def of(cls, cfg: PipelineConfig) -> WarmStartJob:
        return cls(cfg.warm_start, cfg.model, dict(cfg.search.space or {}))


def decide_warm_start(
    job: WarmStartJob, meta_features: dict[str, float], task_type: str, space: SearchSpace, exclude_run_id: str
) -> WarmStartDecision:
    """Find, rank and fit the configs to queue (reads MLflow; writes nothing)."""
    settings = job.warm_start
    family = get_family(job.model.family)
    defaults = job.model.default_config()
    candidates: list[Candidate] = []
    if settings.from_file is not None:
        candidates.append(_from_transferred(load_transferred_config(settings.from_file), family.name, task_type, space))
    for run_id in settings.from_runs:
        candidates.append(_from_run_id(run_id, family.name, task_type, space))
    if settings.top_k > 0:
        explicit = {c.run_id for c in candidates}
        for run in find_past_runs(family.name, task_type, exclude={exclude_run_id, *explicit}):
            candidate = _candidate(run, "similar", space)
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
    space = search_space(job.space)
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


def _candidate(run: Run, source: str, space: SearchSpace) -> Candidate:
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
        candidate.params = load_best_config(run.info.run_id)
    except Exception as exc:  # an unreadable past run must not stop this one
        candidate.verdict = f"rejected: cannot read {BEST_CONFIG_FILE} ({type(exc).__name__})"
    return candidate


def _from_run_id(run_id: str, family: str, task_type: str, space: SearchSpace) -> Candidate:
    try:
        run = MlflowClient().get_run(run_id)
    except Exception:
        return Candidate(run_id=run_id, source="from_runs", verdict="rejected: no such MLflow run")
    candidate = _candidate(run, "from_runs", space)
    tags = run.data.tags
    if tags.get(FAMILY) != family or tags.get(TASK_TYPE) != task_type:
        candidate.verdict = (
            f"rejected: it is a {tags.get(FAMILY, '?')}/{tags.get(TASK_TYPE, '?')} run; this is {family}/{task_type}"
        )
    return candidate


def _from_transferred(config: TransferredConfig, family: str, task_type: str, space: SearchSpace) -> Candidate:
    candidate = Candidate(
        run_id=config.source_run_id or "file",
        source="from_file",
        experiment=config.experiment or "",
        val_loss=config.metrics.get(BEST_VAL_LOSS),
        params=dict(config.params),
        shared_params=len(set(config.params) & set(space.names)),
    )
    if config.model_family != family or config.task_type != task_type:
        candidate.verdict = (
            f"rejected: the file holds a {config.model_family}/{config.task_type} config; this is {family}/{task_type}"
        )
    return candidate
