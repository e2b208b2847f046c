"""The console of an ``automl`` command or an ``automl.run`` call: the pipeline's progress lines on stderr, Prefect's
console quiet but for warnings, and none of the lines the command reports itself."""

from __future__ import annotations

import logging
import os
import sys


def _quiet_reported(record: logging.LogRecord) -> bool:
    """Prefect's lines about what the CLI reports in its own last line stay in the Prefect UI, off the console: a
    run stopped by Ctrl-C or SIGTERM ("Crash detected! Execution was aborted by an interrupt signal.", a task's
    "Finished in state Crashed('Execution was aborted by a termination signal.')"), and the traceback each flow run
    logs for a search where no trial completed (``error: search failed: <reason>`` says it)."""
    from automl.tasks.search import SearchFailed

    if "Execution was aborted by a" in record.getMessage():
        return False
    return not (record.exc_info and isinstance(record.exc_info[1], SearchFailed))


def setup_console(progress: bool = True, prefect_info: bool = False) -> None:
    """Progress lines of the ``automl`` logger go to stderr as they are (or nowhere with ``progress=False``), and
    to the Prefect UI's Logs tab of the flow run they belong to (``PREFECT_LOGGING_EXTRA_LOGGERS``); Prefect's
    console shows warnings only (its INFO lines still reach the Prefect UI; all of them with ``prefect_info``, as
    ``automl serve`` shows which flow runs it picks up), and none of the lines about what the CLI reports itself
    (``_quiet_reported``)."""
    if not prefect_info:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"  # read when Prefect sets up its logging
    logger = logging.getLogger("automl")
    logger.setLevel(logging.INFO if progress else logging.WARNING)
    logger.propagate = False
    if not any(getattr(h, "automl_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        handler.automl_console = True
        logger.addHandler(handler)
    if "prefect" in sys.modules:  # already set up: lower its console handlers too
        from prefect.logging.handlers import PrefectConsoleHandler

        for name in ("", "prefect"):
            for h in logging.getLogger(name).handlers:
                if isinstance(h, PrefectConsoleHandler):
                    if not prefect_info:
                        h.setLevel(logging.WARNING)
                    h.addFilter(_quiet_reported)
    for noisy in ("mlflow", "alembic", "optuna", "hyperopt", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
