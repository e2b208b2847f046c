"""Reading a pipeline config: YAML + ``--set`` overrides -> validated ``PipelineConfig``, or one ``ConfigError``."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from automl.configs._errors import ConfigError
from automl.configs._schema import (
    GBM_BASELINE,
    MAX_INT_PARAM,
    MAX_NAME_LENGTH,
    SERIES_BASELINE,
    CategoricalParam,
    FloatParam,
    KeyValueError,
    PipelineConfig,
    cron_problem,
    name_problem,
)

_UNION_TAGS = {"int", "float", "categorical"}
CONFIG_DIR = Path(__file__).resolve().parent
# File paths in a config: relative ones resolve against the config file's folder (or the working directory
# when given with --set).
_PATH_KEYS = (("data", "path"), ("warm_start", "from_file"), ("score", "data"), ("score", "output"))


def load_config(
    path: str | Path, overrides: Iterable[str] = (), values: Mapping[str, Any] | None = None
) -> PipelineConfig:
    """Read, override and validate the config at ``path``: ``values`` (dotted key -> typed value, e.g. from the
    Prefect form) first, then the ``--set`` style ``overrides`` (dotted.key=YAML scalar).

    Relative paths in the file (``data.path``, ``warm_start.from_file``) resolve against the file's folder; one
    given with ``--set`` resolves against the working directory, as a path typed on the command line would.

    Example:
        >>> cfg = load_config("configs/lstm_baseline.yaml", ["search.n_trials=6", "search.backend=hyperopt"])
    """
    path = Path(path)
    raw = _read_yaml(path)
    raw.setdefault("name", path.stem)
    for section, key in _PATH_KEYS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            node[key] = _resolved(path.parent / node[key], f"{path}: {section}.{key}")
    for key, value in (values or {}).items():
        _set_dotted(raw, key, value)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
        if tuple(key.split(".")) in _PATH_KEYS and isinstance(value, str):
            raw[key.split(".")[0]][key.split(".")[1]] = _resolved(Path(value), f"--set {key}")
    return validate_config(raw, source=str(path))


def _resolved(path: Path, key: str) -> str:
    """An absolute path; a symlink loop (``resolve`` raises RuntimeError for one) is a one-line error."""
    try:
        return str(path.resolve())
    except (RuntimeError, OSError) as exc:
        raise ConfigError(f"{key}: cannot resolve {path} ({exc})") from None


def validate_config(raw: Mapping[str, Any], source: str = "<config>") -> PipelineConfig:
    """Validate a config dict (already read and overridden) into a ``PipelineConfig``."""
    try:
        raw = copy.deepcopy(dict(raw))
        cfg = PipelineConfig.model_validate(_with_default_space(raw))
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: not a config: nested too deeply") from None
    try:
        _check_against_family(cfg)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def check_environment(cfg: PipelineConfig) -> None:
    """What a pipeline run asks of this machine and of other files (a CUDA device, the storage's database
    driver, the warm-start file), checked before the run starts; scoring with the config needs none of them."""
    try:
        _check_environment(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def check_name(key: str, name: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """``name`` as given, when it may name a pipeline's files, experiment, study or registered model (the rule the
    config's ``name`` and ``registry.model_name`` follow); else a ``ConfigError`` naming ``key``.

    Example:
        >>> check_name("--study-name", "co2-20260101-020000-ab12")
        'co2-20260101-020000-ab12'
    """
    problem = name_problem(name, max_length)
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return name


def check_cron(key: str, expression: str) -> str:
    """``expression`` as given, when Prefect takes it as a cron schedule (as ``schedule.cron`` must be); else a
    ``ConfigError`` naming ``key``."""
    problem = cron_problem(expression)
    if problem:
        raise ConfigError(f"{key}: {problem}")
    return expression


def storage_file(url: str) -> Path | None:
    """The file behind a ``sqlite:`` or ``journal:`` storage URL (None for a server's URL or an in-memory database).

    Example:
        >>> storage_file("journal:///var/automl/studies.log")
        PosixPath('/var/automl/studies.log')
    """
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:").removeprefix("//"))
    if not url.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return None  # not a URL at all: _check_storage_driver names it
    return Path(database) if database and database != ":memory:" else None


def typed_overrides(**values: Any) -> dict[str, Any]:
    """Config keys for the pipeline's typed parameters (the Prefect form), with their values as given; ``None``
    means unset.

    Example:
        >>> typed_overrides(n_trials=6, backend="hyperopt", warm_start=False, seed=None)
        {'search.n_trials': 6, 'search.backend': 'hyperopt', 'warm_start.enabled': False}
    """
    keys = {
        "n_trials": "search.n_trials",
        "timeout": "search.timeout",
        "backend": "search.backend",
        "fidelity": "search.fidelity",
        "warm_start": "warm_start.enabled",
        "seed": "seed",
        "budget_seconds": "budget.seconds",
    }
    return {keys[name]: value for name, value in values.items() if value is not None}


def shipped_configs() -> dict[str, Path]:
    """The pipeline configs shipped in this folder, by name."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def config_file(name: str | None, path: str | Path | None) -> Path:
    """The config file to run: ``path`` when given, else the shipped config called ``name``."""
    if path:
        return Path(path)
    shipped = shipped_configs()
    if name not in shipped:
        raise ConfigError(f"config: unknown shipped config {name!r}; choose one of {', '.join(shipped)}")
    return shipped[name]


def config_hash(cfg: PipelineConfig) -> str:
    """A short, stable hash of everything the config says (same config, same hash)."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class _DuplicateKey(yaml.MarkedYAMLError):
    """A key given twice in one mapping: plain YAML keeps the later value without a word."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping at any depth. Checked as each mapping is read
    (before merge keys, ``<<``, are expanded: a key given beside a merge overrides the merged one, as YAML means)."""

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in first_lines:
                raise _DuplicateKey(
                    problem=f"duplicate key {key!r} (first given at line {first_lines[key] + 1})",
                    problem_mark=key_node.start_mark,
                )
            first_lines[key] = key_node.start_mark.line
        return node


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no Python objects


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = _yaml(path.read_text())
    except RecursionError:
        raise ConfigError(f"{path}: not a config: its YAML is nested too deeply") from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: line {exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys (got {type(raw).__name__})")
    return raw


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected dotted.key=value")
    try:
        value = _yaml(text) if text.strip() else None
    except _DuplicateKey as exc:
        raise ConfigError(f"--set {key}: {exc.problem}") from None
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def _with_default_space(raw: dict[str, Any]) -> dict[str, Any]:
    """Write the family's default search space into the config when it gives none (under ``model.family: auto``
    the families it searches, when ``search.families`` is not given), so the config says all."""
    from automl.models import AUTO, FAMILIES, data_kind, families_for

    family = (raw.get("model") or {}).get("family") if isinstance(raw.get("model"), dict) else None
    search = raw.setdefault("search", {}) if isinstance(raw.get("search", {}), dict) else None
    if search is not None and family == AUTO and search.get("families") is None:
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        time_column = data.get("time_column") if isinstance(data.get("time_column"), str) else None
        search["families"] = families_for(data_kind(AUTO, time_column))
    if search is not None and family in FAMILIES and search.get("space") is None:
        fixed = (raw["model"].get("params") or {}) if isinstance(raw["model"].get("params"), dict) else {}
        search["space"] = {
            name: dict(spec) for name, spec in FAMILIES[family].default_space.items() if name not in fixed
        }
    return raw


def _check_against_family(cfg: PipelineConfig) -> None:
    from automl.models import AUTO, FAMILIES, data_kind

    if cfg.model.family == AUTO:
        _check_auto(cfg)
    else:
        _check_one_family(cfg)
    _check_kind_of_data(cfg, data_kind(cfg.model.family, cfg.data.time_column))
    family = FAMILIES.get(cfg.model.family)
    if family is not None and family.name == GBM_BASELINE and GBM_BASELINE in cfg.final.baselines:
        raise ValueError(
            f"final.baselines: {GBM_BASELINE} (a default LightGBM) is the gbm family's default config; "
            "list default_config"
        )
    _check_strategy(cfg, cfg.search.space or {})
    if cfg.schedule.score_cron and cfg.score.data is None:
        raise ValueError("schedule.score_cron: a scoring schedule needs score.data, the file to score")
    if cfg.data.task == "classification" and cfg.training.loss not in ("auto", "cross_entropy"):
        raise ValueError(f"training.loss: {cfg.training.loss!r} is a regression loss; use cross_entropy or auto")
    if cfg.data.task == "regression" and cfg.training.loss == "cross_entropy":
        raise ValueError("training.loss: cross_entropy needs data.task: classification")


def _check_auto(cfg: PipelineConfig) -> None:
    """``model.family: auto``: the families it searches exist and fit the data; each searches its own default space
    (so no ``search.space`` or ``model.params``), with a sampler that walks a conditional space."""
    from automl.models import AUTO, FAMILIES, data_kind, families_for

    kind = data_kind(AUTO, cfg.data.time_column)
    fitting = families_for(kind)
    if cfg.model.params:
        raise ValueError(
            "model.params: model.family auto searches each family's own parameters; fix parameters with one family"
        )
    if cfg.search.space:
        raise ValueError(
            "search.space: model.family auto searches each family's default space; give a space with one family"
        )
    families = cfg.search.families or []
    if not families:
        raise ValueError(f"search.families: empty; name at least one of {', '.join(fitting)}")
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"search.families: unknown model family {name!r}; choose from {', '.join(fitting)}")
        if name not in fitting:
            what = "a series (data.time_column is set)" if kind == "series" else "a table (no data.time_column)"
            raise ValueError(f"search.families: {name!r} does not fit {what}; choose from {', '.join(fitting)}")
        if families.count(name) > 1:
            raise ValueError(f"search.families: {name!r} is listed twice")
    search = cfg.search
    if search.strategy == "pbt":
        raise ValueError("search.strategy: pbt trains one family's population; model.family auto searches several")
    if search.lr_range == "auto":
        raise ValueError("search.lr_range: the range test narrows one network's lr; model.family auto has several")
    conditional = {"optuna": ("tpe", "random"), "hyperopt": ("tpe", "random", "anneal")}[search.backend]
    if search.sampler not in conditional:
        raise ValueError(
            f"search.sampler: {search.sampler} samples one fixed space; model.family auto's depends on the family "
            f"(use {' or '.join(conditional)})"
        )


def _check_one_family(cfg: PipelineConfig) -> None:
    """One family: its fixed params and searched space are its own parameters, within its limits."""
    from automl.models import FAMILIES

    family = FAMILIES.get(cfg.model.family)
    if family is None:
        raise ValueError(
            f"model.family: unknown model family {cfg.model.family!r}; choose one of auto, "
            f"{', '.join(sorted(FAMILIES))}"
        )
    if cfg.search.families is not None:
        raise ValueError(f"search.families: applies to model.family auto (this config's family is {family.name})")
    known = set(family.defaults)
    for name, value in cfg.model.params.items():
        if name not in known:
            raise ValueError(f"model.params.{name}: not a parameter of {family.name} ({', '.join(sorted(known))})")
        check_param_value(family, name, value, f"model.params.{name}")
    space = cfg.search.space or {}
    for name, spec in space.items():
        if name not in known:
            raise ValueError(f"search.space.{name}: not a parameter of {family.name} ({', '.join(sorted(known))})")
        if name in cfg.model.params:
            raise ValueError(f"search.space.{name}: also fixed in model.params; search it or fix it, not both")
        _check_spec(family, name, spec)
    if not space:
        raise ValueError("search.space: the search space is empty; give at least one parameter to search")
    if cfg.search.sampler == "grid":
        for name, spec in space.items():
            if isinstance(spec, FloatParam) and spec.step is None:
                raise ValueError(
                    f"search.space.{name}: the grid sampler needs discrete parameters; give this float a step"
                )


def _check_kind_of_data(cfg: PipelineConfig, kind: str) -> None:
    """What the kind of data (series or table) allows: a time column and regression for a series, the naive
    forecasts and fold kinds of its kind."""
    name = cfg.model.family
    if kind == "series":
        if cfg.data.time_column is None:
            raise ValueError(f"data.time_column: required for the time-series family {name!r}")
        if cfg.data.task == "classification":
            raise ValueError(f"data.task: {name!r} forecasts values; use regression or auto")
    elif SERIES_BASELINE in cfg.final.baselines:
        raise ValueError(
            f"final.baselines: {SERIES_BASELINE} forecasts a series; the tabular family {name!r} "
            f"takes default_config{'' if name == GBM_BASELINE else ', gbm'} and naive"
        )
    cv = cfg.search.cv
    series_kinds, tabular_kinds = ("rolling_origin", "expanding"), ("kfold", "stratified")
    if cv.kind in (tabular_kinds if kind == "series" else series_kinds):
        allowed = series_kinds if kind == "series" else tabular_kinds
        raise ValueError(
            f"search.cv.kind: {cv.kind!r} does not apply to the {kind} family {name!r}; "
            f"use auto, {' or '.join(allowed)}"
        )
    if cv.gap and kind != "series":
        raise ValueError("search.cv.gap: only series folds have a gap (time steps between training and validation)")
    if cfg.data.task == "regression" and cv.kind == "stratified":
        raise ValueError("search.cv.kind: stratified keeps class shares; data.task is regression, use kfold or auto")


def _check_strategy(cfg: PipelineConfig, space: Mapping[str, Any]) -> None:
    """PBT trains every member on all the training data in one validation split; it perturbs parameters that can
    change while a model trains. The range test narrows ``lr``."""
    from automl.models import FAMILIES, MUTABLE_PARAMS

    search = cfg.search
    family = FAMILIES.get(cfg.model.family)  # None under auto (refused with pbt and lr_range by _check_auto)
    if family is None:
        return
    if family.trains_itself and search.strategy == "pbt":
        raise ValueError(
            f"search.strategy: pbt perturbs a network's learning rate, dropout or batch size while it trains; "
            f"{family.name} boosts trees (no such schedule): use sample"
        )
    if family.trains_itself and search.lr_range == "auto":
        raise ValueError(f"search.lr_range: the range test sweeps a network's lr; {family.name} has none, use off")
    if search.lr_range == "auto" and "lr" not in space:
        raise ValueError("search.lr_range: auto narrows the space's lr, and lr is not in search.space")
    if search.strategy != "pbt":
        return
    if not any(name in MUTABLE_PARAMS for name in space):
        raise ValueError(
            "search.space: PBT perturbs parameters that can change while a model trains "
            f"({', '.join(sorted(MUTABLE_PARAMS))}); this space has none"
        )
    if search.fidelity != "none":
        raise ValueError(
            f"search.fidelity: {search.fidelity} does not apply to strategy pbt (members train on all the data); "
            "use none"
        )
    if search.cv.folds > 1:
        raise ValueError("search.cv.folds: strategy pbt trains on one validation split; use folds 1")
    if search.cluster_address:
        raise ValueError(
            "search.cluster_address: PBT members keep their checkpoints on this machine's disk, which a remote Dask "
            "worker cannot read; use search.parallelism (local workers)"
        )


def check_param_value(family: Any, name: str, value: Any, key: str) -> None:
    """A value ``family`` can build and train with: the right kind of number, within the parameter's limits."""
    limit = family.limits.get(name)
    if limit is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: {value!r} is not a number; {name} takes {limit.describe()}")
    if not math.isfinite(value):
        raise ValueError(f"{key}: {value!r} is not a finite number; {name} takes {limit.describe()}")
    if limit.kind == "int" and not float(value).is_integer():
        raise ValueError(f"{key}: {value!r} is not an integer; {name} takes {limit.describe()}")
    if limit.kind == "int" and abs(value) > MAX_INT_PARAM:
        raise ValueError(f"{key}: {value!r} is out of range; {name} takes an integer of at most {MAX_INT_PARAM}")
    if not limit.admits(float(value)):
        raise ValueError(f"{key}: {value!r} is out of range; {name} takes {limit.describe()}")


