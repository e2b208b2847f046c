"""One search space, two compilations: Optuna distributions and hyperopt ``hp.*`` expressions with the same
bounds, scales, steps and choices; plus fitting foreign configs into the space (warm start).

The library's own types: a ``Dimension`` per parameter, built from a plain mapping (``Dimension.from_dict``, the
shape of a config file's ``search.space`` entry). The pipeline converts its validated config at the edge
(``tasks/space.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna.distributions as od

# Keeps hyperopt's rounded index strictly inside [0, K-1] (np.round rounds halves to even).
_EDGE = 1e-6


@dataclass(frozen=True)
class Dimension:
    """One searched parameter."""

    name: str
    kind: str  # int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> Dimension:
        """A dimension from ``{"type": "int" | "float", "low", "high", "step"?, "log"?}`` or
        ``{"type": "categorical", "choices": [...]}`` (already validated: the pipeline checks configs at the door).

        Example:
            >>> Dimension.from_dict("lr", {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}).log
            True
        """
        kind = spec.get("type")
        if kind == "categorical":
            return cls(name, "categorical", choices=tuple(spec["choices"]))
        if kind in ("int", "float"):
            step = spec.get("step", 1 if kind == "int" else None)
            return cls(name, kind, spec["low"], spec["high"], step, bool(spec.get("log", False)))
        raise ValueError(f"{name}: unknown parameter type {kind!r}; use int, float or categorical")

    @property
    def n_steps(self) -> int | None:
        """Number of grid points for stepped dimensions, else None."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.step is None or self.log:
            return None
        return int(round((self.high - self.low) / self.step)) + 1

    def to_optuna(self) -> od.BaseDistribution:
        if self.kind == "int":
            return od.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        if self.kind == "float":
            return od.FloatDistribution(self.low, self.high, step=self.step, log=self.log)
        return od.CategoricalDistribution(self.choices)

    def to_hyperopt(self) -> Any:
        """A hyperopt expression whose raw draw maps to a value with ``from_hyperopt``."""
        from hyperopt import hp  # only hyperopt searches pay for importing it (see HyperoptBackend)

        n = self.n_steps
        if self.kind == "categorical":
            return hp.choice(self.name, list(range(len(self.choices))))
        if n is not None:  # stepped int/float: a quantised index 0..n-1 keeps the grid anchored at low
            return hp.quniform(self.name, -0.5 + _EDGE, n - 0.5 - _EDGE, 1)
        if self.kind == "int":  # log int (step 1)
            return hp.qloguniform(self.name, math.log(self.low - 0.5 + _EDGE), math.log(self.high + 0.5 - _EDGE), 1)
        if self.log:
            return hp.loguniform(self.name, math.log(self.low), math.log(self.high))
        return hp.uniform(self.name, self.low, self.high)

    def from_hyperopt(self, raw: Any) -> Any:
        """Value of this dimension for hyperopt's raw draw (an index for choices and grids)."""
        raw = float(raw)
        n = self.n_steps
        if self.kind == "categorical":
            return self.choices[int(raw)]
        if n is not None:
            index = min(max(int(round(raw)), 0), n - 1)
            return self._grid_value(index)
        if self.kind == "int":
            return int(min(max(round(raw), self.low), self.high))
        return float(min(max(raw, self.low), self.high))

    def to_hyperopt_raw(self, value: Any) -> float:
        """Raw hyperopt draw that maps back to ``value`` (for seeding history)."""
        n = self.n_steps
        if self.kind == "categorical":
            return float(self.choices.index(value))
        if n is not None:
            return float(round((float(value) - self.low) / self.step))
        return float(value)

    def suggest(self, trial: Any) -> Any:
        """This dimension's value for an asked Optuna trial (define-by-run: an enqueued value is used as it is)."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def fit(self, value: Any) -> tuple[Any, str | None]:
        """``value`` moved into this dimension (clipped, snapped, matched) and a note when it had to move."""
        if self.kind == "categorical":
            if value in self.choices:
                return value, None
            numeric = [c for c in self.choices if isinstance(c, int | float) and not isinstance(c, bool)]
            if isinstance(value, int | float) and not isinstance(value, bool) and numeric:
                nearest = min(numeric, key=lambda c: abs(c - value))
                return nearest, f"{value!r} is not a choice; snapped to nearest choice {nearest!r}"
            text = [c for c in self.choices if str(c) == str(value)]
            if text:
                return text[0], None
            return self.choices[0], f"{value!r} is not a choice; replaced by {self.choices[0]!r}"
        try:
            number = float(value)
        except (TypeError, ValueError):
            middle = self._grid_value((self.n_steps - 1) // 2) if self.n_steps else (self.low + self.high) / 2
            return self._cast(middle), f"{value!r} is not a number; replaced by {self._cast(middle)!r}"
        notes = []
        clipped = min(max(number, self.low), self.high)
        if clipped != number:
            notes.append(f"{value!r} is outside [{self._cast(self.low)}, {self._cast(self.high)}]; clipped")
        if self.n_steps is not None:
            snapped = self._grid_value(int(round((clipped - self.low) / self.step)))
            if not math.isclose(snapped, clipped, rel_tol=1e-9, abs_tol=1e-12):
                notes.append(f"snapped to step {self._cast(self.step)}")
            clipped = snapped
        result = self._cast(clipped)
        if self.kind == "int" and result != clipped:
            notes.append("rounded to an integer")
        return result, ("; ".join(notes) + f" -> {result!r}") if notes else None

    def sample(self, rng: np.random.Generator) -> Any:
        """A value drawn uniformly (log-uniformly when ``log``) from this dimension, on its grid."""
        if self.kind == "categorical":
            return self.choices[int(rng.integers(len(self.choices)))]
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        return self.fit(value)[0]

    def perturb(self, value: Any, factor: float) -> Any:
        """``value`` scaled by ``factor`` and moved back into the dimension; a choice moves to the next one up
        (``factor`` > 1) or down (PBT's explore step, as Ray Tune's PopulationBasedTraining perturbs)."""
        if factor == 1:
            return value
        up = 1 if factor > 1 else -1
        if self.kind == "categorical":  # in the order the choices are listed
            index = self.choices.index(value) if value in self.choices else 0
            return self.choices[min(max(index + up, 0), len(self.choices) - 1)]
        moved, _ = self.fit(float(value) * factor)
        if moved == value and self.step is not None and not self.log:  # a value that snaps back moves one step
            moved, _ = self.fit(value + self.step * up)
        elif moved == value and self.kind == "int":  # a small integer that rounds back moves by one
            moved, _ = self.fit(value + up)
        return moved

    def grid(self) -> list[Any]:
        """All values of a discrete dimension (for the grid sampler)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.n_steps is None:
            if self.kind == "int":
                return list(range(int(self.low), int(self.high) + 1))
            raise ValueError(f"{self.name}: a continuous float has no grid")
        return [self._grid_value(i) for i in range(self.n_steps)]

    def signature(self) -> dict[str, Any]:
        sig: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            sig["choices"] = list(self.choices)
        else:
            sig.update(low=self.low, high=self.high, log=self.log, step=self.step)
        return sig

    def _grid_value(self, index: int) -> Any:
        return self._cast(min(self.low + index * self.step, self.high))

    def _cast(self, value: float) -> Any:
        return int(round(value)) if self.kind == "int" else float(value)


