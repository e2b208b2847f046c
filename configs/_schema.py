"""The typed shape of a pipeline config (one YAML file in configs/). Every field here is a key a user may set."""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import types
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

OPTUNA_SAMPLERS = ("tpe", "random", "gp", "cmaes", "grid")
HYPEROPT_SAMPLERS = ("tpe", "random", "anneal")
# What search.fidelity: auto means for strategy sample (benchmarks/search_efficiency.py measures the choice).
AUTO_FIDELITY = "hyperband"
STORAGE_SCHEMES = ("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+", "journal:")
SERIES_BASELINE = "seasonal_naive"  # the baseline only series families have (final.baselines)
GBM_BASELINE = "gbm"  # a default LightGBM beside a network (final.baselines); the gbm family's default config is one

# Names the pipeline turns into folders under $AUTOML_HOME, MLflow experiments, registered models and Optuna studies
# (the config's name, registry.model_name, --study-name, the NAME of `automl champion`). The characters leave a name
# one ordinary path component, never hidden ('.' first) nor a way up ('..'), and rule out what MLflow's registry
# refuses ('/', ':', a name that normalises to another path) or cannot address ('@' ends NAME in models:/NAME@ALIAS).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
# A file name holds at most 255 bytes and ours add to a name (a default study name is the config's name plus 21
# characters); MLflow keeps registered-model names to 256 characters, aliases to 255, experiment names to 500.
MAX_NAME_LENGTH = 128
# A study's default name: "<config name>-<UTC start, YYYYmmdd-HHMMSS>-<4 hex digits>" (tasks/tracking/runs.py).
MAX_STUDY_NAME_LENGTH = MAX_NAME_LENGTH + len("-20260101-000000-abcd")
# numpy's RandomState (Optuna's samplers, scikit-learn's splits) takes seeds in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
MAX_DESCRIPTION_LENGTH = 20_000  # MLflow keeps it as an experiment tag, whose values it caps at 20,000 characters
# Upper bounds of the integer keys: far beyond any useful setting, and within what numpy, torch, Optuna and
# LightGBM take (so a value past them is a typo found at the door, not an overflow an hour into a run).
MAX_EPOCHS = 100_000
MAX_TRIALS = 1_000_000
MAX_STEPS = 1_000_000  # time steps of a series window, season or gap
MAX_WORKERS = 1024
# A searched or fixed integer model parameter ends up a C int (LightGBM's parameters, torch's layer sizes).
MAX_INT_PARAM = 2**31 - 1


