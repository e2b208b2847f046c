"""Ctrl-C and SIGTERM at the hand-overs between stages: the search's end to the final stage (sampling and PBT), and
the final training to the registry. Each stop ends the run within seconds with exit code 130 or 143 and one line,
registers nothing after the signal and leaves nothing RUNNING; the next run of the same command resumes, and the
last one finishes with one registered version.

Each moment is found as the run reaches it: the ``search`` subflow's run COMPLETED in the Prefect API (Prefect's flow
engine used to drop a Ctrl-C that landed in the second its teardown takes, and the pipeline went on to register a
model), and the final stage's model logged in MLflow, the registry being its next step.

The runs are the CLI in-process (``automl.cli.main``), signalled by a thread as a terminal or ``kill`` would signal
the process: a process of its own costs 10-20 s of start-up on 2 cores, eight of them too much for the suite. The
signal handling is the process's own all the same (Python runs handlers in the main thread, where main() runs);
tests/test_scale_and_faults.py stops real processes mid-evaluation.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.entities import LoggedModelStatus
from optuna.trial import TrialState
from prefect.settings import PREFECT_API_URL

from automl.cli import main
from tests.helpers import write_config
from tests.test_scale_and_faults import INTERRUPTED_LINE, _all_runs, _mlflow, prefect_console

pytestmark = pytest.mark.e2e

MLP_SPACE = {
    "hidden_size": {"type": "int", "low": 8, "high": 16, "step": 8},
    "num_layers": {"type": "int", "low": 1, "high": 2},
    "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [32]},
}


@dataclass(frozen=True)
class Watch:
    """Where the run is watched: its state folder, the Prefect API, and when the run started."""

    state: Path
    api: str
    since: datetime


def _search_finished(watch: Watch) -> bool:
    """A ``search`` subflow run that started with this run is COMPLETED (Prefect tears the subflow down next, then
    the final stage starts)."""
    body = {
        "flows": {"name": {"any_": ["search"]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}, "start_time": {"after_": watch.since.isoformat()}},
        "limit": 1,
    }
    try:
        return bool(httpx.post(f"{watch.api}/flow_runs/filter", json=body, timeout=5).json())
    except httpx.HTTPError:
        return False


def _model_logged(watch: Watch) -> bool:
    """The final stage has logged its model (READY) since the run started: registering it comes next."""
    db = watch.state / "mlflow.db"
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            row = connection.execute(
                "select 1 from logged_models m join tags t on t.run_uuid = m.source_run_id "
                "where t.key = 'automl.stage' and t.value = 'final_train' and m.status = ? "
                "and m.last_updated_timestamp_ms >= ?",
                (LoggedModelStatus.READY.to_int(), watch.since.timestamp() * 1000),
            ).fetchone()
    except sqlite3.Error:
        return False
    return row is not None


@dataclass(frozen=True)
class Stop:
    handover: str
    reached: Callable[[Watch], bool]
    signum: signal.Signals


SEARCH_TO_FINAL = ("search -> final", _search_finished)
PBT_TO_FINAL = ("pbt -> final", _search_finished)
FINAL_TO_REGISTRY = ("final -> registry", _model_logged)
IN_FLIGHT_MS = 5000  # how long after the signal a registration already under way may still land

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

# Every hand-over gets both signals. Each stop's run is the rerun of the stop before (it resumed as far as the
# hand-over), and each chain's last run finishes.
CHAINS = {
    "pbt": (
        {"strategy": "pbt", "pbt": {"population": 2, "epochs": 2, "interval_epochs": 1}},
        [
            Stop(*PBT_TO_FINAL, signal.SIGINT),
            Stop(*PBT_TO_FINAL, signal.SIGTERM),
            Stop(*FINAL_TO_REGISTRY, signal.SIGINT),
            Stop(*FINAL_TO_REGISTRY, signal.SIGTERM),
        ],
    ),
    "sample": ({"n_trials": 2}, [Stop(*SEARCH_TO_FINAL, signal.SIGTERM), Stop(*SEARCH_TO_FINAL, signal.SIGINT)]),
}


def _table(path: Path, rows: int = 300) -> Path:
    """A small regression table of float columns."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=x @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(rows))
    frame.to_csv(path, index=False)
    return path


def _stop_at(args: list[str], state: Path, stop: Stop) -> tuple[int, float, float]:
    """Run the command in-process; a thread sends the stop's signal to this process as the run reaches the
    hand-over. Returns the exit code, when the signal went (epoch ms) and the seconds main() took to return."""
    watch = Watch(state, PREFECT_API_URL.value(), datetime.now(UTC))
    returned = threading.Event()
    signalled: list[float] = []

    def signal_at_the_hand_over() -> None:
        while not returned.is_set():
            if stop.reached(watch):
                signalled.extend([time.time() * 1000, time.monotonic()])
                os.kill(os.getpid(), stop.signum)
                return
            time.sleep(0.05)

    # a signal that came after main() returned must not stop pytest
    outside = {signum: signal.signal(signum, lambda *_: None) for signum in EXIT_CODES}
    watcher = threading.Thread(target=signal_at_the_hand_over, daemon=True)
    try:
        watcher.start()
        code = main(args)
        ended = time.monotonic()
    finally:
        returned.set()
        watcher.join()
        for signum, handler in outside.items():
            signal.signal(signum, handler)
    assert signalled, f"{stop.handover}: the run ended (exit code {code}) before the hand-over"
    return code, signalled[0], ended - signalled[1]


