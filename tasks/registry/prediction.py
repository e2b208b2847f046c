"""Scoring with a registered model: find it in the registry (a ``models:/`` URI, or a config's champion), check
a data file against the model's raw inputs, predict in chunks with progress, write the predictions in one step
(CSV or Parquet), and record a scoring run. ``automl predict`` and the ``score`` flow both use these; every
problem with what the user gave is one ``InputError`` line, raised before any output is written or MLflow run
is started.

Example:
    >>> model = load_registered_model("models:/mlp_tabular@champion")
    >>> predictions = score_rows(model, read_rows(Path("new.csv")))
    >>> write_predictions(predictions, Path("predictions.parquet"))
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from automl.configs import DataError, InputError, PipelineConfig
from automl.tasks.data_prep.preprocessing import Preprocessing, RawInputError, SeriesPreprocessing, TabularPreprocessing
from automl.tasks.runtime.state import LocalState, sqlite_path
from automl.tasks.tracking.catalog import (
    DATA_PATH_PARAM,
    MODEL_NAME,
    MODEL_NAME_PARAM,
    MODEL_URI_PARAM,
    MODEL_VERSION,
    MODEL_VERSION_PARAM,
    OUTPUT_PATH_PARAM,
    PREDICTIONS_FILE,
    PREDICTIONS_METRIC,
    ROLE,
    ROLLING_PARAM,
    ROWS_SCORED_METRIC,
    SCORE_ROLE,
    SCORING_INPUT_CONTEXT,
    SECONDS_METRIC,
)
from automl.tasks.tracking.runs import log_frame, quiet_mlflow_warnings

logger = logging.getLogger("automl")
CHUNK_ROWS = 50_000
OUTPUT_SUFFIXES = (".csv", ".parquet")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


@dataclass
class RegisteredModel:
    """A registered model version loaded for scoring, and how it was asked for."""

    uri: str
    name: str
    version: str
    pyfunc: Any  # mlflow.pyfunc.PyFuncModel
    preprocessing: Preprocessing


def open_registry(state: LocalState, key: str = "--model") -> MlflowClient:
    """Point MLflow at the state folder's registry (or ``MLFLOW_TRACKING_URI``). When the default local registry
    does not exist yet, fail with one line instead of creating an empty one."""
    from automl.tasks.tracking.runs import configure_mlflow

    path = sqlite_path(state.mlflow_uri)
    if path is not None and not path.is_file():
        raise InputError(
            f"{key}: no MLflow registry at {path}; run a pipeline first, or set MLFLOW_TRACKING_URI or AUTOML_HOME"
        )
    configure_mlflow(state)
    return MlflowClient()


def model_uri(cfg: PipelineConfig, alias: str | None = None) -> str:
    """``models:/NAME@ALIAS`` for a config's registered model (its ``registry.model_name`` or name)."""
    return f"models:/{cfg.registry.model_name or cfg.name}@{alias or cfg.score.alias}"


