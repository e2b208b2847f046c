"""What a completed pipeline run returns (``PipelineSummary``) and its three renderings, each made here and nowhere
else: the JSON (``automl run --json``, MLflow ``summary.json``), the Markdown (MLflow ``summary.md``, the Prefect
artifact) and the table ``automl run`` prints.

Example:
    >>> summary = automl_pipeline(config="lstm_baseline")
    >>> summary.trials.complete, summary.best_val_loss
    >>> print(render_table(summary))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # only for the annotation: the CLI imports this module without loading the search's Optuna
    from automl.tasks.search import TrialCounts


@dataclass(frozen=True)
class WarmStartSummary:
    """How many past configs the search queued first, and the MLflow runs they came from."""

    enqueued: int
    source_run_ids: list[str]


@dataclass(frozen=True)
class RegisteredVersion:
    """The registered model version a pipeline run made."""

    name: str
    version: int


@dataclass(frozen=True)
class BudgetSummary:
    """The run's wall-clock budget and how much of it the run used, from the command's (or flow run's) start."""

    seconds: float
    used: float


@dataclass(frozen=True)
class CVSummary:
    """The chosen config's validation loss over the search's cross-validation folds (``search.cv``)."""

    folds: int
    kind: str
    mean: float
    std: float
    fold_losses: list[float]

    @classmethod
    def of(cls, kind: str, losses: list[float]) -> CVSummary:
        """Mean and (population) standard deviation of ``losses``.

        Example:
            >>> CVSummary.of("kfold", [1.0, 3.0]).std
            1.0
        """
        mean = sum(losses) / len(losses)
        std = (sum((v - mean) ** 2 for v in losses) / len(losses)) ** 0.5
        return cls(len(losses), kind, mean, std, list(losses))


@dataclass(frozen=True)
class PBTSummary:
    """A population-based search (``search.strategy: pbt``): the population, the intervals it trained, how many
    times a member copied another (exploit steps), the best member and its schedule (its params per interval)."""

    population: int
    intervals: int
    exploit_steps: int
    best_member: int
    schedule: list[dict[str, Any]]


@dataclass
class EnsembleSummary:
    """The ensemble selection of the final stage (``final.ensemble``): the members it picked and their weights, its
    validation loss against the single chosen model's (tuned or default config), whether it was kept (it validated
    better), each candidate's validation loss, the picks kept (``rounds``), and the single model's test metrics."""

    members: list[str]
    weights: dict[str, float]
    val_loss: float
    single_val_loss: float
    kept: bool
    candidates: dict[str, float] = field(default_factory=dict)
    rounds: int = 1
    single_test_metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RefitSummary:
    """The production refit (``final.refit: all``): the rows (windows, for a series) it trained on, and each
    refitted training's epochs."""

    rows: int
    epochs: dict[str, int]


@dataclass(frozen=True)
class PromotionSummary:
    """The registry's champion decision (``registry.promote``): the champion the new version was compared with
    (None: there was none) and both primary metrics on the same ``rows``, the new run's test rows (None: the
    champion could not score them), and whether the new version took the champion alias."""

    champion_version: int | None
    champion_metric: float | None
    challenger_metric: float | None
    rows: int
    promoted: bool
    metric: str
    rule: str  # registry.promote: better, always or never


@dataclass(frozen=True, kw_only=True)
class PipelineSummary:
    """One completed pipeline execution: where it is tracked, what the search found, how the tuned model tested
    against its baselines, and where the model went. Fields are in the order of the JSON's keys."""

    status: Literal["completed"] = "completed"
    experiment: str
    experiment_id: str = ""  # MLflow's id of the experiment (its UI's address)
    pipeline_run_id: str
    resumed: bool
    study_name: str
    storage: str  # the Optuna storage URL, password redacted
    backend: str
    sampler: str
    fidelity: str
    model_family: str  # the config's (auto: the search picked the family too)
    family: str  # the family of the single model that went on (the config's, or the one auto's search picked)
    task_type: str
    dataset_fingerprint: str
    trials: TrialCounts  # this pipeline execution's trials, across resumes
    best_trial: int
    best_params: dict[str, Any]
    best_val_loss: float
    warm_start: WarmStartSummary
    chosen: str  # the model that went on: tuned, default_config (lower validation loss) or ensemble (lower still)
    test_metrics: dict[str, float]  # the chosen model's
    primary_metric: str
    baseline_metrics: dict[str, dict[str, float]]  # those of final.baselines (default_config, naive, ...) tested
    model_uri: str
    registered_model: RegisteredVersion | None  # None when the registry is disabled
    champion: bool
    champion_note: str
    search_seconds: float
    search_overhead_share: float
    param_importances: dict[str, float]
    stage_seconds: dict[str, float]
    total_seconds: float
    mlflow_tracking_uri: str
    budget: BudgetSummary | None = None  # None without budget.seconds
    cv: CVSummary | None = None  # None without search.cv (or when the chosen config has no fold losses)
    strategy: str = "sample"  # search.strategy
    pbt: PBTSummary | None = None  # None unless strategy is pbt
    ensemble: EnsembleSummary | None = None  # None when no ensemble was tried (top_k 1, PBT, one candidate)
    refit: RefitSummary | None = None  # None unless final.refit is all
    promotion: PromotionSummary | None = None  # None when the registry is disabled

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON object (``automl run --json``, ``summary.json``): its fields in order, the
        sub-parts as nested objects, no registered model as null; ``cv`` only when the search cross-validated,
        ``pbt`` only when it trained a population."""
        record = asdict(self)
        for part in ("cv", "pbt"):
            if record[part] is None:
                del record[part]
        return record


def render_markdown(summary: PipelineSummary) -> str:
    """The summary as Markdown (Prefect artifact, MLflow ``summary.md``)."""
    trials = summary.trials
    baselines = summary.baseline_metrics
    columns = _baseline_columns(baselines)
    rows = "\n".join(
        f"| {name} | {value:.5g} | " + " | ".join(_baseline(baselines, key, name) for key, _, _ in columns) + " |"
        for name, value in summary.test_metrics.items()
    )
    params = "\n".join(f"| {k} | {_short(v)} |" for k, v in summary.best_params.items())
    model = summary.registered_model
    registry = f"`{model.name}` version {model.version}" if model else "not registered"
    champion = " (champion)" if summary.champion else ""
    return f"""# AutoML pipeline: {summary.experiment}

MLflow run `{summary.pipeline_run_id}` in experiment `{summary.experiment}`; study `{summary.study_name}`
({summary.backend}/{summary.sampler}, fidelity {summary.fidelity}).

**Trials:** {trials.complete} complete, {trials.pruned} pruned, {trials.failed} failed;
{summary.warm_start.enqueued} warm-start configs queued. **Best validation loss:** {summary.best_val_loss:.5g}
{_pbt_paragraph(summary)}
{_family_paragraph(summary)}## Best params
| param | value |
|---|---|
{params}

## Test metrics vs baselines
The model is the {_CHOSEN[summary.chosen]}{_why(summary)}

| metric | model | {" | ".join(title for _, title, _ in columns)} |
|---|---|{"---|" * len(columns)}
{rows}

{_extra_paragraphs(summary)}{_cv_paragraph(summary)}**Model:** {registry}{champion}; {summary.champion_note}.
"""


def render_table(summary: PipelineSummary) -> str:
    """The summary as the plain-text table ``automl run`` prints on stdout."""
    baselines = summary.baseline_metrics
    trials = summary.trials
    model = summary.registered_model
    lines = [
        "",
        f"Pipeline {summary.experiment} completed in {summary.total_seconds:.1f}s "
        f"(MLflow run {summary.pipeline_run_id})",
        f"  study {summary.study_name} ({summary.backend}/{summary.sampler}, fidelity {summary.fidelity}): "
        f"{trials.complete} complete, {trials.pruned} pruned, {trials.failed} failed; "
        f"{summary.warm_start.enqueued} warm-start configs queued",
        *([f"  {_pbt_line(summary)}"] if summary.pbt is not None else []),
        *([f"  family: {summary.family} (model.family auto)"] if summary.model_family == "auto" else []),
        f"  best params: {' '.join(f'{k}={_short(v)}' for k, v in summary.best_params.items())}",
        f"  best validation loss: {summary.best_val_loss:.5g}",
        "",
        f"  {'test metric':<12} {'model':>12} "
        + " ".join(f"{short:>{max(12, len(short))}}" for _, _, short in _baseline_columns(baselines)),
    ]
    for name, value in summary.test_metrics.items():
        lines.append(
            f"  {name:<12} {value:>12.5g} "
            + " ".join(
                f"{_baseline(baselines, key, name):>{max(12, len(short))}}"
                for key, _, short in _baseline_columns(baselines)
            )
        )
    registry = f"{model.name} v{model.version}" if model else "not registered"
    champion = " (champion)" if summary.champion else ""
    lines += [
        *([f"  {_ensemble_line(summary)}"] if summary.ensemble is not None else []),
        *([f"  {_refit_line(summary)}"] if summary.refit is not None else []),
        *([f"  {_cv_line(summary)}"] if summary.cv is not None else []),
        "",
        f"  model ({_CHOSEN[summary.chosen]}): {summary.model_uri} -> {registry}{champion}",
        "  stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in summary.stage_seconds.items()),
        f"  MLflow UI: {mlflow_ui(summary.mlflow_tracking_uri, summary.experiment_id)}",
        *(
            [f"  budget: {summary.budget.used:.1f}s of {summary.budget.seconds:g}s used"]
            if summary.budget is not None
            else []
        ),
    ]
    return "\n".join(lines)


def mlflow_ui(tracking_uri: str, experiment_id: str) -> str:
    """How to look at an experiment in MLflow's UI: the command that serves a local store and the page of its runs.
    MLflow 3's UI opens every experiment in its GenAI view unless the address asks for the model-training one (it
    reads ``workflowType`` from the address, else from the browser's last choice; the experiment's
    ``mlflow.experimentKind`` tag no longer decides)."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning" if experiment_id else ""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {tracking_uri}, then http://127.0.0.1:5000/{page}"


