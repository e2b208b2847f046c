"""What a model family is: a name, the kind of data it fits, a builder, default params and a default search space."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DataKind = Literal["series", "tabular"]
FamilyKind = Literal["series", "tabular", "any"]  # "any": the data's kind decides (a time column makes a series)

# Parameters the trainer reads; every other parameter goes to the family's builder.
TRAINING_PARAMS = frozenset({"lr", "batch_size", "weight_decay"})
# Parameters that may change while a model trains (population-based training perturbs them); the others shape the
# architecture and are fixed for a model's life.
MUTABLE_PARAMS = frozenset({*TRAINING_PARAMS, "dropout"})


@dataclass(frozen=True)
class ParamLimit:
    """The values a parameter can take: integers or floats in [low, high] (an open end when ``*_open``)."""

    kind: Literal["int", "float"]
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{'an integer' if self.kind == 'int' else 'a number'} in {left}{low}, {high}{right}"

    def admits(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


# Limits of the parameters several families share (each family adds those of its builder).
COMMON_LIMITS = {
    "lr": ParamLimit("float", 0.0, 10.0, low_open=True),
    "batch_size": ParamLimit("int", 1),
    "weight_decay": ParamLimit("float", 0.0),
    "dropout": ParamLimit("float", 0.0, 1.0, high_open=True),
}


@dataclass(frozen=True)
class ModelShape:
    """Sizes a builder needs: inputs per step (or per row), outputs, and the window length for series."""

    n_features: int
    n_outputs: int
    lookback: int | None = None


@dataclass(frozen=True)
class Builder:
    """A family's builder by module name: ``module.build(shape, params)``, imported on the first call, so that
    describing a family (and checking a config against it) does not load torch."""

    module: str

    def __call__(self, shape: ModelShape, params: Mapping[str, Any]) -> Any:
        return importlib.import_module(self.module).build(shape, params)


@dataclass(frozen=True)
class ModelFamily:
    """A model family: ``build(shape, params)`` returns an untrained ``torch.nn.Module``.

    ``defaults`` is a complete config (the "default config" baseline); ``default_space`` uses the same
    YAML shape as ``search.space`` in a pipeline config. ``kind`` "any" fits tables and series (``data_kind``).
    ``trains_itself``: the model has its own training loop (``fit_rounds``: trees, not gradient steps), so the
    trainer's lr, batch size and optimiser do not apply, nor do population-based training and the LR range test.
    """

    name: str
    kind: FamilyKind
    build: Callable[[ModelShape, Mapping[str, Any]], Any]
    defaults: Mapping[str, Any]
    default_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("regression",)
    limits: Mapping[str, ParamLimit] = field(default_factory=dict)  # what each parameter can take
    trains_itself: bool = False
    # Params that count training rows (a leaf's minimum): at a data fraction f they are f of their value, so a
    # config at a low rung is the same model at a smaller scale, not one that cannot split at all.
    row_counts: tuple[str, ...] = ()

    def data_kind(self, time_column: str | None) -> DataKind:
        """The kind of data this family fits given the config's ``data.time_column``: its own kind, or for a family
        of any kind a series when there is a time column and a table when there is none."""
        if self.kind != "any":
            return self.kind
        return "series" if time_column is not None else "tabular"
