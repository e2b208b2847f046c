"""Where the search's evaluations run: Prefect's task runner for the ``search`` subflow (threads for one evaluation at
a time; Dask worker processes for ``search.parallelism`` > 1 or a ``search.cluster_address``), the Dask settings of
the clusters we start, and the torch threads each evaluation may use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import ThreadPoolTaskRunner

from automl.configs import SearchConfig


def task_runner_for(search: SearchConfig):
    """Threads for one evaluation at a time; Dask worker processes (a LocalCluster, or the scheduler at
    ``search.cluster_address``) for parallel evaluations."""
    if search.cluster_address or search.parallelism > 1:
        from prefect_dask import DaskTaskRunner

        if search.cluster_address:
            return DaskTaskRunner(address=search.cluster_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": search.parallelism,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": _worker_env(),
            }
        )
    return ThreadPoolTaskRunner(max_workers=1)


# Two Dask defaults that cost torch training dearly in local worker processes (measured on one LSTM trial in a
# plain LocalCluster, 2 workers x 1 thread): the worker's statistical profiler samples every thread's stack each
# 10 ms and made training 50-90% slower; the nanny's MALLOC_TRIM_THRESHOLD_=65536 makes glibc return memory after
# nearly every step, 20% slower with a third of the time in the kernel. Both are off for the clusters we start.
LOCAL_DASK_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}


def _worker_env() -> dict[str, str]:
    """Environment for local Dask workers: the API this flow reports to. Without it, each worker process of a
    run on the ephemeral API would start an ephemeral Prefect server of its own (seconds of CPU each, and its
    task runs reported there instead of to the flow's API)."""
    from prefect.context import FlowRunContext
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url and (context := FlowRunContext.get()) is not None and context.client is not None:
        url = str(context.client.api_url)
    return {"PREFECT_API_URL": url} if url and url.startswith("http") and "ephem" not in url else {}


def torch_threads(parallelism: int) -> int:
    """Threads each evaluation may use so that parallel workers do not oversubscribe this machine's cores."""
    return max(1, (os.cpu_count() or 1) // parallelism)


@contextmanager
def local_dask_settings() -> Iterator[None]:
    """``LOCAL_DASK_CONFIG`` for the clusters started inside this block.

    distributed is imported first so that its defaults are loaded: ``dask.config.set`` restores on exit what it
    found on entry, and a ``distributed`` section that was not there yet would be deleted whole, breaking every
    later cluster in this process (a second parallel search in ``automl serve`` or a benchmark).
    """
    import dask
    import distributed  # noqa: F401

    with dask.config.set(LOCAL_DASK_CONFIG):
        yield
