"""What an operator sees while a long training runs: its console epoch line (tqdm, at most once an epoch and every
10 s, only on a terminal and when the CLI asks) and its per-epoch losses reaching its MLflow run while it trains
(batched, steps following those the run has)."""

from __future__ import annotations

import io
import math

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from automl.flows.pipeline import automl_pipeline
from automl.models import ModelShape, TrainSettings, build_model, fit, get_family
from automl.tasks.runtime import progress
from automl.tasks.runtime.progress import REFRESH_SECONDS, EpochProgress
from automl.tasks.tracking.catalog import EPOCH_TRAIN_LOSS_METRIC, EPOCH_VAL_LOSS_METRIC
from automl.tasks.tracking.live_metrics import LiveEpochMetrics, watch_training
from tests.helpers import write_config


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr("tqdm.std.time", fake)  # tqdm reads its clock there
    return fake


def _draws(stream: io.StringIO) -> list[str]:
    return [line for line in stream.getvalue().split("\r") if "epoch " in line]


def test_an_epoch_line_is_drawn_at_most_once_an_epoch_and_at_most_every_ten_seconds(clock):
    terminal = _Terminal()
    with EpochProgress("trial 3", epochs=100, stream=terminal, shown=True) as line:
        assert line.shown
        for epoch in range(3):  # fast epochs, 3 s each: nothing before 10 s, then one draw per 10 s
            clock.now += 3
            line(epoch, 1.0, 2.0)
        assert _draws(terminal) == []
        clock.now += 3  # 12 s in
        line(3, 0.5, 0.25)
        assert len(_draws(terminal)) == 1
        first = _draws(terminal)[0]
        assert first.startswith("trial 3 | epoch 4/100, train_loss 0.5, val_loss 0.25 | 00:12 in, ETA 04:47")
        for epoch in range(4, 7):  # 9 s more: still one draw
            clock.now += 3
            line(epoch, 0.5, 0.25)
        assert len(_draws(terminal)) == 1
        clock.now += 3
        line(7, 0.4, 0.2)
        assert len(_draws(terminal)) == 2 and "epoch 8/100" in _draws(terminal)[1]
        for epoch in range(8, 10):  # slow epochs (60 s each): one draw per epoch, not more
            clock.now += 60
            line(epoch, 0.3, 0.1)
        assert len(_draws(terminal)) == 4 and "epoch 10/100" in _draws(terminal)[3]


def test_the_epoch_line_shows_only_on_a_terminal_and_only_when_the_cli_asked(clock, monkeypatch):
    monkeypatch.setattr(progress, "_shown", False)
    not_asked, terminal_file = _Terminal(), io.StringIO()
    quiet = EpochProgress("trial 1", 5, stream=not_asked)  # the CLI did not ask (--json, library use, a worker)
    progress.show_epoch_progress(True)
    piped = EpochProgress("trial 1", 5, stream=terminal_file)  # stderr is a file or a pipe
    shown = EpochProgress("trial 1", 5, stream=_Terminal())
    assert (quiet.shown, piped.shown, shown.shown) == (False, False, True)
    for bar in (quiet, piped):
        clock.now += 2 * REFRESH_SECONDS
        bar(0, 1.0, 1.0)
        bar.close()
    assert not_asked.getvalue() == "" and terminal_file.getvalue() == ""
    shown.close()


def test_live_metrics_are_written_in_batches_while_training_and_the_rest_at_the_end(home):
    home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("live")).info.run_id
    now = [0.0]
    live = LiveEpochMetrics(run_id, flush_seconds=5.0, clock=lambda: now[0])

    def written() -> list[int]:
        return [m.step for m in client.get_metric_history(run_id, EPOCH_VAL_LOSS_METRIC)]

    live(0, 1.0, 0.9)
    now[0] = 2.0
    live(1, 0.8, 0.7)
    assert written() == []  # within the first 5 s: buffered
    now[0] = 5.5
    live(2, 0.6, math.nan)  # a diverged validation loss is left out, its train loss is not
    assert written() == [0, 1]
    assert [m.step for m in client.get_metric_history(run_id, EPOCH_TRAIN_LOSS_METRIC)] == [0, 1, 2]
    live(3, 0.5, 0.4)
    live.close()
    assert written() == [0, 1, 3]
    following = LiveEpochMetrics.after_logged(run_id)  # a trial's next rung continues the steps
    assert following.first_step == 4


