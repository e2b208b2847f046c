"""The registered model: raw rows in, predictions in the target's units out.

An MLflow pyfunc model that carries the fitted preprocessing of data prep (``preprocessing.json``) and the torch
weights. The same model directory also has MLflow's ``pytorch`` flavour, so ``mlflow.pytorch.load_model`` on the
registered model still gives the torch module.

- Tabular: a DataFrame with the training's feature columns and raw types (strings for categories, missing values
  allowed) -> ``prediction`` (the target's units, or the class label) and, for classification, one
  ``proba_<class>`` column per class.
- Series: the recent history (the time column, the target, the covariates; at least ``lookback`` rows, at the
  training's cadence: gaps of whole steps pass, another step is refused) -> the next ``horizon`` steps, one row
  each: ``origin`` (the last observed time), the time column (``origin`` plus ``step`` training steps, calendar
  months for a monthly model), ``step`` and ``prediction``. With the param ``rolling=True``: every window of the
  history whose targets are inside it, with ``actual`` (what the test metrics measure).
- Columns the training file had but training dropped (text in a series, a table's time column) are ignored.

Example:
    >>> model = mlflow.pyfunc.load_model("models:/lstm_baseline@champion")
    >>> model.predict(history)                                  # the next horizon steps
    >>> model.predict(history, params={"rolling": True})        # one-step-ahead over the whole history
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from automl.models.trainer import module_device
from automl.tasks.data_prep.preprocessing import (
    Preprocessing,
    SeriesPreprocessing,
    TabularPreprocessing,
    make_windows,
    preprocessing_from_dict,
)

TORCH_ARTIFACT = "torch_model"
PREPROCESSING_ARTIFACT = "preprocessing"
PROBA_PREFIX = "proba_"
_BATCH = 4096


def predict_raw(
    module: torch.nn.Module, pre: Preprocessing, frame: pd.DataFrame, rolling: bool = False, extra_allowed: bool = True
) -> pd.DataFrame:
    """Predictions of ``module`` for raw rows, through the fitted preprocessing ``pre``.

    Bad rows (a missing column, a value of the wrong type, too little history) raise ``RawInputError`` with one
    line naming the column.
    """
    if isinstance(pre, TabularPreprocessing):
        return _predict_tabular(module, pre, pre.validate(frame, rolling, extra_allowed))
    return _predict_series(module, pre, *pre.validate(frame, rolling, extra_allowed), rolling)


@torch.no_grad()
def _forward(module: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    module.eval()
    device = module_device(module)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    return torch.cat([module(xt[i : i + _BATCH]).cpu() for i in range(0, len(xt), _BATCH)]).numpy()


def _predict_tabular(module: torch.nn.Module, pre: TabularPreprocessing, frame: pd.DataFrame) -> pd.DataFrame:
    X = pre.encode(frame)
    raw = _forward(module, X)
    if pre.task == "classification":
        classes = pre.classes or []
        proba = torch.softmax(torch.as_tensor(raw), dim=1).numpy()
        out = pd.DataFrame({"prediction": [classes[i] for i in proba.argmax(axis=1)]}, index=frame.index)
        for i, label in enumerate(classes):
            out[f"{PROBA_PREFIX}{label}"] = proba[:, i]
        return out
    return pd.DataFrame({"prediction": pre.target_to_original(raw[:, 0])}, index=frame.index)


def _predict_series(
    module: torch.nn.Module, pre: SeriesPreprocessing, ordered: pd.DataFrame, values: pd.DataFrame, rolling: bool
) -> pd.DataFrame:
    lb, h = pre.lookback, pre.horizon
    times = ordered[pre.time_column]
    scaled = pre.scale(values)
    if not rolling:
        forecast = pre.target_to_original(_forward(module, scaled[None, -lb:]))[0]
        return pd.DataFrame(
            {
                "origin": [times.iloc[-1]] * h,
                pre.time_column: pre.future_times(times.iloc[-1], h),
                "step": np.arange(1, h + 1),
                "prediction": forecast,
            }
        )
    X, _ = make_windows(scaled, lb, h)
    forecast = pre.target_to_original(_forward(module, X))  # (windows, h)
    n = len(X)
    first_target = np.repeat(np.arange(n) + lb, h) + np.tile(np.arange(h), n)
    target = values[pre.target].to_numpy()
    return pd.DataFrame(
        {
            "origin": times.iloc[np.repeat(np.arange(n) + lb - 1, h)].to_numpy(),
            pre.time_column: times.iloc[first_target].to_numpy(),
            "step": np.tile(np.arange(1, h + 1), n),
            "prediction": forecast.reshape(-1),
            "actual": target[first_target],
        }
    )


class RawDataModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of the registered model (see the module docstring). ``rolling`` is its one param."""

    def load_context(self, context: Any) -> None:
        import mlflow.pytorch

        self.preprocessing = preprocessing_from_dict(
            json.loads(Path(context.artifacts[PREPROCESSING_ARTIFACT]).read_text())
        )
        self.torch_model = mlflow.pytorch.load_model(context.artifacts[TORCH_ARTIFACT], map_location="cpu").eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        rolling = bool((params or {}).get("rolling", False))
        return predict_raw(self.torch_model, self.preprocessing, model_input, rolling=rolling)