def name_problem(name: str, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """Why ``name`` cannot name a pipeline's files, experiment, study or registered model; None when it can.

    Example:
        >>> name_problem("co2-weekly_v2.1") is None
        True
        >>> name_problem("../etc")
        "'../etc' is not a name: letters, digits, '_', '-' and '.', first a letter or digit, no '..'"
    """
    if len(name) > max_length:
        return f"a name of {len(name)} characters is too long (at most {max_length})"
    if not re.fullmatch(NAME_PATTERN, name) or ".." in name:
        return f"{name!r} is not a name: letters, digits, '_', '-' and '.', first a letter or digit, no '..'"
    return None


def _name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


@functools.cache
def _prefect_croniter() -> Any:
    """The croniter Prefect vendors, with which its CronSchedule validates a cron string, loaded from its file:
    importing it through the prefect package would load all of Prefect, which checking a config must not."""
    prefect = importlib.util.find_spec("prefect")  # finds the package without running it
    path = Path(next(iter(prefect.submodule_search_locations))) / "_vendor" / "croniter" / "croniter.py"
    spec = importlib.util.spec_from_file_location("automl_prefect_croniter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.croniter


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())  # Prefect's list of the zones a schedule may name


def cron_problem(expression: str) -> str | None:
    """Why Prefect would refuse ``expression`` as a cron schedule (its ``validate_cron_string``); None when it takes it.

    Example:
        >>> cron_problem("0 2 * * *") is None
        True
    """
    if not _prefect_croniter().is_valid(expression):
        return f"{expression!r} is not a cron schedule (minute hour day-of-month month day-of-week, e.g. '0 2 * * *')"
    if any(field.casefold() in ("r", "h") for field in expression.split()):
        return f"{expression!r}: Prefect does not take random (R) or hashed (H) cron fields"
    return None


def time_zone_problem(zone: str) -> str | None:
    """Why Prefect would refuse ``zone`` as a schedule's time zone (not an IANA name); None when it takes it."""
    if zone not in _time_zones():
        return f"{zone!r} is not a time zone name (IANA tzdata, e.g. UTC or Europe/Berlin)"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1 for an int or float key (YAML turns yes/no/on/off into booleans too),
        # and takes .inf or 1e400 for a float key with no upper bound
        if not isinstance(data, dict):
            return data
        for key, value in data.items():
            field = cls.model_fields.get(key) if isinstance(key, str) else None
            if field is None or not _takes(field.annotation, (int, float)):
                continue
            for item in value if isinstance(value, list | tuple) else [value]:  # a pair of numbers too
                if isinstance(item, bool) and not _takes(field.annotation, (bool,)):
                    raise KeyValueError(key, f"{item!r} is a boolean; this key takes a number")
                text = isinstance(item, str) and _takes(field.annotation, (str,))  # "inf" may be a categorical choice
                if isinstance(item, float | str) and not text and not _finite(item):
                    raise KeyValueError(key, f"{item!r} is not a finite number")
        return data


class KeyValueError(ValueError):
    """A bad value for ``key`` found by a check of the model that holds it (the error names the key)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _finite(value: float | str) -> bool:
    """False for a float, or a string pydantic would read as one ("1e400", "nan"), that is not finite."""
    try:
        return math.isfinite(float(value))
    except ValueError:
        return True  # not a number at all: the field's own type check names it


def _takes(annotation: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a field of type ``annotation`` takes values of one of ``kinds`` (through unions, Annotated and
    Literal; Any takes everything)."""
    if annotation is Any or annotation in kinds:
        return True
    origin = get_origin(annotation)
    if origin is Literal:
        return any(type(choice) in kinds for choice in get_args(annotation))
    if origin is Annotated:
        return _takes(get_args(annotation)[0], kinds)
    if origin in (list, tuple):
        return any(_takes(member, kinds) for member in get_args(annotation) if member is not Ellipsis)
    if origin is Union or origin is types.UnionType:
        return any(_takes(member, kinds) for member in get_args(annotation))
    return False


class IntParam(_Strict):
    """An integer in [low, high] on a grid of ``step`` (linear), or log-uniform with step 1."""

    type: Literal["int"]
    low: int = Field(ge=-MAX_INT_PARAM, le=MAX_INT_PARAM)
    high: int = Field(ge=-MAX_INT_PARAM, le=MAX_INT_PARAM)
    step: int = Field(1, ge=1, le=MAX_INT_PARAM)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step != 1:
            raise ValueError("step must be 1 when log is true")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low ({self.high - self.low}) must be a multiple of step ({self.step})")
        return self


class FloatParam(_Strict):
    """A float in [low, high], linear or log scale, optionally on a grid of ``step``."""

    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_range(self.low, self.high, self.log)
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log")
        return self


class CategoricalParam(_Strict):
    """One of a list of choices (numbers, strings or booleans)."""

    type: Literal["categorical"]
    choices: list[bool | int | float | str]

    @field_validator("choices")
    @classmethod
    def _non_empty_unique(cls, choices: list[Any]) -> list[Any]:
        if not choices:
            raise ValueError("choices must not be empty")
        for choice in choices:
            if isinstance(choice, int) and not isinstance(choice, bool) and abs(choice) > MAX_INT_PARAM:
                raise ValueError(f"{choice} is out of range: an integer choice is at most {MAX_INT_PARAM} in size")
        if len({(type(c), c) for c in choices}) != len(choices):
            raise ValueError(f"choices must be unique (got {choices})")
        return choices


ParamSpec = Annotated[IntParam | FloatParam | CategoricalParam, Field(discriminator="type")]


def _check_range(low: float, high: float, log: bool) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite")
    if low >= high:
        raise ValueError(f"low ({low}) must be < high ({high})")
    if log and low <= 0:
        raise ValueError(f"low ({low}) must be > 0 when log is true")


class SplitConfig(_Strict):
    """Fractions of the rows for train/val/test (chronological for series, seeded for tabular)."""

    train: float = Field(0.7, gt=0, lt=1)
    val: float = Field(0.15, gt=0, lt=1)
    test: float = Field(0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1 (got {total:g})")
        return self


class DataConfig(_Strict):
    """Where the data is and how to read it. A relative ``path`` is resolved against the config file's folder."""

    path: Path
    target: str
    time_column: str | None = None
    task: Literal["auto", "regression", "classification"] = "auto"
    lookback: int = Field(24, ge=1, le=MAX_STEPS)
    horizon: int = Field(1, ge=1, le=MAX_STEPS)
    # Steps per season for the seasonal-naive baseline; auto infers it from the time column's step (daily -> 7).
    season: int | Literal["auto"] = "auto"
    features: list[str] | None = None
    split: SplitConfig = SplitConfig()

    @field_validator("season", mode="before")
    @classmethod
    def _season(cls, value: Any) -> Any:
        # before pydantic's own check, which would take true as 1 and 2.0 as 2
        if isinstance(value, str) and value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"must be a positive integer or auto (got {value!r})")
        if value > MAX_STEPS:
            raise ValueError(f"must be at most {MAX_STEPS} steps (got {value})")
        return value


class ModelConfig(_Strict):
    """The model family and any of its parameters held fixed (not searched)."""

    family: str
    params: dict[str, bool | int | float | str] = {}

    def default_config(self) -> dict[str, Any]:
        """The family's default config with this config's fixed ``params`` over it: what every searched config is
        merged over, and the baseline the final stage trains (``final.baselines: default_config``).

        Example:
            >>> ModelConfig(family="mlp", params={"hidden_size": 32}).default_config()["hidden_size"]
            32
        """
        from automl.models import AUTO, get_family  # the family registry is plain data: no torch

        if self.family == AUTO:
            raise ValueError("model.family auto has one default config per family (tasks.space.default_config)")
        return {**get_family(self.family).defaults, **self.params}


class TrainingConfig(_Strict):
    """Settings shared by every training in the pipeline (search trials and final retraining)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    grad_clip: float | None = Field(1.0, gt=0)
    loss: Literal["auto", "mse", "mae", "huber", "cross_entropy"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"


class CVConfig(_Strict):
    """Cross-validation in the search: each config's score is its mean validation loss over ``folds`` folds of the
    train+validation rows (``folds: 1``, the default, is the single validation split). ``auto`` is stratified
    k-fold for classification, k-fold for tabular regression and rolling-origin for series; ``gap`` leaves that
    many rows (time steps) out between a series fold's training part and its validation window. ``pruning``
    stops a config after a fold whose running mean is worse than the median of the others' at that fold."""

    folds: int = Field(1, ge=1, le=100)
    kind: Literal["auto", "kfold", "stratified", "rolling_origin", "expanding"] = "auto"
    gap: int = Field(0, ge=0, le=MAX_STEPS)
    pruning: bool = True


class PBTConfig(_Strict):
    """Population-based training (``search.strategy: pbt``): ``population`` members train side by side for
    ``epochs``; every ``interval_epochs`` the worst ``quantile`` copy the weights and params of a member of the
    best ``quantile`` (exploit), then perturb each mutable param by a factor drawn from ``perturb``, or resample it
    from the space with ``resample_probability`` (explore)."""

    population: int = Field(8, ge=2, le=256)
    interval_epochs: int = Field(2, ge=1, le=MAX_EPOCHS)
    quantile: float = Field(0.25, gt=0, le=0.5)
    perturb: tuple[float, float] = (0.8, 1.2)
    resample_probability: float = Field(0.25, ge=0, le=1)
    epochs: int = Field(30, ge=1, le=MAX_EPOCHS)

    @field_validator("perturb")
    @classmethod
    def _factors(cls, factors: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"factors must be finite and > 0 (got {list(factors)})")
        return factors

    @model_validator(mode="after")
    def _interval_fits(self) -> PBTConfig:
        if self.interval_epochs > self.epochs:
            raise ValueError(f"interval_epochs ({self.interval_epochs}) must be <= epochs ({self.epochs})")
        return self


class SearchConfig(_Strict):
    """The hyperparameter search. ``space`` defaults to the model family's own search space. ``strategy``
    ``sample`` evaluates sampled configs (with ``fidelity`` and ``cv``); ``pbt`` trains a population (``pbt``).
    ``lr_range: auto`` runs the learning-rate range test first and narrows the space's ``lr`` around it."""

    strategy: Literal["sample", "pbt"] = "sample"
    pbt: PBTConfig = PBTConfig()
    lr_range: Literal["off", "auto"] = "off"
    backend: Literal["optuna", "hyperopt"] = "optuna"
    sampler: str = "tpe"
    n_trials: int | None = Field(20, ge=1, le=MAX_TRIALS)
    timeout: float | None = Field(None, gt=0)
    epochs: int = Field(5, ge=1, le=MAX_EPOCHS)
    n_startup_trials: int | None = Field(None, ge=0, le=MAX_TRIALS)
    # auto: multi-fidelity for strategy sample (AUTO_FIDELITY), none for pbt (its members train on all the data)
    fidelity: Literal["auto", "none", "successive_halving", "hyperband"] = "auto"
    eta: int = Field(3, le=100)  # an eta of 100 already keeps one config in a hundred per rung
    min_fraction: float = 1 / 9
    promotion: Literal["asha", "deferred"] = "asha"  # deferred: no promotion before a rung has eta results
    # A config promoted to a larger data fraction continues from its checkpoint at the rung below (weights and
    # optimiser state) instead of training from scratch (false: every rung trains from scratch, as before).
    continuation: StrictBool = True
    # A config whose cost per epoch is r times its rung's median (r > 1) must rank in the top 1/(eta r) to be promoted.
    cost_aware: StrictBool = True
    # A new study with no warm-start config queued evaluates the family's default config first: cheap, usually
    # decent, and a measured reference for the rungs' first comparisons (FLAML's low-cost initial point).
    try_default_first: bool = True
    cv: CVConfig = CVConfig()
    storage: str | None = None
    parallelism: int = Field(1, ge=1, le=MAX_WORKERS)
    cluster_address: str | None = None
    trial_timeout: float | None = Field(None, gt=0)
    space: dict[str, ParamSpec] | None = None
    # model.family auto: the families searched (each with its default space); null: every family that fits the data
    families: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _fidelity_follows_strategy(cls, data: Any) -> Any:
        """``fidelity: auto`` (the default) becomes a scheduler at the door, so nothing downstream sees ``auto``."""
        if isinstance(data, dict) and data.get("fidelity", "auto") == "auto":
            data = {**data, "fidelity": "none" if data.get("strategy") == "pbt" else AUTO_FIDELITY}
        return data

    @field_validator("eta")
    @classmethod
    def _eta(cls, eta: int) -> int:
        if eta < 2:
            raise ValueError(f"must be >= 2 (got {eta})")
        return eta

    @field_validator("min_fraction")
    @classmethod
    def _min_fraction(cls, value: float) -> float:
        if not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1] (got {value})")
        return value

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if self.n_trials is None and self.timeout is None:
            raise ValueError("set n_trials, timeout or both")
        if self.storage is not None and not self.storage.startswith(STORAGE_SCHEMES):
            raise ValueError(
                f"storage {self.storage!r} is not an Optuna storage URL; use sqlite:///..., postgresql://... "
                "or journal:///path/to/file.log"
            )
        allowed = OPTUNA_SAMPLERS if self.backend == "optuna" else HYPEROPT_SAMPLERS
        if self.sampler not in allowed:
            raise ValueError(
                f"sampler {self.sampler!r} is not available for backend {self.backend!r}; "
                f"choose one of {', '.join(allowed)}"
            )
        return self


