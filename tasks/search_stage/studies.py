"""Optuna studies of the pipeline: the storage (SQLite by default, PostgreSQL/MySQL or a journal file when
scaled out), opening or continuing a run's study, checking a continued study's rungs, and queueing warm-start
configs (or the family's default config) as its first trials."""

from __future__ import annotations

import random
import time
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from automl.configs import MAX_STUDY_NAME_LENGTH, ConfigError, SearchConfig, check_name, storage_file
from automl.tasks.runtime.state import enable_wal, first_use_lock, local_state
from automl.tasks.search import (
    FULL_FIDELITY_ATTR,
    HEARTBEAT_SECONDS,
    SOURCE_ATTR,
    SearchSpace,
    requeue_stale_trial,
    rung_fractions,
)

if TYPE_CHECKING:  # the warm-start stage imports MLflow and Prefect; workers that open a storage need neither
    from automl.tasks.warm_start.decision import WarmStartDecision

# Study user attrs: what the study was first run with.
RUNG_FRACTIONS_ATTR = "rung_fractions"
BRACKETS_ATTR = "hyperband_brackets"  # the brackets a Hyperband study started with (it keeps them when continued)
BACKEND_ATTR = "backend"
STRATEGY_ATTR = "strategy"  # search.strategy: a PBT study's trials are member-intervals, not configs
CV_ATTR = "cv"  # search.cv's folds, kind and gap: a reported step means another (rung, fold) under other folds
DEFAULT_CONFIG_SOURCE = "default_config"  # the family's default config, queued first (search.try_default_first)


def storage_url(search: SearchConfig) -> str:
    """``search.storage``, or the state folder's SQLite database."""
    return search.storage or local_state().ensure().optuna_storage


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url``: SQLite (the default, in WAL mode and waiting on locks), PostgreSQL/MySQL,
    or ``journal:///path/file.log`` (Optuna's journal file). RDB storages keep a heartbeat per running trial,
    so trials of an engine that died on another machine are failed and queued again."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = storage_file(url)
        path.parent.mkdir(parents=True, exist_ok=True)  # as for SQLite; the config check found it can be made
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite"):
        enable_wal(url)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    kwargs = {
        "engine_kwargs": engine_kwargs,
        "heartbeat_interval": int(HEARTBEAT_SECONDS),
        "grace_period": int(4 * HEARTBEAT_SECONDS),
        "heartbeat_stale_trial_callback": requeue_stale_trial,
    }
    with first_use_lock(url), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        for attempt in range(3):
            try:
                return RDBStorage(url, **kwargs)
            except SQLAlchemyError:
                # Workers on other machines may be creating the same schema right now: let them finish.
                if attempt == 2:
                    raise
                time.sleep(1 + random.random())


def open_study(search: SearchConfig, study_name: str, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create or continue the study. Fidelity is the engine's scheduler's business, whichever the backend, so the
    study has no pruner of its own."""
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        direction="minimize",
        pruner=optuna.pruners.NopPruner(),
        load_if_exists=True,
    )
    attrs = study.user_attrs
    if attrs.get(RUNG_FRACTIONS_ATTR) is None:
        study.set_user_attr(RUNG_FRACTIONS_ATTR, _rungs(search))
        study.set_user_attr(BACKEND_ATTR, search.backend)
        study.set_user_attr(CV_ATTR, _cv(search))
        study.set_user_attr(STRATEGY_ATTR, search.strategy)
    _check_rungs(search, study_name, attrs)
    return study


def check_study(search: SearchConfig, study_name: str | None) -> None:
    """A study continued by name (``--study-name``) must have a name that may name folders of the state, and have
    been run with this config's rungs: checked before any run or trial exists, without creating the study."""
    if not study_name:  # the Prefect form's empty field: a new study
        return
    check_name("study_name", study_name, MAX_STUDY_NAME_LENGTH)
    storage = make_storage(storage_url(search))
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return  # a new study of that name will be created
    _check_rungs(search, study_name, storage.get_study_user_attrs(study_id))


def _rungs(search: SearchConfig) -> list[float]:
    return list(rung_fractions(search.eta, search.min_fraction)) if search.fidelity != "none" else [1.0]


def _cv(search: SearchConfig) -> dict[str, Any]:
    cv = search.cv
    return {"folds": cv.folds, "kind": cv.kind, "gap": cv.gap} if cv.folds > 1 else {"folds": 1}


def _check_rungs(search: SearchConfig, study_name: str, attrs: dict[str, Any]) -> None:
    """A continued study must have been run with this config's rungs, strategy and folds (studies from before
    ``search.cv`` had one split)."""
    rungs, recorded = _rungs(search), attrs.get(RUNG_FRACTIONS_ATTR)
    if recorded is not None and [round(r, 9) for r in recorded] != [round(r, 9) for r in rungs]:
        raise ConfigError(
            f"search.fidelity: study {study_name!r} was run with rungs {recorded}; this config gives {rungs}. "
            "Use another --study-name or the same fidelity settings"
        )
    strategy = attrs.get(STRATEGY_ATTR, "sample")  # studies from before search.strategy sampled
    if recorded is not None and strategy != search.strategy:
        raise ConfigError(
            f"search.strategy: study {study_name!r} was run with strategy {strategy}; this config gives "
            f"{search.strategy}. Use another --study-name or the same strategy"
        )
    cv = attrs.get(CV_ATTR, {"folds": 1})
    if recorded is not None and cv != _cv(search):
        raise ConfigError(
            f"search.cv: study {study_name!r} was run with cross-validation {cv}; this config gives {_cv(search)}. "
            "Use another --study-name or the same search.cv settings"
        )


def enqueue_warm_start(
    study: optuna.Study, warm_start_decision: WarmStartDecision, space: SearchSpace | None = None
) -> int:
    """Queue the warm-start configs as the study's next trials (skipping ones the study already has), moved into
    ``space`` when given (a space the search narrowed after the warm-start stage fitted them)."""
    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    for candidate in warm_start_decision.queued:
        study.enqueue_trial(
            space.fit(candidate.queued_params, {})[0] if space is not None else candidate.queued_params,
            user_attrs={
                SOURCE_ATTR: f"warm_start:{candidate.run_id}",
                FULL_FIDELITY_ATTR: warm_start_decision.skip_low_fidelity,
            },
            skip_if_exists=True,
        )
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) - before


def enqueue_default_configs(study: optuna.Study, configs: list[dict[str, Any]]) -> bool:
    """Queue ``configs`` (the family's default config, or each searched family's under ``model.family: auto``,
    fitted into the search space) as the first trials of a study that has none yet; True when they were queued."""
    if study.get_trials(deepcopy=False):
        return False
    for params in configs:
        study.enqueue_trial(params, user_attrs={SOURCE_ATTR: DEFAULT_CONFIG_SOURCE}, skip_if_exists=True)
    return True


def redact(url: str) -> str:
    """A storage URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]