def input_example(pre: Preprocessing, raw_rows: pd.DataFrame) -> pd.DataFrame:
    """A few raw rows as a model input: for series the last ``lookback`` of them (one forecast), for tables five."""
    if isinstance(pre, SeriesPreprocessing):
        return raw_rows[pre.columns].tail(pre.lookback).reset_index(drop=True)
    return raw_rows[pre.features].head(5).reset_index(drop=True)


def input_schema(pre: Preprocessing):
    """The raw input columns, in order, each of MLflow's type "any": MLflow's own check refuses int64 for a double
    column and numbers or booleans for a string one (a CSV of whole numbers, a True/False category), while the
    model's check converts what it can and names the column whose values it cannot take."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    columns = pre.columns if isinstance(pre, SeriesPreprocessing) else pre.features
    return Schema([ColSpec(AnyType(), name) for name in columns])


def log_raw_model(module: torch.nn.Module, pre: Preprocessing, raw_rows: pd.DataFrame, name: str = "model"):
    """Log ``module`` with ``pre`` as one MLflow model of the active run (pyfunc on raw rows + pytorch flavour);
    its signature and input example are raw columns. Returns MLflow's ``ModelInfo``."""
    from mlflow.models import Model, ModelSignature, infer_signature

    module = module.cpu().eval()
    example = input_example(pre, raw_rows)
    params = {"rolling": False} if isinstance(pre, SeriesPreprocessing) else None
    with warnings.catch_warnings():  # MLflow's hint about integer columns concerns inputs; ours take "any"
        warnings.simplefilter("ignore", UserWarning)
        inferred = infer_signature(example, predict_raw(module, pre, example), params=params)
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=_RawModelFlavor,
            flavor_name="python_function",
            torch_module=module,
            preprocessing=pre,
            signature=ModelSignature(input_schema(pre), inferred.outputs, inferred.params),
            input_example=example,
        )


