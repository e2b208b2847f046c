"""Retention: what ``automl gc`` removes (the trial weights, checkpoints, Prefect results and predictions of runs
beyond the last N per experiment) and what a pipeline run removes of its own once it has finished. MLflow runs,
their params, metrics and small artifacts (configs, summaries, plots) stay, and so does every registered version's
model (an MLflow logged model, never among the targets): warm start and the registry read those.

Races: the targets are listed first and deleted after, so each is checked again just before it goes: a run's files
only while the run (read again from MLflow) is still not in progress and as finished as when it was chosen, a
study's trial weights only while no run of the study (searched again) is one that must keep them, a file no run owns
only while it is still old. What remains is the moment between that check and the deletion (milliseconds): a run
resumed, or a ``--study-name`` run started, exactly then may lose a file it was about to read, and trains that part
again."""

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

from automl.tasks.runtime.state import LocalState, folder_name
from automl.tasks.search import process_alive
from automl.tasks.tracking.catalog import (
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
from automl.tasks.tracking.runs import PipelineRun, child_runs

logger = logging.getLogger("automl")

TRIAL_WEIGHTS = "trial weights"
CHECKPOINTS = "checkpoints"
PREFECT_RESULTS = "Prefect results"
PREDICTIONS = "predictions"
KINDS = (TRIAL_WEIGHTS, CHECKPOINTS, PREFECT_RESULTS, PREDICTIONS)

# A stage's result file is named by tasks.runtime.caching.pipeline_stage_key: <stage>-<pipeline run id>-v<version>.
# Only such entries are ever ours: PREFECT_RESULTS_LOCAL_STORAGE_PATH may be a folder other projects share.
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
    still_ours: Callable[[], bool] = lambda: True  # asked again just before deleting (see the module's races)


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


def check_retention_args(keep: str, older_than: str | None) -> tuple[int, float | None]:
    """``automl gc``'s ``--keep N`` (a whole number from 0) and ``--older-than DAYS`` (a finite number from 0),
    checked before anything is looked at; a bad one is a one-line input error naming it."""
    from automl.configs import InputError

    if not re.fullmatch(r"[0-9]{1,9}", keep.strip()):  # not \d: it takes '٥' and '５' too
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
    store owns go only with ``older_than_days``, by their age. The sizes are of what gc looks at: the state folder
    and our Prefect results wherever they are."""
    before = _measured(state)
    cutoff = time.time() - older_than_days * _DAY if older_than_days is not None else None
    targets = _gc_targets(MlflowClient(), state, keep, cutoff)
    if dry_run:
        removals = [t.removal for t in targets]
        return GcReport(state.home, before, before - sum(r.size for r in removals), dry_run, removals)
    removals = _delete(targets)
    return GcReport(state.home, before, _measured(state), dry_run, removals)


def clean_up_finished_run(
    state: LocalState, pipeline: PipelineRun, storage: str, top_k: int, stopped: Callable[[], bool] = lambda: False
) -> list[Removal]:
    """A finished pipeline run's own trial weights and checkpoints (files and MLflow artifacts) and Prefect results:
    nothing reads them once it is FINISHED (a rerun of the command starts a new run). Of the study's trial weights
    (in Optuna ``storage``) those of its ``top_k`` best configs stay, which a run continuing the study
    (``--study-name``) trains its final models from; the others stay while another run of the study is unfinished
    (it may still continue from them). ``stopped``: asked between deletions, True ends the clean-up there."""
    client = MlflowClient()
    run = client.get_run(pipeline.run_id)
    study = run.data.tags.get(STUDY)
    targets = _run_targets(client, state, run)
    if study:
        best = _best_weights(state, storage, study, top_k)
        if best is not None:  # a study that cannot be read keeps all its weights: which matter is unknown
            folder = state.trial_weights(study)
            others_done = _study_done(client, study, lambda o: o.info.run_id == run.info.run_id or _finished(o))
            for path in _children(folder):
                if path not in best:
                    targets.extend(_guarded(_tree_targets(TRIAL_WEIGHTS, path), others_done))
    return _delete(targets, stopped)


def _best_weights(state: LocalState, storage: str, study_name: str, top_k: int) -> set[Path] | None:
    """The weights files of the study's ``top_k`` best configs (what the final stage of a run continuing it reads,
    ``best_candidates``); None when the study cannot be read."""
    import optuna

    from automl.tasks.search_stage.sampling import best_candidates
    from automl.tasks.search_stage.studies import make_storage

    try:
        study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
        candidates = best_candidates(study, top_k, state.trial_weights(study_name))
    except (KeyError, ValueError) as exc:  # no such study, or none of its trials complete
        logger.warning("clean-up: study %s not read (%s); its trial weights stay", study_name, exc)
        return None
    return {Path(c.weights) for c in candidates if c.weights}


def _measured(state: LocalState) -> int:
    """Bytes of the state folder and of our Prefect results outside it (``PREFECT_RESULTS_LOCAL_STORAGE_PATH``
    set elsewhere): what gc looks at."""
    home = state.home.resolve()
    outside = [p for p in _our_results() if not p.resolve().is_relative_to(home)]
    return disk_used(state.home) + sum(_tree_size(p) for p in outside)


def _our_results() -> list[Path]:
    """The entries of Prefect's results folder named as our stages' results are (``_RESULT_NAME``)."""
    return [p for p in _children(prefect_results()) if _RESULT_NAME.match(p.name)]


def _gc_targets(client: MlflowClient, state: LocalState, keep: int, cutoff: float | None) -> list[_Target]:
    pipelines = _pipeline_runs(client)
    resumable_ok = cutoff is not None
    cleanable = {run.info.run_id for run in _beyond(pipelines, keep, cutoff, resumable_ok)}
    targets: list[_Target] = []
    studies: dict[str, list[str]] = {}
    for run in pipelines:
        if run.info.run_id in cleanable:
            still = _still_eligible(client, run.info.run_id, cutoff, resumable_ok)
            targets.extend(_guarded(_run_targets(client, state, run), still))
        if run.data.tags.get(STUDY):
            studies.setdefault(run.data.tags[STUDY], []).append(run.info.run_id)
    for study, run_ids in studies.items():
        if all(run_id in cleanable for run_id in run_ids):
            # again just before: every run of the study, a new one included, is still one gc would clean
            done = _study_done(
                client, study, lambda o: o.info.run_id in cleanable and _eligible(o, cutoff, resumable_ok)
            )
            targets.extend(_guarded(_tree_targets(TRIAL_WEIGHTS, state.trial_weights(study)), done))
    scores = _search_runs(client, f"tags.`{ROLE}` = '{SCORE_ROLE}'")
    outputs: set[Path] = set()
    for run in scores:
        output = run.data.params.get(OUTPUT_PATH_PARAM)
        if output:
            outputs.add(Path(output).resolve())
    for run in _beyond(scores, keep, cutoff, resumable_ok=False):
        still = _still_eligible(client, run.info.run_id, cutoff, resumable_ok=False)
        targets.extend(_guarded(_score_targets(client, state, run), still))
    if cutoff is not None:
        known_runs = {run.info.run_id for run in pipelines}
        targets.extend(_orphans(state, {folder_name(s) for s in studies}, known_runs, outputs, cutoff))
    return targets


def _guarded(targets: list[_Target], still_ours: Callable[[], bool]) -> list[_Target]:
    for target in targets:
        target.still_ours = still_ours
    return targets


def _still_eligible(client: MlflowClient, run_id: str, cutoff: float | None, resumable_ok: bool) -> Callable[[], bool]:
    """Whether the run, read again now, is still one gc may clean (a KILLED run resumed meanwhile is not)."""
    return lambda: _eligible(client.get_run(run_id), cutoff, resumable_ok)


def _study_done(client: MlflowClient, study: str, done: Callable[[Run], bool]) -> Callable[[], bool]:
    """Whether every pipeline run of ``study``, searched again now (a ``--study-name`` run started meanwhile
    included), is ``done``."""
    return lambda: all(done(o) for o in _pipeline_runs(client) if o.data.tags.get(STUDY) == study)


def _finished(run: Run) -> bool:
    return run.info.status == "FINISHED"


def _beyond(runs: list[Run], keep: int, cutoff: float | None, resumable_ok: bool) -> Iterable[Run]:
    """Each experiment's runs but its newest ``keep``, that are not in progress and (with ``cutoff``) last active
    before it; unfinished ones only when ``resumable_ok``."""
    by_experiment: dict[str, list[Run]] = {}
    for run in runs:
        by_experiment.setdefault(run.info.experiment_id, []).append(run)
    for group in by_experiment.values():
        group.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        yield from (run for run in group[keep:] if _eligible(run, cutoff, resumable_ok))


def _eligible(run: Run, cutoff: float | None, resumable_ok: bool) -> bool:
    """Not in progress, finished (or, when ``resumable_ok``, resumable) and (with ``cutoff``) last active before."""
    if _in_progress(run) or (not _finished(run) and not resumable_ok):
        return False
    return cutoff is None or _last_active(run) <= cutoff


def _in_progress(run: Run) -> bool:
    """A RUNNING run whose process is alive (a scoring run has no owner tags: RUNNING is enough)."""
    if run.info.status != "RUNNING":
        return False
    pid = run.data.tags.get(PID)
    return not pid or not pid.isdigit() or process_alive(run.data.tags.get(HOST), int(pid))


def _last_active(run: Run) -> float:
    return (run.info.end_time or run.info.start_time or 0) / 1000


def _run_targets(client: MlflowClient, state: LocalState, run: Run) -> list[_Target]:
    """A pipeline run's trial weights and checkpoints (MLflow artifacts of its search and final trainings, its PBT
    and rung checkpoint folders) and its Prefect results. A registered version's model is an MLflow logged model
    of the final_train stage run, none of these: it is never a target."""
    targets: list[_Target] = []
    run_id, experiment_id = run.info.run_id, run.info.experiment_id
    for stage in child_runs(experiment_id, run_id):
        name = stage.data.tags.get(STAGE)
        if name == "search":
            targets.extend(_artifact_target(client, TRIAL_WEIGHTS, stage, BEST_TRIAL_WEIGHTS_FILE))
        elif name == "final_train":
            for training in child_runs(experiment_id, stage.info.run_id, FINAL_TRAINING_ROLE):
                targets.extend(_artifact_target(client, CHECKPOINTS, training, TRAINING_CHECKPOINT_FILE))
    study = run.data.tags.get(STUDY)
    if study:
        for folder in (state.pbt_checkpoints(study), state.rung_checkpoints(study)):
            targets.extend(_tree_targets(CHECKPOINTS, folder / run_id, prune=True))
    for path in _our_results():
        if _RESULT_NAME.match(path.name)["run_id"] == run_id:  # type: ignore[index]
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
    """Files no run of this tracking store owns (its runs deleted, another MLFLOW_TRACKING_URI), older than
    ``cutoff``: in the state folder, and of Prefect's results only those named as ours, of runs gone."""
    candidates: list[tuple[str, Path]] = []
    candidates += [(TRIAL_WEIGHTS, p) for p in _children(_root(state.trial_weights)) if p.name not in studies]
    for per_study in (state.pbt_checkpoints, state.rung_checkpoints):
        for study in _children(_root(per_study)):
            candidates += [(CHECKPOINTS, p) for p in _children(study) if p.name not in run_ids]
    for path in _our_results():
        if _RESULT_NAME.match(path.name)["run_id"] not in run_ids:  # type: ignore[index]
            candidates.append((PREFECT_RESULTS, path))
    for config in _children(_root(state.predictions)):
        candidates += [(PREDICTIONS, p) for p in _children(config) if p.resolve() not in outputs]
    targets: list[_Target] = []
    for kind, path in candidates:
        if _newest_mtime(path) < cutoff:
            targets.extend(_guarded(_tree_targets(kind, path), lambda path=path: _newest_mtime(path) < cutoff))
    return targets


