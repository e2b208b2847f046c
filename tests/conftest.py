"""Shared fixtures. Every test gets its own state folder (MLflow and Optuna databases); Prefect runs against a
temporary API for the whole session. Nothing here is mocked."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

# A suite started as a background job of a script (`.ci/run &`) inherits SIGINT ignored, and so would every `automl`
# process it starts (Python installs its Ctrl-C handler only where SIGINT is not ignored): the Ctrl-C tests would
# then see a run that never stops. Python's own handler here gives the children SIGINT at its default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="automl-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_SESSION_DIR / "prefect-home"))
os.environ["AUTOML_HOME"] = str(_SESSION_DIR / "automl-home")
os.environ.pop("MLFLOW_TRACKING_URI", None)

from automl.tasks.runtime.state import configure_environment  # noqa: E402

configure_environment()

import pytest  # noqa: E402

from tests.helpers import make_series  # noqa: E402


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri():
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into the environment; without this, one test's
    database would leak into the processes the next test (or a module fixture) starts. Cleared before and
    after every test, so module-scoped fixtures set up between tests see a clean environment too."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(autouse=True)
def _no_active_mlflow_run():
    """A test that fails inside an MLflow run (a pipeline stopped in-process, an assertion under ``start_run``)
    leaves it active in this process; every later pipeline would then fail to nest its runs under its own parent.
    Ended after each test, so one failure stays one failure."""
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run("KILLED")


@pytest.fixture(autouse=True)
def _sys_path_as_found():
    """A test that loads a model with MLflow's own ``mlflow.pyfunc.load_model`` (as a user would) leaves the model's
    code folder (a partial ``tasks`` package) first on ``sys.path``; processes a later test starts (Dask workers)
    would import it instead of the project. Each test gets ``sys.path`` back as it found it."""
    before = list(sys.path)
    yield
    sys.path[:] = before


@pytest.fixture(scope="session")
def prefect_api():
    """A temporary Prefect API (SQLite) shared by the tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh AUTOML_HOME (MLflow and Optuna state) and working directory for one test."""
    state = tmp_path / "state"
    monkeypatch.setenv("AUTOML_HOME", str(state))
    monkeypatch.chdir(tmp_path)
    return state


@pytest.fixture
def series_csv(tmp_path) -> Path:
    path = tmp_path / "sales.csv"
    make_series().to_csv(path, index=False)
    return path
