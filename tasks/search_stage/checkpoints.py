"""Model state the search keeps on disk: a config's rung checkpoints (``search.continuation``: the weights and
optimiser state at each rung below all the data, so a promoted config continues from its own), where a config's
weights trained on all the data go for the final stage, and the one atomic way every such file is written."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import torch

from automl.tasks.search import params_key


def config_key(params: dict[str, Any]) -> str:
    """A short name for a config in file names (the same params, the same name)."""
    return hashlib.sha256(params_key(params).encode()).hexdigest()[:20]


def trial_weights_path(weights_dir: Path, params: dict[str, Any]) -> Path:
    """Where the best epoch's weights of ``params`` trained on all the data are kept (one file per config)."""
    return weights_dir / f"{config_key(params)}.pt"


def save_atomically(value: Any, path: Path) -> None:
    """``torch.save`` to a file of this process, then renamed: a killed writer never leaves half a file under the
    real name, and two writers (a rerun and a worker of the stopped run) never write the same partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    torch.save(value, partial)
    partial.replace(path)


class RungCheckpoints:
    """One pipeline run's rung checkpoints in ``folder``: a file per (config, fold, data fraction) holding the best
    epoch's weights and optimiser state, the params, and the rung's result (loss, curve, seconds, and the fraction
    it continued from). A file that cannot be read counts as no checkpoint: the rung trains from scratch.

    Example:
        >>> rungs = RungCheckpoints(local_state().rung_checkpoints(study) / run_id)
        >>> start = rungs.below(params, 1.0, fold=None)      # the checkpoint of the rung it was promoted from
    """

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, params: dict[str, Any], fraction: float, fold: int | None) -> Path:
        return self.folder / f"{config_key(params)}-fold{'x' if fold is None else fold}-{fraction:.6f}.pt"

    def at(self, params: dict[str, Any], fraction: float, fold: int | None) -> dict[str, Any] | None:
        """The checkpoint kept at exactly ``fraction`` (a rung trained before a stop, not yet recorded), if any."""
        return self._read(self.path(params, fraction, fold), params)

    def below(self, params: dict[str, Any], fraction: float, fold: int | None) -> dict[str, Any] | None:
        """The checkpoint kept at the largest fraction below ``fraction`` (the rung it was promoted from), if any."""
        if not self.folder.is_dir():
            return None
        prefix = self.path(params, 1.0, fold).name.rsplit("-", 1)[0]
        below = []
        for path in self.folder.glob(f"{prefix}-*.pt"):
            kept_fraction = float(path.stem.rsplit("-", 1)[1])
            if kept_fraction < fraction - 1e-6:  # the file name holds the fraction to 6 decimals
                below.append((kept_fraction, path))
        for _, path in sorted(below, reverse=True):
            kept = self._read(path, params)
            if kept is not None:
                return kept
        return None

    def keep(self, params: dict[str, Any], fraction: float, fold: int | None, state: dict[str, Any]) -> None:
        """Keep ``state`` (weights, optimiser state, the rung's result) as the checkpoint at ``fraction``."""
        save_atomically({**state, "params": params, "fraction": fraction}, self.path(params, fraction, fold))

    @staticmethod
    def _read(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            kept = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # a file cut short by a full disk, or written by another version: train from scratch
            return None
        return kept if isinstance(kept, dict) and kept.get("params") == params else None
