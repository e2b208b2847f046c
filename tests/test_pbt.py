"""Population-based training: exploit/explore mechanics and resume on a cheap objective (no torch), then the
pipeline with ``search.strategy: pbt`` end to end (members and lineage in MLflow and Optuna, final stage from the
best member's weights, ``--json``)."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from prefect.settings import PREFECT_API_URL

from automl.tasks.search import (
    EXPLOITED_FROM_ATTR,
    INTERVAL_ATTR,
    MEMBER_ATTR,
    Checkpoint,
    Evaluation,
    PBTSettings,
    PopulationBasedTraining,
    SearchSpace,
)
from tests.helpers import make_series, write_config
from tests.test_scale_and_faults import _all_runs, _cli, _mlflow

SPACE = SearchSpace.from_dict(
    {
        "lr": {"type": "float", "low": 0.01, "high": 1.0, "log": True},
        "width": {"type": "int", "low": 1, "high": 4},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    }
)
MUTABLE = {"lr", "batch_size"}


class Toy:
    """A member's "weights" are one number that grows by lr * width per epoch; the loss falls as it grows."""

    def __init__(self):
        self.weights: dict[tuple[int, int], float] = {}
        self.starts: dict[tuple[int, int], float] = {}
        self.calls: list[tuple[int, int]] = []
        self.stopped = False

    def interrupt(self):
        self.stopped = True

    def __call__(self, params, fraction, *, member, interval, start, epochs):
        if self.stopped:
            raise RuntimeError("stopped")
        self.calls.append((member, interval))
        w = self.weights[(start.member, start.interval)] if start else 0.0
        self.starts[(member, interval)] = w
        curve = []
        for _ in range(epochs):
            w += params["lr"] * params["width"]
            curve.append(1 / (1 + w))
        self.weights[(member, interval)] = w
        return Evaluation(curve[-1], tuple(curve))


class StopAfter:
    """Ctrl-C in the main thread after ``n`` member-intervals ended."""

    def __init__(self, n: int):
        self.n = n

    def member_finished(self, step, restored):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt

    def interval_finished(self, interval, steps, best, restored):
        pass


def _pbt(study, toy, observer=None, **settings):
    defaults = dict(population=8, interval_epochs=2, epochs=8, quantile=0.25, seed=3)
    settings = PBTSettings(**{**defaults, **settings})
    return PopulationBasedTraining(toy, SPACE, MUTABLE, settings, study, run_id="run-1", observer=observer)


def test_the_worst_quantile_copies_the_best_weights_and_perturbed_params():
    study = optuna.create_study()
    toy = Toy()
    result = _pbt(study, toy, resample_probability=0.0).run()
    steps = {(s.member, s.interval): s for s in result.steps}
    assert len(steps) == 8 * 4 and result.intervals_done == 4
    for interval in range(1, 4):
        before = sorted((steps[(m, interval - 1)] for m in range(8)), key=lambda s: s.loss)
        top, bottom = {s.member for s in before[:2]}, {s.member for s in before[-2:]}
        for member in range(8):
            step, previous = steps[(member, interval)], steps[(member, interval - 1)]
            if member in bottom:
                donor = steps[(step.exploited_from, interval - 1)]
                assert step.exploited_from in top
                assert step.start == Checkpoint(donor.member, interval - 1)
                # it starts from the donor's weights, with the donor's architecture and perturbed mutable params
                assert toy.starts[(member, interval)] == toy.weights[(donor.member, interval - 1)]
                assert step.params["width"] == donor.params["width"]
                ratio = step.params["lr"] / donor.params["lr"]
                clipped = step.params["lr"] in (0.01, 1.0)
                assert clipped or math.isclose(ratio, 0.8) or math.isclose(ratio, 1.2)
                choices = [16, 32, 64]
                assert abs(choices.index(step.params["batch_size"]) - choices.index(donor.params["batch_size"])) <= 1
            else:
                assert step.exploited_from is None and step.params == previous.params
                assert toy.starts[(member, interval)] == toy.weights[(member, interval - 1)]
    assert result.exploit_steps == 2 * 3
    # every member-interval is a complete trial with its lineage; the best member is the last interval's best
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 32
    exploited = [t for t in trials if EXPLOITED_FROM_ATTR in t.user_attrs]
    assert len(exploited) == 6 and all(t.user_attrs[INTERVAL_ATTR] > 0 for t in exploited)
    last = [s for s in result.steps if s.interval == 3]
    assert result.best_value == min(s.loss for s in last)
    best_trial = study.trials[result.best_trial]
    assert best_trial.user_attrs[MEMBER_ATTR] == result.best_member and best_trial.value == result.best_value
    assert result.schedule(result.best_member)[-1] == result.best_params


