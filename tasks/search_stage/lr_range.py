"""The learning-rate range test as a pipeline step (``automl lr-find``, ``search.lr_range: auto``): run it on the
family's default config, narrow the search space's ``lr`` around its suggestion, draw its curve and log it."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from automl.configs import FloatParam, InputError, ModelConfig, ParamSpec, TrainingConfig, check_param_value
from automl.models import (
    AUTO,
    LRRangeResult,
    ModelShape,
    TrainSettings,
    build_model,
    get_family,
    loss_for,
    lr_range_test,
    pick_device,
)
from automl.tasks.data_prep.prepared import PreparedData
from automl.tasks.search_stage.job import SearchJob
from automl.tasks.tracking.catalog import (
    LR_FIND_BATCH_SIZE_PARAM,
    LR_FIND_DIVERGED_PARAM,
    LR_FIND_LOSS_METRIC,
    LR_FIND_LR_METRIC,
    LR_FIND_PLOT,
    LR_FIND_ROLE,
    LR_FIND_STEPS_PARAM,
    LR_RANGE_HIGH_PARAM,
    LR_RANGE_LOW_PARAM,
    LR_RANGE_NOTE,
    LR_RANGE_PLOT,
    LR_RANGE_SUGGESTION_METRIC,
    MODEL_FAMILY_PARAM,
    ROLE,
    SUGGESTED_LR_METRIC,
)
from automl.tasks.tracking.plotting import pyplot
from automl.tasks.tracking.runs import log_file

logger = logging.getLogger("automl")
NARROW_BELOW, NARROW_ABOVE = 10.0, 3.0  # the narrowed lr bounds: [suggestion / 10, suggestion * 3]
MIN_WIDTH = 2.0  # narrowed bounds closer than this factor (suggestion far outside): the configured ones stay
NO_CLEAR_DESCENT = (
    "lr: the range test's loss shows no clear descent (a flat or noisy curve); the configured bounds stay"
)


def parse_params(family_name: str, items: Sequence[str]) -> dict[str, Any]:
    """``--param NAME=VALUE`` items as params of ``family_name``, checked as the loader checks ``model.params``:
    an unknown name or a value the family cannot take is a one-line ``InputError`` naming the param.

    Example:
        >>> parse_params("mlp", ["lr=0.01", "hidden_size=32"])
        {'lr': 0.01, 'hidden_size': 32}
    """
    if family_name == AUTO:
        raise InputError("model.family: the range test sweeps one network's lr; auto searches several, pick one")
    family = get_family(family_name)
    if family.trains_itself:
        raise InputError(f"model.family: the range test sweeps a network's lr; {family.name} boosts trees and has none")
    params: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InputError(f"--param {item!r}: expected NAME=VALUE")
        if name not in family.defaults:
            known = ", ".join(sorted(family.defaults))
            raise InputError(f"--param {name}: not a parameter of {family.name} ({known})")
        value = _scalar(text)
        try:
            check_param_value(family, name, value, f"--param {name}")
        except ValueError as exc:
            raise InputError(str(exc)) from None
        params[name] = value
    return params


def _scalar(text: str) -> Any:
    """A YAML scalar, with ``1e-3`` read as the number it means (YAML 1.1 reads it as a string)."""
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def tested_config(model: ModelConfig, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config the range test trains: the default config (the family's defaults, the config's fixed params),
    then ``params``.

    Example:
        >>> tested_config(ModelConfig(family="mlp", params={"hidden_size": 32}), {"lr": 0.01})["lr"]
        0.01
    """
    return {**model.default_config(), **(params or {})}


def find_lr(
    model: ModelConfig,
    prepared: PreparedData,
    training: TrainingConfig,
    seed: int,
    params: Mapping[str, Any] | None = None,
) -> LRRangeResult:
    """The range test (``models.lr_range_test``) on ``prepared.train`` for ``model``'s default config with
    ``params`` over it, trained as the pipeline trains (its loss, optimiser, gradient clipping and device) from
    weights seeded with ``seed``.

    Example:
        >>> result = find_lr(cfg.model, prepared, cfg.training, cfg.seed)
        >>> result.suggestion
    """
    family = get_family(model.family)
    full = tested_config(model, params)
    shape = ModelShape(prepared.n_features, prepared.n_outputs, prepared.lookback)
    module = build_model(family, shape, full, seed)
    settings = TrainSettings(
        epochs=1,
        lr=float(full["lr"]),
        batch_size=int(full["batch_size"]),
        weight_decay=float(full.get("weight_decay", 0.0)),
        loss=loss_for(prepared.task, training.loss),
        optimizer=training.optimizer,
        grad_clip=training.grad_clip,
        seed=seed,
    )
    train = (prepared.train.X, prepared.train.y)
    return lr_range_test(module, train, settings, device=pick_device(training.device))


