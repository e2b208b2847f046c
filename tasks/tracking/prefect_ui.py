"""What the Prefect UI shows for a pipeline run: the summary (Markdown), a table of the trials, a progress bar
updated as trials finish, and the pipeline's log lines in its Logs tab, all attached to the pipeline's flow run
(also those made inside the search subflow). Outside a Prefect run (plain function calls) these do nothing."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.artifacts import MarkdownArtifact, ProgressArtifact, TableArtifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.logging.handlers import APILogHandler

from automl.tasks.tracking.catalog import SEARCH_PROGRESS_ARTIFACT, SUMMARY_ARTIFACT, TRIALS_ARTIFACT


def _in_prefect_run() -> bool:
    return FlowRunContext.get() is not None


def lines_in_logs_tab() -> None:
    """The ``automl`` logger's INFO lines reach the flow run's Logs tab also where no ``automl`` command set the
    logger up: a deployment's flow run executes in a process of Prefect's own, where the logger would inherit the
    root's WARNING and the Logs tab would hold Prefect's "Finished in state" lines only."""
    logger = logging.getLogger("automl")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


class _AlsoToFlowRun(APILogHandler):
    """Sends the lines logged inside one subflow run to another flow run too (Prefect's own handler, which
    batches them to the API, with the record's flow run replaced). Lines logged elsewhere (another pipeline served
    by the same process) are left alone."""

    def __init__(self, subflow_run_id: str, flow_run_id: str):
        super().__init__()
        self.subflow_run_id, self.flow_run_id = subflow_run_id, flow_run_id

    def emit(self, record: logging.LogRecord) -> None:
        context = FlowRunContext.get()
        if context is None or context.flow_run is None or str(context.flow_run.id) != self.subflow_run_id:
            return
        copy = logging.makeLogRecord(record.__dict__)
        copy.flow_run_id, copy.task_run_id = self.flow_run_id, None
        super().emit(copy)


@contextmanager
def logs_also_in(flow_run_id: str | None) -> Iterator[None]:
    """Inside a subflow (the search), the ``automl`` logger's lines (a line per trial, best so far) also reach the
    flow run ``flow_run_id`` (the pipeline's), whose Logs tab a person opens, as well as the subflow's own."""
    context = FlowRunContext.get()
    if flow_run_id is None or context is None or context.flow_run is None:
        yield
        return
    subflow_run_id = str(context.flow_run.id)
    if subflow_run_id == flow_run_id:
        yield
        return
    logger = logging.getLogger("automl")
    handler = _AlsoToFlowRun(subflow_run_id, flow_run_id)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


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
