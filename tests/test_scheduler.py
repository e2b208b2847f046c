"""Fidelity schedulers: rung sizes, asynchronous successive-halving promotions, Hyperband brackets, and the
same decisions from Optuna's own pruner."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import optuna
import pytest

from automl.tasks.search import (
    Evaluation,
    Hyperband,
    Ledger,
    SearchEngine,
    SearchSpace,
    SuccessiveHalving,
    Verdict,
    brackets_for,
    make_backend,
    make_scheduler,
    rung_fractions,
)


@dataclass
class T:
    number: int


def test_rung_fractions():
    assert rung_fractions(3, 1 / 9) == pytest.approx((1 / 9, 1 / 3, 1.0))
    assert rung_fractions(3, 0.1) == pytest.approx((1 / 9, 1 / 3, 1.0))  # never below min_fraction
    assert rung_fractions(2, 0.25) == pytest.approx((0.25, 0.5, 1.0))
    assert rung_fractions(4, 0.5) == (1.0,)
    scheduler = SuccessiveHalving(3, 1 / 27)
    assert [scheduler.step(r) for r in range(4)] == [1, 3, 9, 27]
    with pytest.raises(ValueError):
        rung_fractions(1, 0.5)


# Losses arriving at rung 0, and the hand-worked decisions of asynchronous successive halving (eta=3): a
# result continues when it is within the top floor(n/3) results seen so far at its rung (the best, while n < 3).
LOSSES = [5, 3, 8, 1, 9, 7, 2, 6, 4]
PROMOTED = [True, True, False, True, False, False, True, False, False]


def test_successive_halving_promotes_the_top_third_so_far():
    scheduler = SuccessiveHalving(eta=3, min_fraction=1 / 9)
    decisions = [scheduler.decide(T(i), 0, loss) == Verdict.PROMOTE for i, loss in enumerate(LOSSES)]
    assert decisions == PROMOTED
    assert scheduler.decide(T(0), 2, 0.5) == Verdict.COMPLETE


def test_our_successive_halving_decides_as_optunas_pruner_does():
    """The one scheduler both backends use makes the decisions Optuna's SuccessiveHalvingPruner would."""
    study = optuna.create_study(pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3))
    scheduler = SuccessiveHalving(eta=3, min_fraction=1 / 9)
    ours, optunas = [], []
    for loss in LOSSES:
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        trial.report(loss, scheduler.step(0))
        optunas.append(not trial.should_prune())
        ours.append(scheduler.decide(trial, 0, loss) == Verdict.PROMOTE)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert ours == optunas == PROMOTED


def test_rung_sizes_shrink_by_eta_and_the_best_config_reaches_full_fidelity():
    rng = np.random.default_rng(0)
    quality = rng.permutation(243).astype(float)  # a config's loss, the same at every fidelity
    scheduler = SuccessiveHalving(eta=3, min_fraction=1 / 9)
    reached = {0: 0, 1: 0, 2: 0}
    for number, loss in enumerate(quality):
        for rung in scheduler.rungs(T(number)):
            reached[rung] += 1
            if scheduler.decide(T(number), rung, loss) != Verdict.PROMOTE:
                break
    assert reached[0] == 243
    assert 243 / 3 * 0.8 <= reached[1] <= 243 / 3 * 1.3  # asynchronous promotion admits a little more early on
    assert 243 / 9 * 0.8 <= reached[2] <= 243 / 9 * 1.8
    best = int(np.argmin(quality))
    assert best in scheduler.results_at(2)


def test_hyperband_spreads_configs_over_brackets_in_proportion():
    scheduler = Hyperband(eta=3, min_fraction=1 / 9)
    brackets = [scheduler.bracket(T(i)) for i in range(17)]
    assert [brackets.count(b) for b in range(3)] == [9, 5, 3]
    assert scheduler.rungs(T(brackets.index(0))) == (0, 1, 2)
    assert scheduler.rungs(T(brackets.index(1))) == (1, 2)
    assert scheduler.rungs(T(brackets.index(2))) == (2,)


def test_restore_replays_history():
    first = SuccessiveHalving(3, 1 / 9)
    for i, loss in enumerate(LOSSES[:5]):
        first.decide(T(i), 0, loss)
    second = SuccessiveHalving(3, 1 / 9)
    second.restore([(T(i), 0, 0, loss) for i, loss in enumerate(LOSSES[:5])])
    assert second.results_at(0) == first.results_at(0)
    assert [second.decide(T(i), 0, loss) == Verdict.PROMOTE for i, loss in enumerate(LOSSES[5:], 5)] == PROMOTED[5:]


