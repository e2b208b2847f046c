"""The Python API: run a pipeline from a notebook or a script (``run``, the same run as ``automl run``, on a config
and optionally a DataFrame) and score rows with a registered champion (``load_champion``, as ``automl predict``).
Both share their bodies with the command (``automl.runner.run_pipeline``, ``automl.tasks.registry.prediction``).

Example:
    >>> import pandas as pd
    >>> from automl import load_champion, run
    >>> rows = pd.read_csv("configs/data/penguins.csv")
    >>> summary = run("mlp_tabular", data=rows, overrides={"search.n_trials": 3}, budget=300)
    >>> summary.test_metrics
    >>> load_champion("mlp_tabular").predict(rows.drop(columns="species")).head()
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.runner import PipelineFailed

__all__ = ["Champion", "PipelineFailed", "load_champion", "run"]

if TYPE_CHECKING:  # importing ``automl`` stays cheap: pandas, MLflow and Prefect load when a function runs
    import pandas as pd

    from automl.tasks.registry.prediction import RegisteredModel
    from automl.tasks.summary import PipelineSummary


def run(
    config: str | os.PathLike[str],
    data: pd.DataFrame | None = None,
    *,
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    budget: float | None = None,
    study_name: str | None = None,
) -> PipelineSummary:
    """Run a pipeline end to end, as ``automl run`` does, and return its summary.

    Args:
        config: a shipped config's name (``"mlp_tabular"``) or a YAML file.
        data: the rows to train on, instead of the config's ``data.path`` (same columns as such a file). They are
            kept as Parquet in the state folder under their fingerprint, which becomes the run's ``data.path``.
        overrides: config keys to change: ``{"search.n_trials": 3}`` (typed values), or ``--set`` style strings
            (``["search.n_trials=3"]``).
        budget: a wall-clock budget for the whole run in seconds (``automl run --budget``).
        study_name: continue this Optuna study instead of starting a new one (``--study-name``).

    Raises:
        configs.InputError: bad input (an argument, a config key, the data), found before any MLflow run or
            Optuna study is made; ``str(error)`` is one line naming what is wrong.
        PipelineFailed: the run started and failed.
        KeyboardInterrupt: Ctrl-C (or SIGTERM); calling ``run`` again with the same arguments resumes.

    Example:
        >>> summary = run("mlp_tabular", data=rows, overrides={"search.n_trials": 3, "final.epochs": 5})
        >>> summary.best_params, summary.test_metrics, summary.registered_model
    """
    started_at = time.time()  # the budget counts from here, as the CLI's from its start
    from automl.tasks.runtime.state import configure_environment

    configure_environment()  # before anything imports prefect
    from automl.configs import MAX_STUDY_NAME_LENGTH, InputError, check_name
    from automl.console import setup_console
    from automl.runner import resolve_config, run_pipeline
    from automl.tasks.runtime.interrupts import stop_on_signals

    if not isinstance(config, str | os.PathLike) or not os.fspath(config):
        raise InputError(f"config: give a shipped config's name or a YAML file's path (got {config!r})")
    settings, values = _overrides(overrides)
    if budget is not None:
        values["budget.seconds"] = _budget(budget)  # after the overrides, as --budget wins over --set
    if study_name is not None:
        if not isinstance(study_name, str):
            raise InputError(f"study_name: give a study's name as a string (got {type(study_name).__name__})")
        check_name("study_name", study_name, MAX_STUDY_NAME_LENGTH)
    if data is not None and "data.path" in {*values, *(item.partition("=")[0].strip() for item in settings)}:
        raise InputError("overrides: data.path: the rows are given as data=; leave data.path out")
    with stop_on_signals():
        return run_pipeline(resolve_config(config), settings, values, study_name, started_at, setup_console, data)


def load_champion(name: str) -> Champion:
    """The champion version of registered model ``name`` (a config's name unless its ``registry.model_name``
    says otherwise), from the state folder's registry (or ``MLFLOW_TRACKING_URI``), ready to score raw rows.

    Raises:
        configs.InputError: no such model, no champion, or no registry yet.

    Example:
        >>> champion = load_champion("mlp_tabular")
        >>> champion.version, champion.predict(rows.drop(columns="species")).head()
    """
    from automl.tasks.runtime.state import configure_environment

    configure_environment()  # before the registry's modules import prefect
    from automl.configs import InputError, check_name
    from automl.tasks.registry import prediction
    from automl.tasks.runtime.state import local_state

    if not isinstance(name, str):
        raise InputError(f"name: give a registered model's name as a string (got {type(name).__name__})")
    check_name("name", name)  # before the registry is opened
    prediction.open_registry(local_state(), key="name")
    return Champion(prediction.load_registered_model(f"models:/{name}@champion", key="name"))


class Champion:
    """A registered model version loaded to score raw rows: ``predict`` gives what ``automl predict`` writes."""

    def __init__(self, model: RegisteredModel):
        self._model = model

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def version(self) -> int:
        return int(self._model.version)

    @property
    def uri(self) -> str:
        """The versioned URI, ``models:/NAME/VERSION``: the same model whatever the alias points at later."""
        return f"models:/{self._model.name}/{self._model.version}"

    def __repr__(self) -> str:
        return f"Champion({self.name!r}, version={self.version})"

    def predict(self, data: pd.DataFrame, rolling: bool = False) -> pd.DataFrame:
        """Predictions for raw rows, checked first as ``automl predict`` checks a file (a missing or extra column,
        a wrong type, too short a history: one ``InputError`` line naming ``data`` and the column).

        Tables: the rows with the prediction columns appended (a target column stays, beside them). Series: one
        row per forecast step, or with ``rolling=True`` one-step-ahead predictions over the whole history.

        Example:
            >>> load_champion("lstm_baseline").predict(pd.read_csv("configs/data/co2_weekly.csv").tail(60))
        """
        import pandas as pd

        from automl.configs import InputError
        from automl.tasks.registry import prediction

        if not isinstance(data, pd.DataFrame):
            raise InputError(f"data: give a pandas DataFrame (got {type(data).__name__})")
        if not isinstance(rolling, bool):
            raise InputError(f"rolling: give True or False (got {rolling!r})")
        prediction.check_rows(self._model, data, rolling, Path("data"))
        return prediction.score_rows(self._model, data, rolling)


def _overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> tuple[list[str], dict[str, Any]]:
    """``--set`` style strings and typed values (dotted key -> value) from ``run``'s ``overrides``."""
    from automl.configs import InputError

    if overrides is None:
        return [], {}
    if isinstance(overrides, Mapping):
        for key in overrides:
            if not isinstance(key, str) or not all(part.strip() for part in key.split(".")):
                raise InputError(f"overrides: {key!r} is not a config key (a dotted key such as 'search.n_trials')")
        return [], {key.strip(): value for key, value in overrides.items()}
    if isinstance(overrides, str | bytes) or not isinstance(overrides, Sequence):
        raise InputError(
            "overrides: give a dict ({'search.n_trials': 3}) or a list of 'key=value' strings "
            f"(got {type(overrides).__name__})"
        )
    for item in overrides:
        if not isinstance(item, str):
            raise InputError(f"overrides: {item!r} is not a 'key=value' string")
    return list(overrides), {}


def _budget(budget: Any) -> Any:
    """The run's budget in seconds as given, when it is a number > 0 (True is not 1 second here)."""
    from automl.configs import InputError

    try:  # a Python int can be past any float (10**400): not finite either
        finite = not isinstance(budget, bool) and isinstance(budget, Real) and math.isfinite(budget)
    except OverflowError:
        finite = False
    if not finite or budget <= 0:
        raise InputError(f"budget: give the run's budget in seconds, a number > 0 (got {budget!r:.40})")
    return budget
