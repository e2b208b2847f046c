"""Cross-validation in the search (``search.cv``): folds without leakage, per-fold pruning with both backends,
folds together with Hyperband's rungs, and a stopped search that resumes without recomputing finished folds.
The engine tests use plain objectives; the pipeline test runs the real stack on a tiny series."""

from __future__ import annotations

import json
import statistics

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from automl.configs import CVConfig, DataError, load_config
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.data_prep.folds import series_folds
from automl.tasks.data_prep.preprocessing import preprocessing_from_dict
from automl.tasks.final_train.plan import FinalPlan
from automl.tasks.runtime.budget import RunBudget
from automl.tasks.search import (
    FOLD_LOSSES_ATTR,
    Evaluation,
    SearchEngine,
    SearchSpace,
    TrialRecord,
    Verdict,
    make_backend,
    make_scheduler,
)
from automl.tasks.search_stage.deadline import SearchDeadline
from tests.helpers import REPO, make_series, write_config

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace.from_dict({"x": {"type": "float", "low": -4, "high": 4}})
FOLDS = 3


def folded(params, fidelity, fold):
    """Minimum at x=1; the folds differ by a constant (their ranking of configs agrees), lower fidelity adds one."""
    return (params["x"] - 1) ** 2 + 0.1 * fold + (1 - fidelity)


def _engine(objective, backend="optuna", fidelity="none", storage=None, n_trials=20, pruning=True, **kw):
    study = optuna.create_study(storage=storage, study_name="cv", load_if_exists=True)
    scheduler = make_scheduler(fidelity, 3, 1 / 9, folds=FOLDS, fold_pruning=pruning)
    return SearchEngine(objective, make_backend(backend, "tpe", study, SPACE, 0, 5), scheduler, n_trials=n_trials, **kw)


class Stopped(BaseException):
    """Stands in for Ctrl-C reaching the engine in the middle of a fold."""


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
def test_a_config_clearly_worse_after_fold_1_stops_there(backend):
    calls: list[tuple[float, int]] = []

    def objective(params, fidelity, fold):
        calls.append((params["x"], fold))
        return folded(params, fidelity, fold)

    engine = _engine(objective, backend, n_trials=20)
    result = engine.run()
    trials = engine.study.get_trials()
    stopped = [t for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("pruned after fold 1 of 3")]
    assert stopped, "no config was stopped after its first fold"
    for trial in stopped:
        assert trial.state == TrialState.PRUNED
        assert list(trial.intermediate_values) == [3]  # step = rung step 1 x 3 folds + fold 0
        assert [fold for x, fold in calls if x == trial.params["x"]] == [0]  # folds 2 and 3 never ran
        assert trial.user_attrs[FOLD_LOSSES_ATTR] == [pytest.approx(folded(trial.params, 1.0, 0))]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for trial in complete:
        losses = [folded(trial.params, 1.0, k) for k in range(FOLDS)]
        assert trial.user_attrs[FOLD_LOSSES_ATTR] == pytest.approx(losses)
        assert trial.value == pytest.approx(statistics.fmean(losses))  # the score is the mean over folds
        assert sorted(trial.intermediate_values) == [3, 4, 5]  # running means after folds 1, 2, 3
    assert result.best_value == min(t.value for t in complete)
    assert abs(result.best_params["x"] - 1) < 1


def test_without_fold_pruning_every_config_runs_every_fold():
    engine = _engine(folded, n_trials=12, pruning=False)
    engine.run()
    assert all(t.state == TrialState.COMPLETE for t in engine.study.get_trials())


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
def test_folds_and_hyperband_rungs_work_together(backend):
    calls: list[tuple[float, float, int]] = []

    def objective(params, fidelity, fold):
        calls.append((params["x"], fidelity, fold))
        return folded(params, fidelity, fold)

    engine = _engine(objective, backend, "hyperband", n_trials=30)
    engine.run()
    scheduler = engine.scheduler
    trials = engine.study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and any(t.state == TrialState.PRUNED for t in trials)
    for trial in complete:
        mine = [(f, k) for x, f, k in calls if x == trial.params["x"]]
        # every rung it visited ran all its folds, the rungs in order; the last rung is all the data
        rungs = sorted({f for f, _ in mine})
        assert mine == [(f, k) for f in rungs for k in range(FOLDS)]
        assert rungs[-1] == 1.0
        assert trial.value == pytest.approx(statistics.fmean(folded(trial.params, 1.0, k) for k in range(FOLDS)))
        last = max(trial.intermediate_values)
        assert scheduler.position_of(last) == (len(scheduler.fractions) - 1, FOLDS - 1)
    # every reported step decodes to a (rung, fold) of this schedule
    for trial in trials:
        assert all(scheduler.position_of(step) is not None for step in trial.intermediate_values)


