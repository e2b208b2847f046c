"""The gbm family (LightGBM): a trial promoted to the next rung continues the same trees (more trees on more rows),
or retrains when continuation is off, as the engine does for the networks; early stopping keeps the best trees; a
refit boosts as many rounds as the tested trees; configs the family cannot run are refused at the door. The
raw-data model of a gbm reproduces the final stage's test predictions in tests/test_model_use.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from automl.cli import main
from automl.configs import load_config
from automl.models import ModelShape, TrainSettings, build_model, fit, get_family, predict
from automl.models.gbm import TREES_PER_EPOCH, GbmModel
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.search_stage.checkpoints import trial_weights_path
from automl.tasks.search_stage.objective import TrainerObjective
from tests.helpers import REPO, write_config

PARAMS = {"learning_rate": 0.1, "num_leaves": 8, "min_child_samples": 5}
GBM_TABULAR = str(REPO / "configs" / "gbm_tabular.yaml")


@pytest.fixture
def prepared(series_csv, tmp_path):
    cfg = load_config(write_config(tmp_path, series_csv, model={"family": "gbm"}, search={"space": None}))
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    return prepared


def _objective(prepared, tmp_path, rungs: bool = True) -> TrainerObjective:
    return TrainerObjective(
        "gbm",
        prepared,
        dict(get_family("gbm").defaults),
        epochs=2,
        loss="mse",
        seed=3,
        threads=1,
        weights_dir=tmp_path / "weights",
        rung_dir=tmp_path / "rungs" if rungs else None,
    )


def _model(prepared, path) -> GbmModel:
    model = build_model(get_family("gbm"), ModelShape(prepared.n_features, prepared.n_outputs, 8), PARAMS, 0)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def test_a_gbm_trial_promoted_to_the_next_rung_adds_trees_to_the_same_model(prepared, tmp_path):
    objective = _objective(prepared, tmp_path)
    low = objective(PARAMS, 1 / 3)
    assert low.continued_from is None and 1 <= len(low.curve) <= 2
    rung_files = list((tmp_path / "rungs").glob("*.pt"))
    assert len(rung_files) == 1
    kept = torch.load(rung_files[0], map_location="cpu", weights_only=False)
    rung_model = build_model(get_family("gbm"), ModelShape(prepared.n_features, prepared.n_outputs, 8), PARAMS, 0)
    rung_model.load_state_dict(kept["model"])
    high = objective(PARAMS, 1.0)
    assert high.continued_from == pytest.approx(1 / 3)
    assert high.loss <= low.loss  # the rung's trees stand unless more trees validate better
    full = _model(prepared, trial_weights_path(tmp_path / "weights", PARAMS))
    assert full.trees > rung_model.trees > 0  # more trees...
    x_val = full._features(prepared.val.X)  # the trees' inputs: the windows relative to their last step
    # each output's booster: its first trees are the rung's (its own count)
    first = [
        b.predict(x_val, raw_score=True, num_iteration=r.current_iteration())
        for b, r in zip(full.boosters, rung_model.boosters, strict=True)
    ]
    rung = [b.predict(x_val, raw_score=True) for b in rung_model.boosters]
    np.testing.assert_allclose(np.stack(first), np.stack(rung), rtol=1e-6, atol=1e-9)  # ...on the same trees
    scratch = _objective(prepared, tmp_path / "off", rungs=False)
    scratch(PARAMS, 1 / 3)
    assert scratch(PARAMS, 1.0).continued_from is None  # continuation off: each rung boosts from nothing


def test_gbm_stops_early_keeps_the_best_trees_and_a_refit_boosts_the_rounds_asked(prepared):
    family = get_family("gbm")
    shape = ModelShape(prepared.n_features, prepared.n_outputs, 8)
    model = build_model(family, shape, {**family.defaults, "learning_rate": 0.3, "min_child_samples": 2}, 0)
    settings = TrainSettings.of(family.defaults, epochs=12, loss="mse", patience=1)
    train, val = (prepared.train.X, prepared.train.y), (prepared.val.X, prepared.val.y)
    result = fit(model, train, val, settings)
    assert result.stopped_early and len(result.val_loss) < 12  # an overfitting config stops
    assert result.best_val_loss <= min(result.val_loss)  # each booster keeps its best round, not an epoch's end
    assert model.trees <= (result.best_epoch + 1) * TREES_PER_EPOCH
    out = torch.as_tensor(predict(model, prepared.val.X))
    assert float(torch.nn.MSELoss()(out, torch.as_tensor(prepared.val.y, dtype=torch.float32))) == pytest.approx(
        result.best_val_loss, rel=1e-5
    )  # the kept trees are the best epoch's
    refit = build_model(family, shape, family.defaults, 0)
    fit(refit, train, val, TrainSettings.of(family.defaults, epochs=1, rounds=37, loss="mse"), restore_best=False)
    assert refit.trees == 37


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--set", "search.strategy=pbt", "--set", "search.fidelity=none"],
            "search.strategy: pbt perturbs a network's learning rate",
        ),
        (["--set", "search.lr_range=auto"], "search.lr_range: the range test sweeps a network's lr; gbm has none"),
        (["--set", "final.baselines=[gbm, naive]"], "final.baselines: gbm (a default LightGBM) is the gbm family's"),
        (["--set", "model.params.num_leaves=1"], "model.params.num_leaves: 1 is out of range"),
        (["--set", "model.params.bagging_fraction=0"], "model.params.bagging_fraction: 0 is out of range"),
        (["--set", "model.params.learning_rate=true"], "model.params.learning_rate: True is not a number"),
        (["--set", "search.space.lr={type: float, low: 0.001, high: 0.1}"], "search.space.lr: not a parameter of gbm"),
        (
            ["--set", "data.time_column=island", "--set", "data.target=body_mass_g", "--set", "data.lookback=400"],
            "data.time_column: column 'island' is not a date/time",
        ),
    ],
)
def test_what_gbm_cannot_run_is_refused_at_the_door(args, expected, home, capsys):
    assert main(["run", GBM_TABULAR, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert not home.exists(), "a rejected run must not create the state folder"


def test_lags_longer_than_the_series_are_refused_at_the_door(series_csv, home, tmp_path, capsys):
    config = write_config(tmp_path, series_csv, model={"family": "gbm"}, data={"lookback": 400}, search={"space": None})
    assert main(["run", str(config)]) == 2
    err = capsys.readouterr().err
    assert "too few rows" in err and "lookback 400" in err and err.count("\n") == 1, err
    assert not home.exists()


def test_the_range_test_refuses_a_tree_family(home, capsys):
    assert main(["lr-find", GBM_TABULAR]) == 2
    err = capsys.readouterr().err
    assert "the range test sweeps a network's lr; gbm boosts trees" in err and err.count("\n") == 1, err
    assert not home.exists()