def narrow_lr(spec: FloatParam, suggestion: float) -> tuple[FloatParam, str]:
    """``spec``'s bounds narrowed to [suggestion / 10, suggestion * 3], clipped to the configured bounds (its scale
    and step kept; with a step, the bounds move inwards onto its grid). When less than a factor of 2 is left
    (the suggestion far outside the configured bounds), the configured bounds stay. Returns the spec and a line
    saying which happened.

    Example:
        >>> spec, note = narrow_lr(FloatParam(type="float", low=1e-4, high=1e-1, log=True), 3e-3)
        >>> note
        "lr: [0.0001, 0.1] narrowed to [0.0003, 0.009] around the range test's suggestion 0.003 (...)"
    """
    low, high = max(spec.low, suggestion / NARROW_BELOW), min(spec.high, suggestion * NARROW_ABOVE)
    if spec.step is not None:
        low = spec.low + math.ceil((low - spec.low) / spec.step - 1e-9) * spec.step
        high = spec.low + math.floor((high - spec.low) / spec.step + 1e-9) * spec.step
    configured = f"[{spec.low:.3g}, {spec.high:.3g}]"
    if not high >= MIN_WIDTH * low:
        return spec, (
            f"lr: the range test's suggestion {suggestion:.3g} is too far outside the configured {configured} "
            f"([suggestion/10, suggestion*3] keeps less than a factor of {MIN_WIDTH:g} of it); the search keeps "
            f"{configured}"
        )
    narrowed = FloatParam(type="float", low=low, high=high, step=spec.step, log=spec.log)
    return narrowed, (
        f"lr: {configured} narrowed to [{low:.3g}, {high:.3g}] around the range test's suggestion "
        f"{suggestion:.3g} ([suggestion/10, suggestion*3] within the configured bounds)"
    )


def narrow_space(space: Mapping[str, ParamSpec], suggestion: float) -> tuple[dict[str, ParamSpec], str]:
    """``space`` with only its ``lr`` narrowed (``narrow_lr``); an ``lr`` that is missing or not a float stays as
    it is. Returns the space and a line saying what happened.

    Example:
        >>> space, note = narrow_space(cfg.search.space, result.suggestion)
    """
    spec = space.get("lr")
    if not isinstance(spec, FloatParam):
        what = "not in the search space" if spec is None else f"a {spec.type} parameter"
        return dict(space), f"lr: {what}; the range test narrows a float lr only, the space stays as configured"
    narrowed, note = narrow_lr(spec, suggestion)
    return {**space, "lr": narrowed}, note


def narrowed_by(space: Mapping[str, ParamSpec], result: LRRangeResult) -> tuple[dict[str, ParamSpec], str]:
    """``space`` with its ``lr`` narrowed around the range test's suggestion, unless the test's curve showed no clear
    descent: then the space stays as configured, and the note says why.

    Example:
        >>> space, note = narrowed_by(cfg.search.space, find_lr(cfg.model, prepared, cfg.training, cfg.seed))
    """
    if not result.clear:
        return dict(space), NO_CLEAR_DESCENT
    return narrow_space(space, result.suggestion)


