"""Ensemble selection and the ensemble as a registered model, without a pipeline: greedy selection with replacement
finds the known best mixture of hand-made predictions and keeps the best prefix of its picks; a selection that does
not validate better than the single model is not kept; an ensemble logged as a raw-data model predicts on raw rows
exactly what its members' mixture predicts (regression values, classification probabilities)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from automl.configs import load_config
from automl.models import ModelShape, build_model, get_family
from automl.models.ensemble import Ensemble
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.data_prep.preprocessing import preprocessing_from_dict
from automl.tasks.final_train import evaluation
from automl.tasks.final_train.ensemble import keep_ensemble, select_ensemble
from automl.tasks.registry.raw_model import PROBA_PREFIX, log_raw_model
from tests.helpers import write_config

RNG = np.random.default_rng(0)
Y = RNG.normal(size=200)
E = RNG.normal(size=200)  # one error direction: mixing along it can cancel it exactly


def _mse(mix: np.ndarray) -> float:
    return float(np.mean((mix - Y) ** 2))


def test_greedy_selection_finds_the_known_best_mixture_and_keeps_the_best_prefix():
    """a errs by +2e, b by -e, c by +5e: the mixture 1/3 a + 2/3 b has no error at all. Greedy selection picks b
    (the best single), then a, then b, reaching zero after three picks; 25 rounds later it keeps those three."""
    outputs = {"a": Y + 2 * E, "b": Y - E, "c": Y + 5 * E}
    selection = select_ensemble(outputs, _mse, rounds=25)
    assert selection.members == ["b", "a"]  # in order of the first pick; c never picked
    assert selection.weights == pytest.approx({"b": 2 / 3, "a": 1 / 3})
    assert selection.kept_rounds == 3 and len(selection.losses) == 25
    assert selection.val_loss == pytest.approx(0.0, abs=1e-12)
    assert selection.losses[0] == pytest.approx(_mse(outputs["b"]))
    assert min(selection.losses) == selection.val_loss  # the best prefix, never a later, worse one


def test_a_selection_that_does_not_validate_better_than_the_single_model_is_not_kept():
    """Every candidate errs the same way, so any mixture is worse than the best alone: the selection is the best
    single model, and it is kept only if that model is not the single chosen one and validates better."""
    outputs = {"tuned": Y + E, "member_3": Y + 3 * E, "default_config": Y + 2 * E}
    selection = select_ensemble(outputs, _mse, rounds=10)
    assert selection.weights == {"tuned": 1.0} and selection.kept_rounds == 1
    assert not keep_ensemble(selection, "tuned", _mse(outputs["tuned"]))
    # the single chosen model validates worse than the selection (it was the default config): kept
    assert keep_ensemble(selection, "default_config", _mse(outputs["default_config"]))
    # a selection equal to the single model's loss is not better: not kept
    mixed = select_ensemble({"a": Y + E, "b": Y - E}, _mse, rounds=4)
    assert mixed.val_loss == pytest.approx(0.0, abs=1e-12)
    assert not keep_ensemble(mixed, "a", mixed.val_loss)


def test_selection_ignores_candidates_whose_loss_is_not_finite():
    outputs = {"broken": np.full(200, np.nan), "ok": Y + E}
    selection = select_ensemble(outputs, _mse, rounds=5)
    assert selection.weights == {"ok": 1.0} and np.isfinite(selection.val_loss)


def _prepared(tmp_path, task: str):
    rng = np.random.default_rng(1)
    n = 160
    frame = pd.DataFrame({"x": rng.normal(size=n), "kind": rng.choice(["u", "v", "w"], n)})
    signal = frame["x"] + (frame["kind"] == "u")
    frame["y"] = (
        np.where(signal > 0.5, "high", np.where(signal > -0.5, "mid", "low")) if task == "classification" else signal
    )
    path = tmp_path / f"{task}.csv"
    frame.to_csv(path, index=False)
    config = write_config(
        tmp_path,
        path,
        name=task,
        model={"family": "mlp"},
        data={"path": str(path), "target": "y", "time_column": None, "task": task},
    )
    cfg = load_config(config)
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    return prepared


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_a_logged_ensemble_predicts_on_raw_rows_what_its_members_mixture_predicts(tmp_path, monkeypatch, task):
    monkeypatch.chdir(tmp_path)
    prepared = _prepared(tmp_path, task)
    family = get_family("mlp")
    shape = ModelShape(prepared.n_features, prepared.n_outputs)
    members = [build_model(family, shape, {**family.defaults, "hidden_size": h}, seed=s) for s, h in ((0, 16), (1, 32))]
    weights = [0.25, 0.75]
    ensemble = Ensemble(members, weights, classify=task == "classification")
    member_outputs = [evaluation.test_predictions(m, prepared) for m in members]
    mixture = weights[0] * member_outputs[0] + weights[1] * member_outputs[1]
    np.testing.assert_allclose(evaluation.test_predictions(ensemble, prepared), mixture, rtol=1e-5, atol=1e-6)
    # what selection mixes on validation is what the module's output gives the training loss
    loss = evaluation.mixture_loss(prepared, "cross_entropy" if task == "classification" else "mse")
    val_mix = sum(w * evaluation.validation_outputs(m, prepared) for w, m in zip(weights, members, strict=True))
    criterion = torch.nn.CrossEntropyLoss() if task == "classification" else torch.nn.MSELoss()
    target = torch.as_tensor(prepared.val.y, dtype=torch.long if task == "classification" else torch.float32)
    with torch.no_grad():
        module_loss = float(criterion(ensemble(torch.as_tensor(prepared.val.X, dtype=torch.float32)), target))
    assert loss(val_mix) == pytest.approx(module_loss, rel=1e-5)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run():
        info = log_raw_model(ensemble, preprocessing_from_dict(prepared.preprocessing), prepared.raw_test_input)
    served = mlflow.pyfunc.load_model(info.model_uri).predict(prepared.raw_test_input)
    if task == "classification":
        got = served[[f"{PROBA_PREFIX}{c}" for c in prepared.classes]].to_numpy()
        assert list(served["prediction"]) == [prepared.classes[i] for i in mixture.argmax(axis=1)]
    else:
        got = served["prediction"].to_numpy()[:, None]
    np.testing.assert_allclose(got, mixture, rtol=1e-5, atol=1e-6)