def _check_spec(family: Any, name: str, spec: Any) -> None:
    """Every value a search-space entry can draw is one ``family`` can take."""
    key = f"search.space.{name}"
    limit = family.limits.get(name)
    if limit is None:
        return
    if isinstance(spec, CategoricalParam):
        for choice in spec.choices:
            check_param_value(family, name, choice, f"{key}.choices")
        return
    if limit.kind == "int" and isinstance(spec, FloatParam):
        raise ValueError(f"{key}: {name} takes integers; use type: int")
    for end in ("low", "high"):
        check_param_value(family, name, getattr(spec, end), f"{key}.{end}")


def _check_environment(cfg: PipelineConfig) -> None:
    if cfg.training.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("training.device: cuda requested, but torch sees no CUDA device here; use auto or cpu")
    if cfg.search.storage and not cfg.search.storage.startswith("journal:"):
        _check_storage_driver(cfg.search.storage)
        _check_storage_reachable(cfg.search.storage)
    if cfg.search.storage:
        _check_storage_folder(cfg.search.storage)
    if cfg.search.cluster_address:
        _check_scheduler_reachable(cfg.search.cluster_address)
    if cfg.warm_start.from_file is not None:
        from automl.configs._transfer import load_transferred_config

        try:
            load_transferred_config(cfg.warm_start.from_file)
        except ConfigError as exc:
            raise ValueError(f"warm_start.from_file: {exc}") from None


