"""Config validation: the shipped configs load, overrides apply, and every bad config is one line naming the key."""

from __future__ import annotations

import pytest
import yaml

from automl.configs import ConfigError, load_config, shipped_configs, validate_config
from automl.configs._schema import FloatParam, IntParam
from tests.helpers import REPO


def test_shipped_configs_validate_with_the_family_space():
    configs = {name: load_config(path) for name, path in shipped_configs().items()}
    assert set(configs) == {"lstm_baseline", "transformer_baseline", "mlp_tabular", "gbm_tabular"}
    lstm = configs["lstm_baseline"]
    space = lstm.search.space
    assert space["hidden_size"] == IntParam(type="int", low=64, high=256, step=64)
    assert space["num_layers"] == IntParam(type="int", low=1, high=3)
    assert space["dropout"] == FloatParam(type="float", low=0.0, high=0.4)
    assert space["lr"] == FloatParam(type="float", low=1e-4, high=5e-3, log=True)
    assert space["batch_size"].choices == [32, 64, 128]
    assert (lstm.training.optimizer, lstm.training.grad_clip, lstm.training.loss) == ("adam", 1.0, "mse")
    assert (lstm.search.epochs, lstm.final.epochs) == (5, 50)
    assert lstm.data.path == (REPO / "configs" / "data" / "co2_weekly.csv").resolve()
    assert configs["mlp_tabular"].search.space  # filled from the mlp family's default space


def test_fidelity_auto_follows_the_strategy_and_an_explicit_conflict_is_refused():
    """A shipped series config says fidelity auto: its sampled search runs Hyperband, and the same config under PBT
    (whose members train on all the data) runs at full fidelity without a second override."""
    assert load_config(REPO / "configs" / "lstm_baseline.yaml").search.fidelity == "hyperband"
    pbt = load_config(REPO / "configs" / "lstm_baseline.yaml", ["search.strategy=pbt"])
    assert (pbt.search.strategy, pbt.search.fidelity) == ("pbt", "none")
    shipped = REPO / "configs" / "lstm_baseline.yaml"
    assert load_config(shipped, ["search.fidelity=auto"]).search.fidelity == "hyperband"
    with pytest.raises(ConfigError, match=r"search\.fidelity: successive_halving does not apply to strategy pbt"):
        load_config(shipped, ["search.strategy=pbt", "search.fidelity=successive_halving"])


def test_overrides_are_yaml_scalars_and_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        REPO / "configs" / "lstm_baseline.yaml",
        [
            "search.n_trials=6",
            "search.timeout=2.5",
            "warm_start.enabled=false",
            "data.path=mine.csv",
            "search.space.lr.high=0.01",
        ],
    )
    assert cfg.search.n_trials == 6 and cfg.search.timeout == 2.5 and cfg.warm_start.enabled is False
    assert cfg.data.path == tmp_path / "mine.csv"
    assert cfg.search.space["lr"].high == 0.01


def test_the_season_and_the_baselines_each_family_gets():
    lstm = load_config(REPO / "configs" / "lstm_baseline.yaml")
    assert lstm.data.season == "auto"
    # series: also seasonal naive; every network: also a default LightGBM
    assert lstm.final.baselines == ["default_config", "naive", "seasonal_naive", "gbm"]
    assert load_config(REPO / "configs" / "lstm_baseline.yaml", ["data.season=12"]).data.season == 12
    listed = load_config(REPO / "configs" / "lstm_baseline.yaml", ["final.baselines=[naive]"])
    assert listed.final.baselines == ["naive"]  # a list given is the list run
    assert load_config(REPO / "configs" / "mlp_tabular.yaml").final.baselines == ["default_config", "naive", "gbm"]
    # the gbm family's default config is a default LightGBM; on a series it gets the seasonal-naive forecast too
    assert load_config(REPO / "configs" / "gbm_tabular.yaml").final.baselines == ["default_config", "naive"]
    on_series = load_config(REPO / "configs" / "lstm_baseline.yaml", ["model.family=gbm", "search.space=null"])
    assert on_series.final.baselines == ["default_config", "naive", "seasonal_naive"]
    with pytest.raises(ConfigError, match=r"final\.baselines: seasonal_naive forecasts a series; the tabular family"):
        load_config(REPO / "configs" / "mlp_tabular.yaml", ["final.baselines=[seasonal_naive]"])