def _root(per_name: Callable[[str], Path]) -> Path:
    """The folder that holds every study's (or config's) folder of one kind; LocalState names one of them."""
    return per_name("any").parent


def _artifact_target(client: MlflowClient, kind: str, run: Run, artifact: str) -> list[_Target]:
    """The MLflow artifact ``artifact`` of ``run`` when it has one (deleted through MLflow's artifact repository,
    wherever the run's artifacts live)."""
    repo = get_artifact_repository(run.info.artifact_uri)
    found = [f for f in repo.list_artifacts() if f.path == artifact and not f.is_dir]
    if not found:
        return []
    removal = Removal(kind, f"runs:/{run.info.run_id}/{artifact}", int(found[0].file_size or 0))
    return [_Target(removal, lambda: repo.delete_artifacts(artifact))]


def _tree_targets(kind: str, path: Path, prune: bool = False) -> list[_Target]:
    """A file or folder under the state folder, when it exists (``prune``: its parent too, once empty)."""
    if path.is_symlink() or path.is_file():
        return [_Target(Removal(kind, str(path), _tree_size(path)), lambda: path.unlink(missing_ok=True))]
    if path.is_dir():
        return [_Target(Removal(kind, str(path), _tree_size(path)), lambda: _remove_tree(path, prune))]
    return []


def _tree_size(path: Path) -> int:
    return disk_used(path) if path.is_dir() and not path.is_symlink() else path.lstat().st_size


def _remove_tree(path: Path, prune: bool) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if prune and path.parent.is_dir() and not any(path.parent.iterdir()):  # a study's folder its last run emptied
        path.parent.rmdir()


def _delete(targets: list[_Target], stopped: Callable[[], bool] = lambda: False) -> list[Removal]:
    """Delete each target that is still ours now; returns what went (until ``stopped``)."""
    removed: list[Removal] = []
    for target in targets:
        if stopped():
            break
        try:
            if target.still_ours():
                target.delete()
                removed.append(target.removal)
        except OSError as exc:  # one file that cannot go (permissions, removed meanwhile) does not stop the rest
            logger.warning("retention: could not remove %s (%s)", target.removal.target, exc)
    return removed


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
