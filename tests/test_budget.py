"""The run's wall-clock budget: the final stage's reserve comes from the costs the search measured, the search stops
in time to leave it, and the budget is a field of the Prefect run form."""

from __future__ import annotations

import time

import optuna
import pytest

from automl.configs import load_config
from automl.tasks.final_train.plan import DEFAULT_CONFIG, GBM, MEMBER, TUNED, FinalPlan
from automl.tasks.runtime.budget import RunBudget
from automl.tasks.search import (
    Evaluation,
    Observers,
    SearchEngine,
    SearchSpace,
    TrialRecord,
    make_backend,
    make_scheduler,
)
from automl.tasks.search_stage.deadline import FINAL_SHARE_CAP, SearchDeadline

SPACE = SearchSpace.from_dict({"x": {"type": "float", "low": -3, "high": 3}})


def _plan(**kw) -> FinalPlan:
    """A final stage of 10 epochs per training and 2 s besides; the default config is x = 0."""
    return FinalPlan(epochs=10, default_config={"x": 0.0}, overhead=kw.pop("overhead", 2.0), **kw)


def test_the_final_stage_reserve_comes_from_measured_costs():
    deadline = SearchDeadline(RunBudget(seconds=100, started_at=1000.0), _plan())
    assert deadline.final_reserve() == FINAL_SHARE_CAP * 100  # nothing measured yet: the largest share
    # 4 epochs on a third of the data in 0.4 s: 0.3 s per epoch on all of it; 2 epochs on all in 1.0 s: 0.5 s
    deadline.rung_finished(TrialRecord(0, {"x": 1.0}), 1 / 3, 1, Evaluation(1.0, (1, 1, 1, 1), 0.4), None)
    deadline.rung_finished(TrialRecord(1, {"x": 2.0}), 1.0, 3, Evaluation(1.0, (1, 1), 1.0), None)
    deadline.trial_finished(TrialRecord(1, {"x": 2.0}), TrialRecord(1, {"x": 2.0}, value=1.0))
    typical = (0.3 + 0.5) / 2
    assert deadline.final_reserve() == pytest.approx((0.5 + typical) * 10 + 2.0)  # the best config and a typical one
    assert deadline() == pytest.approx(1100.0 - deadline.final_reserve())
    deadline.plan = _plan(default_baseline=False)  # final.baselines without default_config: only the best trains
    assert deadline.final_reserve() == pytest.approx(0.5 * 10 + 2.0)
    deadline.plan = _plan()
    # the best config is the default config: trained once, as its own baseline
    deadline.trial_finished(TrialRecord(1, {"x": 0.0}), TrialRecord(1, {"x": 0.0}, value=1.0))
    assert deadline.final_reserve() == pytest.approx(0.5 * 10 + 2.0)
    deadline.rung_finished(TrialRecord(2, {"x": 3.0}), 1.0, 3, Evaluation(0.5, (1,), 30.0), None)  # a costly config
    deadline.trial_finished(TrialRecord(2, {"x": 3.0}), TrialRecord(2, {"x": 3.0}, value=0.5))  # ...becomes the best
    assert deadline.final_reserve() == FINAL_SHARE_CAP * 100  # capped: the search always keeps half
    # under PBT the best member is tested as it is: only the default-config baseline trains
    pbt = SearchDeadline(RunBudget(seconds=100, started_at=1000.0), _plan(trains_tuned=False))
    pbt.epoch_seconds.update({0: 0.2, 1: 0.4, 2: 0.6})  # what members' epochs cost (the PBT tracker fills it)
    assert pbt.final_reserve() == pytest.approx(0.4 * 10 + 2.0)