def _base() -> dict:
    return yaml.safe_load((REPO / "configs" / "lstm_baseline.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.update(colour="blue"), "colour: unknown key"),
        (lambda c: c["search"].update(n_trails=3), "search.n_trails: unknown key"),
        (lambda c: c["search"].update(n_trials="many"), "search.n_trials: Input should be a valid integer"),
        (lambda c: c["search"]["space"]["dropout"].update(low=0.5), "search.space.dropout: low (0.5) must be < high"),
        (lambda c: c["search"]["space"]["lr"].update(low=0), "search.space.lr: low (0.0) must be > 0 when log"),
        (
            lambda c: c["search"]["space"]["batch_size"].update(choices=[]),
            "search.space.batch_size.choices: choices must not be empty",
        ),
        (
            lambda c: c["search"]["space"].update(width={"type": "int", "low": 1, "high": 2}),
            "search.space.width: not a parameter of lstm",
        ),
        (lambda c: c["search"]["space"].update(lr={"type": "loguniform"}), "search.space.lr: type must be one of"),
        (lambda c: c["search"].update(backend="ray"), "search.backend: Input should be 'optuna' or 'hyperopt'"),
        (lambda c: c["search"].update(sampler="anneal"), "sampler 'anneal' is not available for backend 'optuna'"),
        (lambda c: c["search"].update(fidelity="asha"), "search.fidelity: Input should be 'auto', 'none'"),
        (lambda c: c["search"].update(eta=1), "search.eta: must be >= 2"),
        (lambda c: c["search"].update(min_fraction=1.5), "search.min_fraction: must be in (0, 1]"),
        (lambda c: c["search"].update(sampler="grid"), "search.space.dropout: the grid sampler needs discrete"),
        (lambda c: c["search"].update(space={}), "search.space: the search space is empty"),
        (lambda c: c["model"].update(family="xgboost"), "model.family: unknown model family 'xgboost'"),
        (lambda c: c["data"].pop("target"), "data.target: required key is missing"),
        (lambda c: c["data"].update(time_column=None), "data.time_column: required for the time-series family"),
        (lambda c: c["data"].update(lookback=0), "data.lookback: Input should be greater than or equal to 1"),
        (lambda c: c["data"].update(season=0), "data.season: must be a positive integer or auto (got 0)"),
        (lambda c: c["data"].update(season=-1), "data.season: must be a positive integer or auto (got -1)"),
        (lambda c: c["data"].update(season=True), "data.season: "),  # refused, not taken as 1
        (lambda c: c["data"].update(season=1.5), "data.season: must be a positive integer or auto (got 1.5)"),
        (lambda c: c["data"].update(season=float("nan")), "data.season: nan is not a finite number"),
        (lambda c: c["data"].update(season=float("inf")), "data.season: inf is not a finite number"),
        (lambda c: c["data"].update(season="daily"), "data.season: must be a positive integer or auto (got 'daily')"),
        (lambda c: c["data"].update(season=None), "data.season: must be a positive integer or auto (got None)"),
        (lambda c: c["data"]["split"].update(train=0.9), "data.split: train + val + test must be 1"),
        (lambda c: c["model"].update(params={"lr": 0.1}), "search.space.lr: also fixed in model.params"),
    ],
)
def test_bad_configs_fail_with_one_line_naming_the_key(change, expected):
    raw = _base()
    change(raw)
    with pytest.raises(ConfigError) as info:
        validate_config(raw, source="x.yaml")
    message = str(info.value)
    assert message.startswith("x.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line \d"):
        load_config(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a config must be a mapping"):
        load_config(listed)
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        load_config(REPO / "configs" / "lstm_baseline.yaml", ["search.n_trials"])


def test_a_key_given_twice_is_refused_but_a_key_beside_a_merge_overrides_it_as_yaml_means(tmp_path):
    shipped = (REPO / "configs" / "lstm_baseline.yaml").read_text()
    merged = tmp_path / "merged.yaml"
    merged.write_text(shipped.replace("search:\n", "search:\n  <<: {n_trials: 3, eta: 4, epochs: 2}\n", 1))
    cfg = load_config(merged)
    assert (cfg.search.n_trials, cfg.search.eta, cfg.search.epochs) == (12, 3, 5)  # the shipped file's own keys
    doubled = tmp_path / "doubled.yaml"
    doubled.write_text(shipped.replace("  eta: 3\n", "  eta: 3\n  eta: 4\n", 1))
    line = doubled.read_text().splitlines().index("  eta: 4") + 1
    with pytest.raises(ConfigError, match=rf"doubled\.yaml: line {line}: duplicate key 'eta' \(first given at line"):
        load_config(doubled)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('"params": {"lr": 0.01, "lr": 0.1}', "duplicate key 'lr'"),
        ('"params": {"lr": NaN}', "NaN is not a number this file may hold"),
        ('"params": {"lr": 0.01}, "meta_features": {"rows": Infinity}', "Infinity is not a number this file may hold"),
    ],
)
def test_a_transferred_config_with_a_repeated_key_or_a_non_finite_number_is_refused(tmp_path, text, problem):
    from automl.configs import ConfigError, load_transferred_config

    path = tmp_path / "best.json"
    path.write_text('{"model_family": "lstm", "task_type": "regression", ' + text + "}")
    with pytest.raises(ConfigError) as error:
        load_transferred_config(path)
    assert str(error.value) == f"{path}: {problem}"
