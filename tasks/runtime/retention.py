"""Retention: what ``automl gc`` removes (the trial weights, checkpoints, Prefect results and predictions of runs
beyond the last N per experiment) and what a pipeline run removes of its own once it has finished. MLflow runs,
their params, metrics and small artifacts (configs, summaries, plots) stay, and so does every registered version's
source run and model: warm start and the registry read those."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from tasks.runtime.state import LocalState, folder_name
from tasks.search import process_alive
from tasks.tracking.catalog import (
    BEST_TRIAL_WEIGHTS_FILE,
    FINAL_TRAINING_ROLE,
    HOST,
    OUTPUT_PATH_PARAM,
    PID,
    PIPELINE_ROLE,
    PREDICTIONS_FILE,
    ROLE,
    SCORE_ROLE,
    STAGE,
    STUDY,
    TRAINING_CHECKPOINT_FILE,
)
from tasks.tracking.runs import PipelineRun, child_runs

logger = logging.getLogger("automl")

TRIAL_WEIGHTS = "trial weights"
CHECKPOINTS = "checkpoints"
PREFECT_RESULTS = "Prefect results"
PREDICTIONS = "predictions"
KINDS = (TRIAL_WEIGHTS, CHECKPOINTS, PREFECT_RESULTS, PREDICTIONS)

# A stage's result file is named by tasks.runtime.caching.pipeline_stage_key: <stage>-<pipeline run id>-v<version>.
_RESULT_NAME = re.compile(r"^[a-z_]+-(?P<run_id>[0-9a-f]{32})-v\d+$")
_DAY = 86_400.0


@dataclass(frozen=True)
class Removal:
    """One thing removed (or, on a dry run, to be removed): its kind, where it is, its size in bytes."""

    kind: str
    target: str  # a path, or runs:/<run id>/<artifact> for an MLflow artifact
    size: int


@dataclass
class _Target:
    removal: Removal
    delete: Callable[[], None]


@dataclass
class GcReport:
    """What ``collect_garbage`` did: the state folder's size before and after, and every removal."""

    home: Path
    before: int
    after: int
    dry_run: bool
    removals: list[Removal] = field(default_factory=list)

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """(count, bytes) per kind, every kind listed."""
        totals = {kind: (0, 0) for kind in KINDS}
        for removal in self.removals:
            count, size = totals[removal.kind]
            totals[removal.kind] = (count + 1, size + removal.size)
        return totals

    @property
    def freed(self) -> int:
        return sum(r.size for r in self.removals)


def check_retention_args(keep: str, older_than: str | None) -> tuple[int, float | None]:
    """``automl gc``'s ``--keep N`` (a whole number from 0) and ``--older-than DAYS`` (a finite number from 0),
    checked before anything is looked at; a bad one is a one-line input error naming it."""
    from configs import InputError

    if not re.fullmatch(r"\d{1,9}", keep.strip()):
        raise InputError(f"--keep: {keep!r} is not a number of runs (a whole number from 0 to 999999999)")
    if older_than is None:
        return int(keep), None
    try:
        days = float(older_than)
    except ValueError:
        raise InputError(f"--older-than: {older_than!r} is not a number of days") from None
    if not math.isfinite(days) or days < 0:
        raise InputError(f"--older-than: {older_than!r} is not a number of days (a finite number from 0)")
    return int(keep), days


