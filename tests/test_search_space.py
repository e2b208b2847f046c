"""One search space, two backends: Optuna distributions and hyperopt expressions agree on bounds, scale, steps
and choices."""

from __future__ import annotations

import math

import numpy as np
import optuna.distributions as od
import pytest
from hyperopt.pyll import stochastic

from automl.tasks.search import SearchSpace

SPEC = {
    "units": {"type": "int", "low": 64, "high": 256, "step": 64},
    "layers": {"type": "int", "low": 1, "high": 3},
    "width": {"type": "int", "low": 2, "high": 512, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.4},
    "lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
    "momentum": {"type": "float", "low": 0.5, "high": 0.9, "step": 0.1},
    "batch": {"type": "categorical", "choices": [32, 64, 128]},
    "act": {"type": "categorical", "choices": ["relu", "gelu"]},
}


@pytest.fixture(scope="module")
def draws():
    space = SearchSpace.from_dict(SPEC)
    rng = np.random.default_rng(0)
    expr = space.hyperopt_space()
    return space, [space.from_hyperopt(stochastic.sample(expr, rng)) for _ in range(3000)]


def test_optuna_distributions_match_the_spec():
    d = SearchSpace.from_dict(SPEC).optuna_distributions()
    assert d["units"] == od.IntDistribution(64, 256, step=64)
    assert d["layers"] == od.IntDistribution(1, 3)
    assert d["width"] == od.IntDistribution(2, 512, log=True)
    assert d["dropout"] == od.FloatDistribution(0.0, 0.4)
    assert d["lr"] == od.FloatDistribution(1e-4, 5e-3, log=True)
    assert d["momentum"] == od.FloatDistribution(0.5, 0.9, step=0.1)
    assert d["batch"] == od.CategoricalDistribution([32, 64, 128])
    assert d["act"] == od.CategoricalDistribution(["relu", "gelu"])


def test_every_hyperopt_draw_lies_in_the_optuna_distribution(draws):
    space, samples = draws
    dists = space.optuna_distributions()
    for sample in samples:
        for name, value in sample.items():
            assert dists[name]._contains(dists[name].to_internal_repr(value)), (name, value)


def test_hyperopt_reaches_every_grid_point_and_choice(draws):
    _, samples = draws
    values = {name: {s[name] for s in samples} for name in SPEC}
    assert values["units"] == {64, 128, 192, 256}
    assert values["layers"] == {1, 2, 3}
    assert values["batch"] == {32, 64, 128}
    assert values["act"] == {"relu", "gelu"}
    assert {round(v, 6) for v in values["momentum"]} == {0.5, 0.6, 0.7, 0.8, 0.9}
    assert all(isinstance(v, int) for v in values["width"] | values["units"])


def test_hyperopt_scales_match(draws):
    _, samples = draws
    lr = np.array([s["lr"] for s in samples])
    dropout = np.array([s["dropout"] for s in samples])
    width = np.array([s["width"] for s in samples])
    # log-uniform: the median sits at the geometric middle; uniform: at the arithmetic middle
    assert np.median(lr) == pytest.approx(math.sqrt(1e-4 * 5e-3), rel=0.15)
    assert np.median(dropout) == pytest.approx(0.2, abs=0.02)
    assert np.median(width) == pytest.approx(math.sqrt(2 * 512), rel=0.2)
    assert lr.min() >= 1e-4 and lr.max() <= 5e-3 and width.min() >= 2 and width.max() <= 512


def test_raw_values_round_trip():
    space = SearchSpace.from_dict(SPEC)
    params = {
        "units": 192,
        "layers": 2,
        "width": 37,
        "dropout": 0.13,
        "lr": 1e-3,
        "momentum": 0.7,
        "batch": 128,
        "act": "gelu",
    }
    assert space.from_hyperopt(space.to_hyperopt_vals(params)) == pytest.approx(params)


def test_grid_and_signature():
    space = SearchSpace.from_dict({k: SPEC[k] for k in ("units", "layers", "batch")})
    assert space.is_discrete()
    assert space.grid() == {"units": [64, 128, 192, 256], "layers": [1, 2, 3], "batch": [32, 64, 128]}
    assert space.signature()["units"] == {"type": "int", "low": 64, "high": 256, "log": False, "step": 64}
    assert not SearchSpace.from_dict(SPEC).is_discrete()
