"""The ``champion`` alias of a registered model, and its history.

MLflow keeps only where an alias points now. Every move made here is also recorded as a tag on the version it
moved to (``automl.champion_move.<epoch ms>``, a JSON record: from which version, when, by which pipeline run or
command, on what metric values), so the history lives in the registry next to the alias and survives any
number of moves. ``automl champion history`` reads it; ``automl champion set`` moves the alias back.

Example:
    >>> move_champion(MlflowClient(), "lstm_baseline", "3", by="automl champion set", note="rollback")
    >>> [(m.from_version, m.to_version) for m in champion_history(MlflowClient(), "lstm_baseline")]
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from automl.tasks.tracking.catalog import (
    CHAMPION_ALIAS,
    CHAMPION_MOVE_PREFIX,
    PIPELINE_RUN_TAG,
    PRIMARY_METRIC_TAG,
    TEST_METRIC_PREFIX,
)

MAX_NOTE = 1000


@dataclass(frozen=True)
class ChampionMove:
    """One move of the alias: ``from_version`` (None for the first champion) -> ``to_version``."""

    at: str  # UTC, ISO 8601
    to_version: str
    from_version: str | None
    by: str
    pipeline_run_id: str | None
    metric: str | None
    value: float | None
    previous_value: float | None
    note: str = ""
    rows: int | None = None  # value and previous_value were measured on the same rows, this many (None: own splits)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def current_champion(client: MlflowClient, name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version ``alias`` points at, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def version_metrics(version: ModelVersion) -> dict[str, float]:
    """The test metrics recorded on a version (tags ``test_<metric>``)."""
    metrics = {}
    for key, value in version.tags.items():
        if key.startswith(TEST_METRIC_PREFIX):
            try:
                metrics[key.removeprefix(TEST_METRIC_PREFIX)] = float(value)
            except ValueError:
                continue
    return metrics


def move_champion(
    client: MlflowClient,
    name: str,
    version: str,
    by: str,
    note: str = "",
    alias: str = CHAMPION_ALIAS,
    compared: tuple[float, float | None, int] | None = None,
) -> ChampionMove:
    """Point ``alias`` at ``version`` and record the move on that version, with the metric values ``compared``
    (the new version's, the previous champion's, on how many shared rows) when the pipeline measured both on the
    same rows, else each version's own test metric."""
    if len(note) > MAX_NOTE:
        raise ValueError(f"a note of at most {MAX_NOTE} characters, please (got {len(note)})")
    previous = current_champion(client, name, alias)
    target = client.get_model_version(name, str(version))
    version = str(target.version)  # as the registry spells it ("01" -> "1")
    metric = target.tags.get(PRIMARY_METRIC_TAG)
    value = version_metrics(target).get(metric) if metric else None
    previous_value = version_metrics(previous).get(metric) if metric and previous is not None else None
    rows = None
    if compared is not None:
        value, previous_value, rows = compared
    client.set_registered_model_alias(name, alias, str(version))
    now = time.time()
    move = ChampionMove(
        at=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        to_version=str(version),
        from_version=str(previous.version) if previous is not None else None,
        by=by,
        pipeline_run_id=target.tags.get(PIPELINE_RUN_TAG),
        metric=metric,
        value=value,
        previous_value=previous_value,
        note=note,
        rows=rows,
    )
    client.set_model_version_tag(
        name, str(version), f"{CHAMPION_MOVE_PREFIX}{int(now * 1000)}", json.dumps(move.to_dict())
    )
    return move


def champion_history(client: MlflowClient, name: str) -> list[ChampionMove]:
    """Every recorded move of the alias for model ``name``, oldest first."""
    moves: list[tuple[str, ChampionMove]] = []
    for version in client.search_model_versions(f"name = '{_quoted(name)}'", max_results=10_000):
        for key, value in version.tags.items():
            if key.startswith(CHAMPION_MOVE_PREFIX):
                try:
                    moves.append((key.removeprefix(CHAMPION_MOVE_PREFIX).zfill(16), ChampionMove(**json.loads(value))))
                except (json.JSONDecodeError, TypeError):
                    continue
    return [move for _, move in sorted(moves, key=lambda item: item[0])]


def _quoted(name: str) -> str:
    return name.replace("'", "\\'")
