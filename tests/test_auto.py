"""``model.family: auto``, a search over families: the family is sampled first, then that family's own space, with
either backend; every trial (in Optuna and in MLflow) carries its family and only that family's params; the
summary says which family went on and its raw-data model scores raw rows; warm start queues past best configs of
every family it searches; configs auto cannot run are refused at the door with nothing created."""

from __future__ import annotations

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from automl.cli import main
from automl.models import get_family
from automl.tasks.search import ConditionalSpace, SearchSpace, make_backend
from automl.tasks.space import every_default, join_family, split_family
from tests.helpers import REPO, write_config

PENGUINS = REPO / "configs" / "data" / "penguins.csv"
TABLE = {"path": str(PENGUINS), "target": "species", "time_column": None}
QUICK = {"n_trials": 4, "epochs": 1, "fidelity": "none", "space": None}


def _branch_names(family: str) -> set[str]:
    return {"family", *(f"{family}.{name}" for name in get_family(family).default_space)}


@pytest.mark.parametrize(("backend", "sampler"), [("optuna", "tpe"), ("optuna", "random"), ("hyperopt", "tpe")])
def test_each_asked_config_has_its_family_and_only_that_familys_params(backend, sampler):
    families = ("lstm", "transformer", "gbm")  # lstm and transformer share names (lr, dropout) with other ranges
    space = ConditionalSpace("family", {f: SearchSpace.from_dict(get_family(f).default_space) for f in families})
    study = optuna.create_study()
    study.enqueue_trial(space.fit({}, every_default(["gbm", *families]))[0])  # a queued config comes first
    backend_ = make_backend(backend, sampler, study, space, seed=0, n_startup=3)
    seen = []
    for _ in range(12):
        trial = backend_.ask()
        family = trial.params["family"]
        assert set(trial.params) == _branch_names(family), trial.params
        seen.append(family)
        backend_.tell(trial, TrialState.COMPLETE, 1.0 if family == "gbm" else 2.0)
    assert seen[0] == "gbm" and set(seen) == set(families)
    if backend == "hyperopt":  # a resumed study reads its history back, conditional params included
        again = make_backend(backend, sampler, study, space, seed=1, n_startup=3)
        assert len(again._trials.trials) == 12 and set(again.ask().params) >= {"family"}
    family, own = split_family(study.trials[0].params, "auto")
    assert family == "gbm" and own == get_family("gbm").defaults | {"lambda_l1": 1e-8, "lambda_l2": 1e-8}
    assert join_family(family, own) == study.trials[0].params


