"""What the Prefect UI shows for a pipeline run: the summary (Markdown), a table of the trials, and a progress
bar updated as trials finish, all attached to the pipeline's flow run (also those made inside the search
subflow). Outside a Prefect run (plain function calls) these do nothing."""

from __future__ import annotations

import re
import time
from typing import Any

from prefect.artifacts import MarkdownArtifact, ProgressArtifact, TableArtifact, update_progress_artifact
from prefect.context import FlowRunContext

from tasks.tracking.catalog import SEARCH_PROGRESS_ARTIFACT, SUMMARY_ARTIFACT, TRIALS_ARTIFACT


def _in_prefect_run() -> bool:
    return FlowRunContext.get() is not None


def artifact_key(config_name: str, what: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{config_name}-{what}".lower()).strip("-")


def publish_markdown(config_name: str, what: str, markdown: str, title: str, flow_run_id: str | None = None) -> None:
    """A Markdown artifact keyed ``<config>-<what>`` on the flow run (the current one unless given)."""
    if _in_prefect_run():
        MarkdownArtifact(
            markdown=markdown,
            key=artifact_key(config_name, what),
            description=f"{title}: {config_name}",
            flow_run_id=flow_run_id,
        ).create()


def publish_summary(config_name: str, markdown: str, flow_run_id: str | None) -> None:
    publish_markdown(config_name, SUMMARY_ARTIFACT, markdown, "AutoML summary", flow_run_id)


def publish_trials(config_name: str, records: list[Any], flow_run_id: str | None) -> None:
    """One row per trial of this search: outcome, loss, rungs reached, seconds, params, reason."""
    if not _in_prefect_run() or not records:
        return
    rows = [
        {
            "trial": r.number,
            "outcome": r.outcome,
            "val_loss": None if r.value is None else round(r.value, 6),
            "last_rung_fraction": round(r.rungs[-1][0], 4) if r.rungs else None,
            "last_rung_loss": round(r.rungs[-1][1], 6) if r.rungs else None,
            "seconds": round(r.seconds, 2),
            "source": r.source,
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.params.items()},
            "reason": r.reason or "",
        }
        for r in records
    ]
    TableArtifact(
        table=rows,
        key=artifact_key(config_name, TRIALS_ARTIFACT),
        description=f"Trials of the search: {config_name}",
        flow_run_id=flow_run_id,
    ).create()


class SearchProgress:
    """A Prefect progress artifact: share of the trial budget (or of the timeout) used so far."""

    def __init__(self, config_name: str, n_trials: int | None, timeout: float | None, flow_run_id: str | None):
        self.n_trials, self.timeout = n_trials, timeout
        self.started = time.monotonic()
        self.done = 0
        self.artifact_id = None
        if _in_prefect_run():
            self.artifact_id = (
                ProgressArtifact(
                    progress=0.0,
                    key=artifact_key(config_name, SEARCH_PROGRESS_ARTIFACT),
                    description=f"Search progress: {config_name}",
                    flow_run_id=flow_run_id,
                )
                .create()
                .id
            )

    def __call__(self, record: Any, best: Any) -> None:
        self.done += 1
        if self.artifact_id is None:
            return
        shares = []
        if self.n_trials:
            shares.append(self.done / self.n_trials)
        if self.timeout:
            shares.append((time.monotonic() - self.started) / self.timeout)
        update_progress_artifact(self.artifact_id, min(100.0, 100.0 * max(shares)))

    def finish(self) -> None:
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, 100.0)