class BudgetConfig(_Strict):
    """A wall-clock budget for the whole run (start-up, data prep, warm start, search, final training, baselines,
    registration), in seconds; none by default. The search stops in time to leave the final stage what its measured
    costs say it needs."""

    seconds: float | None = Field(None, gt=0, allow_inf_nan=False)


class EnsembleConfig(_Strict):
    """Greedy ensemble selection over the search's best configs (Caruana et al. 2004): the ``top_k`` best distinct
    configs are trained in the final stage, then ``rounds`` picks with replacement on validation predictions, the
    best prefix kept. ``top_k: 1`` is the single best config."""

    top_k: int = Field(5, ge=1, le=50)
    rounds: int = Field(25, ge=1, le=1000)


class FinalConfig(_Strict):
    """Retraining of the best config: a bigger budget with early stopping on validation loss; an ensemble of the
    best configs when it validates better; a production refit on all rows (``refit: all``)."""

    epochs: int = Field(50, ge=1, le=MAX_EPOCHS)
    patience: int = Field(5, ge=1, le=MAX_EPOCHS)
    init: Literal["best_trial", "scratch"] = "best_trial"  # continue from the best trial's weights, or start over
    ensemble: EnsembleConfig = EnsembleConfig()
    # all: after the test, the registered model is trained again on every row (train, validation and test)
    refit: Literal["none", "all"] = "none"
    # Trained next to it; without the key, series families also get seasonal_naive (PipelineConfig's default).
    baselines: list[Literal["default_config", "naive", "seasonal_naive", "gbm"]] = ["default_config", "naive"]
    # A finished run removes its own trial weights and checkpoints (files and MLflow artifacts) and Prefect results:
    # nothing reads them once it has FINISHED, and they are most of what a run leaves on disk.
    clean_up: StrictBool = True


