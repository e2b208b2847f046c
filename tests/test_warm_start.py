"""Warm start: how foreign configs are fitted into a space, how past runs are ranked, and which are compatible.
Past runs are real MLflow runs in a throwaway SQLite store."""

from __future__ import annotations

import json
import math

import mlflow
import pytest

from automl.configs import load_config
from automl.tasks.runtime.state import local_state
from automl.tasks.search import SearchSpace
from automl.tasks.space import search_space
from automl.tasks.tracking.catalog import FAMILY, META_FEATURES, ROLE, SPACE_SIGNATURE, TASK_TYPE
from automl.tasks.tracking.runs import configure_mlflow, ensure_experiment
from automl.tasks.warm_start.decision import Candidate, choose, meta_distance
from automl.tasks.warm_start.stage import WarmStartJob, decide_warm_start
from tests.helpers import REPO

SPACE = SearchSpace.from_dict(
    {
        "hidden_size": {"type": "int", "low": 64, "high": 256, "step": 64},
        "num_layers": {"type": "int", "low": 1, "high": 3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.4},
        "lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    }
)
DEFAULTS = {"hidden_size": 64, "num_layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 64}


def test_a_config_inside_the_space_is_kept_as_it_is():
    params = {"hidden_size": 128, "num_layers": 2, "dropout": 0.1, "lr": 1e-3, "batch_size": 32}
    assert SPACE.fit(params, DEFAULTS) == (params, [])


def test_adaptation_rules_drop_fill_clip_snap_and_say_so():
    fitted, notes = SPACE.fit(
        {"hidden_size": 100, "num_layers": 5, "dropout": -0.2, "lr": 0.5, "batch_size": 50, "momentum": 0.9},
        DEFAULTS,
    )
    assert fitted == {"hidden_size": 128, "num_layers": 3, "dropout": 0.0, "lr": 5e-3, "batch_size": 64}
    text = "\n".join(notes)
    assert "momentum: not in this search space; dropped" in text
    assert "hidden_size: snapped to step 64 -> 128" in text
    assert "num_layers: 5 is outside [1, 3]; clipped -> 3" in text
    assert "lr: 0.5 is outside [0.0001, 0.005]; clipped -> 0.005" in text
    assert "batch_size: 50 is not a choice; snapped to nearest choice 64" in text
    fitted, notes = SPACE.fit({"hidden_size": 192, "num_layers": 2.6, "batch_size": "128"}, DEFAULTS)
    assert fitted["num_layers"] == 3 and fitted["batch_size"] == 128
    assert fitted["dropout"] == 0.0 and fitted["lr"] == 1e-3  # filled from the defaults
    assert any(n.startswith("dropout: missing; filled with the default 0.0") for n in notes)


def test_distance_compares_shared_meta_features_with_sizes_on_a_log_scale():
    a = {"n_rows": 1000, "acf_1": 0.9, "target_mean": 300.0}
    assert meta_distance(a, a) == 0
    assert meta_distance(a, {**a, "target_mean": 1.0}) == 0  # units-dependent features never count
    one_decade = meta_distance({"n_rows": 999}, {"n_rows": 9999})
    assert one_decade == pytest.approx(1.0, abs=0.01)
    assert meta_distance(a, {"n_rows": 1000, "acf_1": 0.5}) == pytest.approx(math.sqrt(0.4**2 / 2))
    assert meta_distance({"acf_1": 0.9}, {"class_balance": 0.5}) == math.inf


def _candidate(run_id, distance, val_loss, params, source="similar"):
    return Candidate(run_id=run_id, source=source, distance=distance, val_loss=val_loss, params=params)


def test_choose_ranks_explicit_first_then_by_distance_and_keeps_top_k_distinct():
    same = {"hidden_size": 128, "num_layers": 2, "dropout": 0.1, "lr": 1e-3, "batch_size": 32}
    near_dup = {**same, "hidden_size": 130}  # snaps to 128: a duplicate once adapted
    candidates = [
        _candidate("far", 0.9, 0.01, {**same, "num_layers": 1}),
        _candidate("near", 0.1, 0.05, same),
        _candidate("near-dup", 0.2, 0.02, near_dup),
        _candidate("mid", 0.5, 0.03, {**same, "num_layers": 3}),
        _candidate("mine", None, None, {**same, "batch_size": 128}, source="from_file"),
    ]
    ranked = choose(candidates, SPACE, DEFAULTS, top_k=2)
    verdicts = {c.run_id: c.verdict for c in ranked}
    assert [c.run_id for c in ranked][:2] == ["mine", "near"]
    assert verdicts["mine"] == "queued" and verdicts["near"] == "queued"
    assert verdicts["near-dup"] == "duplicate of near after adaptation"
    assert verdicts["mid"] == "queued"  # explicit sources do not use up top_k
    assert verdicts["far"] == "not chosen: beyond top_k=2"


def _past_run(experiment_id, family, task, meta, best, val_loss, space=SPACE):
    tags = {
        ROLE: "pipeline",
        FAMILY: family,
        TASK_TYPE: task,
        META_FEATURES: json.dumps(meta),
        SPACE_SIGNATURE: json.dumps(space.signature()),
    }
    with mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        mlflow.log_dict(best, "best_config.json")
        mlflow.log_metric("best_val_loss", val_loss)
    return run.info.run_id


def test_only_compatible_runs_are_offered_and_the_closest_come_first(home):
    configure_mlflow(local_state())
    experiment = ensure_experiment("past", local_state())
    meta = {"n_rows": 2284.0, "acf_1": 0.99, "seasonality_strength": 0.9}
    best = {"hidden_size": 128, "num_layers": 2, "dropout": 0.1, "lr": 1e-3, "batch_size": 32}
    close = _past_run(experiment, "lstm", "regression", {**meta, "acf_1": 0.95}, best, 0.01)
    far = _past_run(experiment, "lstm", "regression", {**meta, "n_rows": 50.0}, {**best, "num_layers": 1}, 0.001)
    lstm_other_task = _past_run(experiment, "lstm", "classification", meta, best, 0.01)
    mlp = _past_run(experiment, "mlp", "regression", meta, {"hidden_size": 64}, 0.01)

    cfg = load_config(REPO / "configs" / "lstm_baseline.yaml", ["warm_start.top_k=1"])
    decision = decide_warm_start(WarmStartJob.of(cfg), meta, "regression", SPACE, exclude_run_id="current")
    considered = {c.run_id: c for c in decision.candidates}
    assert set(considered) == {close, far}  # same family and task type only
    assert considered[close].verdict == "queued" and decision.source_run_ids == [close]
    assert considered[far].verdict == "not chosen: beyond top_k=1"
    assert considered[close].distance < considered[far].distance

    mlp_cfg = load_config(REPO / "configs" / "mlp_tabular.yaml", [f"warm_start.from_runs=[{close}]"])
    mlp_space = search_space(mlp_cfg.search.space)
    decision = decide_warm_start(WarmStartJob.of(mlp_cfg), {}, "classification", mlp_space, exclude_run_id="current")
    verdicts = {c.run_id: c.verdict for c in decision.candidates}
    assert verdicts[close].startswith("rejected: it is a lstm/regression run")  # an MLP never gets an LSTM config
    assert lstm_other_task not in verdicts and mlp not in verdicts and not decision.queued
