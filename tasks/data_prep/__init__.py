"""Data preparation: read and check a table against its config before anything is tracked or trained, then split,
impute, scale and window it into ``PreparedData``. Pure pandas and NumPy (the Prefect task with its MLflow logging
is ``tasks.data_prep.stage``), so that ``automl run`` refuses bad input before it imports Prefect, MLflow or torch.

Example:
    >>> from tasks.data_prep import DataPrepJob, load_and_check, prepare
    >>> checked = load_and_check(cfg)
    >>> prepared, split_rows = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
"""

from tasks.data_prep.prepare import CheckedData, DataPlan, DataPrepJob, load_and_check, plan_data, prepare, read_table
from tasks.data_prep.prepared import Fold, PreparedData, Split

__all__ = [
    "CheckedData",
    "DataPlan",
    "DataPrepJob",
    "Fold",
    "PreparedData",
    "Split",
    "load_and_check",
    "plan_data",
    "prepare",
    "read_table",
]
