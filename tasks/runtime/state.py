"""Local state: everything a run writes (MLflow database and artifacts, Optuna database, Prefect results) lives
under one folder, ``.automl/`` in the working directory unless ``AUTOML_HOME`` says otherwise.
``MLFLOW_TRACKING_URI``, when set, wins for MLflow; ``search.storage`` wins for Optuna."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

# mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment (for subprocesses): a value this
# process wrote there is not the user's setting.
_MLFLOW_URIS_SET_HERE: set[str] = set()


def mlflow_uri_set_here(uri: str) -> None:
    """Note that this process points MLflow at ``uri``: when that is not the user's own MLFLOW_TRACKING_URI, the
    variable MLflow writes from now on is not the user's either."""
    if uri != _user_mlflow_uri():
        _MLFLOW_URIS_SET_HERE.add(uri)


def _user_mlflow_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri and uri not in _MLFLOW_URIS_SET_HERE else None


@dataclass(frozen=True)
class LocalState:
    """Paths and URIs of the local state folder."""

    home: Path

    @property
    def mlflow_uri(self) -> str:
        return _user_mlflow_uri() or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts_in_home(self) -> bool:
        """Artifacts go under the state folder unless a tracking server decides where they go."""
        return not self.mlflow_uri.startswith(("http:", "https:", "databricks"))

    @property
    def artifact_root(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def optuna_storage(self) -> str:
        return f"sqlite:///{self.home / 'optuna.db'}"

    @property
    def prefect_results(self) -> Path:
        return self.home / "prefect-results"

    @property
    def prefect_server_log(self) -> Path:
        """What the temporary Prefect servers of ``automl run`` print (their errors), appended run after run."""
        return self.home / "prefect-server.log"

    def trial_weights(self, study_name: str) -> Path:
        """Where a study's full-fidelity evaluations keep their best epoch's weights (for the final stage)."""
        return self.home / "trial-weights" / folder_name(study_name)

    def rung_checkpoints(self, study_name: str) -> Path:
        """Where a study's configs keep a checkpoint at each rung below all the data (weights and optimiser state),
        so that a config promoted to the next rung continues from it; removed when the search finishes."""
        return self.home / "rung-checkpoints" / folder_name(study_name)

    def pbt_checkpoints(self, study_name: str) -> Path:
        """Where a study's PBT members keep their checkpoints (weights and optimiser state per interval)."""
        return self.home / "pbt-checkpoints" / folder_name(study_name)

    def lr_find(self, config_name: str) -> Path:
        """Where ``automl lr-find`` writes a config's range-test plot."""
        return self.home / "lr_find" / folder_name(config_name)

    def predictions(self, config_name: str) -> Path:
        """Where a config's scoring runs write their predictions when ``score.output`` is not set."""
        return self.home / "predictions" / folder_name(config_name)

    @property
    def api_data(self) -> Path:
        """Where ``automl.run(..., data=frame)`` keeps the DataFrames it ran on, as Parquet files named by their
        content's fingerprint (the run's ``data.path``: a resumed or repeated run finds its rows again)."""
        return self.home / "api-data"

    def ensure(self) -> LocalState:
        """Create the folder; one that cannot be (a file in the way, no permission) is a one-line input error."""
        from automl.configs import InputError

        if self.home.exists() and not self.home.is_dir():
            raise InputError(f"AUTOML_HOME: {self.home} is a file, not a folder for the state")
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"AUTOML_HOME: cannot create {self.home} ({exc.strerror or exc})") from None
        if not os.access(self.home, os.W_OK):
            raise InputError(f"AUTOML_HOME: {self.home} is not writable")
        return self


def folder_name(name: str) -> str:
    """The folder of the state named after a study or config: the name itself when it follows the rule for names
    (what the config check and ``--study-name`` take), else a plain name derived from it, so that no name, e.g. that
    of a study begun before names were checked, leads out of the state folder or makes too long a file name.

    Example:
        >>> folder_name("co2-20260101-020000-ab12"), folder_name("../../etc")
        ('co2-20260101-020000-ab12', 'etc-74ccf3c5b4c1')
    """
    from automl.configs import MAX_STUDY_NAME_LENGTH, ConfigError, check_name

    with contextlib.suppress(ConfigError):
        return check_name("name", name, MAX_STUDY_NAME_LENGTH)
    plain = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:64] or "name"
    return f"{plain}-{hashlib.sha256(name.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def enable_wal(sqlite_url: str) -> None:
    """Put a SQLite database in WAL mode (kept in the file), so readers do not block the writer when several
    processes share it (parallel pipelines, Dask workers); creates the file if needed."""
    import sqlite3

    path = sqlite_path(sqlite_url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, timeout=60) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def first_use_lock(sqlite_url: str):
    """A lock held while a SQLite database's schema is created, so processes starting together do not race
    through the same migrations (a no-op context for other databases)."""
    from contextlib import nullcontext

    from filelock import FileLock

    path = sqlite_path(sqlite_url)
    return FileLock(f"{path}.init.lock") if path is not None else nullcontext()


def local_state() -> LocalState:
    """The state folder for this process: ``$AUTOML_HOME`` or ``./.automl``."""
    return LocalState(Path(os.environ.get("AUTOML_HOME", ".automl")).resolve())


def configure_environment(state: LocalState | None = None) -> LocalState:
    """Set the environment Prefect reads when it is imported; call before importing prefect.

    Results go under the state folder, logs of the ``automl`` logger reach the Prefect UI, and nothing tries
    to phone home (there is no internet on many of the machines this runs on).
    """
    state = state or local_state()
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(state.prefect_results))
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "automl")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    return state
