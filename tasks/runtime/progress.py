"""Console progress of long trainings (a search trial's rung, a final-stage training): one tqdm status line per
training saying where it is (epoch e/E, train and validation loss, time in, ETA), redrawn at most once an epoch and
at most every ``REFRESH_SECONDS``, whichever is rarer, and cleared when the training ends (the trial's or stage's own
line follows). Shown only where the CLI asked for it (``automl run`` without ``--json``) and stderr is a terminal;
elsewhere a run prints its per-trial lines only.

Example:
    >>> show_epoch_progress(True)          # the CLI, once
    >>> with EpochProgress("trial 3", epochs=40) as progress:
    ...     fit(model, train, val, settings, on_epoch=progress)
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm import tqdm

# A line a second would scroll past nobody and cost a terminal write per epoch of small models; an LSTM trial of
# 700 s (issue 28) still moves its line 70 times.
REFRESH_SECONDS = 10.0

_shown = False  # set by the CLI: library use, tests and Dask worker processes print no epoch lines


def show_epoch_progress(on: bool) -> None:
    """Whether trainings in this process show their epoch line (when stderr is a terminal)."""
    global _shown
    _shown = on


class EpochProgress:
    """One training's epoch line; an ``on_epoch(epoch, train_loss, val_loss)`` callback for ``models.fit``.

    ``stream`` (stderr by default) must be a terminal and ``show_epoch_progress(True)`` must have been called, else
    nothing is drawn; ``shown`` overrides the latter."""

    def __init__(self, label: str, epochs: int, stream: TextIO | None = None, shown: bool | None = None) -> None:
        stream = stream if stream is not None else sys.stderr
        on = (_shown if shown is None else shown) and _is_terminal(stream)
        self._bar = tqdm(
            total=epochs,
            desc=label,
            unit="epoch",
            file=stream,
            mininterval=REFRESH_SECONDS,  # at most every REFRESH_SECONDS ...
            miniters=1,  # ... and at most once an epoch (the bar moves only on update)
            delay=REFRESH_SECONDS,  # a training shorter than that draws nothing
            leave=False,
            disable=not on,
            dynamic_ncols=True,
            bar_format="{desc} | epoch {n_fmt}/{total_fmt}{postfix} | {elapsed} in, ETA {remaining}",  # ", train_loss"
        )

    @property
    def shown(self) -> bool:
        return not self._bar.disable

    def __call__(self, epoch: int, train_loss: float, val_loss: float) -> None:
        self._bar.set_postfix_str(f"train_loss {train_loss:.5g}, val_loss {val_loss:.5g}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
