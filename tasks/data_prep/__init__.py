"""Data preparation: read and check a table against its config before anything is tracked or trained, then split,
impute, scale and window it into ``PreparedData``. Pure pandas and NumPy (the Prefect task with its MLflow logging
is ``tasks.data_prep.stage``), so that ``automl run`` refuses bad input before it imports Prefect, MLflow or torch.

Example:
    >>> from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
    >>> checked = load_and_check(cfg)
    >>> prepared, split_rows = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
"""

from automl.tasks.data_prep.job import DataPlan, DataPrepJob
from automl.tasks.data_prep.prepare import CheckedData, fingerprint, load_and_check, plan_data, prepare, read_table
from automl.tasks.data_prep.prepared import CVSettings, Fold, PreparedData, Split

__all__ = [
    "CVSettings",
    "CheckedData",
    "DataPlan",
    "DataPrepJob",
    "Fold",
    "PreparedData",
    "Split",
    "fingerprint",
    "load_and_check",
    "plan_data",
    "prepare",
    "read_table",
]
