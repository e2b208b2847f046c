"""A search process for the continuation tests: the real engine and the torch objective keeping rung checkpoints,
on the tiny test series, successive halving over 1/9, 1/3 and all of the data. With ``kill``, it SIGKILLs itself
right after the first promotion was recorded (between two rungs of a continued config).

Every evaluation appends ``start``/``done`` lines to ``evaluations.log`` (the config, its fraction, the fraction it
continued from and its loss), so the test can tell what was trained and from where.

    python -m tests.continuation_worker ROOT [kill]
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import optuna

from automl.configs import load_config
from automl.models import get_family, loss_for
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.search import SearchEngine, SearchSpace, Verdict, make_backend, make_scheduler
from automl.tasks.search_stage.objective import TrainerObjective
from automl.tasks.search_stage.studies import make_storage
from tests.helpers import TINY_SPACE, make_series, write_config

N_TRIALS = 6
EPOCHS = 3


class _Logged(TrainerObjective):
    def __call__(self, params, fidelity, fold=None):
        key = json.dumps(sorted(params.items()))
        with (self.root / "evaluations.log").open("a") as out:
            out.write(json.dumps({"event": "start", "config": key, "fraction": fidelity}) + "\n")
        evaluation = super().__call__(params, fidelity, fold)
        with (self.root / "evaluations.log").open("a") as out:
            record = {"event": "done", "config": key, "fraction": fidelity, "from": evaluation.continued_from}
            out.write(json.dumps({**record, "loss": evaluation.loss, "epochs": len(evaluation.curve)}) + "\n")
        return evaluation


class _KillAfterFirstPromotion:
    def __init__(self, armed: bool):
        self.armed = armed

    def rung_finished(self, record, fraction, step, evaluation, verdict):
        if self.armed and verdict == Verdict.PROMOTE:
            os.kill(os.getpid(), signal.SIGKILL)

    def trial_started(self, trial, record): ...

    def fold_finished(self, record, fraction, step, fold, loss): ...

    def trial_finished(self, record, best): ...

    def trial_interrupted(self, record, reason): ...


def main(root: str, kill: bool) -> None:
    root_path = Path(root)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = root_path / "sales.csv"
    if not data.exists():
        make_series().to_csv(data, index=False)
    cfg = load_config(write_config(root_path, data))
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    objective = _Logged(
        "lstm",
        prepared,
        dict(get_family("lstm").defaults),
        epochs=EPOCHS,
        loss=loss_for(prepared.task),
        seed=cfg.seed,
        threads=1,
        rung_dir=root_path / "rungs",
    )
    objective.root = root_path
    storage = make_storage(f"sqlite:///{root_path / 'optuna.db'}")
    study = optuna.create_study(study_name="continued", storage=storage, load_if_exists=True)
    space = SearchSpace.from_dict(TINY_SPACE)
    engine = SearchEngine(
        objective,
        make_backend("optuna", "random", study, space, len(study.trials), 3),
        make_scheduler("successive_halving", 3, 1 / 9),
        n_trials=N_TRIALS,
        observer=_KillAfterFirstPromotion(kill),
        run_id="pipeline-1",
        storage=storage,
    )
    engine.run()


if __name__ == "__main__":
    main(sys.argv[1], len(sys.argv) > 2 and sys.argv[2] == "kill")
