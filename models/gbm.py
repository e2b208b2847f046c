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

from automl.models._family import ModelShape

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
        # column, as the naive forecast reads it) from the window relative to its last step, since trees cannot
        # extrapolate a level they never saw (a trend).
        self.from_last = shape.lookback is not None
        self.params = {k: params[k] for k in _LGB_PARAMS if k in params}
        self.boosters: list[Any] = []
        self.register_buffer("anchor", torch.zeros(0))  # where outputs go: the device the module is moved to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.outputs(x.detach().cpu().numpy()), dtype=torch.float32, device=x.device)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Raw outputs for ``x`` (rows first; any further axes are flattened into features), shape (rows, outputs)."""
        flat = self._features(x)
        base = self._base(x)
        if not self.boosters:
            return np.zeros((len(x), self.n_outputs), dtype=np.float32) + base
        if self.classifies:
            return self.boosters[0].predict(flat, raw_score=True, num_threads=_threads()).reshape(len(x), -1)
        return np.stack([b.predict(flat, raw_score=True, num_threads=_threads()) for b in self.boosters], 1) + base

    def _features(self, x: np.ndarray) -> np.ndarray:
        """The trees' inputs: a table's encoded row; a series window relative to its last step (as the networks see
        it, models._series), flattened: each column's lags as changes from its last value, so a trending level the
        trees never saw reads like the changes they did."""
        if self.from_last and x.ndim == 3:
            x = x - x[:, -1:, :]
        return x.reshape(len(x), -1)

    def _base(self, x: np.ndarray) -> np.ndarray:
        """What the trees' outputs add to: each window's last observed target for series, else nothing."""
        return x[:, -1, :1].astype(np.float64) if self.from_last and x.ndim == 3 else np.zeros((len(x), 1))

    @property
    def classifies(self) -> bool:
        return bool(self.boosters) and self.boosters[0].params.get("objective") == "multiclass"

    @property
    def trees(self) -> int:
        """Boosting rounds of the model: its largest booster's (each output's booster keeps its own best round)."""
        return max((b.current_iteration() for b in self.boosters), default=0)

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
        """Boost up to ``settings.epochs`` x ``TREES_PER_EPOCH`` rounds on ``train`` (``settings.rounds`` exactly,
        when set: a refit). Each booster (one per output; one for classification) is validated after every round
        with LightGBM's own running scores of ``val`` (its metric is the trainer's loss) and keeps the round it
        validated best at; it stops after ``settings.patience`` epochs' rounds (``EARLY_STOPPING_EPOCHS`` when None)
        without a better one. A model that has trees (``validate_first``) continues from them, adding trees on
        ``train``'s rows; its trees stand unless a round beats them. ``should_stop`` and ``time_limit`` are asked
        every round, ``stop_after`` too once one round is done. The curves hold one value per epoch of rounds (the
        last partial one included); ``best_epoch`` is the epoch of this call where the kept trees end (-1: the trees
        it started with); ``best_val_loss`` is the trainer's loss of the kept trees."""
        import lightgbm as lgb

        from automl.models.trainer import LOSSES, FitResult, TimeLimitExceeded, TrainingStopped

        started = time.perf_counter()
        result = FitResult(model=self)
        criterion = LOSSES[settings.loss]()
        classify = settings.loss == "cross_entropy"
        x_train, x_val = self._features(train[0]), self._features(val[0])
        fit_targets, val_targets = self._targets(train, classify), self._targets(val, classify)

        def loss_of() -> float:
            out = torch.as_tensor(self.outputs(val[0]), dtype=torch.float32)
            target = torch.as_tensor(np.asarray(val[1]), dtype=torch.long if classify else torch.float32)
            return float(criterion(out if classify else out.reshape(target.shape), target))

        continued = validate_first and self.trees > 0
        if continued:
            result.start_val_loss = result.best_val_loss = loss_of()
            best = self._losses(val, val_targets, criterion, classify)  # each booster's, of the trees it starts with
            best_rounds = [b.current_iteration() for b in self.boosters]
        else:
            best, best_rounds = [math.inf] * len(fit_targets), [0] * len(fit_targets)
        lgb_params = self._lgb_params(settings)
        trainers = []
        for k, (target, val_target) in enumerate(zip(fit_targets, val_targets, strict=True)):
            data = lgb.Dataset(x_train, target, params={"verbosity": -1}, free_raw_data=False)
            valid = data.create_valid(x_val, val_target)
            if continued:  # more trees on this call's rows over the model's; lgb.train boosts the first round
                start = self.boosters[k]
                trainers.append(
                    lgb.train(lgb_params, data, 1, init_model=start, valid_sets=[valid], keep_training_booster=True)
                )
            else:
                booster = lgb.Booster(lgb_params, data)
                booster.add_valid(valid, "val")
                trainers.append(booster)
        self.boosters = trainers
        total = settings.rounds if settings.rounds is not None else settings.epochs * TREES_PER_EPOCH
        patience = TREES_PER_EPOCH * (settings.patience if settings.patience is not None else EARLY_STOPPING_EPOCHS)
        active, since = [True] * len(trainers), [0] * len(trainers)
        best_round_of_call = -1
        for round_ in range(total):
            if settings.time_limit is not None and time.perf_counter() - started > settings.time_limit:
                raise TimeLimitExceeded(f"trial_timeout of {settings.time_limit:g}s exceeded in round {round_ + 1}")
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped in round {round_ + 1} of {total}")
            for k, booster in enumerate(self.boosters):
                if not active[k]:
                    continue
                finished = booster.update() if round_ > 0 or not continued else False  # True: no split gains
                value = float(booster.eval_valid()[0][2])
                if value < best[k]:
                    best[k], best_rounds[k], since[k], best_round_of_call = (
                        value,
                        booster.current_iteration(),
                        0,
                        round_,
                    )
                else:
                    since[k] += 1
                if finished or not math.isfinite(value) or (restore_best and since[k] >= patience):
                    active[k] = False
            epoch_end = (round_ + 1) % TREES_PER_EPOCH == 0 or round_ + 1 == total or not any(active)
            late = settings.stop_after is not None and time.perf_counter() - started > settings.stop_after
            if epoch_end or late:
                self._record_epoch(result, on_epoch)
            if not any(active):
                result.stopped_early = restore_best and any(n >= patience for n in since)
                break
            if late:
                result.out_of_time = True
                break
        keep = best_rounds if restore_best else [b.current_iteration() for b in self.boosters]
        self.boosters = [
            lgb.Booster(model_str=b.model_to_string(num_iteration=max(n, 1)))
            for b, n in zip(self.boosters, keep, strict=True)
        ]
        result.best_val_loss = loss_of()
        if not all(math.isfinite(v) for v in result.val_loss):
            result.best_val_loss = math.nan
        result.best_epoch = -1 if best_round_of_call < 0 else best_round_of_call // TREES_PER_EPOCH
        result.seconds = time.perf_counter() - started
        return result

    def _targets(self, split: tuple[np.ndarray, np.ndarray], classify: bool) -> list[np.ndarray]:
        """What each booster fits on ``split``: the labels (classification), else each output's change from the
        window's last observed target (series) or its value (tables)."""
        if classify:
            return [np.asarray(split[1])]
        change = np.asarray(split[1]).reshape(len(split[1]), -1) - self._base(split[0])
        return [np.ascontiguousarray(change[:, k]) for k in range(self.n_outputs)]

    def _losses(self, split, targets: list[np.ndarray], criterion: nn.Module, classify: bool) -> list[float]:
        """Each booster's loss on ``split`` (the trainer's loss of its own output)."""
        out = self.outputs(split[0]) - (0 if classify else self._base(split[0]))
        if classify:
            return [float(criterion(torch.as_tensor(out, dtype=torch.float32), torch.as_tensor(targets[0])))]
        return [
            float(criterion(torch.as_tensor(out[:, k], dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)))
            for k, t in enumerate(targets)
        ]

    def _record_epoch(self, result: Any, on_epoch: Callable[[int, float, float], None] | None) -> None:
        """One point of the curves: the mean over boosters of LightGBM's running training and validation scores."""
        result.train_loss.append(float(np.mean([b.eval_train()[0][2] for b in self.boosters])))
        result.val_loss.append(float(np.mean([b.eval_valid()[0][2] for b in self.boosters])))
        if on_epoch is not None:
            on_epoch(len(result.val_loss) - 1, result.train_loss[-1], result.val_loss[-1])

    def _lgb_params(self, settings: Any) -> dict[str, Any]:
        params = {lgb_name: self.params[name] for name, lgb_name in _LGB_PARAMS.items() if name in self.params}
        if params.get("bagging_fraction", 1.0) < 1.0:
            params["bagging_freq"] = 1
        params.update(
            objective=_OBJECTIVES[settings.loss],
            seed=settings.seed,
            deterministic=True,
            force_row_wise=True,
            num_threads=_threads(),
            verbosity=-1,
        )
        params["metric"] = _METRICS[settings.loss]
        if settings.loss == "huber":
            params["alpha"] = 1.0
        if settings.loss == "cross_entropy":
            params["num_class"] = self.n_outputs
        return params


def _threads() -> int:
    """LightGBM's threads: torch's setting (the search sets it per worker), so trees and networks share one limit."""
    return torch.get_num_threads()


def build(shape: ModelShape, params: Mapping[str, Any]) -> GbmModel:
    """An untrained ``GbmModel`` of ``params`` (the family's; the trainer's lr and batch size are ignored)."""
    return GbmModel(shape, params)
