"""What a model family is: a name, the kind of data it fits, a builder, default params and a default search space."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

DataKind = Literal["series", "tabular"]

# Parameters the trainer reads; every other parameter goes to the family's builder.
TRAINING_PARAMS = frozenset({"lr", "batch_size", "weight_decay"})


@dataclass(frozen=True)
class ModelShape:
    """Sizes a builder needs: inputs per step (or per row), outputs, and the window length for series."""

    n_features: int
    n_outputs: int
    lookback: int | None = None


@dataclass(frozen=True)
class ModelFamily:
    """A model family: ``build(shape, params)`` returns an untrained ``torch.nn.Module``.

    ``defaults`` is a complete config (the "default config" baseline); ``default_space`` uses the same
    YAML shape as ``search.space`` in a pipeline config.
    """

    name: str
    kind: DataKind
    build: Callable[[ModelShape, Mapping[str, Any]], Any]
    defaults: Mapping[str, Any]
    default_space: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("regression",)
