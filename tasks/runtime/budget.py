"""The run's wall-clock budget (``budget.seconds``, ``automl run --budget``): when the run must end. The search stops in
time to leave the final stage what its plan needs (``tasks.search_stage.deadline``); the final stage splits what is
left (``tasks.final_train.plan``).

Example:
    >>> budget = RunBudget(seconds=120, started_at=time.time())
    >>> budget.deadline - time.time()                        # seconds left
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RunBudget:
    """``seconds`` of wall-clock from ``started_at`` (``time.time()`` when the command or the flow run started)."""

    seconds: float
    started_at: float

    @property
    def deadline(self) -> float:
        return self.started_at + self.seconds

    def used(self) -> float:
        return time.time() - self.started_at