def load_registered_model(uri: str, key: str = "--model") -> RegisteredModel:
    """Resolve ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` in the registry and load it. An unknown model,
    alias or version, an unreachable registry, or a model that is not a raw-data model of this pipeline, is one
    ``InputError`` line."""
    match = _MODEL_URI.match(uri or "")
    if match is None:
        raise InputError(
            f"{key}: {uri!r} is not a registered model URI; use models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    name, alias, number = match["name"], match["alias"], match["version"]
    client = MlflowClient()
    folder = None
    try:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            known = ", ".join(sorted(m.name for m in client.search_registered_models(max_results=50))) or "none"
            raise InputError(f"{key}: no registered model {name!r} (registered: {known})") from None
        try:
            version = (
                client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
            )
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            what = f"alias {alias!r}" if alias else f"version {number}"
            raise InputError(f"{key}: model {name!r} has no {what}") from None
        folder = tempfile.mkdtemp(prefix="automl-model-")  # where MLflow would download it, but known here
        with quiet_mlflow_warnings(), _installed_code_first():
            # MLflow's own check of the model's requirements maps every installed package to its modules first
            # (0.55 s of a 4 s ``automl predict``); requirement_mismatches checks the same pins in milliseconds
            pyfunc = mlflow.pyfunc.load_model(
                f"models:/{name}/{version.version}", suppress_warnings=True, dst_path=folder
            )
        for mismatch in requirement_mismatches(Path(folder) / "requirements.txt"):
            logger.warning("%s version %s: %s", name, version.version, mismatch)
    except InputError:
        raise
    except Exception as exc:  # an unreachable registry, missing artifacts, code that no longer imports
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{key}: cannot load {uri} from {mlflow.get_tracking_uri()}: {reason}") from None
    finally:
        # loaded into memory (weights, preprocessing; the installed code, not the model's copy): the download goes,
        # or every predict, load_champion and scoring run would leave a copy of the model in the temp folder
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        preprocessing = pyfunc.unwrap_python_model().preprocessing
    except (AttributeError, MlflowException):
        raise InputError(
            f"{key}: {name} version {version.version} takes no raw rows (registered before raw-data models, or "
            "not by this pipeline); run the pipeline again to register one"
        ) from None
    return RegisteredModel(uri, name, str(version.version), pyfunc, preprocessing)


def requirement_mismatches(requirements: Path) -> list[str]:
    """The pins of a model's ``requirements.txt`` this environment does not meet, one line each (``torch==2.12.0
    is pinned; 2.13.0 is installed``), as MLflow warns when it loads a model; an unreadable line is skipped."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        lines = requirements.read_text().splitlines()
    except OSError:
        return []
    mismatches = []
    for line in lines:
        try:
            pin = Requirement(line.split("#")[0].strip())
        except InvalidRequirement:  # blank lines, comments, pip options, URLs
            continue
        if pin.marker is not None and not pin.marker.evaluate():
            continue
        try:
            installed = version(pin.name)
        except PackageNotFoundError:
            mismatches.append(f"{pin} is required; it is not installed")
            continue
        if pin.specifier and not pin.specifier.contains(installed.split("+")[0], prereleases=True):
            mismatches.append(f"{pin} is required; {installed} is installed")
    return mismatches


@contextmanager
def _installed_code_first() -> Iterator[None]:
    """Load a model without letting its own copy of this package's code shadow the installed one.

    MLflow puts a loaded model's code folder (an ``automl`` package with the model families and, of ``tasks``, the
    raw-model modules only) first on ``sys.path`` and leaves it there. Here those modules are imported before it,
    but processes started later inherit ``sys.path`` (the Dask workers of a parallel search in ``automl serve``,
    which also runs the score flow) and would import that partial package. The package is installed here, so the
    folder is taken off again.
    Models registered before the project's packages moved under ``automl`` pickled their classes as
    ``tasks.registry.raw_model`` (before ``tasks/`` had rooms, ``tasks.raw_model``) and ``models.<family>``: those
    names are pointed at the modules' homes now, while the model loads.
    """
    import importlib
    import pkgutil

    import automl.models
    import automl.tasks
    from automl.tasks import data_prep, registry
    from automl.tasks.data_prep import preprocessing
    from automl.tasks.registry import raw_model

    # the installed families (a few ms each once torch is loaded), before unpickling could import the model's copy
    families = {
        f"models.{info.name}": importlib.import_module(f"automl.models.{info.name}")
        for info in pkgutil.iter_modules(automl.models.__path__)
    }
    aliases = {"tasks": automl.tasks, "tasks.data_prep": data_prep, "tasks.registry": registry, "models": automl.models}
    aliases |= {"tasks.registry.raw_model": raw_model, "tasks.data_prep.preprocessing": preprocessing}
    aliases |= {"tasks.raw_model": raw_model, "tasks.preprocessing": preprocessing, **families}
    added = {old: module for old, module in aliases.items() if old not in sys.modules}  # a user's own stay theirs
    sys.modules.update(added)
    before = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = [entry for entry in sys.path if entry in before]
        for old, module in added.items():  # the generic names go back to the process once the model is loaded
            if sys.modules.get(old) is module:
                del sys.modules[old]


def read_rows(path: Path, key: str = "--data") -> pd.DataFrame:
    """Read the rows to score (CSV or Parquet); an unreadable or empty file is one line naming it."""
    from automl.tasks.data_prep import read_table

    return read_table(Path(path), key=key)


def check_output(path: Path | None, key: str = "--out") -> None:
    """Fail before scoring when predictions could not be written to ``path``."""
    if path is None:
        return
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{key}: {path}: the file name must end in .csv or .parquet")
    if path.is_dir():
        raise InputError(f"{key}: {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise InputError(f"{key}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{key}: folder {path.parent} is not writable")


def check_rows(
    model: RegisteredModel, frame: pd.DataFrame, rolling: bool, path: Path, say: Callable[[str], Any] | None = None
) -> None:
    """Every column, type, length and cadence problem as one ``DataError`` naming the file and column, before
    scoring. Stricter than the served model, which ignores extra columns (MLflow drops them): a file to score with
    an extra or misnamed column is refused, so a typo does not pass unnoticed; the columns training dropped are
    not extra (a file like the training's has them), nor is a table's target (a labelled file, scored to compare:
    ``say`` is told once that it is not an input)."""
    target = model.preprocessing.target if isinstance(model.preprocessing, TabularPreprocessing) else None
    if target is not None and target in frame.columns:
        if say is not None:
            say(f"{path}: column {target!r} is the target this model predicts: not an input (kept in the output)")
        frame = frame.drop(columns=[target])
    try:
        model.preprocessing.validate(frame, rolling, extra_allowed=False)
    except RawInputError as exc:
        raise DataError(f"{path}: {exc}") from None


def score_rows(
    model: RegisteredModel,
    frame: pd.DataFrame,
    rolling: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Predictions for checked rows. Tables come back as their rows with the prediction columns appended, scored
    in chunks of ``CHUNK_ROWS`` (``progress(done, total)`` after each); series as the forecast rows."""
    params = {"rolling": True} if rolling else None
    if isinstance(model.preprocessing, SeriesPreprocessing):
        return model.pyfunc.predict(frame, params=params)
    inputs = frame.drop(columns=[model.preprocessing.target], errors="ignore")  # a labelled file keeps it to output
    parts = []
    for start in range(0, len(inputs), CHUNK_ROWS):
        chunk = inputs.iloc[start : start + CHUNK_ROWS]
        parts.append(model.pyfunc.predict(chunk).set_axis(chunk.index))
        if progress is not None:
            progress(min(start + CHUNK_ROWS, len(frame)), len(frame))
    return pd.concat([frame, pd.concat(parts)], axis=1).reset_index(drop=True)


def progress_printer(label: str, write: Callable[[str], Any]) -> Callable[[int, int], None]:
    """A progress callback writing one line per chunk, only for inputs larger than one chunk."""

    def report(done: int, total: int) -> None:
        if total > CHUNK_ROWS:
            write(f"{label}: scored {done:,} of {total:,} rows ({done / total:.0%})")

    return report


def write_predictions(frame: pd.DataFrame, path: Path) -> Path:
    """Write CSV or Parquet (by suffix) to a temporary file beside ``path`` and move it into place, so a failure
    leaves no partial file and readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if path.suffix.lower() == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def default_output(state: LocalState, config_name: str) -> Path:
    """A new Parquet file for a scoring run: ``$AUTOML_HOME/predictions/<config name>/<UTC time>.parquet``."""
    folder = state.predictions(config_name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"AUTOML_HOME: cannot create {folder} for the predictions ({exc.strerror})") from None
    return folder / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{time.monotonic_ns() % 10_000:04d}.parquet"


@dataclass
class ScoringRequest:
    """A checked scoring job: the rows, the model, where the predictions go."""

    data: Path
    output: Path
    rolling: bool
    frame: pd.DataFrame
    model: RegisteredModel


def prepare_scoring(
    cfg: PipelineConfig,
    state: LocalState,
    data_path: str | None = None,
    output_path: str | None = None,
    model_alias: str | None = None,
    rolling: bool | None = None,
) -> ScoringRequest:
    """Everything the score flow checks before it scores, each problem one ``InputError`` naming the parameter
    or, where the value came from the config, the config key. Empty parameters take the ``score`` section."""
    data = Path(data_path).resolve() if data_path else cfg.score.data
    if data is None:
        raise InputError("data_path: no file to score; give data_path or set score.data in the config")
    output = Path(output_path).resolve() if output_path else cfg.score.output
    check_output(output, key="output_path" if output_path else "score.output")
    frame = read_rows(data, key="data_path" if data_path else "score.data")
    open_registry(state, key="model_alias")
    model = load_registered_model(model_uri(cfg, model_alias), key="model_alias")
    rolling = cfg.score.rolling if rolling is None else rolling
    check_rows(model, frame, rolling, data, logger.info)
    return ScoringRequest(data, output or default_output(state, cfg.name), rolling, frame, model)


@dataclass
class ScoringResult:
    """What one scoring run produced and where it went."""

    rows: int
    model_name: str
    model_version: str
    model_uri: str
    output: str
    mlflow_run_id: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def log_scoring_run(experiment_id: str, request: ScoringRequest, predictions: pd.DataFrame, seconds: float) -> str:
    """One MLflow run (role ``score``) in the config's experiment: the model version used, the scored data as an
    MLflow dataset input, and the predictions as ``predictions.parquet``. Returns its run id."""
    model, data, frame, output, rolling = request.model, request.data, request.frame, request.output, request.rolling
    tags = {ROLE: SCORE_ROLE, MODEL_NAME: model.name, MODEL_VERSION: model.version}
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"score-{datetime.now(UTC):%Y%m%d-%H%M%S}", tags=tags
    ) as run:
        mlflow.log_params(
            {
                MODEL_URI_PARAM: model.uri,
                MODEL_NAME_PARAM: model.name,
                MODEL_VERSION_PARAM: model.version,
                DATA_PATH_PARAM: str(data),
                OUTPUT_PATH_PARAM: str(output),
                ROLLING_PARAM: rolling,
            }
        )
        mlflow.log_metrics(
            {ROWS_SCORED_METRIC: len(frame), PREDICTIONS_METRIC: len(predictions), SECONDS_METRIC: seconds}
        )
        with warnings.catch_warnings():  # MLflow finds two equivalent readers for a local file path
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=str(data), name=data.name)
            mlflow.log_input(dataset, context=SCORING_INPUT_CONTEXT)
        log_frame(predictions, PREDICTIONS_FILE)
    return run.info.run_id


def scoring_markdown(config_name: str, result: ScoringResult, predictions: pd.DataFrame, preview_rows: int = 10) -> str:
    """The scoring run as Markdown for the Prefect UI: rows, model version, where the output went, a preview."""
    preview = predictions.head(preview_rows)
    header = "| " + " | ".join(map(str, preview.columns)) + " |"
    rule = "|" + "---|" * len(preview.columns)
    body = "\n".join("| " + " | ".join(_cell(v) for v in row) + " |" for row in preview.itertuples(index=False))
    return f"""# Scoring: {config_name}

**Rows:** {result.rows} predictions with `{result.model_name}` version {result.model_version} (`{result.model_uri}`)
in {result.seconds:.1f}s.

**Output:** `{result.output}`; MLflow run `{result.mlflow_run_id}`.

## Preview (first {len(preview)} rows)
{header}
{rule}
{body}
"""


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value).replace("|", "\\|")
