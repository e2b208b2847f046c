"""A search worker for the shared-study test: ``python tests/shared_study_worker.py STORAGE STUDY N_TRIALS NAME``.

Runs the engine on a cheap objective against one Optuna study that other workers use at the same time. The worker
prints ``ready`` once its study is loaded and waits for a line on stdin before it starts, so that a slow import in
one process cannot let the other finish alone."""

from __future__ import annotations

import sys
import time

import optuna

from automl.tasks.search import SearchEngine, SearchSpace, make_backend, make_scheduler
from automl.tasks.search_stage.studies import make_storage


def main(storage: str, study_name: str, n_trials: int, worker: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SearchSpace.from_dict({"x": {"type": "float", "low": -5, "high": 5}})
    rdb = make_storage(storage)
    study = optuna.create_study(study_name=study_name, storage=rdb, load_if_exists=True)

    print("ready", flush=True)
    sys.stdin.readline()

    def objective(params, fidelity):
        time.sleep(0.05)
        return (params["x"] - 1) ** 2

    engine = SearchEngine(
        objective,
        make_backend("optuna", "tpe", study, space, hash(worker) % 1000, 3),
        make_scheduler("none", 3, 1),
        n_trials=n_trials,
        run_id=worker,
        storage=rdb,
    )
    engine.run()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
