"""``automl dashboard``: optuna-dashboard over the state folder's studies, bound to 127.0.0.1, stopped cleanly by
Ctrl-C or SIGTERM; a bad port, a missing storage or a missing extra is one line and exit code 2, before anything
is created."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import optuna
import pytest

from automl.cli import main
from tests.helpers import free_port, stop_process_group

AUTOML = str(Path(sys.executable).with_name("automl"))


def _one_study(state: Path, name: str) -> None:
    state.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{state / 'optuna.db'}")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 2) ** 2, n_trials=1)


def _studies(port: int, process: subprocess.Popen, timeout: float = 90) -> list[str]:
    """The study names the dashboard's API lists, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/api/studies", timeout=5)
            answer.raise_for_status()
            return [study["study_name"] for study in answer.json()["study_summaries"]]
        except httpx.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the dashboard did not answer: {process.communicate()}") from None
            time.sleep(0.3)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_the_dashboard_lists_the_state_folders_study_on_127_0_0_1_and_a_stop_ends_it_cleanly(home, stop):
    _one_study(home, "tiny-study")
    port = free_port()
    process = subprocess.Popen(
        [AUTOML, "dashboard", "--port", str(port)],
        env={**os.environ, "AUTOML_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert _studies(port, process) == ["tiny-study"]
        with pytest.raises(httpx.ConnectError):  # bound to loopback only, not every address of the machine
            httpx.get(f"http://{_other_address()}:{port}/api/studies", timeout=5)
    finally:
        stop_process_group(process, stop)
    out, err = process.communicate()
    assert process.returncode == 0, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"optuna-dashboard: http://127.0.0.1:{port}/ on sqlite:"), err


def _other_address() -> str:
    """An address of this machine that is not loopback (the one its hostname resolves to, or the default route's)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no address other than loopback")
    return address


@pytest.mark.parametrize(
    "port", ["0", "65536", "-1", "8080.5", "abc", "True", "", " 80", "1e3", "٨٠", "9" * 400], ids=repr
)
def test_a_port_that_is_not_a_whole_number_from_1_to_65535_is_one_line_and_exit_code_2(home, capsys, port):
    assert main(["dashboard", "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --port: ") and "1 to 65535" in err
    assert not home.exists()  # found before the state folder is made


@pytest.mark.parametrize("host", ["", " ", "a b", "-x", "é" * 70, "x" * 300, "127.0.0.1;rm -rf"], ids=repr)
def test_a_host_that_is_not_an_address_is_one_line_and_exit_code_2(home, capsys, host):
    """An empty host would listen on every interface (and the dashboard can delete studies): refused, as is
    anything that is not an IP address or a host name."""
    assert main(["dashboard", f"--host={host}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --host: ") and "not an address to listen on" in err
    assert not home.exists()


def test_a_state_folder_without_studies_is_one_line_and_nothing_is_created(home, capsys):
    assert main(["dashboard", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err == f"error: dashboard: no Optuna studies at {home / 'optuna.db'} (AUTOML_HOME); run a pipeline first\n"
    assert not home.exists()


def test_a_port_already_in_use_is_one_line_naming_host_and_port(home, capsys):
    import socket

    _one_study(home, "tiny-study")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --host/--port: cannot listen on 127.0.0.1:{port}: ") and err.count("\n") == 1


def test_a_configs_search_storage_is_the_one_shown_else_the_state_folders(home, tmp_path, series_csv):
    from automl.configs import InputError, load_config
    from automl.tasks.search_stage.dashboard import dashboard_storage
    from tests.helpers import write_config

    journal = tmp_path / "studies.log"
    cfg = load_config(write_config(tmp_path, series_csv, search={"storage": f"journal:///{journal}"}))
    with pytest.raises(InputError, match=r"no Optuna studies at .*studies\.log \(search\.storage\)"):
        dashboard_storage(cfg)
    journal.write_text("")
    assert dashboard_storage(cfg) == f"journal:///{journal}"
    _one_study(home, "tiny-study")
    assert dashboard_storage(None) == f"sqlite:///{home / 'optuna.db'}"


def test_without_the_dashboard_extra_one_line_says_how_to_install_it(home, capsys, monkeypatch):
    _one_study(home, "tiny-study")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # what Python's import sees when it is not installed
    assert main(["dashboard"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "optuna-dashboard is not installed" in err and "[dashboard]" in err