class WarmStartConfig(_Strict):
    """Seed the search with the best configs of past runs of the same family and task type on similar data,
    and/or with configs named explicitly (run ids, or a file written by ``automl configs export``)."""

    enabled: bool = True
    top_k: int = Field(3, ge=0, le=1000)
    from_runs: list[str] = []
    from_file: Path | None = None
    skip_low_fidelity: bool = False


class RegistryConfig(_Strict):
    """Register the final model in the MLflow model registry; ``model_name`` defaults to the config's name.
    ``promote`` moves the ``champion`` alias to the new version: ``better`` when it scores better than the current
    champion on the new run's test rows (the first version always), ``always``, or ``never`` (the alias is moved
    by hand, ``automl champion set``)."""

    enabled: bool = True
    model_name: str | None = None
    promote: Literal["better", "always", "never"] = "better"

    @field_validator("model_name")
    @classmethod
    def _registry_name(cls, name: str | None) -> str | None:
        # checked here, not by MLflow's registry after all the training
        return None if name is None else _name(name)


class ScheduleConfig(_Strict):
    """When ``automl serve`` runs this pipeline on its own, and scores ``score.data`` with the champion (cron
    syntax, in ``timezone``; no scoring schedule when ``score_cron`` is unset)."""

    cron: str = "0 2 * * *"
    timezone: str = "UTC"
    score_cron: str | None = None

    @field_validator("cron", "score_cron")
    @classmethod
    def _cron(cls, expression: str | None) -> str | None:
        # checked here, not by `automl serve` when it builds the deployments
        problem = None if expression is None else cron_problem(expression)
        if problem:
            raise ValueError(problem)
        return expression

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, zone: str) -> str:
        problem = time_zone_problem(zone)
        if problem:
            raise ValueError(problem)
        return zone


