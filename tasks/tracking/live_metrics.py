"""A training's per-epoch metrics written to its MLflow run while it trains (``epoch_train_loss`` and
``epoch_val_loss``, step = epoch), so the run's chart moves during a long training; and ``watch_training``, the
``on_epoch`` callback of one training: those metrics and its console progress line.

Metrics are buffered and written with one ``log_batch`` at most every ``FLUSH_SECONDS`` and when the training ends:
a write per epoch would cost small models more than their epochs (see docs/benchmarks.md, live metrics).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from automl.tasks.runtime.interrupts import deferred_stop
from automl.tasks.runtime.progress import EpochProgress
from automl.tasks.tracking.catalog import EPOCH_TRAIN_LOSS_METRIC, EPOCH_VAL_LOSS_METRIC

logger = logging.getLogger("automl")

FLUSH_SECONDS = 5.0  # how stale the MLflow chart may be; one write per FLUSH_SECONDS is negligible next to training

OnEpoch = Callable[[int, float, float], None]


class LiveEpochMetrics:
    """Buffers a training's per-epoch losses and writes them to ``run_id`` every ``flush_seconds`` and on ``close``.
    Steps start at ``first_step`` (a trial's later rung continues its earlier rungs' steps: ``after_logged``).
    Non-finite losses are left out (MLflow's charts cannot draw them). ``tracking_uri`` travels with the object to a
    Dask worker process, which has no tracking URI of its own.

    Example:
        >>> live = LiveEpochMetrics(run_id)
        >>> fit(model, train, val, settings, on_epoch=live)
        >>> live.close()
    """

    def __init__(
        self,
        run_id: str,
        first_step: int = 0,
        tracking_uri: str | None = None,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.run_id, self.first_step, self.flush_seconds = run_id, first_step, flush_seconds
        self._client = MlflowClient(tracking_uri)
        self._clock = clock
        self._pending: list[Metric] = []
        self._flushed_at = clock()
        self._warned = False

    @classmethod
    def after_logged(cls, run_id: str, tracking_uri: str | None = None) -> LiveEpochMetrics:
        """Steps following those ``run_id`` already has: a trial's next rung or fold, a retried trial's reopened run
        (whose interrupted rung trains again after the epochs it logged: steps never repeat)."""
        history = MlflowClient(tracking_uri).get_metric_history(run_id, EPOCH_VAL_LOSS_METRIC)
        return cls(run_id, first_step=max((m.step for m in history), default=-1) + 1, tracking_uri=tracking_uri)

    def __call__(self, epoch: int, train_loss: float, val_loss: float) -> None:
        now, step = int(time.time() * 1000), self.first_step + epoch
        for key, value in ((EPOCH_TRAIN_LOSS_METRIC, train_loss), (EPOCH_VAL_LOSS_METRIC, val_loss)):
            if math.isfinite(value):
                self._pending.append(Metric(key, float(value), now, step))
        if self._clock() - self._flushed_at >= self.flush_seconds:
            self._try_flush()

    def _try_flush(self) -> None:
        """A write during training that fails (a locked SQLite store, a tracking server that does not answer) does
        not fail the training: its points stay buffered for the next write, and the console says so once."""
        pending = list(self._pending)
        try:
            self.flush()
        except Exception as exc:
            self._pending = pending + self._pending
            if not self._warned:
                self._warned = True
                logger.warning("live metrics: cannot write to MLflow run %s yet (%s); retrying", self.run_id, exc)

    def flush(self) -> None:
        """Write what is buffered. In the main thread a Ctrl-C or SIGTERM waits for the write to end: one landing
        inside SQLAlchemy's write left MLflow's SQLite store locked for the process (``deferred_stop``). Elsewhere
        (a trial's worker thread) no signal can land."""
        self._flushed_at = self._clock()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        main = threading.current_thread() is threading.main_thread()
        with deferred_stop() if main else nullcontext():
            self._client.log_batch(self.run_id, metrics=pending, synchronous=True)

    def close(self) -> None:
        self.flush()


@contextmanager
def watch_training(
    label: str, epochs: int, run_id: str | None, first_step: int | None = 0, tracking_uri: str | None = None
) -> Iterator[OnEpoch]:
    """The ``on_epoch`` callback of one training: its console line (``EpochProgress``, labelled ``label``, of
    ``epochs``) and, given a ``run_id``, its live metrics there from ``first_step`` (None: after those the run has).
    What the training logged is written when it ends, also when it fails or is stopped."""
    with ExitStack() as stack:
        progress = stack.enter_context(EpochProgress(label, epochs))
        if run_id is None:
            yield progress
            return
        live = (
            LiveEpochMetrics.after_logged(run_id, tracking_uri)
            if first_step is None
            else LiveEpochMetrics(run_id, first_step, tracking_uri)
        )
        stack.callback(_close_quietly, live)

        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            live(epoch, train_loss, val_loss)
            progress(epoch, train_loss, val_loss)

        yield on_epoch


def _close_quietly(live: LiveEpochMetrics) -> None:
    """The last write of a training: a failure to write says so on the console rather than hiding why the
    training itself ended (it runs while an exception of the training may be on its way out)."""
    try:
        live.close()
    except Exception as exc:
        logger.warning("live metrics: the last epochs of run %s were not written (%s)", live.run_id, exc)