def disk_used(path: Path) -> int:
    """Bytes of the files under ``path`` (links not followed; 0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # removed meanwhile by a run
                continue
    return total


def collect_garbage(
    state: LocalState, keep: int, older_than_days: float | None = None, dry_run: bool = False
) -> GcReport:
    """Remove the heavy files of every experiment's pipeline and scoring runs beyond the newest ``keep`` (and, with
    ``older_than_days``, only those of runs last active before then). Never a run whose process is alive; an
    unfinished run (resumable by the same command) only with ``older_than_days``. Files no run of this tracking
    store owns go only with ``older_than_days``, by their age."""
    before = disk_used(state.home)
    cutoff = time.time() - older_than_days * _DAY if older_than_days is not None else None
    targets = _gc_targets(MlflowClient(), state, keep, cutoff)
    if not dry_run:
        _delete(targets)
    removals = [t.removal for t in targets]
    after = before - sum(r.size for r in removals) if dry_run else disk_used(state.home)
    return GcReport(state.home, before, after, dry_run, removals)


def clean_up_finished_run(state: LocalState, pipeline: PipelineRun) -> list[Removal]:
    """A finished pipeline run's own trial weights and checkpoints (files and MLflow artifacts) and Prefect results:
    nothing reads them once it is FINISHED (a rerun of the command starts a new run). The study's trial weights
    stay while another run of the study is unfinished (it may still continue from them)."""
    client = MlflowClient()
    run = client.get_run(pipeline.run_id)
    study = run.data.tags.get(STUDY)
    others = [o for o in _pipeline_runs(client) if o.data.tags.get(STUDY) == study and o.info.run_id != run.info.run_id]
    share = all(o.info.status == "FINISHED" for o in others)
    targets = _run_targets(client, state, run, _registered_runs(client))
    if study and share:
        targets.extend(_tree_targets(TRIAL_WEIGHTS, state.home / "trial-weights" / folder_name(study)))
    _delete(targets)
    return [t.removal for t in targets]


def _gc_targets(client: MlflowClient, state: LocalState, keep: int, cutoff: float | None) -> list[_Target]:
    pipelines = _pipeline_runs(client)
    protected = _registered_runs(client)
    cleanable = {run.info.run_id for run in _beyond(pipelines, keep, cutoff, resumable_ok=cutoff is not None)}
    targets: list[_Target] = []
    studies: dict[str, list[str]] = {}
    for run in pipelines:
        if run.info.run_id in cleanable:
            targets.extend(_run_targets(client, state, run, protected))
        if run.data.tags.get(STUDY):
            studies.setdefault(folder_name(run.data.tags[STUDY]), []).append(run.info.run_id)
    for study, run_ids in studies.items():
        if all(run_id in cleanable for run_id in run_ids):
            targets.extend(_tree_targets(TRIAL_WEIGHTS, state.home / "trial-weights" / study))
    scores = _search_runs(client, f"tags.`{ROLE}` = '{SCORE_ROLE}'")
    outputs: set[Path] = set()
    for run in scores:
        output = run.data.params.get(OUTPUT_PATH_PARAM)
        if output:
            outputs.add(Path(output).resolve())
    for run in _beyond(scores, keep, cutoff, resumable_ok=False):
        targets.extend(_score_targets(client, state, run))
    if cutoff is not None:
        known_runs = {run.info.run_id for run in pipelines}
        targets.extend(_orphans(state, set(studies), known_runs, outputs, cutoff))
    return targets


def _beyond(runs: list[Run], keep: int, cutoff: float | None, resumable_ok: bool) -> Iterable[Run]:
    """Each experiment's runs but its newest ``keep``, that are not in progress and (with ``cutoff``) last active
    before it; unfinished ones only when ``resumable_ok``."""
    by_experiment: dict[str, list[Run]] = {}
    for run in runs:
        by_experiment.setdefault(run.info.experiment_id, []).append(run)
    for group in by_experiment.values():
        group.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        for run in group[keep:]:
            if _in_progress(run):
                continue
            if run.info.status != "FINISHED" and not resumable_ok:
                continue
            if cutoff is not None and _last_active(run) > cutoff:
                continue
            yield run


def _in_progress(run: Run) -> bool:
    """A RUNNING run whose process is alive (a scoring run has no owner tags: RUNNING is enough)."""
    if run.info.status != "RUNNING":
        return False
    pid = run.data.tags.get(PID)
    return not pid or not pid.isdigit() or process_alive(run.data.tags.get(HOST), int(pid))


def _last_active(run: Run) -> float:
    return (run.info.end_time or run.info.start_time or 0) / 1000


def _run_targets(client: MlflowClient, state: LocalState, run: Run, protected: set[str]) -> list[_Target]:
    """A pipeline run's trial weights and checkpoints (MLflow artifacts of its search and final trainings, its PBT
    and rung checkpoint folders) and its Prefect results; nothing of a registered version's source run."""
    targets: list[_Target] = []
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    for stage in child_runs(experiment_id, run_id):
        name = stage.data.tags.get(STAGE)
        if name == "search":
            targets.extend(_artifact_target(client, TRIAL_WEIGHTS, stage, BEST_TRIAL_WEIGHTS_FILE, protected))
        elif name == "final_train":
            for training in child_runs(experiment_id, stage.info.run_id, FINAL_TRAINING_ROLE):
                targets.extend(_artifact_target(client, CHECKPOINTS, training, TRAINING_CHECKPOINT_FILE, protected))
    study = run.data.tags.get(STUDY)
    if study:
        for folder in ("pbt-checkpoints", "rung-checkpoints"):
            targets.extend(_tree_targets(CHECKPOINTS, state.home / folder / folder_name(study) / run_id, prune=True))
    results = prefect_results()
    if results.is_dir():
        for path in results.iterdir():
            match = _RESULT_NAME.match(path.name)
            if match and match["run_id"] == run_id:
                targets.extend(_tree_targets(PREFECT_RESULTS, path))
    return targets


