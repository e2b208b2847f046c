"""The temporary Prefect API of one ``automl run`` without a Prefect server configured: Prefect's own ephemeral
server (the uvicorn process its client would start on first use), started here instead, so that

- it boots while the pipeline's modules are imported (seconds saved on every run);
- it runs in a session of its own: a Ctrl-C in the terminal reaches the pipeline, which then reports its
  interrupted state to a server that is still up (instead of both dying at once and the pipeline printing
  connection errors);
- it stops with the pipeline process: Prefect stops it at exit, and Linux sends it SIGTERM when the process dies
  in a way Python never sees (kill -9), so no server is left behind;
- a first start on a fresh machine (Prefect creating its database) gets more than Prefect's 20 s;
- what it prints goes to ``$AUTOML_HOME/prefect-server.log``, not the terminal: a server stopped while it starts
  (Ctrl-C in the first seconds of a run) prints a traceback of its interrupted database migration, and the console
  of a stopped run holds one line.

Once it answers, it is handed to Prefect as its ephemeral server, so Prefect's client uses it and stops it at exit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

STARTUP_TIMEOUT_SECONDS = 180
_PR_SET_PDEATHSIG = 1
_PORT_TAKEN = 3  # uvicorn's exit code when its port is in use


@dataclass
class TemporaryServer:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch_temporary_server() -> TemporaryServer | None:
    """Start the ephemeral Prefect API without waiting for it, unless ``PREFECT_API_URL`` names a server."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    prefect_server = sys.modules.get("prefect.server.api.server")  # not imported: no ephemeral server yet
    if prefect_server is not None and None in prefect_server.SubprocessASGIServer._instances:
        return None  # one runs in this process already (a second run in one process): Prefect reuses it
    from automl.tasks.runtime.state import local_state

    port, log = _free_port(), local_state().prefect_server_log
    return TemporaryServer(port, _spawn(port, log), log)


def wait_until_up(server: TemporaryServer | None, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    """Wait for the server's health check, then make it the ephemeral server Prefect's client uses."""
    if server is None:
        return
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code == _PORT_TAKEN:  # taken between choosing it and binding it: take another
            server.port = _free_port()
            server.process = _spawn(server.port, server.log)
        elif code is not None:
            raise RuntimeError(
                f"the temporary Prefect server exited with code {code} while starting (its output: {server.log})"
            )
        try:
            if httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the temporary Prefect server did not answer within {timeout:g} s")
        time.sleep(0.1)
    from prefect.server.api.server import SubprocessASGIServer

    ephemeral = SubprocessASGIServer()  # the instance Prefect's client asks for when no API URL is set
    ephemeral.port, ephemeral.server_process, ephemeral.running = server.port, server.process, True
    atexit.register(ephemeral.stop)


def _spawn(port: int, log: Path) -> subprocess.Popen:
    """Prefect's own command for its ephemeral server (prefect/server/api/server.py, SubprocessASGIServer), in a
    new session and tied to this process, printing to ``log``."""
    import prefect
    from prefect.settings import get_current_settings

    with open(log, "a") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
            start_new_session=True,
            preexec_fn=_stop_with_parent(os.getpid()),
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop_with_parent(parent: int):
    """A preexec function asking Linux to send SIGTERM to the child when this process's main thread ends (the
    thread that starts the server: the CLI's)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: nothing may be loaded after fork

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
