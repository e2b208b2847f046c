"""Gradient-boosted trees (LightGBM) as a model family behind the torch module interface every stage uses.

A ``GbmModel`` is an ``nn.Module`` whose forward runs its boosters (one per output for regression, a multiclass one
for classification) on the flattened inputs (a series window's lags of every column, or a table's encoded row) and
returns raw outputs as the networks do (values in the training's scaled units, class logits). Its trees travel in
``state_dict`` (torch's extra state), so checkpoints, the ensemble, the pytorch flavour and the raw-data model take
it unchanged. It trains itself (``fit_rounds``, called by ``models.trainer.fit``): an "epoch" is ``TREES_PER_EPOCH``
boosting rounds, so every budget counted in epochs (``search.epochs``, ``final.epochs``, patience, continuation's
share of a rung) reads the same for every family; a model with trees continues by adding trees on the new rows.

Example:
    >>> model = build(ModelShape(n_features=8, n_outputs=1), {"learning_rate": 0.05, "num_leaves": 31})
    >>> fit(model, (X, y), (Xv, yv), TrainSettings(epochs=10, lr=0.05, batch_size=1, patience=2))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from models._family import ModelShape

TREES_PER_EPOCH = 50  # boosting rounds per "epoch": a budget of 20 epochs is at most 1,000 trees
EARLY_STOPPING_EPOCHS = 2  # with no patience set (the search), 100 rounds without a better validation loss stop it

# The trainer's losses as LightGBM objectives (LightGBM's huber with alpha 1 is torch's HuberLoss with delta 1).
_OBJECTIVES = {"mse": "regression", "mae": "regression_l1", "huber": "huber", "cross_entropy": "multiclass"}
_METRICS = {"mse": "l2", "mae": "l1", "huber": "huber", "cross_entropy": "multi_logloss"}
# The family's params and the LightGBM params they set; the trainer's lr and batch size do not apply.
_LGB_PARAMS = {
    "learning_rate": "learning_rate",
    "num_leaves": "num_leaves",
    "min_child_samples": "min_data_in_leaf",
    "feature_fraction": "feature_fraction",
    "bagging_fraction": "bagging_fraction",
    "lambda_l1": "lambda_l1",
    "lambda_l2": "lambda_l2",
}


class GbmModel(nn.Module):
    """LightGBM boosters with raw outputs (see the module docstring). ``boosters`` is empty until trained."""

    def __init__(self, shape: ModelShape, params: Mapping[str, Any]) -> None:
        super().__init__()
        self.n_outputs = shape.n_outputs
        # Series windows: the trees learn each step's change from the last observed target (the window's first
        # column, as the naive forecast reads it), since trees cannot extrapolate a level they never saw (a trend).
        self.from_last = shape.lookback is not None
        self.params = {k: params[k] for k in _LGB_PARAMS if k in params}
        self.boosters: list[Any] = []
        self.register_buffer("anchor", torch.zeros(0))  # where outputs go: the device the module is moved to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.outputs(x.detach().cpu().numpy()), dtype=torch.float32, device=x.device)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs for ``x`` (rows first; any further axes are flattened into features), shape (rows, outputs)."""
        flat = x.reshape(len(x), -1)
        base = self._base(x)
        if not self.boosters:
            return np.zeros((len(x), self.n_outputs), dtype=np.float32) + base
        if self.classifies:
            return self.boosters[0].predict(flat, raw_score=True).reshape(len(x), -1)
        return np.stack([b.predict(flat, raw_score=True) for b in self.boosters], 1) + base

    def _base(self, x: np.ndarray) -> np.ndarray:
        """What the trees' outputs add to: each window's last observed target for series, else nothing."""
        return x[:, -1, :1].astype(np.float64) if self.from_last and x.ndim == 3 else np.zeros((len(x), 1))

    @property
    def classifies(self) -> bool:
        return bool(self.boosters) and self.boosters[0].params.get("objective") == "multiclass"

    @property
    def trees(self) -> int:
        """Boosting rounds of the model (of its first booster)."""
        return self.boosters[0].current_iteration() if self.boosters else 0

    def get_extra_state(self) -> dict[str, Any]:
        return {"boosters": [b.model_to_string() for b in self.boosters]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        import lightgbm as lgb

        self.boosters = [lgb.Booster(model_str=text) for text in state["boosters"]]

    def fit_rounds(
        self,
        train: tuple[np.ndarray, np.ndarray],
        val: tuple[np.ndarray, np.ndarray],
        settings: Any,
        on_epoch: Callable[[int, float, float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        validate_first: bool = False,
        restore_best: bool = True,
    ) -> Any:
        """Boost ``settings.epochs`` x ``TREES_PER_EPOCH`` rounds on ``train`` (``settings.rounds`` exactly, when
        set: a refit), validating after each epoch's rounds with the trainer's loss; stop after ``settings.patience``
        epochs (``EARLY_STOPPING_EPOCHS`` when None) without a better validation loss, and keep the trees of the best
        epoch. A model that has trees (``validate_first``) continues from them, adding trees on ``train``'s rows; its
        trees stand unless an epoch beats them. ``should_stop``, ``time_limit`` and ``stop_after`` as in
        ``models.trainer.fit``. Returns a ``FitResult`` (``best_epoch`` counts the epochs of this call; -1: the
        trees it started with)."""
        import lightgbm as lgb

        from models.trainer import LOSSES, FitResult, TimeLimitExceeded, TrainingStopped

        started = time.perf_counter()
        result = FitResult(model=self)
        criterion = LOSSES[settings.loss]()
        x_train, y_train = train[0].reshape(len(train[0]), -1), np.asarray(train[1])
        x_val, y_val = val[0], np.asarray(val[1])  # outputs() flattens, after reading the windows' last values
        classify = settings.loss == "cross_entropy"
        if classify:
            targets = [y_train]
        else:
            change = y_train.reshape(len(y_train), -1) - self._base(train[0])
            targets = [np.ascontiguousarray(change[:, k]) for k in range(self.n_outputs)]
        lgb_params = self._lgb_params(settings)

        def loss_of() -> float:
            out = torch.as_tensor(self.outputs(x_val), dtype=torch.float32)
            target = torch.as_tensor(y_val, dtype=torch.long if classify else torch.float32)
            return float(criterion(out if classify else out.reshape(target.shape), target))

        continued = validate_first and self.trees > 0
        best_rounds = [b.current_iteration() for b in self.boosters] if continued else []  # its trees, until beaten
        if continued:
            result.start_val_loss = result.best_val_loss = loss_of()
        trainers = []
        for k, target in enumerate(targets):
            data = lgb.Dataset(x_train, target, params={"verbosity": -1}, free_raw_data=False)
            if continued:  # more trees on this call's rows, over the ones the model has
                start = self.boosters[k]
                trainers.append(lgb.train(lgb_params, data, 1, init_model=start, keep_training_booster=True))
            else:
                trainers.append(lgb.Booster(lgb_params, data))
        self.boosters = trainers
        done = [False] * len(trainers)
        patience = settings.patience if settings.patience is not None else EARLY_STOPPING_EPOCHS
        total_rounds = settings.rounds if settings.rounds is not None else settings.epochs * TREES_PER_EPOCH
        since_best = 0
        for epoch in range(math.ceil(total_rounds / TREES_PER_EPOCH)):
            for _ in range(min(TREES_PER_EPOCH, total_rounds - epoch * TREES_PER_EPOCH)):
                if settings.time_limit is not None and time.perf_counter() - started > settings.time_limit:
                    raise TimeLimitExceeded(f"trial_timeout of {settings.time_limit:g}s exceeded in epoch {epoch + 1}")
                if should_stop is not None and should_stop():
                    raise TrainingStopped(f"stopped in epoch {epoch + 1}")
                for k, booster in enumerate(self.boosters):
                    if not done[k]:
                        done[k] = booster.update()  # True: no split gains any more
            val_loss = loss_of()
            result.train_loss.append(_train_loss(self.boosters))
            result.val_loss.append(val_loss)
            if on_epoch is not None:
                on_epoch(epoch, result.train_loss[-1], val_loss)
            if not math.isfinite(val_loss):
                result.best_val_loss = math.nan
                break
            if not val_loss >= result.best_val_loss:  # lower, or the first epoch of a model with no trees yet
                result.best_val_loss, result.best_epoch, since_best = val_loss, epoch, 0
                best_rounds = [b.current_iteration() for b in self.boosters]
            else:
                since_best += 1
                if restore_best and since_best >= patience:
                    result.stopped_early = True
                    break
            if all(done):
                break
            if settings.stop_after is not None and time.perf_counter() - started > settings.stop_after:
                result.out_of_time = True
                break
        keep = best_rounds if restore_best and best_rounds else [None] * len(self.boosters)
        kept = zip(self.boosters, keep, strict=True)
        self.boosters = [lgb.Booster(model_str=b.model_to_string(num_iteration=n)) for b, n in kept]
        result.seconds = time.perf_counter() - started
        return result

    def _lgb_params(self, settings: Any) -> dict[str, Any]:
        params = {lgb_name: self.params[name] for name, lgb_name in _LGB_PARAMS.items() if name in self.params}
        if params.get("bagging_fraction", 1.0) < 1.0:
            params["bagging_freq"] = 1
        params.update(
            objective=_OBJECTIVES[settings.loss],
            seed=settings.seed,
            deterministic=True,
            force_row_wise=True,
            num_threads=torch.get_num_threads(),
            verbosity=-1,
        )
        params["metric"] = _METRICS[settings.loss]
        if settings.loss == "huber":
            params["alpha"] = 1.0
        if settings.loss == "cross_entropy":
            params["num_class"] = self.n_outputs
        return params


def _train_loss(boosters: list[Any]) -> float:
    """The training loss of the trees so far, from LightGBM's own scores of the training rows (its metric is the
    trainer's loss: l2 is the mean squared error, multi_logloss the cross-entropy), averaged over the outputs."""
    values = [value for b in boosters for _, _, value, _ in b.eval_train()]
    return float(np.mean(values)) if values else math.nan


def build(shape: ModelShape, params: Mapping[str, Any]) -> GbmModel:
    """An untrained ``GbmModel`` of ``params`` (the family's; the trainer's lr and batch size are ignored)."""
    return GbmModel(shape, params)
