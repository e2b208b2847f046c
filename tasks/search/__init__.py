"""The search engine: one search space for two sampler backends (Optuna, hyperopt), fidelity schedulers
(none, successive halving, Hyperband) that know nothing of samplers, and executors that run evaluations.

Example:
    >>> import optuna
    >>> from tasks.search import SearchSpace, SearchEngine, make_backend, make_scheduler
    >>> space = SearchSpace.from_config(cfg.search.space)
    >>> study = optuna.create_study()
    >>> engine = SearchEngine(objective, make_backend("optuna", "tpe", study, space, 0, 5),
    ...                       make_scheduler("none", 3, 1 / 9), n_trials=20)
    >>> engine.run().best_params
"""

from tasks.search._backends import HyperoptBackend, OptunaBackend, SamplerBackend, make_backend, make_optuna_sampler
from tasks.search._engine import (
    Evaluation,
    NullObserver,
    Objective,
    SearchEngine,
    SearchFailed,
    SearchObserver,
    SearchResult,
    TrialRecord,
)
from tasks.search._executors import LocalExecutor, PrefectExecutor
from tasks.search._scheduler import (
    FidelityScheduler,
    FullFidelity,
    Hyperband,
    OptunaPruning,
    SuccessiveHalving,
    Verdict,
    make_scheduler,
    promotable,
    rung_fractions,
)
from tasks.search._space import Dimension, SearchSpace

__all__ = [
    "Dimension",
    "Evaluation",
    "FidelityScheduler",
    "FullFidelity",
    "Hyperband",
    "HyperoptBackend",
    "LocalExecutor",
    "NullObserver",
    "Objective",
    "OptunaBackend",
    "OptunaPruning",
    "PrefectExecutor",
    "SamplerBackend",
    "SearchEngine",
    "SearchFailed",
    "SearchObserver",
    "SearchResult",
    "SearchSpace",
    "SuccessiveHalving",
    "TrialRecord",
    "Verdict",
    "make_backend",
    "make_optuna_sampler",
    "make_scheduler",
    "promotable",
    "rung_fractions",
]
