"""A config's search space in the search library's own types: the one place where ``configs``' validated param
specs become ``tasks.search`` dimensions (the library imports nothing of the application)."""

from __future__ import annotations

from collections.abc import Mapping

from configs import ParamSpec
from tasks.search import SearchSpace


def search_space(specs: Mapping[str, ParamSpec]) -> SearchSpace:
    """The library's ``SearchSpace`` for ``search.space`` (or a space derived from it, such as the range test's).

    Example:
        >>> search_space(cfg.search.space).names
        ['hidden_size', 'num_layers', 'dropout', 'lr', 'batch_size']
    """
    return SearchSpace.from_dict({name: spec.model_dump() for name, spec in specs.items()})
