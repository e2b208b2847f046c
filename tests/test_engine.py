"""The search engine on plain Python objectives (no torch): both backends optimise, failures are recorded and
the search goes on, budgets hold, and a stopped search resumes without recomputing finished evaluations."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from automl.tasks.search import (
    LocalExecutor,
    SearchEngine,
    SearchFailed,
    SearchSpace,
    make_backend,
    make_scheduler,
    params_key,
)
from automl.tasks.search_stage.objective import subsample_indices

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace.from_dict(
    {
        "x": {"type": "float", "low": -4, "high": 4},
        "k": {"type": "int", "low": 0, "high": 10, "step": 2},
        "kind": {"type": "categorical", "choices": ["a", "b"]},
    }
)


def quadratic(params, fidelity):
    """Minimum 0 at x=1, k=6, kind=a; lower fidelity adds a constant (ranking preserved)."""
    return (params["x"] - 1) ** 2 + (params["k"] - 6) ** 2 / 10 + (params["kind"] == "b") + (1 - fidelity)


def _engine(objective, backend="optuna", fidelity="none", storage=None, study_name="s", n_trials=30, seed=0, **kw):
    study = optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True)
    backend_ = make_backend(backend, "tpe", study, SPACE, seed, 5)
    return SearchEngine(objective, backend_, make_scheduler(fidelity, 3, 1 / 9), n_trials=n_trials, **kw)


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
@pytest.mark.parametrize("fidelity", ["none", "successive_halving", "hyperband"])
def test_a_plain_function_is_optimised(backend, fidelity):
    result = _engine(quadratic, backend, fidelity, n_trials=40).run()
    assert result.best_value < 0.6
    assert result.best_params["kind"] == "a"
    assert sum(result.counts.as_dict().values()) == 40
    if fidelity != "none":
        assert result.counts.pruned > 0
        full = [t for t in result.trials if t.outcome == "complete"]
        assert all(t.rungs[-1][0] == 1.0 for t in full)


def test_failures_are_recorded_with_their_reason_and_the_search_goes_on():
    def objective(params, fidelity):
        if params["x"] > 2:
            raise ValueError("x too large")
        if params["x"] < -2:
            return float("nan")
        return quadratic(params, fidelity)

    engine = _engine(objective, n_trials=25)
    result = engine.run()
    failed = engine.study.get_trials(states=(TrialState.FAIL,))
    assert result.counts.failed == len(failed) > 0 and result.counts.complete > 0
    reasons = {t.user_attrs["fail_reason"] for t in failed}
    assert any(r.startswith("ValueError: x too large") for r in reasons)
    assert all(r.startswith("ValueError") or r == "loss is nan" for r in reasons)


def test_when_every_trial_fails_the_most_common_reason_is_named():
    def objective(params, fidelity):
        raise RuntimeError("out of memory")

    with pytest.raises(SearchFailed, match="most common reason: RuntimeError: out of memory"):
        _engine(objective, n_trials=4).run()


def test_enqueued_configs_come_first_and_can_skip_low_fidelity():
    engine = _engine(quadratic, fidelity="successive_halving", n_trials=5)
    engine.study.enqueue_trial(
        {"x": 1.0, "k": 6, "kind": "a"}, user_attrs={"source": "warm_start:r1", "full_fidelity": True}
    )
    result = engine.run()
    first = result.trials[0]
    assert first.source == "warm_start:r1" and first.params == {"x": 1.0, "k": 6, "kind": "a"}
    assert [fraction for fraction, _ in first.rungs] == [1.0]
    assert result.best_value == 0.0


def test_parallel_evaluations_keep_the_budget():
    active, peak, lock = [0], [0], threading.Lock()

    def objective(params, fidelity):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        import time

        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return quadratic(params, fidelity)

    result = _engine(objective, fidelity="hyperband", n_trials=20, executor=LocalExecutor(3)).run()
    assert sum(result.counts.as_dict().values()) == 20 and peak[0] == 3


class Stopped(BaseException):
    """Stands in for Ctrl-C or SIGTERM reaching the engine in the middle of an evaluation."""


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
def test_a_stopped_search_resumes_without_recomputing_finished_evaluations(tmp_path, backend):
    """(A process killed outright is tests/test_fault_matrix.py.)"""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls: list[tuple[str, float]] = []
    stop_after = [7]

    def objective(params, fidelity):
        if len(calls) == stop_after[0]:
            raise Stopped
        calls.append((repr(sorted(params.items())), fidelity))
        return quadratic(params, fidelity)

    with pytest.raises(Stopped):
        _engine(objective, backend, "successive_halving", storage, n_trials=10, run_id="run-1").run()
    first = list(calls)
    study = optuna.load_study(study_name="s", storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the running trial was recorded as interrupted
    interrupted = [t for t in study.trials if t.user_attrs.get("outcome") == "interrupted"]
    assert len(interrupted) == 1 and interrupted[0].state == TrialState.FAIL
    assert [t.user_attrs["source"] for t in study.get_trials(states=(TrialState.WAITING,))] == [
        f"retry:{interrupted[0].number}"
    ]

    stop_after[0] = 10**9
    engine = _engine(objective, backend, "successive_halving", storage, n_trials=10, run_id="run-1")
    result = engine.run()
    second = calls[len(first) :]
    assert not set(first) & set(second), "an evaluation finished before the stop was computed again"
    trials = engine.study.get_trials()
    retry = [t for t in trials if t.user_attrs.get("source") == f"retry:{interrupted[0].number}"]
    assert len(retry) == 1 and retry[0].params == interrupted[0].params and retry[0].state != TrialState.FAIL
    if interrupted[0].intermediate_values:
        assert retry[0].user_attrs.get("reused_evaluations", 0) >= 1
    counted = [t for t in trials if t.user_attrs.get("outcome") in ("complete", "pruned", "failed")]
    assert len(counted) == 10  # the budget of run-1 holds across the stop
    assert not engine.study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert result.best_value == min(t.value for t in trials if t.state == TrialState.COMPLETE)


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
def test_engines_sharing_a_study_compare_with_each_others_rung_results(tmp_path, backend):
    """Two engines on one study (as pipelines on several machines with one --study-name): a result is judged
    against the rung results the other engine reported after this one started, as Optuna's pruners would."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    other_ran = []

    def objective(params, fidelity):
        if not other_ran:  # while this engine's first evaluation runs, another engine finishes 6 configs
            other_ran.append(_engine(lambda p, f: 0.01, backend, "successive_halving", storage, n_trials=6).run())
        return 5.0

    result = _engine(objective, backend, "successive_halving", storage, n_trials=1).run()
    first = result.trials[0]
    assert other_ran and other_ran[0].counts.complete == 6
    # alone, its one result would have been the best at its rung and promoted; among the other's six, it is not
    assert first.outcome == "pruned" and len(first.rungs) == 1


