"""What the search stage run shows: Optuna's plots (a PNG each, and all of them interactive in one HTML page that
carries plotly inside, so it opens without a network), parameter importances, and a table of all trials (Parquet
and CSV). Works for either backend, since both record into an Optuna study.

matplotlib and fANOVA (scikit-learn) are imported by the functions that draw and rank: Dask workers import this
module with the search flow and never use them, and together they cost about two seconds per process."""

from __future__ import annotations

import logging
import warnings

import mlflow
import optuna
from optuna.trial import TrialState

from automl.tasks.search import FOLD_LOSSES_ATTR
from automl.tasks.tracking.catalog import (
    CV_PLOT_FILE,
    IMPORTANCE_METRIC_PREFIX,
    PARAM_IMPORTANCES_FILE,
    SEARCH_PLOT_FILE,
    SEARCH_PLOTS_HTML,
    TRIALS_CSV_FILE,
    TRIALS_PARQUET_FILE,
)
from automl.tasks.tracking.runs import log_frame

logger = logging.getLogger("automl")


def param_importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """fANOVA importances over complete trials ({} when there are too few to say)."""
    from optuna.importance import FanovaImportanceEvaluator

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        return dict(optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed)))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def interactive_page(figures: list[tuple[str, object]], title: str) -> str:
    """One HTML page of plotly figures, plotly's script inside it once (4.8 MB): MLflow's ``log_figure`` loads it
    from a CDN, which leaves the page blank on a machine without internet, and a copy per figure would weigh four
    times as much."""
    import html

    parts = [
        figure.to_html(full_html=False, include_plotlyjs=index == 0, default_width="100%")
        for index, (_, figure) in enumerate(figures)
    ]
    names = [html.escape(name.replace("_", " ")) for name, _ in figures]
    body = "\n".join(f"<h2>{name}</h2>\n{part}" for name, part in zip(names, parts, strict=True))
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
        f"<body style=\"font-family: sans-serif\">\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def log_search_report(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """Log plots, importances and the trials table to the active MLflow run; returns the importances."""
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()  # before Optuna's matplotlib module imports pyplot
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    importances = param_importances(study, seed)
    evaluator = _computed(importances)  # the plots draw these instead of fitting fANOVA twice more
    plots = {
        "optimization_history": ({}, True),
        "param_importances": ({"evaluator": evaluator}, bool(importances)),
        "parallel_coordinate": ({}, True),
        "intermediate_values": ({}, any(t.intermediate_values for t in study.get_trials(deepcopy=False))),
    }
    pages = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (kwargs, wanted) in plots.items():
            if not wanted:
                continue
            try:
                pages.append((name, getattr(interactive, f"plot_{name}")(study, **kwargs)))
                axes = getattr(static, f"plot_{name}")(study, **kwargs)
                figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
                figure.set_size_inches(9, 5.5)
                figure.tight_layout()
                mlflow.log_figure(figure, SEARCH_PLOT_FILE.format(plot=name))
                plt.close(figure)
            except (ValueError, RuntimeError, IndexError) as exc:
                logger.warning("search report: could not draw %s (%s)", name, exc)
    if pages:
        mlflow.log_text(interactive_page(pages, f"Search: study {study.study_name}"), SEARCH_PLOTS_HTML)
    if importances:
        mlflow.log_dict(importances, PARAM_IMPORTANCES_FILE)
        mlflow.log_metrics({f"{IMPORTANCE_METRIC_PREFIX}{k}": v for k, v in importances.items()})
    table = study.trials_dataframe()
    if not table.empty:
        table = table.map(lambda v: v.total_seconds() if hasattr(v, "total_seconds") else v)
        for column in table.columns:
            if table[column].dtype == object:
                table[column] = table[column].astype(str)
        log_frame(table, TRIALS_PARQUET_FILE)
        log_frame(table, TRIALS_CSV_FILE)
    return importances


def log_fold_scores(study: optuna.Study, top: int = 5) -> None:
    """Cross-validation: the validation loss of each fold for the ``top`` complete configs (a line each, the best
    first), logged as a figure to the active MLflow run."""
    from automl.tasks.tracking.plotting import pyplot

    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(FOLD_LOSSES_ATTR) and t.value is not None
    ]
    if not complete:
        return
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for trial in sorted(complete, key=lambda t: t.value)[:top]:
        losses = trial.user_attrs[FOLD_LOSSES_ATTR]
        axes.plot(range(1, len(losses) + 1), losses, marker="o", label=f"trial {trial.number}: mean {trial.value:.4g}")
    axes.set_xlabel("fold (oldest validation window first, for series)")
    axes.set_ylabel("validation loss")
    axes.set_title(f"Validation loss per fold, top {min(top, len(complete))} configs")
    axes.legend(fontsize=8)
    figure.tight_layout()
    mlflow.log_figure(figure, CV_PLOT_FILE)
    plt.close(figure)


def _computed(importances: dict[str, float]):
    """An Optuna importance evaluator that returns importances computed once already."""
    from optuna.importance import BaseImportanceEvaluator

    class Computed(BaseImportanceEvaluator):
        def evaluate(self, study: optuna.Study, params: list[str] | None = None, *, target=None) -> dict[str, float]:
            return {k: v for k, v in importances.items() if params is None or k in params}

    return Computed()