def test_the_search_reserve_and_the_final_split_follow_one_plan():
    """What the search reserves for and how the final stage splits what is left are read off the same plan, so they
    agree on which trainings there are: the MLP's default config fitted into its space (weight_decay 0 clipped to
    the space's 1e-6) is not the default config, so the default config still trains beside the tuned config and
    the four other ensemble candidates (final.ensemble.top_k 5), in both stages."""
    cfg = load_config("configs/mlp_tabular.yaml", [])
    plan = FinalPlan.of(cfg)
    assert plan.epochs == cfg.final.epochs and plan.trains_tuned and plan.default_baseline and plan.members == 4
    fitted_default = {**plan.default_config, "weight_decay": 1e-6}
    assert plan.trainings(fitted_default) == (TUNED, *[MEMBER] * 4, DEFAULT_CONFIG, GBM)
    # exactly the default config: its own baseline
    assert plan.trainings(dict(plan.default_config)) == (TUNED, *[MEMBER] * 4, GBM)
    # each training gets an equal share of what is left when it starts
    now = time.time()
    assert plan.training_seconds(4, now + 100) == pytest.approx(25, abs=0.5)
    assert plan.training_seconds(1, now + 100) == pytest.approx(100, abs=0.5)
    assert plan.training_seconds(1, None) is None
    split_end, refit_end = plan.ends(now + plan.overhead + 100, fitted_default)
    assert split_end == pytest.approx(refit_end, abs=0.01) == pytest.approx(now + 100, abs=0.5)  # no refit: all
    assert plan.ends(None, fitted_default) == (None, None)
    deadline = SearchDeadline(RunBudget(seconds=10_000, started_at=0.0), plan)
    deadline.epoch_seconds.update({0: 1.0, 1: 1.0})
    deadline.best, deadline.best_params = 0, fitted_default
    assert deadline.final_reserve() == pytest.approx(7 * cfg.final.epochs + plan.overhead)
    deadline.best_params = dict(plan.default_config)
    assert deadline.final_reserve() == pytest.approx(6 * cfg.final.epochs + plan.overhead)
    single = FinalPlan.of(load_config("configs/mlp_tabular.yaml", ["final.ensemble.top_k=1"]))
    assert single.trainings(fitted_default) == (TUNED, DEFAULT_CONFIG, GBM)
    assert FinalPlan.of(
        load_config("configs/mlp_tabular.yaml", ["search.strategy=pbt", "search.fidelity=none"])
    ).trainings(fitted_default) == (DEFAULT_CONFIG, GBM)  # PBT: the best member is tested as it is, no candidates
    no_default = FinalPlan.of(
        load_config("configs/mlp_tabular.yaml", ["final.baselines=[naive]", "final.ensemble.top_k=1"])
    )
    assert no_default.trainings(fitted_default) == (TUNED,)
    # a refit on every row: the configs that may be registered train again (as many updates as tested: about the
    # same cost); the split's trainings end when their share of the trainings is used, fixed as the stage starts
    refit = FinalPlan.of(
        load_config(
            "configs/mlp_tabular.yaml",
            ["final.refit=all", "final.ensemble.top_k=1", "final.baselines=[default_config,naive]"],
        )
    )
    assert refit.refit
    costs = {TUNED: 1.0, MEMBER: 1.0, DEFAULT_CONFIG: 1.0}
    assert refit.seconds_needed(costs, fitted_default) == pytest.approx(3 * cfg.final.epochs + refit.overhead)
    split_end, refit_end = refit.ends(now + refit.overhead + 90, fitted_default)  # 2 trainings, then 1 refit
    assert split_end == pytest.approx(now + 60, abs=0.5) and refit_end == pytest.approx(now + 90, abs=0.5)
    five = FinalPlan.of(load_config("configs/mlp_tabular.yaml", ["final.refit=all"]))  # 7 trainings (gbm), 5 refits
    split_end, _ = five.ends(now + five.overhead + 120, fitted_default)
    assert split_end == pytest.approx(now + 70, abs=0.5)


def test_the_search_stops_in_time_to_leave_the_final_stage_its_share():
    """A cheap objective whose cost is known: 5 epochs of 0.04 s on all the data, a fraction of that on less. The
    final stage (10 epochs of the best and of a typical config, 0.4 s overhead) needs 0.04 x 2 x 10 + 0.4 = 1.2 s
    of a 3 s budget, so the search must end by 1.8 s, and no evaluation may start after that."""
    epoch, epochs = 0.04, 5
    starts: list[float] = []

    def objective(params, fraction):
        starts.append(time.time())
        time.sleep(epoch * epochs * fraction)
        return Evaluation((params["x"] - 1) ** 2 + (1 - fraction), (1.0,) * epochs, epoch * epochs * fraction)

    budget = RunBudget(seconds=3.0, started_at=time.time())
    deadline = SearchDeadline(budget, _plan(overhead=0.4))
    study = optuna.create_study()
    engine = SearchEngine(
        objective,
        make_backend("optuna", "tpe", study, SPACE, seed=0, n_startup=5),
        make_scheduler("hyperband", 3, 1 / 9),
        n_trials=10_000,
        observer=Observers(deadline),
        deadline=deadline,
    )
    result = engine.run()
    ended = time.time()
    assert deadline.final_reserve() == pytest.approx(2 * epoch * 10 + 0.4, rel=0.15)  # measured, not guessed
    search_deadline = budget.deadline - deadline.final_reserve()
    assert starts and max(starts) <= search_deadline + 0.05  # nothing started after the search's deadline
    assert ended <= search_deadline + epoch * epochs + 0.3  # at most the evaluation in flight ran past it
    # the final stage's share is left, less the evaluation in flight (the bound above; 1.0 s here was one
    # evaluation too tight and failed once under load, ending at 2.006 s of 3)
    assert ended < budget.deadline - deadline.final_reserve() + epoch * epochs + 0.3
    assert len(result.trials) < 10_000 and result.counts.complete >= 1


def test_the_budget_is_a_field_of_the_prefect_run_form():
    from prefect.utilities.callables import parameter_schema

    from automl.flows.pipeline import automl_pipeline

    field = parameter_schema(automl_pipeline).properties["budget_seconds"]
    assert {"type": "number"} in field["anyOf"] and field["default"] is None


def test_a_search_out_of_time_before_any_result_still_completes_one_config():
    """A budget spent before the search began (a slow start-up): one config still goes all the way up its rungs, so
    the final stage has something to train; nothing else starts."""
    study = optuna.create_study()
    engine = SearchEngine(
        lambda params, fraction: (params["x"] - 1) ** 2 + (1 - fraction),
        make_backend("optuna", "tpe", study, SPACE, seed=0, n_startup=5),
        make_scheduler("successive_halving", 3, 1 / 9),
        n_trials=50,
        deadline=lambda: time.time() - 1,
    )
    result = engine.run()
    assert len(result.trials) == 1 and result.counts.complete == 1
    assert [fraction for fraction, _ in result.trials[0].rungs] == [1 / 9, 1 / 3, 1.0]