def _score_targets(client: MlflowClient, state: LocalState, run: Run) -> list[_Target]:
    """A scoring run's predictions: the file it wrote under the state folder, and its MLflow artifact."""
    targets = _artifact_target(client, PREDICTIONS, run, PREDICTIONS_FILE, set())
    output = run.data.params.get(OUTPUT_PATH_PARAM)
    if output and Path(output).resolve().is_relative_to((state.home / "predictions").resolve()):
        targets.extend(_tree_targets(PREDICTIONS, Path(output).resolve()))
    return targets


def prefect_results() -> Path:
    """Where Prefect keeps results now: ``LocalState.prefect_results`` as ``configure_environment`` sets it, unless
    ``PREFECT_RESULTS_LOCAL_STORAGE_PATH`` said otherwise."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    return Path(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())


def _orphans(
    state: LocalState, studies: set[str], run_ids: set[str], outputs: set[Path], cutoff: float
) -> list[_Target]:
    """Files no run of this tracking store owns (its runs deleted, another MLFLOW_TRACKING_URI, another Prefect
    result), older than ``cutoff``."""
    candidates: list[tuple[str, Path]] = []
    candidates += [(TRIAL_WEIGHTS, p) for p in _children(state.home / "trial-weights") if p.name not in studies]
    for folder in ("pbt-checkpoints", "rung-checkpoints"):
        for study in _children(state.home / folder):
            candidates += [(CHECKPOINTS, p) for p in _children(study) if p.name not in run_ids]
    for path in _children(prefect_results()):
        match = _RESULT_NAME.match(path.name)
        if not match or match["run_id"] not in run_ids:
            candidates.append((PREFECT_RESULTS, path))
    for config in _children(state.home / "predictions"):
        candidates += [(PREDICTIONS, p) for p in _children(config) if p.resolve() not in outputs]
    targets: list[_Target] = []
    for kind, path in candidates:
        if _newest_mtime(path) < cutoff:
            targets.extend(_tree_targets(kind, path))
    return targets


def _artifact_target(client: MlflowClient, kind: str, run: Run, artifact: str, protected: set[str]) -> list[_Target]:
    """The MLflow artifact ``artifact`` of ``run`` when it has one (deleted through MLflow's artifact repository,
    wherever the run's artifacts live)."""
    if run.info.run_id in protected:
        return []
    repo = get_artifact_repository(run.info.artifact_uri)
    found = [f for f in repo.list_artifacts() if f.path == artifact and not f.is_dir]
    if not found:
        return []
    removal = Removal(kind, f"runs:/{run.info.run_id}/{artifact}", int(found[0].file_size or 0))
    return [_Target(removal, lambda: repo.delete_artifacts(artifact))]


def _tree_targets(kind: str, path: Path, prune: bool = False) -> list[_Target]:
    """A file or folder under the state folder, when it exists (``prune``: its parent too, once empty)."""
    if path.is_symlink() or path.is_file():
        return [_Target(Removal(kind, str(path), path.lstat().st_size), lambda: path.unlink(missing_ok=True))]
    if path.is_dir():
        return [_Target(Removal(kind, str(path), disk_used(path)), lambda: _remove_tree(path, prune))]
    return []


def _remove_tree(path: Path, prune: bool) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if prune and path.parent.is_dir() and not any(path.parent.iterdir()):  # a study's folder its last run emptied
        path.parent.rmdir()


def _delete(targets: list[_Target]) -> None:
    for target in targets:
        try:
            target.delete()
        except OSError as exc:  # one file that cannot go (permissions, removed meanwhile) does not stop the rest
            logger.warning("retention: could not remove %s (%s)", target.removal.target, exc)


def _children(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _newest_mtime(path: Path) -> float:
    """The newest modification time of ``path`` or anything under it: a folder a run still writes to is young."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, _, files in os.walk(path):
            for name in files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


def _registered_runs(client: MlflowClient) -> set[str]:
    """The source runs of every registered model version (the champion and all others)."""
    runs: set[str] = set()
    token = None
    while True:
        page = client.search_model_versions(max_results=1000, page_token=token)
        runs.update(v.run_id for v in page if v.run_id)
        token = page.token
        if not token:
            return runs


def _pipeline_runs(client: MlflowClient) -> list[Run]:
    return _search_runs(client, f"tags.`{ROLE}` = '{PIPELINE_ROLE}'")


def _search_runs(client: MlflowClient, query: str) -> list[Run]:
    """Every active run matching ``query`` in every active experiment."""
    experiments: list[Any] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        experiments.extend(page)
        token = page.token
        if not token:
            break
    ids = [e.experiment_id for e in experiments]
    runs: list[Run] = []
    for start in range(0, len(ids), 100):  # MLflow searches at most 100 experiments at once
        token = None
        while True:
            page = client.search_runs(ids[start : start + 100], query, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    return runs
