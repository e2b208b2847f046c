"""``search.strategy: pbt``, population-based training: the population trains through the search subflow's executor,
every member is an MLflow run under the ``search`` run (its params and validation loss per epoch, and whom it copied
per interval), and the search run gets the lineage, the best member's schedule and two plots. The best member's
weights go to the final stage, which tests them without training again."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from automl.models import MUTABLE_PARAMS
from automl.tasks.runtime.state import local_state
from automl.tasks.search import (
    COMPLETE,
    FAILED,
    INTERRUPTED,
    MemberStep,
    PBTResult,
    PBTSettings,
    PopulationBasedTraining,
    PrefectExecutor,
    TrialCounts,
)
from automl.tasks.search_stage.checkpoints import trial_weights_path
from automl.tasks.search_stage.deadline import SearchDeadline
from automl.tasks.search_stage.objective import MemberTrainer
from automl.tasks.search_stage.strategy import SearchContext, StrategyOutcome
from automl.tasks.summary import PBTSummary
from automl.tasks.tracking.catalog import (
    EPOCH_VAL_LOSS_METRIC,
    EXPLOITED_FROM_METRIC,
    OUTCOME,
    PBT_BEST_LOSS_METRIC,
    PBT_EXPLOIT_STEPS_METRIC,
    PBT_INTERVALS_METRIC,
    PBT_LINEAGE_FILE,
    PBT_LOSSES_PLOT,
    PBT_MEMBER,
    PBT_PARAM_METRIC,
    PBT_PARAM_PREFIX,
    PBT_SCHEDULE_FILE,
    PBT_SCHEDULES_PLOT,
    TRAIN_SECONDS_METRIC,
    TRIAL_ROLE,
    VAL_LOSS_METRIC,
)
from automl.tasks.tracking.runs import child_runs, create_child_run, log_frame, was_interrupted

logger = logging.getLogger("automl")


class PopulationBasedSearch:
    """Population-based training over the space: the default config and the warm-start configs first, the rest drawn
    from the space; members train through the search subflow's executor."""

    name = "pbt"

    def run(self, context: SearchContext) -> StrategyOutcome:
        job, study, space, deadline = context.job, context.study, context.space, context.deadline
        search, seed, pipeline = job.search, job.seed, context.pipeline
        # the default config first (it may be the best start), then the warm-start configs, each once
        initial = [space.fit({}, job.model.default_config())[0]] if search.try_default_first else []
        for candidate in context.warm_start.queued:
            if candidate.queued_params not in initial:
                initial.append(candidate.queued_params)
        settings = PBTSettings(
            population=search.pbt.population,
            interval_epochs=search.pbt.interval_epochs,
            epochs=search.pbt.epochs,
            quantile=search.pbt.quantile,
            perturb=tuple(search.pbt.perturb),
            resample_probability=search.pbt.resample_probability,
            seed=seed,
        )
        started = time.time()

        def stop_time() -> float:
            """When training must end: the run's budget (less what the final stage needs) or search.timeout."""
            return min(
                deadline() if deadline is not None else math.inf,
                started + search.timeout if search.timeout is not None else math.inf,
            )

        bounded = deadline is not None or search.timeout is not None
        objective = MemberTrainer.of(
            job,
            context.prepared,
            threads=context.threads,
            deadline=stop_time if bounded else None,  # a member's interval ends there, keeping its best epoch
            # per pipeline run: another run continuing the study (--study-name) trains its own population
            checkpoint_dir=local_state().pbt_checkpoints(study.study_name) / pipeline.run_id,
        )
        mlflow.log_params({f"{PBT_PARAM_PREFIX}{k}": v for k, v in search.pbt.model_dump().items()})
        logger.info(
            "search: population-based training, study %s: %d members, %d epochs in intervals of %d, "
            "the worst %d copy the best %d; mutable params %s",
            study.study_name,
            settings.population,
            settings.epochs,
            settings.interval_epochs,
            settings.cut(),
            settings.cut(),
            ", ".join(n for n in space.names if n in MUTABLE_PARAMS),
        )
        tracker = MlflowPBTObserver(pipeline.experiment_id, context.search_run_id, settings, deadline)
        pbt = PopulationBasedTraining(
            objective,
            space,
            MUTABLE_PARAMS,
            settings,
            study,
            initial=initial,
            executor=PrefectExecutor(search.parallelism),
            observer=tracker,
            run_id=pipeline.run_id,
            time_up=(lambda: time.time() >= stop_time()) if bounded else None,
        )
        try:
            result = pbt.run()
        except BaseException as exc:
            tracker.close("KILLED" if was_interrupted(exc) else "FAILED")
            raise
        tracker.close("FINISHED")
        best_weights = objective.export_weights(
            result.best_member,
            result.intervals_done - 1,
            trial_weights_path(local_state().trial_weights(study.study_name), result.best_params),
        )
        objective.drop_checkpoints_before(result.intervals_done - 1)
        ok = [s for s in result.steps if s.ok]
        schedule = result.schedule(result.best_member)
        mlflow.log_dict(schedule, PBT_SCHEDULE_FILE)
        log_frame(pd.DataFrame(result.lineage()), PBT_LINEAGE_FILE)
        log_population_plots(result, settings)
        logger.info(
            "search: best member %d, val_loss %.5g after %d intervals; %d exploit steps; schedule of lr: %s",
            result.best_member,
            result.best_value,
            result.intervals_done,
            result.exploit_steps,
            " -> ".join(f"{p['lr']:.3g}" for p in schedule) if "lr" in space else "fixed",
        )
        return StrategyOutcome(
            best_params=result.best_params,
            best_value=result.best_value,
            best_trial=result.best_trial,
            counts=TrialCounts(complete=len(ok), failed=len(result.steps) - len(ok)),
            seconds=time.time() - started,
            enqueued=len(initial[int(search.try_default_first) : search.pbt.population]),  # warm-start members
            best_weights=best_weights,
            metrics={PBT_EXPLOIT_STEPS_METRIC: result.exploit_steps, PBT_INTERVALS_METRIC: result.intervals_done},
            pbt=PBTSummary(
                settings.population, result.intervals_done, result.exploit_steps, result.best_member, schedule
            ),
        )