@pytest.mark.parametrize("chain", list(CHAINS))
def test_a_stop_at_each_hand_over_wins_and_the_same_command_then_finishes(prefect_api, home, tmp_path, capsys, chain):
    search, stops = CHAINS[chain]
    name = f"handover_{chain}"
    data = _table(tmp_path / "table.csv")
    config = write_config(
        tmp_path,
        data,
        name=name,
        model={"family": "mlp"},
        data={"path": str(data), "target": "y", "time_column": None},
        search={"epochs": 1, "space": MLP_SPACE, **search},
        final={"epochs": 1, "patience": 1, "baselines": ["default_config"]},
    )
    args = ["run", str(config), "--json"]
    client = _mlflow(home)
    storage = f"sqlite:///{home / 'optuna.db'}"
    for stop in stops:
        with prefect_console() as console:
            code, signalled_ms, stopping = _stop_at(args, home, stop)
        what = f"{stop.handover}, {stop.signum.name}"
        err = capsys.readouterr().err
        assert code == EXIT_CODES[stop.signum] and stopping < 10, (what, code, stopping, err[-3000:])
        assert err.strip().splitlines()[-1] == INTERRUPTED_LINE, (what, err[-3000:])
        assert console.getvalue() == "", f"{what}: Prefect on the console: {console.getvalue()[-3000:]}"
        assert not [r for r in _all_runs(client) if r.info.status == "RUNNING"], what
        study = _all_runs(client, "tags.`automl.role` = 'pipeline'")[0].data.tags["automl.study_name"]
        assert not optuna.load_study(study_name=study, storage=storage).get_trials(states=(TrialState.RUNNING,))
        # nothing starts after the signal: a registration in flight when it landed completes (a stop inside the
        # registry's writes is deferred to their end, see tasks.runtime.interrupts.deferred_stop), nothing later
        versions = client.search_model_versions(f"name = '{name}'")
        late = [v.creation_timestamp - signalled_ms for v in versions if v.creation_timestamp > signalled_ms]
        assert not [ms for ms in late if ms > IN_FLIGHT_MS], f"{what}: registered {late} ms after the signal"

    assert main(args) == 0, capsys.readouterr().err[-3000:]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["resumed"] is True
    assert not [r for r in _all_runs(client) if r.info.status == "RUNNING"]
    assert len(client.search_model_versions(f"name = '{name}'")) == 1, "registered once"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_inside_the_registry_writes_lands_when_they_end(signum):
    """A KeyboardInterrupt raised inside SQLAlchemy's write to MLflow's SQLite store left it locked for the process
    (closing the runs then waited 30 s and failed): a stop inside ``deferred_stop`` is raised when the block ends,
    also while a flow engine's own SIGTERM handler, which raises at once, is installed."""
    import os

    from automl.tasks.runtime.interrupts import Terminated, deferred_stop, stop_on_signals

    def engine_handler(number, frame):  # what Prefect's flow engine installs for SIGTERM
        raise RuntimeError("raised inside the block")

    finished = []
    with pytest.raises(KeyboardInterrupt) as stopped, stop_on_signals():
        previous = signal.signal(signal.SIGTERM, engine_handler)
        try:
            with deferred_stop():
                os.kill(os.getpid(), signum)
                time.sleep(0.05)  # the handler runs here, in the middle of the block
                finished.append(True)
        finally:
            signal.signal(signal.SIGTERM, previous)
    assert finished == [True] and isinstance(stopped.value, Terminated) is (signum == signal.SIGTERM)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_inside_any_database_call_lands_when_the_call_returns(tmp_path, signum):
    """Every write to MLflow or Optuna, not only the registry's: a stop landing while SQLAlchemy works waits for its
    call to return, also under a flow engine's own SIGTERM handler, so the store is never left locked mid-write."""
    import sqlalchemy

    from automl.tasks.runtime.interrupts import Terminated, stop_on_signals, stops_outside_database_calls

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE rows (x INTEGER)")
    rows = [{"x": i} for i in range(2000)]
    table = sqlalchemy.table("rows", sqlalchemy.column("x"))

    def engine_handler(number, frame):  # what Prefect's flow engine installs for SIGTERM: it raises at once
        raise Terminated()

    with stop_on_signals():
        previous = signal.signal(signal.SIGTERM, engine_handler)
        try:
            with stops_outside_database_calls(), pytest.raises(KeyboardInterrupt) as stopped:
                threading.Timer(0.3, os.kill, (os.getpid(), signum)).start()
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:  # nearly all the time inside SQLAlchemy's calls
                    with engine.begin() as connection:
                        connection.execute(sqlalchemy.insert(table), rows)
        finally:
            signal.signal(signal.SIGTERM, previous)
    inside = [str(entry.path) for entry in stopped.traceback if "sqlalchemy" in str(entry.path)]
    assert inside == []  # it landed as SQLAlchemy's call returned, not inside it
    assert isinstance(stopped.value, Terminated) is (signum == signal.SIGTERM)
    with sqlite3.connect(tmp_path / "store.db", timeout=0.5) as other:  # and the store is not locked
        other.execute("INSERT INTO rows VALUES (-1)")
