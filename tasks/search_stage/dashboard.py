"""``automl dashboard``: optuna-dashboard (an optional extra) over the pipeline's study storage, the state folder's
Optuna database or a config's ``search.storage``, served on one host and port until Ctrl-C or SIGTERM.

Example:
    >>> url = dashboard_storage(None)                  # sqlite:///.../.automl/optuna.db
    >>> server = dashboard_server(url, "127.0.0.1", 8080)
    >>> server.serve_forever()
"""

from __future__ import annotations

from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from automl.configs import InputError, PipelineConfig, storage_file
from automl.tasks.runtime.state import local_state

INSTALL_HINT = (
    "install the dashboard extra: pip install 'automl-pipeline[dashboard]' (in a checkout: "
    ".venv/bin/pip install -c constraints.txt -e '.[dashboard]')"
)
MAX_PORT = 65535


def check_port(value: str, key: str = "--port") -> int:
    """A TCP port given on the command line: digits only (no sign, no decimals), 1 to 65535."""
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_PORT))
    if not (digits and 1 <= int(value) <= MAX_PORT):
        raise InputError(f"{key}: {value!r} is not a port number (a whole number from 1 to {MAX_PORT})")
    return int(value)


def check_host(value: str, key: str = "--host") -> str:
    """An address to listen on: an IP address or a host name (letters, digits, '-', '.', at most 253 characters).
    An empty one is refused: the socket would listen on every interface, and the dashboard can delete studies."""
    import ipaddress
    import re

    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    label = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    if len(value) > 253 or not re.fullmatch(rf"{label}(?:\.{label})*", value):
        raise InputError(f"{key}: {value[:100]!r} is not an address to listen on (an IP address or a host name)")
    return value


def check_installed() -> None:
    """optuna-dashboard is an optional extra: without it, one line saying how to install it."""
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise InputError(f"dashboard: optuna-dashboard is not installed; {INSTALL_HINT}") from None


def dashboard_storage(cfg: PipelineConfig | None) -> str:
    """The storage URL to show: ``cfg``'s ``search.storage`` when it sets one, else the state folder's Optuna
    database. A file storage that does not exist yet is refused (the dashboard would show an empty one it made)."""
    url = cfg.search.storage if cfg is not None and cfg.search.storage else local_state().optuna_storage
    path = storage_file(url)
    if path is not None and not path.is_file():
        where = "search.storage" if cfg is not None and cfg.search.storage else "AUTOML_HOME"
        raise InputError(f"dashboard: no Optuna studies at {path} ({where}); run a pipeline first")
    return url


class _Server(ThreadingMixIn, WSGIServer):
    """One thread per request (the dashboard's page polls several API routes at once); the threads do not keep the
    process alive once the server is stopped."""

    daemon_threads = True
    block_on_close = False


class _QuietHandler(WSGIRequestHandler):
    """No line per request on the console (the page polls every few seconds)."""

    def log_message(self, format: str, *args: object) -> None:
        return


def dashboard_server(url: str, host: str, port: int) -> WSGIServer:
    """optuna-dashboard's WSGI app over ``url``'s storage, bound to ``host:port`` (not yet serving). A storage
    that cannot be opened, or an address that cannot be bound, is one ``InputError`` line."""
    from optuna_dashboard import wsgi

    from automl.tasks.search_stage.studies import make_storage

    try:
        storage = make_storage(url)
    except Exception as exc:  # a server that does not answer, a file that is not a database
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise InputError(f"dashboard: cannot open the Optuna storage {url}: {reason}") from None
    try:
        return make_server(host, port, wsgi(storage), server_class=_Server, handler_class=_QuietHandler)
    except (OSError, UnicodeError) as exc:  # in use, not this machine's, a name that does not resolve
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise InputError(f"--host/--port: cannot listen on {host}:{port}: {reason}") from None