class SearchSpace:
    """An ordered set of ``Dimension``s compiled for either backend.

    Example:
        >>> space = SearchSpace.from_dict({"lr": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True}})
        >>> space.optuna_distributions()["lr"]
        FloatDistribution(high=0.005, log=True, low=0.0001, step=None)
    """

    def __init__(self, dimensions: list[Dimension]):
        if not dimensions:
            raise ValueError("the search space is empty")
        self.dimensions = tuple(dimensions)
        self._by_name = {d.name: d for d in dimensions}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """A space from ``{name: {"type": ..., ...}}`` (see ``Dimension.from_dict``), in the mapping's order."""
        return cls([Dimension.from_dict(name, s) for name, s in spec.items()])

    conditional = False  # a ConditionalSpace: which dimensions a config has depends on its choice

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def __getitem__(self, name: str) -> Dimension:
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.dimensions]

    def optuna_distributions(self) -> dict[str, od.BaseDistribution]:
        return {d.name: d.to_optuna() for d in self.dimensions}

    def ask(self, study: Any) -> Any:
        """A new trial of ``study`` with this space's params set (by the study's sampler, or an enqueued config)."""
        return study.ask(self.optuna_distributions())

    def covers(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` has exactly the names a config of this space has."""
        return set(params) == set(self.names)

    def hyperopt_space(self) -> dict[str, Any]:
        return {d.name: d.to_hyperopt() for d in self.dimensions}

    def from_hyperopt(self, vals: Mapping[str, Any]) -> dict[str, Any]:
        """Params for hyperopt's ``misc.vals`` (each a one-element list) or a flat raw mapping."""
        return {
            d.name: d.from_hyperopt(vals[d.name][0] if isinstance(vals[d.name], list | tuple) else vals[d.name])
            for d in self.dimensions
        }

    def to_hyperopt_vals(self, params: Mapping[str, Any]) -> dict[str, list[float]]:
        """hyperopt's ``misc.vals`` for ``params`` (an empty list for a dimension the config does not have)."""
        return {d.name: [d.to_hyperopt_raw(params[d.name])] if d.name in params else [] for d in self.dimensions}

    def is_discrete(self) -> bool:
        return all(d.kind != "float" or d.step is not None for d in self.dimensions)

    def grid(self) -> dict[str, list[Any]]:
        return {d.name: d.grid() for d in self.dimensions}

    def signature(self) -> dict[str, dict[str, Any]]:
        """Names, types and bounds: how two runs' spaces are compared."""
        return {d.name: d.signature() for d in self.dimensions}

    def fit(self, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Move a config from another run into this space and say what changed.

        Parameters this space lacks are dropped, missing ones come from ``defaults`` (then fitted), values
        are clipped to bounds and snapped to steps and choices.
        """
        fitted: dict[str, Any] = {}
        notes: list[str] = []
        for name in params:
            if name not in self._by_name:
                notes.append(f"{name}: not in this search space; dropped")
        for d in self.dimensions:
            if d.name in params:
                fitted[d.name], note = d.fit(_plain(params[d.name]))
                if note:
                    notes.append(f"{d.name}: {note}")
                continue
            default = defaults.get(d.name)
            if default is None:
                default = d.choices[0] if d.kind == "categorical" else (d.low + d.high) / 2
            fitted[d.name], _ = d.fit(_plain(default))
            notes.append(f"{d.name}: missing; filled with the default {fitted[d.name]!r}")
        return fitted, notes


class ConditionalSpace(SearchSpace):
    """A choice first, then the chosen branch's own space: a config is ``{key: choice, "<choice>.<name>": value,
    ...}`` with the chosen branch's params only (Optuna define-by-run; hyperopt's nested ``hp.choice``). Branch
    params carry their choice as a prefix, so two branches' params of one name never share a distribution.

    Example:
        >>> space = ConditionalSpace("family", {"a": SearchSpace.from_dict(A), "b": SearchSpace.from_dict(B)})
        >>> space.fit({"family": "b"}, {})[0]   # {"family": "b", "b.x": ...}
    """

    conditional = True

    def __init__(self, key: str, branches: Mapping[str, SearchSpace]):
        if not branches:
            raise ValueError(f"{key}: no choice to search")
        self.key = key
        self.choice = Dimension(key, "categorical", choices=tuple(branches))
        self.branches = {
            name: [replace(d, name=f"{name}.{d.name}") for d in space.dimensions] for name, space in branches.items()
        }
        super().__init__([self.choice, *(d for dims in self.branches.values() for d in dims)])

    def active(self, choice: Any) -> list[Dimension]:
        """The dimensions a config of ``choice`` has: the choice and its branch's."""
        return [self.choice, *self.branches[choice]]

    def ask(self, study: Any) -> Any:
        trial = study.ask()
        for d in self.active(self.choice.suggest(trial))[1:]:
            d.suggest(trial)
        return trial

    def covers(self, params: Mapping[str, Any]) -> bool:
        choice = params.get(self.key)
        return choice in self.branches and set(params) == {d.name for d in self.active(choice)}

    def hyperopt_space(self) -> dict[str, Any]:
        from hyperopt import hp

        options = [{d.name: d.to_hyperopt() for d in dims} for dims in self.branches.values()]
        return {self.key: hp.choice(self.key, options)}

    def from_hyperopt(self, vals: Mapping[str, Any]) -> dict[str, Any]:
        def raw(name: str) -> Any:
            value = vals[name]
            return value[0] if isinstance(value, list | tuple) else value

        choice = self.choice.from_hyperopt(raw(self.key))
        return {d.name: d.from_hyperopt(raw(d.name)) for d in self.active(choice)}

    def is_discrete(self) -> bool:
        return False  # the grid sampler walks one fixed space

    def fit(self, params: Mapping[str, Any], defaults: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """As ``SearchSpace.fit`` within the config's branch (its ``key``, else ``defaults``', else the first)."""
        choice = params.get(self.key, defaults.get(self.key))
        notes = []
        if choice not in self.branches:
            first = self.choice.choices[0]
            if choice is not None:
                notes.append(f"{self.key}: {choice!r} is not searched here; replaced by {first!r}")
            choice = first
        branch = SearchSpace(self.branches[choice])
        own = {k: v for k, v in params.items() if k != self.key}
        fitted, branch_notes = branch.fit(own, defaults)
        return {self.key: choice, **fitted}, notes + branch_notes


def _plain(value: Any) -> Any:
    """NumPy scalars (hyperopt returns them) as plain Python values."""
    return value.item() if isinstance(value, np.generic) else value