class ScoreConfig(_Strict):
    """Batch scoring with the registered model (the ``score`` flow, ``automl predict --config``). Relative paths
    resolve against the config file's folder; ``output`` defaults to a new timestamped Parquet file under
    ``$AUTOML_HOME/predictions/<config name>/``."""

    data: Path | None = None
    output: Path | None = None
    alias: str = Field("champion", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]*$", max_length=MAX_NAME_LENGTH)
    rolling: bool = False

    @field_validator("alias")
    @classmethod
    def _not_reserved(cls, alias: str) -> str:
        if alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):  # as MLflow reserves them
            raise ValueError(f"{alias!r} is reserved by MLflow's registry; use another alias")
        return alias

    @field_validator("output")
    @classmethod
    def _output_format(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix.lower() not in (".parquet", ".csv"):
            raise ValueError(f"must end in .parquet or .csv (got {str(value)!r})")
        return value


class PipelineConfig(_Strict):
    """One pipeline: data → warm start → search → final training → registry.

    Example:
        >>> from automl.configs import load_config
        >>> cfg = load_config("configs/lstm_baseline.yaml", overrides=["search.n_trials=6"])
        >>> cfg.search.n_trials
        6
    """

    name: str
    description: str = Field("", max_length=MAX_DESCRIPTION_LENGTH)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    model: ModelConfig
    data: DataConfig
    training: TrainingConfig = TrainingConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()
    budget: BudgetConfig = BudgetConfig()
    warm_start: WarmStartConfig = WarmStartConfig()
    registry: RegistryConfig = RegistryConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    score: ScoreConfig = ScoreConfig()

    @field_validator("name")
    @classmethod
    def _config_name(cls, name: str) -> str:
        return _name(name)

    @model_validator(mode="before")
    @classmethod
    def _family_baselines(cls, data: Any) -> Any:
        """A config that does not list ``final.baselines`` gets its family's: series are also tested against the
        seasonal-naive forecast, and every network against a default LightGBM (``gbm``), so the typed config holds
        the list the final stage runs."""
        if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
            return data
        final, family = data.get("final", {}), data["model"].get("family")
        if not isinstance(final, dict) or "baselines" in final or not isinstance(family, str):
            return data
        from automl.models import AUTO, FAMILIES, data_kind  # the family registry is plain data: no torch

        if family not in FAMILIES and family != AUTO:
            return data  # an unknown family is refused after validation, naming the known ones
        data_cfg = data.get("data") if isinstance(data.get("data"), dict) else {}
        time_column = data_cfg.get("time_column") if isinstance(data_cfg.get("time_column"), str) else None
        baselines = list(FinalConfig.model_fields["baselines"].default)
        if data_kind(family, time_column) == "series":
            baselines.append(SERIES_BASELINE)
        if family != GBM_BASELINE:
            baselines.append(GBM_BASELINE)
        return {**data, "final": {**final, "baselines": baselines}}