@pytest.mark.parametrize("backend", ["optuna", "hyperopt"])
def test_a_stopped_search_resumes_without_recomputing_finished_folds(tmp_path, backend):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    calls: list[tuple[float, float, int]] = []
    stop_at = [8]

    def objective(params, fidelity, fold):
        if len(calls) == stop_at[0]:
            raise Stopped
        calls.append((params["x"], fidelity, fold))
        return folded(params, fidelity, fold)

    with pytest.raises(Stopped):
        _engine(objective, backend, "successive_halving", storage, n_trials=10, run_id="run-1").run()
    first = list(calls)
    study = optuna.load_study(study_name="cv", storage=storage)
    interrupted = [t for t in study.trials if t.user_attrs.get("outcome") == "interrupted"]
    assert len(interrupted) == 1 and not study.get_trials(states=(TrialState.RUNNING,))
    assert interrupted[0].intermediate_values, "the stop should come after a finished fold of the trial"
    stop_at[0] = 10**9
    engine = _engine(objective, backend, "successive_halving", storage, n_trials=10, run_id="run-1")
    engine.run()
    second = calls[len(first) :]
    assert not set(first) & set(second), "a fold finished before the stop was computed again"
    retry = [t for t in engine.study.get_trials() if t.user_attrs.get("source") == f"retry:{interrupted[0].number}"]
    assert len(retry) == 1 and retry[0].user_attrs.get("reused_evaluations", 0) >= 1
    if retry[0].state == TrialState.COMPLETE:  # the reused folds count in its mean as computed ones do
        losses = [folded(retry[0].params, 1.0, k) for k in range(FOLDS)]
        assert retry[0].value == pytest.approx(statistics.fmean(losses))
        assert retry[0].user_attrs[FOLD_LOSSES_ATTR] == pytest.approx(losses)
    assert not engine.study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_past_the_deadline_a_config_stops_between_folds_with_the_folds_it_finished():
    calls: list[tuple[float, int]] = []

    def objective(params, fidelity, fold):
        calls.append((params["x"], fold))
        return folded(params, fidelity, fold)

    # the deadline passes once trial 0 is complete and trial 1 has finished its first fold
    engine = _engine(objective, n_trials=5, deadline=lambda: 0.0 if len(calls) >= FOLDS + 1 else float("inf"))
    engine.run()
    assert len(calls) == FOLDS + 1  # no fold started past the deadline
    first, second = engine.study.get_trials()[:2]
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.PRUNED and second.user_attrs["fail_reason"].startswith("out of time")
    assert second.user_attrs[FOLD_LOSSES_ATTR] == [pytest.approx(folded(second.params, 1.0, 0))]


def test_the_budget_counts_the_final_training_on_more_rows_than_a_fold():
    plan = FinalPlan(epochs=10, default_config={}, default_baseline=False)
    deadline = SearchDeadline(RunBudget(100.0, 0.0), plan, train_scale=4.0)
    record = TrialRecord(number=0, params={})
    deadline.rung_finished(record, 1.0, 1, Evaluation(0.1, (1.0, 0.9), seconds=2.0), Verdict.COMPLETE)
    assert deadline.epoch_seconds[0] == pytest.approx(4.0)  # 1 s per fold epoch, on 4x the rows


# --- folds of the data ---------------------------------------------------------------------------------------------


def _prepared(config, *overrides: str):
    cfg = load_config(REPO / "configs" / config, list(overrides))
    checked = load_and_check(cfg)
    return prepare(checked.frame, DataPrepJob.of(cfg), checked.plan)[0], cfg