_CHOSEN = {"tuned": "tuned config", "default_config": "default config", "ensemble": "ensemble of the best configs"}


def training_label(name: str) -> str:
    """A final training's name as people read it: tuned, default config, ensemble, trial N (``member_N``, another of
    the search's best configs), refit of any of those."""
    if name.startswith("refit_"):
        return f"refit of {training_label(name.removeprefix('refit_'))}"
    labels = {"tuned": "tuned", "default_config": "default config", "ensemble": "ensemble", "gbm": "default LightGBM"}
    return labels.get(name, name.replace("member_", "trial "))


def _ensemble_line(summary: PipelineSummary) -> str:
    ensemble = summary.ensemble
    if ensemble is None:
        return ""
    members = ", ".join(f"{training_label(name)} {weight:.2f}" for name, weight in ensemble.weights.items())
    verdict = "kept" if ensemble.kept else "not kept (the single model validated as well or better)"
    return (
        f"ensemble: {len(ensemble.weights)} of {len(ensemble.candidates)} candidates ({members}); validation loss "
        f"{ensemble.val_loss:.5g} vs single {ensemble.single_val_loss:.5g}: {verdict}"
    )


def _refit_line(summary: PipelineSummary) -> str:
    refit = summary.refit
    if refit is None:
        return ""
    epochs = ", ".join(f"{training_label(name.removeprefix('refit_'))} {n}" for name, n in refit.epochs.items())
    return (
        f"refit: the registered weights trained again on all {refit.rows} rows (epochs: {epochs}); the test metrics "
        "are the tested model's"
    )