def _check_storage_driver(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ValueError(f"search.storage: not a database URL SQLAlchemy can use ({exc})") from None
    except ImportError as exc:
        hint = (
            " (postgresql+psycopg2://... uses the installed psycopg2)"
            if parsed.get_backend_name() == "postgresql"
            else ""
        )
        raise ValueError(
            f"search.storage: the database driver for {parsed.drivername!r} is not installed ({exc.name or exc}){hint}"
        ) from None


def _check_storage_folder(url: str) -> None:
    """A SQLite or journal file whose folder cannot be made (a file in the way, no write permission) fails here;
    nothing is created to find out: the nearest folder that exists must be one we may write in."""
    path = storage_file(url)
    if path is None:
        return
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise ValueError(f"search.storage: {path} is a folder, not a file for the studies")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ValueError(f"search.storage: {path} is not writable")
        return
    existing = path.parent
    while not existing.exists():
        if os.path.lexists(existing):  # a dangling symlink: mkdir would fail on it
            raise ValueError(f"search.storage: cannot create {path.parent}: {existing} is a broken link")
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"search.storage: cannot create {path.parent}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"search.storage: cannot create {path}: {existing} is not writable")


REACH_TIMEOUT_SECONDS = 10


def _check_storage_reachable(url: str) -> None:
    """A database server that does not answer fails here within seconds, naming it (drivers wait minutes)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    shown = parsed.render_as_string(hide_password=True)
    timeout_arg = {
        "psycopg2": "connect_timeout",
        "psycopg": "connect_timeout",
        "pymysql": "connect_timeout",
        "mysqldb": "connect_timeout",
        "pg8000": "timeout",
    }.get(parsed.get_driver_name())
    timeout = {timeout_arg: REACH_TIMEOUT_SECONDS} if timeout_arg else {}
    engine = create_engine(parsed, connect_args=timeout, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        first = reason[0] if reason else type(exc).__name__
        raise ValueError(f"search.storage: cannot connect to {shown} ({first})") from None
    finally:
        engine.dispose()


def _check_scheduler_reachable(address: str) -> None:
    """``search.cluster_address`` must be a Dask scheduler that accepts connections (checked in seconds)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return  # other Dask transports (ucx, ws, inproc) are left to Dask
    try:
        host, port = parts.hostname, parts.port or 8786
    except ValueError as exc:
        raise ValueError(f"search.cluster_address: not a scheduler address {address!r} ({exc})") from None
    if not host:
        raise ValueError(f"search.cluster_address: not a scheduler address {address!r}; use tcp://host:port")
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"search.cluster_address: no Dask scheduler answers at {address} ({reason})") from None


def _describe(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    parts = [str(part) for part in first["loc"] if part not in _UNION_TAGS]
    error = (first.get("ctx") or {}).get("error")
    if isinstance(error, KeyValueError):  # raised for the model: the key is in the error
        parts.append(error.key)
    loc = ".".join(parts) or "(top level)"
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key" + _did_you_mean(first["loc"])
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "union_tag_invalid":
        message = "type must be one of int, float, categorical"
    elif kind == "union_tag_not_found":
        message = "needs a type: int, float or categorical"
    else:
        message = first["msg"].removeprefix("Value error, ")
        value = first.get("input")
        if kind != "value_error" and (value is None or isinstance(value, str | int | float | bool)):
            message += f" (got {value!r})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc}: {message}{more}"


def _did_you_mean(loc: tuple[Any, ...]) -> str:
    """The closest key the mapping at ``loc`` takes ("search.n_trails" -> "; did you mean search.n_trials?"), or
    nothing when none is close: walked down the schema's models along ``loc``."""
    import difflib

    from pydantic import BaseModel

    model: Any = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        kind = getattr(field, "annotation", None)
        if not (isinstance(kind, type) and issubclass(kind, BaseModel)):
            return ""
        model = kind
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?" if close else ""