class _RawModelFlavor:
    """What ``mlflow.models.Model.log`` calls to write the model directory: the pyfunc with its artifacts, then
    the pytorch flavour pointing at the same weights (one copy on disk)."""

    @staticmethod
    def save_model(
        path: str,
        mlflow_model: Any,
        torch_module: torch.nn.Module,
        preprocessing: Preprocessing,
        signature: Any = None,
        input_example: Any = None,
        **_: Any,
    ) -> None:
        import mlflow.pytorch
        from mlflow.models import Model

        requirements = [
            f"torch=={torch.__version__.split('+')[0]}",
            f"mlflow=={mlflow.__version__}",
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
        ]
        if any(hasattr(part, "fit_rounds") for part in torch_module.modules()):  # trees inside (models.gbm)
            from importlib.metadata import version

            requirements.append(f"lightgbm=={version('lightgbm')}")
        with tempfile.TemporaryDirectory() as tmp:
            torch_dir = Path(tmp) / TORCH_ARTIFACT
            with warnings.catch_warnings():  # torch's exporter warns about LSTM weight attributes it does not need
                warnings.simplefilter("ignore", UserWarning)
                mlflow.pytorch.save_model(
                    torch_module, str(torch_dir), serialization_format="pickle", pip_requirements=requirements
                )
            torch_conf = Model.load(str(torch_dir / "MLmodel")).flavors["pytorch"]
            pre_file = Path(tmp) / "preprocessing.json"
            pre_file.write_text(json.dumps(preprocessing.to_dict(), indent=2, default=str))
            code = _code_paths(Path(tmp) / "code")
            mlflow.pyfunc.save_model(
                path,
                python_model=RawDataModel(),
                artifacts={TORCH_ARTIFACT: str(torch_dir), PREPROCESSING_ARTIFACT: str(pre_file)},
                code_paths=code,
                mlflow_model=mlflow_model,
                signature=signature,
                input_example=input_example,
                pip_requirements=requirements,
            )
        saved = mlflow_model.flavors["python_function"]["artifacts"][TORCH_ARTIFACT]["path"]
        mlflow_model.add_flavor(
            "pytorch",
            model_data=f"{saved}/{torch_conf['model_data']}",
            pytorch_version=torch_conf["pytorch_version"],
            code=mlflow_model.flavors["python_function"].get("code"),
        )
        mlflow_model.save(str(Path(path) / "MLmodel"))


def _code_paths(folder: Path) -> list[str]:
    """The code a loaded model imports, so it loads where this package is not installed: an ``automl`` package
    holding the torch model families and, of ``tasks``, just this module and the preprocessing, at their import
    paths (the pickles name ``automl.tasks.registry.raw_model`` and ``automl.models.<family>``), under package files
    that import nothing else."""
    import automl.models as models
    from automl.tasks.data_prep import preprocessing

    package = folder / "automl"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(Path(models.__file__).parent, package / "models", ignore=skip)
    for module in (preprocessing, sys.modules[__name__]):
        source = Path(module.__file__)
        room = package / "tasks" / source.parent.name
        room.mkdir(parents=True, exist_ok=True)
        (room / "__init__.py").write_text('"""The part of automl-pipeline a registered model needs."""\n')
        shutil.copy(source, room / source.name)
    (package / "tasks" / "__init__.py").write_text('"""The parts of automl-pipeline a registered model needs."""\n')
    (package / "__init__.py").write_text(_SHIPPED_PACKAGE)
    return [str(package)]


# The ``automl/__init__.py`` a model ships. MLflow puts the model's code folder first on ``sys.path`` (and leaves it
# there): where automl-pipeline is installed, this copy stands aside for it, or loading a model with MLflow's own
# ``mlflow.pyfunc.load_model`` would leave ``import automl`` meaning these few modules for the rest of the process.
_SHIPPED_PACKAGE = '''"""The parts of automl-pipeline a registered model needs (or, installed, the package)."""

import importlib.machinery
import importlib.util
import os
import sys


def _installed():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    elsewhere = [p for p in sys.path if os.path.abspath(p or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec(__name__, elsewhere)
    if spec is not None and spec.origin:
        return spec
    for finder in sys.meta_path:  # an editable install's finder
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_spec"):
            spec = finder.find_spec(__name__, None)
            if spec is not None and spec.origin and os.path.abspath(spec.origin) != os.path.abspath(__file__):
                return spec
    return None


_spec = _installed()
if _spec is not None:
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module  # what the import statement that ran this file returns
    _spec.loader.exec_module(_module)
'''