def test_a_write_that_fails_during_training_keeps_its_points_for_the_next_and_says_so_once(home):
    """A locked store or a tracking server that does not answer does not fail the training it watches."""
    import logging

    home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("flaky")).info.run_id
    client.delete_run(run_id)  # MLflow refuses writes to it until it is restored
    said: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("automl").addHandler(listener)
    try:
        live = LiveEpochMetrics(run_id, flush_seconds=0.0)
        live(0, 1.0, 0.9)
        live(1, 0.8, 0.7)
        client.restore_run(run_id)
        live(2, 0.6, 0.5)
    finally:
        logging.getLogger("automl").removeHandler(listener)
    assert [m.step for m in client.get_metric_history(run_id, EPOCH_VAL_LOSS_METRIC)] == [0, 1, 2]
    said = [line for line in said if line.startswith("live metrics:")]
    assert len(said) == 1 and run_id in said[0]


def test_a_training_watched_logs_every_epoch_to_its_run_as_fit_reports_it(home):
    home.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("watched")).info.run_id
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    model = build_model(get_family("mlp"), ModelShape(3, 1, None), get_family("mlp").defaults, 0)
    with watch_training("final training tuned", 4, run_id) as on_epoch:
        result = fit(model, (X, y), (X, y), TrainSettings(epochs=4, lr=1e-3, batch_size=16, seed=0), on_epoch=on_epoch)
    history = client.get_metric_history(run_id, EPOCH_VAL_LOSS_METRIC)
    assert [m.step for m in history] == [0, 1, 2, 3]
    assert [m.value for m in history] == pytest.approx(result.val_loss)


@pytest.mark.e2e
def test_every_trial_run_and_final_training_run_has_one_point_per_epoch_trained(
    prefect_api, home, series_csv, tmp_path
):
    config = write_config(tmp_path, series_csv, search={"n_trials": 4, "fidelity": "successive_halving", "eta": 2})
    summary = automl_pipeline(config_path=str(config), overrides=[])
    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny_lstm").experiment_id

    def children(parent: str, where: str = "") -> list:
        return client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'{where}", max_results=50)

    search = children(summary.pipeline_run_id, " and tags.`automl.stage` = 'search'")[0]
    trials = children(search.info.run_id)
    assert len(trials) == 4 and any(int(t.data.tags["automl.promotions"]) >= 1 for t in trials)
    for trial in trials:  # steps 0..n-1 across its rungs, the values its rungs' curves hold
        rungs = int(trial.data.metrics["rungs_reached"])
        curves = [client.get_metric_history(trial.info.run_id, f"val_loss_rung{k}") for k in range(rungs)]
        trained = [m.value for curve in curves for m in sorted(curve, key=lambda m: m.step)]
        live = client.get_metric_history(trial.info.run_id, EPOCH_VAL_LOSS_METRIC)
        assert [m.step for m in live] == list(range(len(trained))) and len(trained) >= 2
        assert [m.value for m in live] == pytest.approx(trained)
        assert len(client.get_metric_history(trial.info.run_id, EPOCH_TRAIN_LOSS_METRIC)) == len(trained)

    final = children(summary.pipeline_run_id, " and tags.`automl.stage` = 'final_train'")[0]
    assert EPOCH_VAL_LOSS_METRIC not in final.data.metrics  # on each training's run, not again on the stage's
    trainings = children(final.info.run_id)
    assert {"tuned", "default_config"} <= {t.data.tags["automl.final_training"] for t in trainings}
    for training in trainings:
        if "epochs_run" not in training.data.metrics:  # a training of no epochs (gbm rounds count as epochs)
            continue
        epochs_run = int(training.data.metrics["epochs_run"])
        for key in (EPOCH_VAL_LOSS_METRIC, EPOCH_TRAIN_LOSS_METRIC):
            assert [m.step for m in client.get_metric_history(training.info.run_id, key)] == list(range(epochs_run))


def test_the_trials_in_training_are_replaced_not_changed_so_a_copy_being_pickled_never_moves():
    from automl.tasks.search_stage.trial_runs import TrialsInTraining

    trials = TrialsInTraining()
    trials.started("a", 1, "run-1")
    before = trials._by_config
    trials.started("b", 2, "run-2")
    trials.started("a", 3, "run-3")  # the same config again, as a later trial
    trials.ended("a", 1, "run-1")  # the earlier trial's end leaves the later one's run
    assert before == {"a": (1, "run-1")}
    assert (trials.of("a"), trials.of("b"), trials.of("c")) == ((3, "run-3"), (2, "run-2"), None)
    trials.ended("a", 3, "run-3")
    assert trials.of("a") is None
