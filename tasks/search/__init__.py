"""The search engine, a library: one search space for two sampler backends (Optuna, hyperopt), fidelity
schedulers (none, successive halving, Hyperband) that know nothing of samplers, executors that run evaluations,
population-based training (``PopulationBasedTraining``) over the same executors, and the ledger (an Optuna study)
that records them. It imports neither torch, MLflow nor Prefect; the pipeline's search stage
(tasks/search_stage/) plugs the torch objective, MLflow tracking and Prefect in.

Example:
    >>> import optuna
    >>> from automl.tasks.search import SearchSpace, SearchEngine, make_backend, make_scheduler
    >>> space = SearchSpace.from_dict({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})
    >>> study = optuna.create_study()
    >>> engine = SearchEngine(objective, make_backend("optuna", "tpe", study, space, 0, 5),
    ...                       make_scheduler("hyperband", 3, 1 / 9), n_trials=20)
    >>> engine.run().best_params
"""

from automl.tasks.search._backends import (
    HyperoptBackend,
    OptunaBackend,
    SamplerBackend,
    make_backend,
    make_optuna_sampler,
)
from automl.tasks.search._engine import FOLD_PRUNED, SearchEngine
from automl.tasks.search._executors import Executor, LocalExecutor, PrefectExecutor
from automl.tasks.search._ledger import (
    FOLD_LOSSES_ATTR,
    FULL_FIDELITY_ATTR,
    HEARTBEAT_SECONDS,
    OUTCOME_ATTR,
    RUN_ATTR,
    SCHEDULED_AS_ATTR,
    SOURCE_ATTR,
    Ledger,
    params_key,
    process_alive,
    requeue_stale_trial,
)
from automl.tasks.search._observer import NullObserver, Observers, SearchObserver
from automl.tasks.search._pbt import (
    EXPLOITED_FROM_ATTR,
    INTERVAL_ATTR,
    MEMBER_ATTR,
    Checkpoint,
    MemberStep,
    PBTObserver,
    PBTResult,
    PBTSettings,
    PopulationBasedTraining,
)
from automl.tasks.search._scheduler import (
    FidelityScheduler,
    FullFidelity,
    Hyperband,
    SuccessiveHalving,
    Verdict,
    brackets_for,
    make_scheduler,
    promotable,
    rung_fractions,
)
from automl.tasks.search._space import ConditionalSpace, Dimension, SearchSpace
from automl.tasks.search._types import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    PRUNED,
    Evaluation,
    Objective,
    SearchFailed,
    SearchResult,
    TrialCounts,
    TrialRecord,
)

__all__ = [
    "COMPLETE",
    "EXPLOITED_FROM_ATTR",
    "FAILED",
    "FOLD_LOSSES_ATTR",
    "FOLD_PRUNED",
    "FULL_FIDELITY_ATTR",
    "HEARTBEAT_SECONDS",
    "INTERRUPTED",
    "INTERVAL_ATTR",
    "MEMBER_ATTR",
    "OUTCOME_ATTR",
    "PRUNED",
    "RUN_ATTR",
    "SCHEDULED_AS_ATTR",
    "SOURCE_ATTR",
    "Checkpoint",
    "ConditionalSpace",
    "Dimension",
    "Evaluation",
    "Executor",
    "FidelityScheduler",
    "FullFidelity",
    "Hyperband",
    "HyperoptBackend",
    "Ledger",
    "LocalExecutor",
    "MemberStep",
    "NullObserver",
    "Objective",
    "Observers",
    "OptunaBackend",
    "PBTObserver",
    "PBTResult",
    "PBTSettings",
    "PopulationBasedTraining",
    "PrefectExecutor",
    "SamplerBackend",
    "SearchEngine",
    "SearchFailed",
    "SearchObserver",
    "SearchResult",
    "SearchSpace",
    "SuccessiveHalving",
    "TrialCounts",
    "TrialRecord",
    "Verdict",
    "brackets_for",
    "make_backend",
    "make_optuna_sampler",
    "make_scheduler",
    "params_key",
    "process_alive",
    "promotable",
    "requeue_stale_trial",
    "rung_fractions",
]
