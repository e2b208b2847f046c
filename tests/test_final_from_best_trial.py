"""Promote, don't retrain: an evaluation on all the data keeps its best epoch's weights, and the final training
continues from them (its first validation loss is the trial's best) unless ``final.init`` says scratch."""

from __future__ import annotations

import pytest

from configs import load_config
from models import get_family, loss_for
from tasks.data_prep import DataPrepJob, load_and_check, prepare
from tasks.final_train import FinalTrainJob, _start_from, train_config
from tasks.trainer_objective import TrainerObjective, trial_weights_path
from tests.helpers import write_config

PARAMS = {"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "lr": 0.01, "batch_size": 32}


@pytest.fixture
def prepared_and_config(series_csv, tmp_path):
    cfg = load_config(write_config(tmp_path, series_csv, final={"epochs": 4, "patience": 2}))
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    return prepared, cfg


def test_the_final_training_starts_where_the_best_trial_ended(prepared_and_config, tmp_path):
    prepared, cfg = prepared_and_config
    family = get_family("lstm")
    objective = TrainerObjective(
        "lstm", prepared, dict(family.defaults), epochs=3, loss=loss_for(prepared.task), weights_dir=tmp_path / "w"
    )
    low = objective(PARAMS, 1 / 3)
    assert not trial_weights_path(tmp_path / "w", PARAMS).exists()  # only evaluations on all the data keep theirs
    full = objective(PARAMS, 1.0)
    weights = trial_weights_path(tmp_path / "w", PARAMS)
    assert weights.is_file() and low.loss != full.loss

    job = FinalTrainJob.of(cfg)
    assert _start_from(job, str(weights)) == weights
    _, fitted = train_config(job, prepared, PARAMS, start_from=_start_from(job, str(weights)))
    assert fitted.start_val_loss == pytest.approx(full.loss, rel=1e-5)  # the trial's best epoch, exactly
    assert fitted.best_val_loss <= fitted.start_val_loss  # training on only keeps a better epoch

    scratch = FinalTrainJob.of(load_config(write_config(tmp_path, cfg.data.path, final={"init": "scratch"})))
    assert _start_from(scratch, str(weights)) is None
    _, fresh = train_config(scratch, prepared, PARAMS)
    assert fresh.start_val_loss is None and fresh.val_loss[0] > full.loss  # one epoch from scratch is worse
    assert _start_from(job, str(tmp_path / "missing.pt")) is None  # no weights kept: from scratch, said in the log
