"""Ctrl-C and SIGTERM as a stop that nothing in between can lose: the handler raises at once (what runs is stopped
where it is) and remembers the signal, and every stage boundary raises it again (``raise_if_stopped``).

The second raise is needed because a library may swallow the first: Prefect's flow engine drops a KeyboardInterrupt
that lands after a flow run reached its final state (``flow_engine.py``: "BaseException was raised after user code
finished executing"), and the ``search`` subflow spends up to a second there, joining its heartbeat thread. A
Ctrl-C in that second used to let the pipeline go on to the final stage and register a model.

Example:
    >>> with stop_on_signals():       # automl's main(), around the command
    ...     run_the_command()         # each stage boundary calls raise_if_stopped()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_received: int | None = None  # the signal received inside stop_on_signals, if any
_deferring = 0  # depth of ``deferred_stop`` blocks: a signal inside one is raised when the outermost ends
_armed = False  # stop_on_signals installed the handler (the main thread of the CLI)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: what is running is stopped and recorded as interrupted, exit hooks run
    (the temporary Prefect server stops), and the same command resumes."""


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stop(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    if not _deferring:
        raise _interruption(signum)


@contextmanager
def deferred_stop() -> Iterator[None]:
    """A short block of writes that a stop must not cut in two: a Ctrl-C or SIGTERM inside it is raised when it
    ends. Registering a model is one: a KeyboardInterrupt raised inside SQLAlchemy's write to MLflow's SQLite
    store left the database locked for this process, and closing the runs KILLED then waited 30 s and failed."""
    global _deferring
    replaced = None
    if not _deferring and _armed and threading.current_thread() is threading.main_thread():
        # a flow run's engine has its own SIGTERM handler (it raises at once): ours again for the block
        replaced = signal.signal(signal.SIGTERM, _stop)
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if replaced is not None:
            signal.signal(signal.SIGTERM, replaced)
    if not _deferring:
        raise_if_stopped()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """In the main thread, SIGINT raises KeyboardInterrupt and SIGTERM ``Terminated``, and the signal is remembered
    until the block ends. A SIGINT the process was started ignoring (``nohup``, a script's background job) stays
    ignored. Elsewhere than in the main thread, where Python cannot handle signals, nothing changes."""
    global _received, _armed
    _received = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _stop)}
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _stop)
    _armed = True
    try:
        yield
    finally:
        _armed = False
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not installed from Python, which cannot be put back
                signal.signal(signum, handler)
        _received = None


def raise_if_stopped() -> None:
    """Raise KeyboardInterrupt (``Terminated`` for SIGTERM) again when a stop was received, even if whatever it
    interrupted swallowed it: the next stage must not start, nor a finished run be closed FINISHED."""
    if _received is not None:
        raise _interruption(_received)