def test_a_stop_interrupts_the_evaluation_in_flight_instead_of_waiting_for_it():
    class Blocking:
        """An evaluation that runs until it is interrupted (or for a minute)."""

        def __init__(self):
            self.started, self.stop = threading.Event(), threading.Event()

        def interrupt(self):
            self.stop.set()

        def __call__(self, params, fidelity):
            self.started.set()
            if self.stop.wait(60):
                raise RuntimeError("stopped")
            return 0.0

    class StopWhileWaiting(LocalExecutor):  # Ctrl-C reaching the engine while it waits for a result
        def wait_any(self, futures, timeout=None):
            objective.started.wait(10)
            raise Stopped

    objective, executor = Blocking(), StopWhileWaiting(1)
    engine = _engine(objective, n_trials=3, executor=executor)
    with pytest.raises(Stopped):
        engine.run()
    waited = time.monotonic()
    executor._pool.shutdown(wait=True, cancel_futures=True)  # returns once the evaluation has ended
    assert objective.stop.is_set() and time.monotonic() - waited < 30  # not the evaluation's minute
    first, retry = engine.study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["outcome"] == "interrupted"
    assert retry.state == TrialState.WAITING and retry.user_attrs["source"] == f"retry:{first.number}"


def test_the_same_seed_gives_the_same_configs():
    runs = [
        [t.params for t in _engine(quadratic, study_name=f"s{i}", n_trials=12, seed=5).run().trials] for i in range(2)
    ]
    assert runs[0] == runs[1]


