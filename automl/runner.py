"""One pipeline run, as both ``automl run`` and the Python API (``automl.run``) start it: the config, its data and
the state folder checked before Prefect, MLflow or torch do any work, then the pipeline flow on a temporary Prefect
server; a run that fails raises (``InputError``, ``PipelineFailed``) for the caller to report.

Example:
    >>> config = resolve_config("mlp_tabular")
    >>> summary = run_pipeline(config, ["search.n_trials=3"], None, None, time.time(), setup_console)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from automl.configs import PipelineConfig
    from automl.tasks.data_prep import CheckedData
    from automl.tasks.runtime.state import LocalState
    from automl.tasks.summary import PipelineSummary


class PipelineFailed(RuntimeError):
    """A pipeline run that started but did not complete: no trial of the search completed, or a stage failed.
    ``str(error)`` is the line ``automl run`` prints after ``error:``; the Prefect flow run's log has the rest."""


def resolve_config(value: str | os.PathLike[str]) -> str:
    """A config given by path, or by the name of a shipped config (``automl run lstm_baseline``): a file of that
    name in the working directory wins."""
    from automl.configs import shipped_configs

    value = os.fspath(value)
    shipped = shipped_configs()
    return str(shipped[value]) if value in shipped and not os.path.exists(value) else value


def run_pipeline(
    config_path: str,
    overrides: Sequence[str],
    values: Mapping[str, Any] | None,
    study_name: str | None,
    started_at: float,
    console: Callable[[], None],
    data: pd.DataFrame | None = None,
) -> PipelineSummary:
    """One pipeline run, ``automl run``'s and ``automl.run``'s: the config (``values``, dotted key -> typed value,
    then the ``--set`` style ``overrides``), its data (``data``: rows instead of ``data.path``) and the state folder
    are checked before Prefect, MLflow or torch do any work; then the pipeline flow runs on a temporary Prefect
    server started while its modules import. ``study_name`` must have been checked (``check_name``); ``console``
    sets up the console, again once Prefect is imported. Raises ``InputError`` for bad input (also when the flow
    finds it), ``PipelineFailed`` for a run that failed."""
    from automl.configs import load_config
    from automl.tasks.data_prep import load_and_check
    from automl.tasks.runtime.interrupts import raise_if_stopped
    from automl.tasks.runtime.state import local_state

    console()
    staged = _StagedRows(data) if data is not None else None
    if staged is not None:
        values = {**(values or {}), "data.path": str(staged.destination(local_state()))}
    cfg = load_config(config_path, overrides, values)
    # every input error surfaces here, before Prefect, MLflow or torch do any work
    checked = staged.check(cfg) if staged is not None else load_and_check(cfg)
    state = local_state().ensure()  # and an unusable state folder
    if staged is not None:
        staged.write(state)
    from automl.tasks.runtime.prefect_server import launch_temporary_server, wait_until_up

    server = launch_temporary_server()  # it boots while the pipeline's modules are imported
    try:
        import optuna

        from automl.flows.pipeline import INVALID_INPUT, checked_pipeline
        from automl.tasks.search import SearchFailed
        from automl.tasks.search_stage.studies import check_study

        console()  # again: Prefect, imported just now, has set up its console handlers

        check_study(cfg.search, study_name)  # and a --study-name run with other fidelity settings
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its own handler; our "search: study" line says it
        _open_stores(cfg)
        wait_until_up(server)
    except BaseException:
        if server is not None:
            server.stop()
        raise

    flow_state = checked_pipeline(cfg, checked, study_name, started_at, return_state=True)  # validated: not again
    raise_if_stopped()  # a stop that landed as the flow run ended, which Prefect's flow engine drops
    if not flow_state.is_completed():
        from automl.configs import InputError

        error = flow_state.result(raise_on_failure=False)
        if flow_state.name == INVALID_INPUT:
            raise InputError(flow_state.message)
        if isinstance(error, SearchFailed):
            raise PipelineFailed(f"search failed: {error}") from error
        raise PipelineFailed(f"the pipeline failed: {flow_state.message} (details in the log above)")
    return flow_state.result()


def _open_stores(cfg: PipelineConfig) -> None:
    """Open MLflow's tracking store and the Optuna storage once, while the Prefect server boots: a process's first
    use of each imports and connects for about two seconds, which the flow would otherwise spend after the server
    is up. An unusable MLflow store is also refused here, before the flow starts."""
    from automl.tasks.runtime.state import local_state
    from automl.tasks.search_stage.studies import make_storage, storage_url
    from automl.tasks.tracking.runs import configure_mlflow

    configure_mlflow(local_state())
    make_storage(storage_url(cfg.search))


class _StagedRows:
    """``run``'s DataFrame as the Parquet file a pipeline reads: named by its content's fingerprint (the same
    SHA-256 prefix as ``automl.tasks.data_prep.fingerprint``, so a repeated run resumes or warm-starts as on a file),
    checked from a temporary copy, and written into the state folder only once it passed."""

    def __init__(self, frame: Any):
        import pandas as pd

        from automl.configs import InputError

        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"data: give a pandas DataFrame (got {type(frame).__name__})")
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise InputError(f"data: the DataFrame is empty ({frame.shape[0]} rows, {frame.shape[1]} columns)")
        try:  # Parquet keeps the columns' types, which a CSV would guess again
            self.content = frame.to_parquet(index=False, engine="pyarrow")
        except Exception as exc:  # column names that are not strings, a column of mixed types...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"data: cannot be stored as Parquet: {reason}") from None
        self.name = f"{hashlib.sha256(self.content).hexdigest()[:16]}.parquet"

    def destination(self, state: LocalState) -> Path:
        return state.api_data / self.name

    def check(self, cfg: PipelineConfig) -> CheckedData:
        """``load_and_check`` on a temporary copy (nothing is written to the state folder for bad rows); its
        messages name ``data``, not the copy."""
        from automl.configs import InputError
        from automl.tasks.data_prep import load_and_check

        with tempfile.TemporaryDirectory(prefix="automl-data-") as folder:
            copy = Path(folder) / self.name
            copy.write_bytes(self.content)
            try:
                return load_and_check(cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": copy})}))
            except InputError as exc:
                raise type(exc)(str(exc).replace(str(copy), "data").replace(self.name, "data")) from None

    def write(self, state: LocalState) -> Path:
        """The file in the state folder, written in one step (a reader never sees half of it); kept when there."""
        path = self.destination(state)
        if path.is_file() and path.stat().st_size == len(self.content):
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            partial.write_bytes(self.content)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path
