"""Registering the final stage's model: a version in the MLflow model registry (one per pipeline run, also across a
resume), its test metrics as tags, and the champion decision: the current champion is scored on this run's test
rows (``tasks.final_train.promotion``) and ``registry.promote`` decides whether the new version takes the
``champion`` alias; both metrics, the row count and the decision are tags of the new version."""

from __future__ import annotations

import logging

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from automl.configs import InputError
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.data_prep.preprocessing import SeriesPreprocessing, preprocessing_from_dict
from automl.tasks.final_train.metrics import PRIMARY_METRIC
from automl.tasks.final_train.promotion import Comparison, better, challenger_metric, compare_on_rows
from automl.tasks.registry.champion import current_champion, move_champion, version_metrics
from automl.tasks.summary import PromotionSummary, RegisteredVersion
from automl.tasks.tracking.catalog import (
    CHAMPION_TAG,
    FINGERPRINT,
    PIPELINE_RUN_TAG,
    PRIMARY_METRIC_TAG,
    PROMOTION_PREFIX,
    REFIT_TAG,
    REGISTERED_MODEL_TAG,
    REGISTERED_VERSION_TAG,
    TEST_METRIC_PREFIX,
)
from automl.tasks.tracking.runs import PipelineRun

logger = logging.getLogger("automl")


class NonFiniteMetric(RuntimeError):
    """The tuned model's test metric is NaN or infinite: nothing is registered."""


def register(
    model_uri: str,
    name: str,
    prepared: PreparedData,
    metrics: dict[str, float],
    pipeline: PipelineRun,
    test_rows: pd.DataFrame,
    promote: str = "better",
    tags: dict[str, str] | None = None,
) -> tuple[RegisteredVersion, str, str, PromotionSummary]:
    """Register the model (with ``tags`` beside its test metrics: whether its weights are a refit); score the
    current champion on ``test_rows`` (this run's test predictions from ``prepared.raw_test_input``, with the
    actual values) and move the ``champion`` alias as ``promote`` says. Returns the version, its source (the
    model's URI), why it is champion or not, and the decision."""
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
    if current is not None and str(current.version) == str(version.version):
        # a rerun after a kill between the move and the end of the stage: no second move
        note = "champion already (moved before the run was interrupted)"
        promotion = _recorded(client.get_model_version(name, version.version), primary, promote)
    else:
        promotion, note = _decide(current, name, prepared, test_rows, primary, promote)
        for key, value in promotion.__dict__.items():
            client.set_model_version_tag(name, version.version, f"{PROMOTION_PREFIX}{key}", str(value))
        if promotion.promoted:
            value, previous = promotion.challenger_metric, promotion.champion_metric
            move_champion(
                client,
                name,
                version.version,
                by=f"pipeline run {pipeline.run_id}",
                note=note,
                compared=(value, previous, promotion.rows) if value is not None else None,
            )
    mlflow.set_tags(
        {REGISTERED_MODEL_TAG: name, REGISTERED_VERSION_TAG: version.version, CHAMPION_TAG: str(promotion.promoted)}
    )
    logger.info("registry: %s version %s; %s", name, version.version, note)
    return RegisteredVersion(name, int(version.version)), version.source, note, promotion


def _decide(
    current: ModelVersion | None,
    name: str,
    prepared: PreparedData,
    test_rows: pd.DataFrame,
    primary: str,
    promote: str,
) -> tuple[PromotionSummary, str]:
    """The decision, and the line that says why."""
    if current is None:
        promoted = promote != "never"
        note = "first version of this model: champion" if promoted else "registry.promote never: no champion set"
        return PromotionSummary(None, None, None, 0, promoted, primary, promote), note
    theirs = f"champion v{current.version}"
    their_metric = current.tags.get(PRIMARY_METRIC_TAG)
    if current.tags.get(REFIT_TAG) == "all" and their_metric == primary:
        return _on_own_rows(current, prepared, test_rows, primary, promote)
    comparison: Comparison | None = None
    if their_metric not in (None, primary):
        reason = f"it is scored by {their_metric}, this run by {primary}"
    else:
        try:
            comparison, reason = _compare(name, str(current.version), prepared, test_rows), ""
        except ValueError as exc:
            reason = str(exc)
    if comparison is None:
        promoted = promote == "always"
        note = (
            f"{theirs} cannot score this run's test rows ({reason}): not compared; registry.promote {promote} "
            f"{'moves the champion here' if promoted else 'keeps it'}"
        )
        return PromotionSummary(int(current.version), None, None, 0, promoted, primary, promote), note
    wins = better(prepared.task, comparison)
    promoted = _promoted(promote, wins)
    note = (
        f"{'beats' if wins else 'does not beat'} {theirs} on this run's {comparison.rows} test rows "
        f"({primary} {comparison.challenger_metric:.5g} vs {comparison.champion_metric:.5g})"
        f"{'' if promote == 'better' else f'; registry.promote {promote}'}"
    )
    summary = PromotionSummary(
        int(current.version),
        comparison.champion_metric,
        comparison.challenger_metric,
        comparison.rows,
        promoted,
        primary,
        promote,
    )
    return summary, note


