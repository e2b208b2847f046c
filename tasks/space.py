"""A config's search space in the search library's own types: the one place where ``configs``' validated param
specs become ``tasks.search`` dimensions (the library imports nothing of the application), and where a config of
``model.family: auto`` (``{"family": name, "<name>.<param>": value}``) becomes a family and its own params.

Example:
    >>> search_space(cfg.search.space).names
    ['hidden_size', 'num_layers', 'dropout', 'lr', 'batch_size']
    >>> split_family({"family": "gbm", "gbm.num_leaves": 31}, "auto")
    ('gbm', {'num_leaves': 31})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from automl.configs import ModelConfig, ParamSpec
from automl.tasks.search import ConditionalSpace, SearchSpace

FAMILY_KEY = "family"  # under model.family auto: the searched family, the first param of every config


def search_space(specs: Mapping[str, ParamSpec] | None, families: Sequence[str] | None = None) -> SearchSpace:
    """The library's space for ``search.space`` (or a space derived from it, such as the range test's); under
    ``model.family: auto`` (``families``: ``search.families`` resolved) the family first, then its default space."""
    if families:
        from automl.models import get_family  # the family registry is plain data: no torch

        return ConditionalSpace(
            FAMILY_KEY, {name: SearchSpace.from_dict(get_family(name).default_space) for name in families}
        )
    return SearchSpace.from_dict({name: spec.model_dump() for name, spec in (specs or {}).items()})


def split_family(params: Mapping[str, Any], family: str) -> tuple[str, dict[str, Any]]:
    """The family of a config and its params without the family's prefix; a config of one family (no ``family``
    key) is ``family``'s as it is."""
    if FAMILY_KEY not in params:
        return family, dict(params)
    name = str(params[FAMILY_KEY])
    prefix = f"{name}."
    return name, {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


def join_family(family: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of ``family`` as a config of a search over families (the inverse of ``split_family``)."""
    return {FAMILY_KEY: family, **{f"{family}.{k}": v for k, v in params.items()}}


def every_default(families: Sequence[str]) -> dict[str, Any]:
    """The defaults of every family, prefixed, with the first as the family: what ``ConditionalSpace.fit`` fills
    a config's missing params from."""
    from automl.models import get_family

    joined: dict[str, Any] = {FAMILY_KEY: families[0]}
    for name in families:
        joined.update({k: v for k, v in join_family(name, get_family(name).defaults).items() if k != FAMILY_KEY})
    return joined


def default_configs(model: ModelConfig, families: Sequence[str] | None) -> list[dict[str, Any]]:
    """The config's default config (its family's defaults with ``model.params`` over them); under
    ``model.family: auto`` one per searched family, as configs of the search over families, the first family's
    first (the default-config baseline)."""
    from automl.models import AUTO, get_family

    if model.family == AUTO:
        return [join_family(name, get_family(name).defaults) for name in families or ()]
    return [model.default_config()]
