"""Executors run evaluations: locally in threads (tests, benchmarks, library use) or as Prefect tasks through
the flow's task runner (the pipeline). The engine only submits and waits. Prefect is imported by the executor
that uses it, so the engine runs where Prefect is not installed."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from automl.tasks.search._types import Evaluation


class Executor(Protocol):
    parallelism: int

    def submit(self, objective: Callable, params: dict[str, Any], fraction: float, label: str) -> Any: ...

    def wait_any(self, futures: list[Any], timeout: float | None = None) -> list[Any]:
        """The futures that finished; waits for at least one, or until ``timeout`` (then possibly none)."""

    def evaluation_of(self, future: Any) -> Evaluation:
        """What the finished evaluation behind ``future`` produced (a failed ``Evaluation`` for any error)."""


def evaluate(objective: Callable, params: dict[str, Any], fraction: float) -> Evaluation:
    """Run ``objective(params, fraction)`` and turn any error into a failed ``Evaluation`` with its reason."""
    started = time.perf_counter()
    try:
        evaluation = Evaluation.of(objective(dict(params), fraction))
    except Exception as exc:  # the search goes on; the reason is recorded on the trial
        return Evaluation(float("nan"), seconds=time.perf_counter() - started, error=_reason(exc))
    if not evaluation.seconds:
        evaluation = dataclasses.replace(evaluation, seconds=time.perf_counter() - started)
    return evaluation


class LocalExecutor:
    """Evaluations in a thread pool of ``parallelism`` workers (no Prefect)."""

    def __init__(self, parallelism: int = 1):
        self.parallelism = parallelism
        self._pool = cf.ThreadPoolExecutor(max_workers=parallelism)

    def submit(self, objective: Callable, params: dict[str, Any], fraction: float, label: str) -> cf.Future:
        return self._pool.submit(evaluate, objective, params, fraction)

    def wait_any(self, futures: list[cf.Future], timeout: float | None = None) -> list[cf.Future]:
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    def evaluation_of(self, future: cf.Future) -> Evaluation:
        return future.result()


@functools.cache
def evaluation_task() -> Any:
    """``evaluate`` as a Prefect task. A failing objective does not fail the task: its one-line reason travels
    in the ``Evaluation`` and is recorded on the trial (Optuna, MLflow)."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(evaluate, name="evaluate", cache_policy=NO_CACHE, persist_result=False)


class PrefectExecutor:
    """Evaluations as Prefect tasks submitted through the current flow run's task runner."""

    def __init__(self, parallelism: int = 1):
        self.parallelism = parallelism

    def submit(self, objective: Callable, params: dict[str, Any], fraction: float, label: str) -> Any:
        return evaluation_task().with_options(task_run_name=label).submit(objective, params, fraction)

    def wait_any(self, futures: list[Any], timeout: float | None = None) -> list[Any]:
        from prefect.futures import as_completed

        try:
            return [next(iter(as_completed(futures, timeout=timeout)))]
        except TimeoutError:
            return []

    def evaluation_of(self, future: Any) -> Evaluation:
        value = future.result(raise_on_failure=False)
        if isinstance(value, Evaluation):
            return value
        return Evaluation(float("nan"), error=_reason(value) if isinstance(value, BaseException) else str(value))


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    origin = f" (at {where.name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {text[0] if text else ''}{origin}".strip()
