"""The temporary Prefect server of ``automl run`` prints into the state folder, never onto the console: what a
server says as it fails or is stopped while it starts (a traceback of its interrupted migration, a port taken)
would otherwise follow a stopped run's one line."""

from __future__ import annotations

import socket

from automl.tasks.runtime import prefect_server


def test_what_a_temporary_server_prints_goes_to_its_log_in_the_state_folder(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("AUTOML_HOME", str(tmp_path / "state"))
    (tmp_path / "state").mkdir()
    from automl.tasks.runtime.state import local_state

    log = local_state().prefect_server_log
    with socket.socket() as taken:  # the port is taken: the server fails as it starts, and says so
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = prefect_server._spawn(taken.getsockname()[1], log)
        assert process.wait(timeout=180) == prefect_server._PORT_TAKEN
    assert "address already in use" in log.read_text().lower()
    assert capfd.readouterr().err == ""