class MlflowPBTObserver:
    """One MLflow run per member under the search run (reopened when the search resumes): its params per epoch
    (metrics ``param_<name>``), validation loss per epoch, and ``exploited_from`` per interval; a progress line per
    interval with the population's best so far."""

    def __init__(
        self, experiment_id: str, search_run_id: str, settings: PBTSettings, deadline: SearchDeadline | None = None
    ):
        self.client = MlflowClient()
        self.deadline = deadline  # told what a member's epoch costs: the final stage's baseline is estimated from it
        self.experiment_id = experiment_id
        self.search_run_id = search_run_id
        self.settings = settings
        self._runs: dict[int, str] = {}
        self._logged: dict[int, set[int]] = {}  # member: intervals whose metrics its run has
        for run in child_runs(experiment_id, search_run_id, role=TRIAL_ROLE):
            if PBT_MEMBER in run.data.tags:
                member = int(run.data.tags[PBT_MEMBER])
                self._runs[member] = run.info.run_id
                history = self.client.get_metric_history(run.info.run_id, EXPLOITED_FROM_METRIC)
                self._logged[member] = {point.step for point in history}
                if run.info.status != "RUNNING":
                    self.client.update_run(run.info.run_id, status="RUNNING")
        best_so_far = self.client.get_metric_history(search_run_id, PBT_BEST_LOSS_METRIC)
        self._intervals_logged = {point.step for point in best_so_far}
        self._best = math.inf
        self._started = time.monotonic()

    def _run_of(self, member: int) -> str:
        if member not in self._runs:
            self._runs[member] = create_child_run(
                self.experiment_id, self.search_run_id, f"member-{member:03d}", TRIAL_ROLE, {PBT_MEMBER: str(member)}
            )
            self._logged[member] = set()
        return self._runs[member]

    def member_finished(self, step: MemberStep, restored: bool) -> None:
        if self.deadline is not None and step.curve and step.seconds > 0:
            self.deadline.epoch_seconds[step.member] = step.seconds / len(step.curve)
        run_id = self._run_of(step.member)
        if step.interval in self._logged[step.member]:
            return  # logged before a stop
        now = int(time.time() * 1000)
        first = step.interval * self.settings.interval_epochs
        epochs = range(first, first + self.settings.epochs_in(step.interval))
        metrics = [Metric(EPOCH_VAL_LOSS_METRIC, v, now, first + i) for i, v in enumerate(step.curve)]
        metrics += [
            Metric(PBT_PARAM_METRIC.format(name=name), float(value), now, epoch)
            for name, value in step.params.items()
            if isinstance(value, int | float)
            for epoch in epochs
        ]
        metrics.append(Metric(TRAIN_SECONDS_METRIC, step.seconds, now, step.interval))
        if step.ok:
            metrics.append(Metric(VAL_LOSS_METRIC, step.loss, now, step.interval))
        # the lineage: whom it copied before this interval (-1: it went on with its own weights); logged last, so
        # that its presence says the interval's metrics are all there
        donor = -1 if step.exploited_from is None else step.exploited_from
        metrics.append(Metric(EXPLOITED_FROM_METRIC, donor, now, step.interval))
        params = [Param(k, str(v)) for k, v in step.params.items()] if step.interval == 0 else []
        self.client.log_batch(run_id, metrics=metrics, params=params)
        self._logged[step.member].add(step.interval)

    def interval_finished(self, interval: int, steps: Sequence[MemberStep], best: MemberStep, restored: bool) -> None:
        self._best = min(self._best, best.loss)
        exploited = sum(s.exploited_from is not None for s in steps)
        if interval not in self._intervals_logged:
            self.client.log_metric(self.search_run_id, PBT_BEST_LOSS_METRIC, self._best, step=interval)
        logger.info(
            "pbt interval %d/%d | best member %d val_loss %.5g (lr %s) | best so far %.5g | %d exploited | %.0fs%s",
            interval + 1,
            self.settings.intervals,
            best.member,
            best.loss,
            f"{best.params['lr']:.3g}" if "lr" in best.params else "-",
            self._best,
            exploited,
            time.monotonic() - self._started,
            " (restored)" if restored else "",
        )

    def close(self, status: str) -> None:
        outcome = {"FINISHED": COMPLETE, "KILLED": INTERRUPTED}.get(status, FAILED)
        for member, run_id in self._runs.items():
            try:
                self.client.set_tag(run_id, OUTCOME, outcome)
                self.client.set_terminated(run_id, status)
            except Exception as error:  # a resumed pipeline closes runs its process left RUNNING
                logger.warning("member %d: could not close its run (%s)", member, error)