@pytest.mark.parametrize("kind", ["rolling_origin", "expanding"])
def test_a_series_fold_never_trains_on_its_validation_window_or_later(kind):
    folds = series_folds(500, 4, kind, gap=5)
    widths = {len(f.val) for f in folds}
    assert widths == {100}
    assert folds[-1].val[-1] == 499  # the windows end where train+val ends
    for fold in folds:
        assert fold.train.max() < fold.val.min() - 5  # and the gap lies between
        assert np.array_equal(fold.val, np.arange(fold.val[0], fold.val[-1] + 1))
    if kind == "expanding":
        assert {f.train[0] for f in folds} == {0}
    else:
        assert len({len(f.train) for f in folds}) == 1  # a fixed training length


def test_series_fold_arrays_are_scaled_with_their_training_rows_only(tmp_path):
    series = make_series(300).dropna().reset_index(drop=True)
    series.to_csv(tmp_path / "s.csv", index=False)
    config = write_config(tmp_path, tmp_path / "s.csv", search={"cv": {"folds": 3, "gap": 2}})
    prepared, cfg = _prepared(config)
    card = prepared.card["cv"]
    assert card["folds"] == 3 and card["kind"] == "rolling_origin" and card["gap"] == 2
    values = series["sales"].to_numpy(dtype=float)
    lb = cfg.data.lookback
    for fold, bounds in zip(prepared.folds, card["boundaries"], strict=True):
        (a, last_train), (c, d) = bounds["train_rows"], bounds["val_rows"]
        train_rows = values[a : last_train + 1]
        assert fold.preprocessing["mean"][0] == pytest.approx(train_rows.mean())
        assert fold.preprocessing["std"][0] == pytest.approx(train_rows.std())
        assert c - last_train - 1 == 2  # the gap
        assert len(fold.train) == bounds["train_windows"] == len(train_rows) - lb - 1  # horizon 2
        # unscaled, the first training window is the fold's first rows; the last target is its last training row
        mean, std = fold.preprocessing["mean"][0], fold.preprocessing["std"][0]
        assert fold.train.X[0, :, 0] * std + mean == pytest.approx(values[a : a + lb], rel=1e-5)
        assert fold.train.y[-1, -1] * std + mean == pytest.approx(values[last_train], rel=1e-5)
        assert fold.val.y[0, 0] * std + mean == pytest.approx(values[c], rel=1e-5)
        assert fold.val.y[-1, -1] * std + mean == pytest.approx(values[d], rel=1e-5)
        # no training window reaches into the gap or the validation window: every target is before row c - 2
        assert len(fold.train) == last_train + 1 - a - lb - 1
    json.dumps(card)  # the data card is JSON


def test_tabular_folds_are_stratified_and_fitted_on_their_training_rows():
    prepared, _ = _prepared("mlp_tabular.yaml", "search.cv.folds=4")
    card = prepared.card["cv"]
    assert card["kind"] == "stratified" and len(prepared.folds) == 4
    rows = len(prepared.train) + len(prepared.val)
    assert sum(b["val_rows"] for b in card["boundaries"]) == rows
    shares = [np.bincount(f.val.y, minlength=prepared.n_outputs) / len(f.val) for f in prepared.folds]
    overall = np.bincount(np.concatenate([prepared.train.y, prepared.val.y]), minlength=prepared.n_outputs) / rows
    assert np.abs(np.array(shares) - overall).max() < 0.05
    for fold in prepared.folds:
        fitted = preprocessing_from_dict(fold.preprocessing)
        numeric = [fitted.encoded_features.index(name) for name in fitted.numeric]
        assert numeric
        # Scaled with statistics of exactly its training rows (imputed with their median): mean 0, std 1 there,
        # not on its validation rows. A scaler that saw validation rows would leave neither exactly.
        assert np.abs(fold.train.X[:, numeric].mean(axis=0)).max() < 1e-5
        assert np.abs(fold.train.X[:, numeric].std(axis=0) - 1).max() < 1e-4
        assert np.abs(fold.val.X[:, numeric].mean(axis=0)).max() > 1e-3


