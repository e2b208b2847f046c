"""The temporary Prefect API of one ``automl run`` without a Prefect server configured: Prefect's own ephemeral
server (the uvicorn process its client would start on first use), started here instead, so that

- it boots while the pipeline's modules are imported (seconds saved on every run);
- it runs in a session of its own: a Ctrl-C in the terminal reaches the pipeline, which then reports its
  interrupted state to a server that is still up (instead of both dying at once and the pipeline printing
  connection errors);
- it stops with the pipeline process: it is stopped at exit, and Linux sends it SIGTERM when the process dies
  in a way Python never sees (kill -9), so no server is left behind;
- a first start on a fresh machine (Prefect creating its database) gets more than Prefect's 20 s.

Prefect's client finds it through ``PREFECT_API_URL``, set in this process before Prefect is imported, or (when
Prefect was imported first, as in tests) as the ephemeral server it would have started itself.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STARTUP_TIMEOUT_SECONDS = 180
_PR_SET_PDEATHSIG = 1
_PORT_TAKEN = 3  # uvicorn's exit code when its port is in use


@dataclass
class TemporaryServer:
    port: int
    process: subprocess.Popen
    announced: bool = False  # its URL is in this process's PREFECT_API_URL, set before Prefect was imported
    _settings: Any = None  # Prefect settings pointing at a new port, when it had to move after being announced

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
    """Start the ephemeral Prefect API without waiting for it, unless a Prefect API URL is configured.

    Called before Prefect is imported (as ``automl run`` does), it decides without importing Prefect when it can:
    no ``PREFECT_API_URL`` in the environment, and no Prefect profile or settings file that could set one. Then
    the server's URL goes into this process's ``PREFECT_API_URL`` (Prefect, imported next, reads it as if the user
    had set it), so that neither Prefect's settings nor its server code (seconds of imports) are loaded before the
    pipeline's own imports, which run while the server boots."""
    prefect_imported = "prefect.settings" in sys.modules
    if not prefect_imported and not os.environ.get("PREFECT_API_URL") and not _prefect_files_may_set_api_url():
        port = _free_port()
        server = TemporaryServer(port, _spawn(port), announced=True)
        os.environ["PREFECT_API_URL"] = server.api_url
        atexit.register(server.stop)  # registered before Prefect's exit hooks, so it runs after them
        return server
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    prefect_server = sys.modules.get("prefect.server.api.server")  # not imported: no ephemeral server yet
    if prefect_server is not None and None in prefect_server.SubprocessASGIServer._instances:
        return None  # one runs in this process already (a second run in one process): Prefect reuses it
    port = _free_port()
    return TemporaryServer(port, _spawn(port))


def wait_until_up(server: TemporaryServer | None, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
    """Wait for the server's health check; unless its URL was announced, make it the ephemeral server Prefect's
    client uses (and stops at exit)."""
    if server is None:
        return
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code == _PORT_TAKEN:  # taken between choosing it and binding it: take another
            server.port = _free_port()
            server.process = _spawn(server.port)
            if server.announced:  # Prefect has read the old URL: point its settings at the new one
                from prefect.settings import PREFECT_API_URL, temporary_settings

                server._settings = temporary_settings(updates={PREFECT_API_URL: server.api_url})
                server._settings.__enter__()  # for the rest of the process
        elif code is not None:
            raise RuntimeError(f"the temporary Prefect server exited with code {code} while starting")
        try:
            if httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the temporary Prefect server did not answer within {timeout:g} s")
        time.sleep(0.1)
    if server.announced:
        return
    from prefect.server.api.server import SubprocessASGIServer

    ephemeral = SubprocessASGIServer()  # the instance Prefect's client asks for when no API URL is set
    ephemeral.port, ephemeral.server_process, ephemeral.running = server.port, server.process, True
    atexit.register(ephemeral.stop)


def _prefect_files_may_set_api_url() -> bool:
    """Whether the active Prefect profile, or a Prefect settings file in the working folder, may set an API URL:
    then Prefect's own settings decide (read conservatively: a file that cannot be read counts as a yes)."""
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    active = os.environ.get("PREFECT_PROFILE")
    if profiles.exists():
        try:
            data = tomllib.loads(profiles.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return True
        active = active or data.get("active") or "ephemeral"
        if any("API_URL" in str(key).upper() for key in data.get("profiles", {}).get(active, {})):
            return True
    elif active not in (None, "ephemeral"):
        return True
    here = Path.cwd()
    if (here / "prefect.toml").exists() or (here / ".env").exists():
        return True
    pyproject = here / "pyproject.toml"
    try:
        return pyproject.exists() and "tool.prefect" in pyproject.read_text()
    except (OSError, UnicodeDecodeError):
        return True


def _spawn(port: int) -> subprocess.Popen:
    """Prefect's own command for its ephemeral server (prefect/server/api/server.py, SubprocessASGIServer), in a
    new session and tied to this process. Settings changed inside this process go to the server as environment
    variables; before Prefect is imported there are none, and the server reads the same environment and profile."""
    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        settings = get_current_settings().to_environment_variables(exclude_unset=True)
    else:
        settings = {}
    package = importlib.util.find_spec("prefect")
    assert package is not None and package.submodule_search_locations
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(package.submodule_search_locations[0]).parent),
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
            **settings,
        },
        start_new_session=True,
        preexec_fn=_stop_with_parent(os.getpid()),
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