def plot_lr_range(result: LRRangeResult, path: Path) -> Path:
    """Draw the loss per step (raw and smoothed) against the learning rate, on a log axis, with the suggestion
    marked, into the PNG ``path`` (its folder created). Returns ``path``.

    Example:
        >>> plot_lr_range(result, Path("lr_range.png"))
    """
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(result.lrs, result.losses, color="tab:blue", alpha=0.35, linewidth=0.8, label="loss per batch")
    ax.plot(result.lrs, result.smoothed, color="tab:blue", label="smoothed loss")
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggestion {result.suggestion:.2e}")
    ax.set_xscale("log")
    low, high = min(result.losses), max(result.smoothed)
    margin = (high - low) or abs(high) or 1.0
    ax.set_ylim(low - 0.05 * margin, high + 0.1 * margin)  # a diverging batch's loss stays off-scale
    stopped = "diverged" if result.diverged else "ended"
    ax.set(
        xlabel="learning rate",
        ylabel="training loss",
        title=f"Learning-rate range test: {result.steps} batches of {result.batch_size}, {stopped} at "
        f"lr {result.lrs[-1]:.2e}",
    )
    ax.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def log_lr_find_run(
    experiment_id: str, family_name: str, params: Mapping[str, Any], result: LRRangeResult, plot: Path
) -> str:
    """One MLflow run ``lr_find`` (role ``lr_find``) in the config's experiment: the family, the tested ``params``,
    the batch size and steps the test ran; the suggestion, the loss and learning rate per step, and the plot.
    Returns its run id."""
    with mlflow.start_run(experiment_id=experiment_id, run_name=LR_FIND_ROLE, tags={ROLE: LR_FIND_ROLE}) as run:
        mlflow.log_params(
            {
                MODEL_FAMILY_PARAM: family_name,
                **params,
                LR_FIND_BATCH_SIZE_PARAM: result.batch_size,
                LR_FIND_STEPS_PARAM: result.steps,
                LR_FIND_DIVERGED_PARAM: result.diverged,
            }
        )
        mlflow.log_metric(SUGGESTED_LR_METRIC, result.suggestion)
        _log_curve(result)
        log_file(plot, LR_FIND_PLOT)
    return run.info.run_id


def _log_curve(result: LRRangeResult) -> None:
    """The loss and learning rate per step, into the active run."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(key, value, now, step)
        for step, (lr, loss) in enumerate(zip(result.lrs, result.losses, strict=True))
        for key, value in ((LR_FIND_LOSS_METRIC, loss), (LR_FIND_LR_METRIC, lr))
    ]
    client, run_id = MlflowClient(), mlflow.active_run().info.run_id
    for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


@dataclass(frozen=True)
class LRRangeNarrowing:
    """What ``search.lr_range: auto`` did: the range test (None when an earlier, stopped attempt of the same
    pipeline run logged it: its bounds are reused), the search space with its ``lr`` narrowed, and a line saying
    how."""

    result: LRRangeResult | None
    space: dict[str, ParamSpec]
    note: str

    def log(self) -> None:
        """Into the active run (the search run): the suggestion, the loss and learning rate per step, the plot, the
        ``lr`` bounds the search used and, last, the note (its tag says the test is all there)."""
        if self.result is None:
            return
        mlflow.log_metric(LR_RANGE_SUGGESTION_METRIC, self.result.suggestion)
        _log_curve(self.result)
        with tempfile.TemporaryDirectory() as folder:
            log_file(plot_lr_range(self.result, Path(folder) / Path(LR_RANGE_PLOT).name), LR_RANGE_PLOT)
        lr = self.space.get("lr")
        if isinstance(lr, FloatParam):
            mlflow.log_params({LR_RANGE_LOW_PARAM: lr.low, LR_RANGE_HIGH_PARAM: lr.high})
        mlflow.set_tag(LR_RANGE_NOTE, self.note)


def find_lr_range(job: SearchJob, prepared: PreparedData, logged: Mapping[str, str] | None = None) -> LRRangeNarrowing:
    """``search.lr_range: auto``: the range test on the family's default config (with the config's fixed params),
    and the search space with its ``lr`` narrowed around the suggestion. ``job`` is the search stage's
    ``SearchJob`` (its ``search``, ``model``, ``training`` and ``seed``). ``logged`` holds the params and tags of
    the pipeline run's search run when a stopped attempt left one: a test logged there in full is reused (its
    bounds), not run again, so a resumed search searches the space it started with.

    Example:
        >>> narrowing = find_lr_range(job, prepared)
        >>> search_space(narrowing.space)
    """
    if logged and LR_RANGE_NOTE in logged:
        space = dict(job.search.space)
        lr = space.get("lr")
        if isinstance(lr, FloatParam) and LR_RANGE_LOW_PARAM in logged:
            low, high = float(logged[LR_RANGE_LOW_PARAM]), float(logged[LR_RANGE_HIGH_PARAM])
            space["lr"] = FloatParam(type="float", low=low, high=high, step=lr.step, log=lr.log)
        logger.info("search: learning-rate range test of the stopped attempt reused: %s", logged[LR_RANGE_NOTE])
        return LRRangeNarrowing(None, space, logged[LR_RANGE_NOTE])
    result = find_lr(job.model, prepared, job.training, job.seed)
    space, note = narrowed_by(job.search.space, result)
    logger.info(
        "search: learning-rate range test: suggested lr %.3g (%d steps%s); %s",
        result.suggestion,
        result.steps,
        ", diverged" if result.diverged else "",
        note,
    )
    return LRRangeNarrowing(result, space, note)
