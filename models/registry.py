"""The registered model families: what each is called, the data it fits, its defaults, default search space and
parameter limits. Plain data, no torch: the config checks read it without loading torch, and a family's module
(with its torch code) is imported when a model is first built."""

from __future__ import annotations

from automl.models._family import COMMON_LIMITS, Builder, ModelFamily, ParamLimit

LSTM = ModelFamily(
    name="lstm",
    kind="series",
    build=Builder("automl.models.lstm"),
    defaults={"hidden_size": 64, "num_layers": 1, "dropout": 0.0, "lr": 1e-3, "batch_size": 64},
    default_space={
        "hidden_size": {"type": "int", "low": 64, "high": 256, "step": 64},
        "num_layers": {"type": "int", "low": 1, "high": 3},
        "dropout": {"type": "float", "low": 0.0, "high": 0.4},
        "lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    },
    limits={**COMMON_LIMITS, "hidden_size": ParamLimit("int", 1), "num_layers": ParamLimit("int", 1)},
)


TRANSFORMER = ModelFamily(
    name="transformer",
    kind="series",
    build=Builder("automl.models.transformer"),
    defaults={
        "d_model": 64,
        "nhead": 4,
        "num_layers": 2,
        "dim_feedforward": 128,
        "dropout": 0.1,
        "lr": 1e-3,
        "batch_size": 64,
    },
    default_space={
        "d_model": {"type": "categorical", "choices": [32, 64, 128]},
        "nhead": {"type": "categorical", "choices": [2, 4]},
        "num_layers": {"type": "int", "low": 1, "high": 3},
        "dim_feedforward": {"type": "int", "low": 64, "high": 256, "step": 64},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "lr": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128]},
    },
    limits={
        **COMMON_LIMITS,
        "d_model": ParamLimit("int", 1),
        "nhead": ParamLimit("int", 1),
        "num_layers": ParamLimit("int", 1),
        "dim_feedforward": ParamLimit("int", 1),
    },
)


MLP = ModelFamily(
    name="mlp",
    kind="tabular",
    build=Builder("automl.models.mlp"),
    tasks=("regression", "classification"),
    defaults={
        "hidden_size": 64,
        "num_layers": 2,
        "dropout": 0.1,
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 32,
    },
    default_space={
        "hidden_size": {"type": "int", "low": 32, "high": 256, "step": 32},
        "num_layers": {"type": "int", "low": 1, "high": 4},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    },
    limits={**COMMON_LIMITS, "hidden_size": ParamLimit("int", 1), "num_layers": ParamLimit("int", 1)},
)


GBM = ModelFamily(
    name="gbm",
    kind="any",
    build=Builder("automl.models.gbm"),
    tasks=("regression", "classification"),
    trains_itself=True,
    row_counts=("min_child_samples",),
    # LightGBM's own defaults: the default config is a default LightGBM (with early stopping on validation)
    defaults={
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_child_samples": 20,
        "feature_fraction": 1.0,
        "bagging_fraction": 1.0,
        "lambda_l1": 0.0,
        "lambda_l2": 0.0,
    },
    default_space={
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "num_leaves": {"type": "int", "low": 8, "high": 256, "log": True},
        "min_child_samples": {"type": "int", "low": 5, "high": 100, "log": True},
        "feature_fraction": {"type": "float", "low": 0.5, "high": 1.0},
        "bagging_fraction": {"type": "float", "low": 0.5, "high": 1.0},
        "lambda_l1": {"type": "float", "low": 1e-8, "high": 10.0, "log": True},
        "lambda_l2": {"type": "float", "low": 1e-8, "high": 10.0, "log": True},
    },
    limits={
        "learning_rate": ParamLimit("float", 0.0, 10.0, low_open=True),
        "num_leaves": ParamLimit("int", 2, 131072),
        "min_child_samples": ParamLimit("int", 1),
        "feature_fraction": ParamLimit("float", 0.0, 1.0, low_open=True),
        "bagging_fraction": ParamLimit("float", 0.0, 1.0, low_open=True),
        "lambda_l1": ParamLimit("float", 0.0),
        "lambda_l2": ParamLimit("float", 0.0),
    },
)


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (LSTM, TRANSFORMER, MLP, GBM)}

AUTO = "auto"  # model.family auto: the search picks the family too (search.families)


def families_for(kind: str) -> list[str]:
    """The families that fit ``kind`` of data (series or tabular), networks first: what ``auto`` searches by
    default."""
    return [f.name for f in FAMILIES.values() if f.kind in (kind, "any")]


def data_kind(family: str, time_column: str | None) -> str:
    """The kind of data a config of ``family`` (``auto`` included) trains on: its family's, or for ``auto`` and a
    family of any kind a series when there is a time column."""
    if family == AUTO:
        return "series" if time_column is not None else "tabular"
    return get_family(family).data_kind(time_column)


def get_family(name: str) -> ModelFamily:
    """The registered family called ``name``; ``KeyError`` names the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}") from None