def test_auto_on_a_table_searches_both_families_and_warm_starts_from_each(prefect_api, home, tmp_path):
    from automl.flows.pipeline import automl_pipeline

    # the two runs that seed it: two configs each, one final training (no ensemble, no baselines but naive)
    seed = {**QUICK, "n_trials": 2}
    final = {"epochs": 1, "patience": 1, "ensemble": {"top_k": 1}, "baselines": ["naive"]}
    quick = {"search": seed, "final": final, "data": TABLE}
    mlp = automl_pipeline(
        config_path=str(write_config(tmp_path, PENGUINS, name="p_mlp", model={"family": "mlp"}, **quick))
    )
    gbm = automl_pipeline(
        config_path=str(write_config(tmp_path, PENGUINS, name="p_gbm", model={"family": "gbm"}, **quick))
    )
    config = write_config(tmp_path, PENGUINS, name="p_auto", model={"family": "auto"}, **{**quick, "search": QUICK})
    # six trials: the default config of each family, the two queued past configs, two sampled
    summary = automl_pipeline(config_path=str(config), overrides=["search.n_trials=6", "final.epochs=2"])

    assert summary.model_family == "auto" and summary.family in ("mlp", "gbm")
    assert summary.to_json()["family"] == summary.family
    study = optuna.load_study(study_name=summary.study_name, storage=summary.storage)
    trials = study.get_trials(deepcopy=False)
    for trial in trials:  # the family and only its params, in the ledger...
        assert set(trial.params) == _branch_names(trial.params["family"]), trial.params
    assert {t.params["family"] for t in trials} == {"mlp", "gbm"}
    # ...the best configs of the mlp and the gbm runs were queued, each as a config of its own family
    queued = {t.user_attrs.get("source", "").removeprefix("warm_start:"): t.params for t in trials}
    assert queued[mlp.pipeline_run_id] == join_family("mlp", mlp.best_params)
    assert queued[gbm.pipeline_run_id] == join_family("gbm", gbm.best_params)
    assert summary.warm_start.enqueued == 2

    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("p_auto").experiment_id
    runs = client.search_runs([experiment], "tags.`automl.role` = 'trial'")
    assert len(runs) == len(trials)
    for run in runs:  # ...and in MLflow
        params = run.data.params
        family = params["family"]
        assert {k for k in params if "." in k} == _branch_names(family) - {"family"}, params
    # the family that went on is the family of the model registered; its raw-data model takes raw rows
    assert client.get_run(summary.pipeline_run_id).data.tags["automl.chosen_family"] == summary.family
    module = mlflow.pytorch.load_model(summary.model_uri)
    assert type(module).__name__ in ({"mlp": "MLP", "gbm": "GbmModel"}[summary.family], "Ensemble")
    model = mlflow.pyfunc.load_model(summary.model_uri)
    rows = pd.read_csv(PENGUINS).drop(columns=["species"]).head(7)
    out = model.predict(rows)
    assert len(out) == 7 and set(out["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["search.families=[mlp, xgboost]"], "search.families: unknown model family 'xgboost'; choose from mlp, gbm"),
        (["search.families=[lstm]"], "search.families: 'lstm' does not fit a table (no data.time_column)"),
        (["search.families=[]"], "search.families: empty; name at least one of mlp, gbm"),
        (["search.families=[gbm, gbm]"], "search.families: 'gbm' is listed twice"),
        (["search.families=[auto]"], "search.families: unknown model family 'auto'"),
        (["search.families=[../mlp]"], "search.families: unknown model family '../mlp'"),
        (["search.families=gbm"], "search.families: Input should be a valid list"),
        (["search.strategy=pbt", "search.fidelity=none"], "search.strategy: pbt trains one family's population"),
        (["search.sampler=cmaes"], "search.sampler: cmaes samples one fixed space"),
        (["search.sampler=grid"], "search.sampler: grid samples one fixed space"),
        (["search.lr_range=auto"], "search.lr_range: the range test narrows one network's lr"),
        (["search.space={lr: {type: float, low: 0.001, high: 0.1}}"], "search.space: model.family auto searches each"),
        (["model.params.lr=0.01"], "model.params: model.family auto searches each family's own parameters"),
        (["final.baselines=[seasonal_naive]"], "final.baselines: seasonal_naive forecasts a series"),
    ],
)
def test_what_auto_cannot_run_is_refused_at_the_door(overrides, expected, home, capsys):
    args = ["--set", "model.family=auto", "--set", "search.space=null"]
    args += [arg for override in overrides for arg in ("--set", override)]
    assert main(["run", str(REPO / "configs" / "mlp_tabular.yaml"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert not home.exists(), "a rejected run must not create the state folder"


def test_search_families_belongs_to_auto_and_lr_find_refuses_it(home, capsys):
    assert main(["run", str(REPO / "configs" / "mlp_tabular.yaml"), "--set", "search.families=[gbm]"]) == 2
    assert "search.families: applies to model.family auto (this config's family is mlp)" in capsys.readouterr().err
    args = ["lr-find", str(REPO / "configs" / "mlp_tabular.yaml"), "--set", "model.family=auto"]
    assert main([*args, "--set", "search.space=null"]) == 2
    err = capsys.readouterr().err
    assert "the range test sweeps one network's lr; auto searches several" in err and err.count("\n") == 1, err
    assert not home.exists()
