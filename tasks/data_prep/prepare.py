"""Data prep's pure core: read a CSV or Parquet file and check it against the config once, before any training or
tracking (``load_and_check``: everything ``automl run`` refuses with one line), then split, impute, scale and window
it (``prepare``). What differs by kind of data is in ``series.py`` and ``tabular.py``. Only pandas and NumPy:
``automl run`` checks the data before it imports Prefect, MLflow or torch; the Prefect task that also logs to MLflow
is ``tasks.data_prep.stage``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd

from automl.configs import DataError, PipelineConfig, check_environment
from automl.models import AUTO, data_kind, get_family
from automl.tasks.data_prep.columns import check_finite, require_column, resolve_task
from automl.tasks.data_prep.folds import check_tabular_folds
from automl.tasks.data_prep.job import DataKind, DataPlan, DataPrepJob
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.data_prep.series import SERIES
from automl.tasks.data_prep.tabular import TABULAR

logger = logging.getLogger("automl")


def read_table(path: Path, key: str = "data.path") -> pd.DataFrame:
    """Read a CSV or Parquet file; any failure is a one-line ``DataError`` naming ``key`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{key}: no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path, engine="pyarrow")
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise DataError(f"{key}: {path.name}: unsupported file type {suffix!r}; use .csv or .parquet")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{key}: {path}: the file is empty") from None
    except Exception as exc:  # every parser error becomes one line naming the file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{key}: cannot read {path}: {reason}") from None
    if frame.empty:
        raise DataError(f"{key}: {path}: no data rows")
    if frame.shape[1] == 1 and "," not in str(frame.columns[0]) and any(s in str(frame.columns[0]) for s in ";\t|"):
        raise DataError(
            f"{key}: {path}: read one column {str(frame.columns[0])!r}; the file does not look comma-separated"
        )
    return frame


def fingerprint(path: Path) -> str:
    """Content fingerprint of the input file (SHA-256 of its bytes, first 16 hex digits)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


# The kinds of data, each its own module: what plan_data checks and prepare does differs by kind.
DATA_KINDS: dict[str, DataKind] = {"series": SERIES, "tabular": TABULAR}


def plan_data(frame: pd.DataFrame, job: DataPrepJob) -> DataPlan:
    """Check the table against the config (columns, types, size) and decide task type and features."""
    data = job.data
    kind = DATA_KINDS[data_kind(job.family, data.time_column)]
    # auto: every task a table's families take (mlp and gbm both classify); a series is regression either way
    tasks = ("regression", "classification") if job.family == AUTO else get_family(job.family).tasks
    columns = list(frame.columns)
    require_column(frame, data.target, "data.target", data.path)
    kind.check_columns(frame, data)
    target = frame[data.target]
    if target.isna().all():
        raise DataError(f"data.target: column {data.target!r} has no values (all missing)")
    task = resolve_task(target, data, tasks)
    excluded = {data.target, data.time_column}
    if data.features is not None:
        for name in data.features:
            require_column(frame, name, f"data.features ({name})", data.path)
            if name in excluded:
                raise DataError(f"data.features: {name!r} is the target or time column; remove it")
        candidates = list(data.features)
    else:
        candidates = [c for c in columns if c not in excluded]
    for name in candidates:
        if frame[name].isna().all():
            raise DataError(f"column {name!r}: all values are missing; drop it or list data.features")
    features, categorical, dropped = kind.choose_features(frame, data, candidates)
    kind.check_rows(frame, data, task)
    numeric_inputs = [c for c in features if c not in categorical and c != data.target]
    check_finite(frame, ([data.target] if task == "regression" else []) + numeric_inputs)
    plan = DataPlan(kind=kind.name, task=task, features=features, categorical=categorical, dropped=dropped)
    if job.cv.folds > 1:
        kind.check_folds(frame, job, plan)
    elif job.cv.kind == "stratified" and task != "classification":
        check_tabular_folds(job.cv, "stratified", task, data.target, frame[data.target])
    return plan


def prepare(
    frame: pd.DataFrame, job: DataPrepJob, plan: DataPlan, source_fingerprint: str = ""
) -> tuple[PreparedData, dict[str, pd.DataFrame]]:
    """Split, impute, scale and (for series) window the table. Returns the arrays and the split rows. The columns
    training leaves out are named in one warning (they are recorded in the preprocessing, and ignored in rows to
    predict from).

    Example:
        >>> job = DataPrepJob.of(cfg)
        >>> frame = read_table(job.data.path)
        >>> prepared, split_rows = prepare(frame, job, plan_data(frame, job))
        >>> prepared.train.X.shape
    """
    prepared, frames = DATA_KINDS[plan.kind].prepare(frame, job, plan)
    if plan.dropped:  # here, not in plan_data: a run refused at the door prints its one error line alone
        logger.warning("data: dropped %s", ", ".join(f"column {c!r} ({why})" for c, why in plan.dropped.items()))
    prepared.fingerprint = source_fingerprint
    prepared.card["fingerprint"] = source_fingerprint
    prepared.card["source"] = str(job.data.path)
    return prepared, frames


class CheckedData:
    """The data file, read and checked once per run: the table, what ``plan_data`` decided, and the file's
    fingerprint. Handed from the CLI's checks to the flow; Prefect stores a flow parameter of this type as a
    placeholder, not as the table (it has no ``__dict__`` for Prefect's JSON encoder to walk)."""

    __slots__ = ("fingerprint", "frame", "plan")

    def __init__(self, frame: pd.DataFrame, plan: DataPlan, fingerprint: str):
        self.frame, self.plan, self.fingerprint = frame, plan, fingerprint


def load_and_check(cfg: PipelineConfig) -> CheckedData:
    """Read the data and check it (and what the config asks of this machine) before any training or tracking."""
    check_environment(cfg)
    frame = read_table(cfg.data.path)
    plan = plan_data(frame, DataPrepJob.of(cfg))
    return CheckedData(frame, plan, fingerprint(cfg.data.path))