def test_subsamples_are_deterministic_nested_and_fair():
    series = [subsample_indices(100, f, "series", seed=0) for f in (1 / 9, 1 / 3, 1.0)]
    assert [len(s) for s in series] == [12, 34, 100]
    assert list(series[0]) == list(range(88, 100))  # the most recent contiguous windows
    assert set(series[0]) <= set(series[1]) <= set(series[2])
    labels = np.repeat([0, 1, 2], [60, 30, 30])
    rows = [subsample_indices(120, f, "tabular", seed=3, labels=labels) for f in (1 / 9, 1 / 3, 1.0)]
    assert set(rows[0]) <= set(rows[1]) <= set(rows[2])
    np.testing.assert_array_equal(rows[1], subsample_indices(120, 1 / 3, "tabular", seed=3, labels=labels))
    assert not np.array_equal(rows[1], subsample_indices(120, 1 / 3, "tabular", seed=4, labels=labels))
    shares = np.bincount(labels[rows[1]], minlength=3) / len(rows[1])
    np.testing.assert_allclose(shares, [0.5, 0.25, 0.25], atol=0.03)
    assert math.isclose(len(rows[0]), 120 / 9, abs_tol=1)


@pytest.mark.parametrize(
    ("backend", "sampler"),
    [("optuna", s) for s in ("tpe", "random", "gp", "cmaes")] + [("hyperopt", s) for s in ("tpe", "random", "anneal")],
)
def test_every_sampler_runs_seeded(backend, sampler):
    def run(seed):
        study = optuna.create_study()
        engine = SearchEngine(
            quadratic,
            make_backend(backend, sampler, study, SPACE, seed, 5),
            make_scheduler("none", 3, 1 / 9),
            n_trials=15,
        )
        return engine.run()

    first, again = run(1), run(1)
    assert [t.params for t in first.trials] == [t.params for t in again.trials]
    assert first.best_value < 4.0


def test_the_grid_sampler_stops_when_the_grid_is_done():
    grid = SearchSpace.from_dict(
        {
            "k": {"type": "int", "low": 0, "high": 10, "step": 2},
            "kind": {"type": "categorical", "choices": ["a", "b"]},
        }
    )
    study = optuna.create_study()
    engine = SearchEngine(
        lambda p, f: (p["k"] - 6) ** 2 + (p["kind"] == "b"),
        make_backend("optuna", "grid", study, grid, 0, 5),
        make_scheduler("none", 3, 1 / 9),
        n_trials=100,
    )
    result = engine.run()
    assert result.counts.complete == 12 and result.best_params == {"k": 6, "kind": "a"}


def test_deferred_promotion_continues_waiting_configs_without_recomputing_their_rungs():
    """The engine queues a waiting config again when its rung fills (under its scheduled number, outside the trial
    count) and reuses its finished rung: every (config, rung) is evaluated once, and fewer configs reach the full
    data than with ASHA's promote-the-first."""

    def run(deferred: bool):
        evaluations = []

        def objective(params, fidelity):
            evaluations.append((params_key(params), fidelity))
            return quadratic(params, fidelity)

        study = optuna.create_study()
        backend = make_backend("optuna", "random", study, SPACE, 0, 5)
        scheduler = make_scheduler("successive_halving", 3, 1 / 9, deferred=deferred)
        result = SearchEngine(objective, backend, scheduler, n_trials=12).run()
        return result, evaluations, study

    result, evaluations, study = run(deferred=True)
    assert len(evaluations) == len(set(evaluations))  # nothing evaluated twice
    continued = [t for t in study.trials if str(t.user_attrs.get("source", "")).startswith("promoted:")]
    assert continued, "no waiting config was promoted"
    assert len(study.trials) - len(continued) == 12  # continuations are not new configs
    for trial in continued:
        first = study.trials[int(trial.user_attrs["source"].split(":")[1])]
        assert first.params == trial.params and first.state == optuna.trial.TrialState.PRUNED
        assert first.user_attrs["fail_reason"].startswith("waiting")
        assert trial.user_attrs["reused_evaluations"] >= 1  # its finished rung came from the ledger
    assert all(t.state != optuna.trial.TrialState.WAITING for t in study.trials)
    full_deferred = sum(1 for _, f in evaluations if f == 1.0)
    _, asha_evaluations, _ = run(deferred=False)
    assert full_deferred < sum(1 for _, f in asha_evaluations if f == 1.0)
    assert result.best_value is not None