def _on_own_rows(
    current: ModelVersion, prepared: PreparedData, test_rows: pd.DataFrame, primary: str, promote: str
) -> tuple[PromotionSummary, str]:
    """A champion refit on every row of its data (``final.refit: all``) has trained on this run's test rows, so it
    would be scored on its own training data: the two are compared on their recorded test metrics, each measured
    on its own test rows before any refit (``rows`` 0: not the same rows)."""
    theirs = version_metrics(current).get(primary)
    ours = challenger_metric(test_rows, prepared.task)
    if theirs is None:
        promoted = promote == "always"
        note = f"champion v{current.version} (a refit) has no recorded test {primary}: not compared"
        return PromotionSummary(int(current.version), None, None, 0, promoted, primary, promote), note
    wins = better(prepared.task, Comparison(primary, theirs, ours, 0))
    promoted = _promoted(promote, wins)
    note = (
        f"{'beats' if wins else 'does not beat'} champion v{current.version} on each one's own test rows "
        f"({primary} {ours:.5g} vs {theirs:.5g}; the champion is a refit on every row, these included)"
        f"{'' if promote == 'better' else f'; registry.promote {promote}'}"
    )
    return PromotionSummary(int(current.version), theirs, ours, 0, promoted, primary, promote), note


def _promoted(promote: str, wins: bool) -> bool:
    """``registry.promote``'s answer when the two were compared: ``better`` follows the comparison."""
    return {"better": wins, "always": True, "never": False}[promote]


def _compare(name: str, version: str, prepared: PreparedData, test_rows: pd.DataFrame) -> Comparison:
    """The champion's raw-data model loaded from the registry and scored on this run's raw test rows (a series: it
    forecasts them from the whole history, however far it looks back)."""
    from automl.tasks.registry.prediction import load_registered_model

    try:
        champion = load_registered_model(f"models:/{name}/{version}", key="registry")
    except InputError as exc:
        raise ValueError(str(exc).removeprefix("registry: ")) from None
    pre = preprocessing_from_dict(prepared.preprocessing)
    if isinstance(pre, SeriesPreprocessing):
        history = prepared.raw_history if prepared.raw_history is not None else prepared.raw_test_input
        return compare_on_rows(champion, test_rows, history, prepared.task, pre.time_column)
    return compare_on_rows(champion, test_rows, prepared.raw_test_input, prepared.task, None)


def _recorded(version: ModelVersion, primary: str, promote: str) -> PromotionSummary:
    """The decision recorded on ``version`` (its ``automl.promotion.*`` tags) by the run that moved the alias."""
    tags = {k.removeprefix(PROMOTION_PREFIX): v for k, v in version.tags.items() if k.startswith(PROMOTION_PREFIX)}

    def number(key: str, kind: type) -> float | int | None:
        text = tags.get(key, "None")
        return None if text == "None" else kind(text)

    return PromotionSummary(
        number("champion_version", int),
        number("champion_metric", float),
        number("challenger_metric", float),
        int(tags.get("rows", 0)),
        True,
        tags.get("metric", primary),
        tags.get("rule", promote),
    )


def _registered_by(client: MlflowClient, name: str, pipeline_run_id: str):
    """The version this pipeline run registered already (a rerun after a kill between registering and the end
    of the stage): reused, so a resumed run never adds a second version. Training is seeded, so its weights are
    the ones the rerun trained again."""
    try:
        versions = client.search_model_versions(f"name = '{name}'", max_results=10_000)
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(PIPELINE_RUN_TAG) == pipeline_run_id), None)