def test_deferred_promotion_waits_for_eta_results_then_promotes_the_waiting_ones_that_rank():
    """``promotion: deferred``: nothing leaves a rung before it holds eta results; then the waiting configs in its
    top 1/eta are due, once each, and later arrivals are judged at once as in ASHA."""
    scheduler = SuccessiveHalving(eta=3, min_fraction=1 / 9, deferred=True)
    assert scheduler.decide(T(0), 0, 5) == Verdict.STOP and scheduler.waiting(T(0), 0)
    assert scheduler.decide(T(1), 0, 3) == Verdict.STOP and scheduler.waiting(T(1), 0)
    assert scheduler.promotions_due() == []  # two results: still nothing to compare
    assert scheduler.decide(T(2), 0, 8) == Verdict.STOP and not scheduler.waiting(T(2), 0)
    assert scheduler.promotions_due() == [(1, 0)]  # the best of three waited; 5 is not in the top third
    assert scheduler.promotions_due() == []  # each once
    assert not scheduler.waiting(T(0), 0) and not scheduler.waiting(T(1), 0)
    assert scheduler.decide(T(1), 0, 3) == Verdict.PROMOTE  # continuing: judged again, now with three results
    assert scheduler.decide(T(3), 0, 1) == Verdict.PROMOTE  # four results: the best continues at once
    # the default (asha) sends the first config on at once
    assert SuccessiveHalving(eta=3, min_fraction=1 / 9).decide(T(0), 0, 5) == Verdict.PROMOTE


def test_a_small_search_uses_only_the_brackets_it_can_fill():
    """9 configs are plain successive halving (all start on 1/9 of the data, the most pruning); Hyperband's later
    brackets join when the search samples a round of them (9 + 5 for two, 9 + 5 + 3 for three)."""
    assert [brackets_for(n, 3, 3) for n in (1, 9, 13, 14, 16, 17, 50, None)] == [1, 1, 1, 2, 2, 3, 3, 3]
    small = make_scheduler("hyperband", 3, 1 / 9, n_configs=9)
    assert small.brackets == 1 and {small.bracket(T(i)) for i in range(9)} == {0}
    middle = make_scheduler("hyperband", 3, 1 / 9, n_configs=15)
    assert [b for b in range(3) if any(middle.bracket(T(i)) == b for i in range(15))] == [0, 1]
    assert make_scheduler("hyperband", 3, 1 / 9).brackets == 3  # bounded by time alone


def test_a_config_far_dearer_than_its_rung_takes_fewer_promotions():
    """Cost counts: at a rung of six results where the top third goes on, the second best goes on when it costs
    what the others do, and stops when it costs twice the median (it must rank in the top sixth)."""
    for cost_aware, promoted in ((False, Verdict.PROMOTE), (True, Verdict.STOP)):
        scheduler = SuccessiveHalving(eta=3, min_fraction=1 / 9, cost_aware=cost_aware)
        for number, loss in enumerate([0.1, 0.3, 0.4, 0.5, 0.6]):
            scheduler.record_cost(T(number), 0, 1.0)
            scheduler.decide(T(number), 0, loss)
        scheduler.record_cost(T(5), 0, 2.0)
        assert scheduler.decide(T(5), 0, 0.2) == promoted
        cheap = SuccessiveHalving(eta=3, min_fraction=1 / 9, cost_aware=cost_aware)
        for number, loss in enumerate([0.1, 0.3, 0.4, 0.5, 0.6]):
            cheap.record_cost(T(number), 0, 1.0)
            cheap.decide(T(number), 0, loss)
        cheap.record_cost(T(5), 0, 0.5)  # cheaper than the others: the plain rule
        assert cheap.decide(T(5), 0, 0.2) == Verdict.PROMOTE


def test_rung_costs_land_in_the_study_and_a_new_scheduler_restores_them():
    """Cost-aware decisions survive a restart and reach engines sharing the study: each trial records what its
    rungs cost per epoch, and the ledger hands them to a fresh scheduler."""
    study = optuna.create_study()

    def objective(params, fraction):  # configs with x > 0 cost four times as much per epoch
        return Evaluation((params["x"] - 1) ** 2 + (1 - fraction), (1.0, 1.0), 0.8 if params["x"] > 0 else 0.2)

    space = SearchSpace.from_dict({"x": {"type": "float", "low": -3, "high": 3}})
    scheduler = make_scheduler("successive_halving", 3, 1 / 9, cost_aware=True)
    SearchEngine(objective, make_backend("optuna", "random", study, space, 0, 3), scheduler, n_trials=9).run()
    recorded = [t.user_attrs.get("rung_costs") for t in study.trials]
    assert all(costs and costs["0"] in (0.1, 0.4) for costs in recorded)  # seconds per epoch at the first rung
    fresh = make_scheduler("successive_halving", 3, 1 / 9, cost_aware=True)
    for trial, rung, cost in Ledger(study, None, None).rung_costs(lambda t: t):
        fresh.record_cost(trial, rung, cost)
    dear = next(t.number for t in study.trials if t.params["x"] > 0)
    cheap = next(t.number for t in study.trials if t.params["x"] <= 0)
    assert fresh._cost_ratio((0, 0), dear) > fresh._cost_ratio((0, 0), cheap)