def test_deferred_promotion_sends_the_best_of_a_rung_that_never_fills_on_when_the_search_runs_out():
    """With fewer configs than eta, no rung ever fills: when nothing is left to run, the best waiting config goes on
    (ASHA's rule before eta results), up to the full data, so the search ends with a complete config; the other
    stays stopped."""
    evaluations = []

    def objective(params, fidelity):
        evaluations.append((params["x"], fidelity))
        return quadratic(params, fidelity)

    study = optuna.create_study()
    for x in (1.0, 2.5):  # the first is the better config
        study.enqueue_trial({"x": x, "k": 6, "kind": "a"})
    scheduler = make_scheduler("successive_halving", 3, 1 / 9, deferred=True)
    result = SearchEngine(objective, make_backend("optuna", "random", study, SPACE, 0, 5), scheduler, n_trials=2).run()
    assert result.best_params["x"] == 1.0 and result.best_value == pytest.approx(0.0)
    assert sorted(evaluations) == [(1.0, 1 / 9), (1.0, 1 / 3), (1.0, 1.0), (2.5, 1 / 9)]  # each rung once
    _, second, *continued = study.trials
    assert second.state == optuna.trial.TrialState.PRUNED
    assert [t.user_attrs["source"] for t in continued] == ["promoted:0", "promoted:0"]
    assert continued[-1].state == optuna.trial.TrialState.COMPLETE
    assert all(t.state != optuna.trial.TrialState.WAITING for t in study.trials)


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
def test_a_restarted_deferred_search_remembers_its_waiting_configs(tmp_path, backend):
    """Stopped while configs wait for their rung to fill, the search resumes with them waiting again: they are
    promoted (or flushed) then, and the search completes; before, they stayed stopped and a search whose every
    config was waiting ended with nothing complete."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls: list[tuple[str, float]] = []
    stop_at = [2]

    def objective(params, fidelity):
        if len(calls) == stop_at[0]:
            raise Stopped
        calls.append((params_key(params), fidelity))
        return quadratic(params, fidelity)

    def engine():
        study = optuna.create_study(storage=storage, study_name="deferred", load_if_exists=True)
        scheduler = make_scheduler("successive_halving", 3, 1 / 9, deferred=True)
        return SearchEngine(
            objective, make_backend(backend, "tpe", study, SPACE, 0, 5), scheduler, n_trials=2, run_id="run-1"
        )

    with pytest.raises(Stopped):
        engine().run()
    study = optuna.load_study(study_name="deferred", storage=storage)
    waiting = [t for t in study.trials if str(t.user_attrs.get("fail_reason", "")).startswith("waiting")]
    assert len(waiting) == 2  # both configs wait at the first rung; the stop hit the first promotion's evaluation
    stop_at[0] = 10**9
    result = engine().run()
    assert result.best_value is not None
    trials = optuna.load_study(study_name="deferred", storage=storage).trials
    promoted = [t for t in trials if str(t.user_attrs.get("source", "")).startswith("promoted:")]
    assert promoted and {int(t.user_attrs["source"].split(":")[1]) for t in promoted} <= {t.number for t in waiting}
    assert any(t.state == TrialState.COMPLETE for t in trials)
    assert len(calls) == len(set(calls)), "an evaluation was computed twice"