def test_resample_draws_from_the_space_and_the_draws_are_seeded():
    first = _pbt(optuna.create_study(), Toy(), resample_probability=1.0).run()
    second = _pbt(optuna.create_study(), Toy(), resample_probability=1.0).run()
    assert [s.params for s in first.steps] == [s.params for s in second.steps]
    for step in first.steps:
        assert 0.01 <= step.params["lr"] <= 1.0 and step.params["batch_size"] in (16, 32, 64)


@pytest.mark.parametrize("stop_at", [5, 13])
def test_a_stopped_population_resumes_without_training_a_member_interval_twice(stop_at):
    reference = _pbt(optuna.create_study(), Toy()).run()
    study = optuna.create_study()
    toy = Toy()
    with pytest.raises(KeyboardInterrupt):
        _pbt(study, toy, StopAfter(stop_at)).run()
    assert len(study.trials) == stop_at  # each finished member-interval was recorded as it ended
    assert all(t.state == TrialState.COMPLETE for t in study.trials)  # nothing left RUNNING
    recorded = {(t.user_attrs[MEMBER_ATTR], t.user_attrs[INTERVAL_ATTR]) for t in study.trials}
    toy.stopped, toy.calls = False, []
    result = _pbt(study, toy).run()
    assert recorded.isdisjoint(toy.calls) and len(toy.calls) == 32 - stop_at  # nothing recorded is trained again
    assert len(study.trials) == 32
    assert result.best_params == reference.best_params and result.best_value == reference.best_value
    assert [s.params for s in sorted(result.steps, key=lambda s: (s.interval, s.member))] == [
        s.params for s in sorted(reference.steps, key=lambda s: (s.interval, s.member))
    ]


def test_a_rerun_past_its_time_keeps_the_intervals_it_finished():
    """time_up is asked before an interval that has something to train, not before intervals read back."""
    study = optuna.create_study()
    first = _pbt(study, Toy()).run()
    toy = Toy()
    pbt = _pbt(study, toy)
    pbt.time_up = lambda: True
    again = pbt.run()
    assert toy.calls == [] and again.intervals_done == first.intervals_done == 4
    assert again.best_params == first.best_params and again.exploit_steps == first.exploit_steps


def test_perturb_moves_every_kind_of_parameter_and_stays_in_the_space():
    dims = SearchSpace.from_dict(
        {
            "dropout": {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1},
            "width": {"type": "int", "low": 1, "high": 4},
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        }
    )
    assert dims["dropout"].perturb(0.2, 1.2) == pytest.approx(0.3)  # 0.24 snaps back to 0.2: one step
    assert dims["dropout"].perturb(0.2, 0.8) == pytest.approx(0.1)
    assert dims["width"].perturb(1, 1.2) == 2 and dims["width"].perturb(4, 1.2) == 4
    assert dims["lr"].perturb(0.01, 1.2) == pytest.approx(0.012) and dims["lr"].perturb(0.1, 1.2) == 0.1
    assert dims["batch_size"].perturb(32, 1.2) == 64 and dims["batch_size"].perturb(16, 0.8) == 16
    assert all(
        d.perturb(d.sample(np.random.default_rng(0)), 1.0) == d.sample(np.random.default_rng(0))
        for d in dims.dimensions
    )


