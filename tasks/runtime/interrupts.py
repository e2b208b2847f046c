"""Ctrl-C and SIGTERM as a stop that nothing in between can lose: the handler raises at once (what runs is stopped
where it is) and remembers the signal, and every stage boundary raises it again (``raise_if_stopped``).

The second raise is needed because a library may swallow the first: Prefect's flow engine drops a KeyboardInterrupt
that lands after a flow run reached its final state (``flow_engine.py``: "BaseException was raised after user code
finished executing"), and the ``search`` subflow spends up to a second there, joining its heartbeat thread. A
Ctrl-C in that second used to let the pipeline go on to the final stage and register a model.

A stop that lands inside a database client's call (MLflow's SQLAlchemy store, Optuna's RDB storage) waits for the
call to end (``_postponed``): raised inside one, a KeyboardInterrupt left MLflow's SQLite store locked for the
process (MLflow's sessions roll back on ``Exception`` only), and closing the run KILLED then waited 30 s and failed.

Example:
    >>> with stop_on_signals():       # automl's main(), around the command
    ...     run_the_command()         # each stage boundary calls raise_if_stopped()
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

_received: int | None = None  # the signal received inside stop_on_signals, if any
_deferring = 0  # depth of ``deferred_stop`` blocks: a signal inside one is raised when the outermost ends
_armed = False  # stop_on_signals installed the handler (the main thread of the CLI)
_postponed_signal: int | None = None  # a stop waiting for a database call to end, re-delivered until it lands
_postponed_since = 0.0

# Code a stop must not interrupt: a database client's call (paths as in the frames' file names).
_DATABASE_CODE = tuple(
    os.sep + os.path.join(*parts) + os.sep
    for parts in (("sqlalchemy",), ("alembic",), ("mlflow", "store"), ("optuna", "storages"))
)
MAX_POSTPONE_SECONDS = 5.0  # a call still running then (a lock wait) is interrupted all the same


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: what is running is stopped and recorded as interrupted, exit hooks run
    (the temporary Prefect server stops), and the same command resumes."""


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stop(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = signum
    if not _deferring and not _postponed(signum, frame, lambda: _raise(signum)):
        _raise(signum)


def _raise(signum: int) -> None:
    global _postponed_signal
    _postponed_signal = None
    raise _interruption(signum)


def _outermost_database_call(frame: FrameType | None) -> FrameType | None:
    """The frame of the database client's call ``frame`` is in (the outermost of its frames), if any."""
    found = None
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in _DATABASE_CODE):
            found = frame
        frame = frame.f_back
    return found


def _postponed(signum: int, frame: FrameType | None, deliver: Callable[[], None]) -> bool:
    """Whether the stop waits: it landed inside a database client's call, which it would leave half done. It is
    delivered (``deliver`` raises it) the moment that call returns, from a trace function on that call's frame
    alone (as pdb stops at a frame's return): the call's writes are done, and the caller sees the stop instead of
    its result. A call that has not returned after ``MAX_POSTPONE_SECONDS`` (a lock wait) is interrupted then."""
    global _postponed_signal, _postponed_since
    call = _outermost_database_call(frame)
    if call is None:
        return False
    now = time.monotonic()
    if _postponed_signal is None:
        _postponed_signal, _postponed_since = signum, now
        fallback = threading.Timer(MAX_POSTPONE_SECONDS + 0.1, _redeliver, (signum,))
        fallback.daemon = True
        fallback.start()
    elif now - _postponed_since > MAX_POSTPONE_SECONDS:
        return False
    _deliver_on_return(call, signum, deliver)
    return True


def _deliver_on_return(call: FrameType, signum: int, deliver: Callable[[], None]) -> None:
    previous = sys.gettrace()

    def on_return(frame: FrameType, event: str, arg: object) -> Callable | None:
        if event == "return":
            frame.f_trace = None
            sys.settrace(previous)
            if _postponed_signal == signum:  # not raised meanwhile (at a stage boundary)
                deliver()
        return on_return

    call.f_trace_lines = False
    call.f_trace = on_return
    sys.settrace(previous or _untraced)  # tracing on for this thread, so that the frame's own function is called


def _untraced(frame: FrameType, event: str, arg: object) -> None:
    return None


def _redeliver(signum: int) -> None:
    if _postponed_signal == signum:  # not raised meanwhile (at a stage boundary)
        os.kill(os.getpid(), signum)


@contextmanager
def stops_outside_database_calls() -> Iterator[None]:
    """Inside a Prefect flow run, whose engine installs its own SIGTERM handler (it raises at once): that handler
    is called only outside a database client's call (``_postponed``), and the stop is remembered for the stage
    boundaries. Outside the CLI's ``stop_on_signals``, or in another thread, nothing changes."""
    main = threading.current_thread() is threading.main_thread()
    current = signal.getsignal(signal.SIGTERM) if _armed and main else None
    if not callable(current) or current is _stop:
        yield
        return

    def guarded(signum: int, frame: FrameType | None) -> None:
        global _received
        _received = signum

        def deliver() -> None:
            global _postponed_signal
            _postponed_signal = None
            current(signum, frame)

        if not _postponed(signum, frame, deliver):
            deliver()

    signal.signal(signal.SIGTERM, guarded)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is guarded:
            signal.signal(signal.SIGTERM, current)


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
    global _received, _armed, _postponed_signal
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
        _postponed_signal = None


def raise_if_stopped() -> None:
    """Raise KeyboardInterrupt (``Terminated`` for SIGTERM) again when a stop was received, even if whatever it
    interrupted swallowed it: the next stage must not start, nor a finished run be closed FINISHED."""
    if _received is not None:
        _raise(_received)
