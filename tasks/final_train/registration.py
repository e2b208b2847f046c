"""Registering the final stage's model: a version in the MLflow registry (one per pipeline run, also across a
resume), its test metrics as tags, and the champion decision (it takes the ``champion`` alias when it beats the
current champion on the same data)."""

from __future__ import annotations

import logging

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.data_prep.prepared import PreparedData
from tasks.final_train.metrics import PRIMARY_METRIC, beats
from tasks.registry.champion import current_champion, move_champion, version_metrics
from tasks.summary import RegisteredVersion
from tasks.tracking.catalog import (
    CHAMPION_TAG,
    FINGERPRINT,
    PIPELINE_RUN_TAG,
    PRIMARY_METRIC_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    TEST_METRIC_PREFIX,
)
from tasks.tracking.runs import PipelineRun

logger = logging.getLogger("automl")


class NonFiniteMetric(RuntimeError):
    """The tuned model's test metric is NaN or infinite: nothing is registered."""


def register(
    model_uri: str,
    name: str,
    prepared: PreparedData,
    metrics: dict[str, float],
    pipeline: PipelineRun,
    tags: dict[str, str] | None = None,
) -> tuple[RegisteredVersion, str, bool, str]:
    """Register the model (with ``tags`` beside its test metrics: whether its weights are a refit); move the
    ``champion`` alias to it when it beats the champion on the same data. Returns the version, its source (the
    model's URI), whether it is champion, and why."""
    client = MlflowClient()
    version = _registered_by(client, name, pipeline.run_id) or mlflow.register_model(
        model_uri, name, tags={PIPELINE_RUN_TAG: pipeline.run_id}
    )
    primary, _ = PRIMARY_METRIC[prepared.task]
    tags = {
        FINGERPRINT: prepared.fingerprint,
        PRIMARY_METRIC_TAG: primary,
        **{f"{TEST_METRIC_PREFIX}{k}": v for k, v in metrics.items()},
        **(tags or {}),
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
