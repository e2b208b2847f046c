"""The naive baseline: what a model must beat to be worth anything (the last observed value for a series; the train
mean, or the class frequencies, for a table). The other baseline, the default config, is trained as the tuned config
is (``tasks.final_train.training``)."""

from __future__ import annotations

import numpy as np

from tasks.data_prep.prepared import PreparedData

NAIVE = "naive"  # its name in final.baselines


def naive_predictions(prepared: PreparedData) -> np.ndarray:
    """Series: the last observed value for every horizon step; tabular: the train mean or class frequencies."""
    n = len(prepared.test)
    if prepared.kind == "series":
        last = prepared.test.X[:, -1, 0:1]  # the target is the first input column
        return prepared.to_original_units(np.repeat(last, prepared.n_outputs, axis=1))
    if prepared.task == "classification":
        counts = np.bincount(prepared.train.y, minlength=prepared.n_outputs).astype(float)
        return np.tile(counts / counts.sum(), (n, 1))
    return np.full((n, 1), prepared.to_original_units(prepared.train.y).mean())