def test_tabular_regression_folds_scale_the_target_per_fold(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    frame["y"] = 3 * frame["a"] + rng.normal(size=120) + 50
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    prepared, _ = _prepared("mlp_tabular.yaml", f"data.path={path}", "data.target=y", "search.cv.folds=3")
    assert prepared.card["cv"]["kind"] == "kfold"
    for fold in prepared.folds:
        assert abs(float(fold.train.y.mean())) < 1e-5  # scaled with its own training rows' mean
        assert float(fold.train.y.std()) == pytest.approx(1.0, abs=1e-3)
        assert abs(float(fold.val.y.mean())) > 1e-4  # other rows: not centred by construction


def test_fold_checks_name_the_key():
    with pytest.raises(DataError, match=r"^search\.cv\.folds: .*too short for horizon"):
        _prepared("lstm_baseline.yaml", "search.cv.folds=100", "data.horizon=30")
    with pytest.raises(DataError, match=r"^search\.cv\.folds: with 2 folds the first fold trains on"):
        _prepared("lstm_baseline.yaml", "search.cv.folds=2", "data.lookback=700")
    with pytest.raises(DataError, match=r"^search\.cv\.folds: stratified folds put every class in every fold"):
        _prepared("mlp_tabular.yaml", "search.cv.folds=70")
    assert CVConfig().folds == 1


# --- the pipeline ------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_pipeline_cross_validates_with_hyperband_and_records_the_folds(prefect_api, home, series_csv, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from automl.flows.pipeline import automl_pipeline
    from automl.tasks.summary import render_table

    config = write_config(
        tmp_path,
        series_csv,
        search={"fidelity": "hyperband", "n_trials": 6, "min_fraction": 0.3, "cv": {"folds": 3, "gap": 1}},
    )
    summary = automl_pipeline(config_path=str(config), overrides=[])
    assert summary.status == "completed" and summary.fidelity == "hyperband"

    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    assert study.user_attrs["cv"] == {"folds": 3, "kind": "auto", "gap": 1}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:
        losses = trial.user_attrs[FOLD_LOSSES_ATTR]
        assert len(losses) == 3 and trial.value == pytest.approx(statistics.fmean(losses))
    best = study.best_trial
    chosen = summary.cv.fold_losses
    if summary.chosen == "tuned":
        assert chosen == pytest.approx(best.user_attrs[FOLD_LOSSES_ATTR])
    assert summary.cv.folds == 3 and summary.cv.kind == "rolling_origin"
    assert summary.cv.mean == pytest.approx(statistics.fmean(chosen))
    assert summary.cv.std == pytest.approx(statistics.pstdev(chosen))
    out = summary.to_json()["cv"]
    assert {"folds", "kind", "mean", "std"} <= set(out)
    assert "cross-validation (3 rolling_origin folds" in render_table(summary)

    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    parent = client.get_run(summary.pipeline_run_id)
    assert parent.data.metrics["cv_mean_val_loss"] == pytest.approx(summary.cv.mean)
    runs = client.search_runs([parent.info.experiment_id], max_results=500)
    stage = {r.data.tags.get("automl.stage"): r for r in runs if r.data.tags.get("automl.role") == "stage"}
    card = mlflow.artifacts.load_dict(f"runs:/{stage['data_prep'].info.run_id}/data_card.json")
    assert card["cv"]["folds"] == 3 and len(card["cv"]["boundaries"]) == 3
    search_run = stage["search"]
    assert search_run.data.params["cv_folds"] == "3" and search_run.data.params["cv_kind"] == "rolling_origin"
    assert "plots/cv_fold_scores.png" in {f.path for f in client.list_artifacts(search_run.info.run_id, "plots")}
    trial_runs = {int(r.data.tags["automl.trial_number"]): r for r in runs if r.data.tags.get("automl.role") == "trial"}
    for trial in complete:
        metrics = trial_runs[trial.number].data.metrics
        assert [metrics[f"val_loss_fold{k}"] for k in range(3)] == pytest.approx(trial.user_attrs[FOLD_LOSSES_ATTR])