def test_a_member_continues_with_the_optimiser_state_of_its_best_weights_and_the_new_lr():
    import torch

    from automl.models import TrainSettings, fit

    torch.manual_seed(0)
    x, y = np.random.default_rng(0).normal(size=(64, 3)), np.random.default_rng(1).normal(size=(64, 1))
    model = torch.nn.Linear(3, 1)
    first = fit(model, (x, y), (x, y), TrainSettings(epochs=3, lr=0.01, batch_size=16), keep_optimizer=True)
    steps = int(first.optimizer_state["state"][0]["step"])
    assert int(steps) == 4 * (first.best_epoch + 1)  # the moments of the best epoch, not of the last
    second = fit(
        model,
        (x, y),
        (x, y),
        TrainSettings(epochs=1, lr=0.05, batch_size=16, weight_decay=0.1),
        optimizer_state=first.optimizer_state,
        keep_optimizer=True,
    )
    group = second.optimizer_state["param_groups"][0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.1
    assert int(second.optimizer_state["state"][0]["step"]) == int(steps) + 4  # it went on from the first's moments


def test_failed_members_copy_a_good_one_and_a_space_without_mutable_params_is_refused():
    class Flaky(Toy):
        def __call__(self, params, fraction, *, member, interval, start, epochs):
            if member == 0 and interval == 0:
                return Evaluation(float("nan"), error="diverged")
            return super().__call__(params, fraction, member=member, interval=interval, start=start, epochs=epochs)

    result = _pbt(optuna.create_study(), Flaky(), population=4, epochs=4).run()
    assert next(s for s in result.steps if s.member == 0 and s.interval == 1).exploited_from is not None
    with pytest.raises(ValueError, match="mutable"):
        PopulationBasedTraining(Toy(), SPACE, {"dropout"}, PBTSettings(4, 1, 2), optuna.create_study())


# --- the pipeline ------------------------------------------------------------------------------------------------


def _complete_trials(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as connection:
            return connection.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.e2e
def test_a_killed_pbt_run_resumes_and_its_population_and_lineage_land_in_mlflow_and_optuna(
    prefect_api, tmp_path, monkeypatch
):
    """kill -9 in the second interval (after the range test of search.lr_range auto narrowed lr); one rerun of the
    same command finishes: every member-interval once in Optuna, nothing RUNNING, each member one MLflow run with
    its params, losses and lineage per step (no step twice), the lineage and plots on the search run, the final
    stage testing the best member's weights."""
    state = tmp_path / "state"
    csv = tmp_path / "data.csv"
    make_series(3000).to_csv(csv, index=False)  # a member-interval takes a few tenths of a second: time to kill
    population, intervals = 4, 4
    # the runs report to the tests' Prefect API instead of each starting a temporary server (seconds each)
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    pbt = {"population": population, "interval_epochs": 1, "epochs": intervals, "quantile": 0.25}
    config = write_config(
        tmp_path,
        csv,
        name="pbt_tiny",
        search={"strategy": "pbt", "pbt": pbt, "lr_range": "auto"},
        final={"epochs": 1, "patience": 1, "clean_up": False},  # the search's artifacts are looked at after
    )
    args = ("run", str(config), "--json")
    process = _cli(*args, state=state, cwd=tmp_path)
    deadline = time.monotonic() + 240
    while _complete_trials(state / "optuna.db") < population + 1:  # interval 1, a member in
        assert process.poll() is None, "the run ended first: " + process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no member-interval finished"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    recorded_before = _complete_trials(state / "optuna.db")
    assert recorded_before < population * intervals

    rerun = _cli(*args, state=state, cwd=tmp_path)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["strategy"] == "pbt" and summary["resumed"] is True
    assert summary["pbt"]["population"] == population and summary["pbt"]["intervals"] == intervals
    assert "pbt interval 1/4" in err and "(restored)" in err  # the first interval was read back, not trained

    storage = f"sqlite:///{state / 'optuna.db'}"
    study = optuna.load_study(study_name=summary["study_name"], storage=storage)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    keys = [(t.user_attrs[MEMBER_ATTR], t.user_attrs[INTERVAL_ATTR]) for t in study.trials]
    assert sorted(keys) == [(m, i) for m in range(population) for i in range(intervals)]  # each once
    exploited = [t for t in study.trials if EXPLOITED_FROM_ATTR in t.user_attrs]
    assert summary["pbt"]["exploit_steps"] == len(exploited) == intervals - 1  # one of four each interval
    last = [t for t in study.trials if t.user_attrs[INTERVAL_ATTR] == intervals - 1]
    best = min(last, key=lambda t: t.value)
    assert summary["best_params"] == best.params and summary["best_val_loss"] == pytest.approx(best.value)
    assert summary["pbt"]["schedule"][-1] == best.params and len(summary["pbt"]["schedule"]) == intervals

    client = _mlflow(state)
    runs = _all_runs(client)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    members = {int(r.data.tags["automl.pbt_member"]): r for r in runs if "automl.pbt_member" in r.data.tags}
    assert sorted(members) == list(range(population))
    for member, run in members.items():
        assert run.info.status == "FINISHED"
        lineage = client.get_metric_history(run.info.run_id, "exploited_from")
        assert sorted(p.step for p in lineage) == list(range(intervals))  # one value per interval, none twice
        mine = {t.user_attrs[INTERVAL_ATTR]: t for t in study.trials if t.user_attrs[MEMBER_ATTR] == member}
        for point in lineage:
            assert point.value == mine[point.step].user_attrs.get(EXPLOITED_FROM_ATTR, -1)
        lrs = {p.step: p.value for p in client.get_metric_history(run.info.run_id, "param_lr")}
        assert lrs == {i: pytest.approx(mine[i].params["lr"]) for i in range(intervals)}
        val = client.get_metric_history(run.info.run_id, "epoch_val_loss")
        assert sorted(p.step for p in val) == list(range(intervals))
    stages = {r.data.tags["automl.stage"]: r for r in runs if r.data.tags.get("automl.role") == "stage"}
    search = stages["search"]
    assert search.data.params["strategy"] == "pbt" and search.data.params["pbt_population"] == str(population)
    artifacts = {f.path for f in client.list_artifacts(search.info.run_id)}
    assert {"pbt_lineage.csv", "pbt_schedule.json", "best_trial_weights.pt"} <= artifacts
    plots = {f.path for f in client.list_artifacts(search.info.run_id, "plots")}
    assert {"plots/pbt_population_val_loss.png", "plots/pbt_lr_schedules.png"} <= plots
    # search.lr_range auto: the range test ran first, and the members' lr lies within the bounds it logged
    low, high = float(search.data.params["lr_range_low"]), float(search.data.params["lr_range_high"])
    assert 1e-3 <= low < high <= 1e-2 and search.data.metrics["lr_range_suggestion"] > 0
    assert {(t.distributions["lr"].low, t.distributions["lr"].high) for t in study.trials} == {(low, high)}
    assert "plots/lr_range.png" in plots

    # warm start reads the best config from the pipeline run, as for a sampled search; the schedule is beside it
    def artifact(name: str):
        folder = tmp_path / "artifacts"
        folder.mkdir(exist_ok=True)
        return json.loads(Path(client.download_artifacts(summary["pipeline_run_id"], name, str(folder))).read_text())

    if summary["chosen"] == "tuned":
        assert artifact("best_config.json") == best.params
        assert artifact("pbt_schedule.json") == summary["pbt"]["schedule"]
    final = stages["final_train"]
    assert final.data.params["init"] == "pbt_best_member"
    # the best member's weights, tested as they are
    assert final.data.metrics["tuned_val_loss"] == pytest.approx(best.value, rel=1e-4)
    assert final.data.params["epochs"] == "0"
    if summary["chosen"] == "tuned":
        assert final.data.metrics["epochs_run"] == 0