def _pbt_line(summary: PipelineSummary) -> str:
    pbt = summary.pbt
    if pbt is None:
        return ""
    lrs = [step["lr"] for step in pbt.schedule if "lr" in step]
    schedule = f"; its lr {lrs[0]:.3g} -> {lrs[-1]:.3g}" if lrs else ""
    return (
        f"population-based training: {pbt.population} members, {pbt.intervals} intervals, "
        f"{pbt.exploit_steps} exploit steps; best member {pbt.best_member}{schedule}"
    )


def _pbt_paragraph(summary: PipelineSummary) -> str:
    return f"\n{_pbt_line(summary)} (a member-interval is a trial).\n" if summary.pbt is not None else ""


def _extra_paragraphs(summary: PipelineSummary) -> str:
    return "".join(f"{line}\n\n" for line in (_ensemble_line(summary), _refit_line(summary)) if line)


def _cv_paragraph(summary: PipelineSummary) -> str:
    return f"{_cv_line(summary)}\n\n" if summary.cv is not None else ""


def _cv_line(summary: PipelineSummary) -> str:
    cv = summary.cv
    if cv is None:
        return ""
    return (
        f"cross-validation ({cv.folds} {cv.kind} folds, {_CV_OF.get(summary.chosen, _CHOSEN[summary.chosen])}): "
        f"validation loss {cv.mean:.5g} ± {cv.std:.3g}"
    )


_CV_OF = {"ensemble": "the single config the ensemble beat"}
_WHY = " (of it and the default config, the lower validation loss)."


def _why(summary: PipelineSummary) -> str:
    if summary.chosen == "ensemble":
        return " (its validation loss beat the single model's)."
    return _WHY if "default_config" in summary.baseline_metrics else "."


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _family_paragraph(summary: PipelineSummary) -> str:
    """Under ``model.family: auto``: which family went on (an empty string otherwise)."""
    if summary.model_family != "auto":
        return ""
    return f"**Family:** {summary.family} (searched by `model.family: auto`)\n\n"


def _baseline_columns(baselines: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The baseline columns of the renderings (key, Markdown title, table title): the default config and the naive
    forecasts always ("-" when left out), the default LightGBM when it ran."""
    columns = [("default_config", "default config", "default cfg")]
    if "gbm" in baselines:
        columns.append(("gbm", "default LightGBM", "LightGBM"))
    return [*columns, ("naive", "naive", "naive"), ("seasonal_naive", "seasonal naive", "seasonal naive")]


def _baseline(baselines: dict[str, dict[str, float]], name: str, metric: str) -> str:
    """A baseline's test metric as the renderings show it; "-" for a baseline ``final.baselines`` left out."""
    return f"{baselines[name][metric]:.5g}" if name in baselines else "-"
