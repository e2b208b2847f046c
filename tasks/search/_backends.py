"""Sampler backends: which config to try next. They know nothing of fidelity.

Whatever the backend, every evaluation is recorded in one ledger, an Optuna study in an Optuna storage. The
Optuna backend samples with the study's own sampler; the hyperopt backend is driven ask/tell style (as Ray
Tune's HyperOptSearch does) and writes its suggestions into the same study, so resume, importances and plots
work the same for both.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from functools import partial
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from automl.tasks.search._space import SearchSpace

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def make_optuna_sampler(name: str, seed: int, n_startup: int, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for ``search.sampler`` (tpe, random, gp, cmaes, grid), seeded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            # group: multivariate TPE per branch of a conditional space (which params a config has depends on a choice)
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=n_startup, multivariate=True, constant_liar=True, group=space.conditional
            )
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup, warn_independent_sampling=False)
        if name == "grid":
            return optuna.samplers.GridSampler(space.grid(), seed=seed)
    raise ValueError(f"search.sampler: unknown Optuna sampler {name!r}; choose tpe, random, gp, cmaes or grid")


class SamplerBackend(ABC):
    """Asks for configs and is told their outcome; ``study`` is the ledger of every evaluation."""

    name = "base"

    def __init__(self, study: optuna.Study, space: SearchSpace):
        self.study = study
        self.space = space

    @abstractmethod
    def ask(self) -> optuna.Trial:
        """A new trial in the ledger whose params are the next config to evaluate."""

    @property
    def exhausted(self) -> bool:
        """True when the sampler has nothing new to propose (a grid fully tried)."""
        return False

    def tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> FrozenTrial:
        """Record the trial's outcome in the ledger (a pruned trial keeps its last rung's loss)."""
        frozen = self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        self._observe(frozen)
        return frozen

    def _observe(self, frozen: FrozenTrial) -> None:
        return None


class OptunaBackend(SamplerBackend):
    """Optuna's own samplers; enqueued configs (warm start, retries) come first."""

    name = "optuna"

    def ask(self) -> optuna.Trial:
        return self.space.ask(self.study)

    @property
    def exhausted(self) -> bool:
        sampler = self.study.sampler
        return isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(self.study)

    def tell(self, trial: optuna.Trial, state: TrialState, value: float | None = None) -> FrozenTrial | None:
        try:
            return super().tell(trial, state, value)
        except RuntimeError:
            # GridSampler calls study.stop() after the last grid point, which only works inside optimize();
            # the outcome is stored by then, and the engine stops asking because the backend is exhausted.
            if not self.exhausted:
                raise
            return None


class HyperoptBackend(SamplerBackend):
    """hyperopt's TPE, random or annealing search, driven one suggestion at a time.

    hyperopt is told each config's loss at the highest rung it reached (pruned configs included), and rebuilt
    from the ledger on start, so a resumed study keeps its history.
    """

    name = "hyperopt"

    def __init__(self, study: optuna.Study, space: SearchSpace, algo: str, seed: int, n_startup: int):
        # hyperopt is imported by the searches that use it: with scipy.stats it costs about a second in every
        # process that imports the engine, Dask workers included.
        import hyperopt
        from hyperopt import anneal, rand, tpe

        super().__init__(study, space)
        algos = {
            "tpe": partial(tpe.suggest, n_startup_jobs=n_startup),
            "random": rand.suggest,
            "anneal": anneal.suggest,
        }
        if algo not in algos:
            raise ValueError(f"search.sampler: unknown hyperopt algorithm {algo!r}; choose tpe, random or anneal")
        self._algo = algos[algo]
        self._domain = hyperopt.Domain(lambda params: 0.0, space.hyperopt_space())
        self._rng = np.random.default_rng(seed)
        self._trials = hyperopt.Trials()
        self._docs: dict[int, dict[str, Any]] = {}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        for frozen in study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING)):
            if space.covers(frozen.params) and self._fits(frozen.params):
                self._add_doc(frozen.number, frozen.params)
                if frozen.state in _FINISHED:
                    self._observe(frozen)

    def ask(self) -> optuna.Trial:
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.study.sampler = self._fallback
            trial = self.space.ask(self.study)  # pops an enqueued config with its params fixed
            self._add_doc(trial.number, trial.params)
            return trial
        tid = self._trials.new_trial_ids(1)
        docs = self._algo(tid, self._domain, self._trials, int(self._rng.integers(2**31 - 1)))
        params = self.space.from_hyperopt(docs[0]["misc"]["vals"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.sampler = optuna.samplers.PartialFixedSampler(params, self._fallback)
        trial = self.space.ask(self.study)
        self._add_doc(trial.number, params, docs[0])
        return trial

    def _add_doc(self, number: int, params: dict[str, Any], doc: dict[str, Any] | None = None) -> None:
        import hyperopt

        if doc is None:
            tid = self._trials.new_trial_ids(1)[0]
            vals = self.space.to_hyperopt_vals(params)
            misc = {
                "tid": tid,
                "cmd": self._domain.cmd,
                "workdir": None,
                "idxs": {name: [tid] if value else [] for name, value in vals.items()},
                "vals": vals,
            }
            doc = self._trials.new_trial_docs([tid], [None], [{"status": hyperopt.STATUS_NEW}], [misc])[0]
        doc["state"] = hyperopt.JOB_STATE_RUNNING
        self._trials.insert_trial_docs([doc])
        self._trials.refresh()
        # insert_trial_docs stores a copy; keep the stored doc so outcomes update what hyperopt reads.
        self._docs[number] = next(d for d in self._trials.trials if d["tid"] == doc["tid"])

    def _observe(self, frozen: FrozenTrial) -> None:
        import hyperopt

        doc = self._docs.get(frozen.number)
        if doc is None:
            return
        loss = frozen.value if frozen.value is not None else _last_intermediate(frozen)
        if frozen.state == TrialState.FAIL or loss is None or not np.isfinite(loss):
            doc["result"] = {"status": hyperopt.STATUS_FAIL}
            doc["state"] = hyperopt.JOB_STATE_ERROR
        else:
            doc["result"] = {"status": hyperopt.STATUS_OK, "loss": float(loss)}
            doc["state"] = hyperopt.JOB_STATE_DONE
        self._trials.refresh()

    def _fits(self, params: dict[str, Any]) -> bool:
        return all(self.space[name].fit(value)[1] is None for name, value in params.items())


def _last_intermediate(frozen: FrozenTrial) -> float | None:
    if frozen.last_step is None:
        return None
    return frozen.intermediate_values[frozen.last_step]


def make_backend(
    name: str, sampler: str, study: optuna.Study, space: SearchSpace, seed: int, n_startup: int
) -> SamplerBackend:
    """The backend for ``search.backend``; the Optuna sampler is set on the study here."""
    if name == "optuna":
        study.sampler = make_optuna_sampler(sampler, seed, n_startup, space)
        return OptunaBackend(study, space)
    if name == "hyperopt":
        return HyperoptBackend(study, space, sampler, seed, n_startup)
    raise ValueError(f"search.backend: unknown backend {name!r}; choose optuna or hyperopt")
