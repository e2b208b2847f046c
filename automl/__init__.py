"""The ``automl`` command (``automl/cli.py``; also ``python -m automl``) and the Python API (``automl/api.py``).

Example:
    >>> from automl import load_champion, run
    >>> summary = run("mlp_tabular", overrides={"search.n_trials": 3})
    >>> load_champion("mlp_tabular").predict(rows)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from automl.api import Champion, PipelineFailed, load_champion, run
    from automl.configs import InputError

__all__ = ["Champion", "InputError", "PipelineFailed", "load_champion", "run"]


def __getattr__(name: str) -> Any:
    # The API loads on first use: the CLI imports this package on every command, and a command that fails on its
    # arguments should not pay for more.
    if name == "InputError":  # what bad input raises, from the API as from the command (exit code 2 there)
        from automl.configs import InputError

        return InputError
    if name in __all__:
        from automl import api

        return getattr(api, name)
    raise AttributeError(f"module 'automl' has no attribute {name!r}")