def log_population_plots(result: PBTResult, settings: PBTSettings) -> None:
    """The population's validation loss per epoch, and its learning-rate schedules (one line per member, the best
    drawn thick), on the active MLflow run."""
    from automl.tasks.tracking.plotting import pyplot

    plt = pyplot()
    by_member: dict[int, list[MemberStep]] = {}
    for step in sorted(result.steps, key=lambda s: s.interval):
        by_member.setdefault(step.member, []).append(step)
    plots = {PBT_LOSSES_PLOT: "validation loss", PBT_SCHEDULES_PLOT: "lr"}
    for artifact, what in plots.items():
        figure, axes = plt.subplots(figsize=(8, 4.5))
        for member, steps in by_member.items():
            xs, ys = [], []
            for step in steps:
                first = step.interval * settings.interval_epochs
                if what == "lr":
                    if "lr" not in step.params:
                        continue
                    xs += [first, first + settings.epochs_in(step.interval)]
                    ys += [step.params["lr"]] * 2
                else:
                    xs += [first + i + 1 for i in range(len(step.curve))]
                    ys += list(step.curve)
            best = member == result.best_member
            axes.plot(xs, ys, linewidth=2.5 if best else 1, alpha=1 if best else 0.6, label=f"member {member}")
        axes.set_xlabel("epoch")
        axes.set_ylabel(what)
        if what == "lr":
            axes.set_yscale("log")
        else:
            finite = [v for s in result.steps for v in s.curve if math.isfinite(v)]
            if finite and max(finite) > 20 * min(finite) > 0:
                axes.set_yscale("log")
        axes.set_title(f"PBT: {what} of {result.population} members (best: member {result.best_member})")
        axes.legend(fontsize=7, ncol=2)
        figure.tight_layout()
        mlflow.log_figure(figure, artifact)
        plt.close(figure)
