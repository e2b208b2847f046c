"""Multi-fidelity that pays: a config promoted to a larger data fraction continues from its checkpoint at the rung
below (weights and optimiser state) instead of training from scratch, so one that reaches all the data costs about
one full training; a rung trained before a kill is read back, not trained again; the search cleans its checkpoints.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import optuna
import pytest
import torch
from optuna.trial import TrialState

from automl.configs import load_config
from automl.models import ModelShape, build_model, get_family, loss_for
from automl.models.trainer import evaluate_loss
from automl.tasks.data_prep import DataPrepJob, load_and_check, prepare
from automl.tasks.search_stage.objective import TrainerObjective, continued_epochs
from tests.continuation_worker import EPOCHS, N_TRIALS
from tests.helpers import REPO, write_config

PARAMS = {"hidden_size": 16, "num_layers": 1, "dropout": 0.0, "lr": 0.01, "batch_size": 32}


@pytest.fixture
def prepared(series_csv, tmp_path):
    cfg = load_config(write_config(tmp_path, series_csv))
    checked = load_and_check(cfg)
    prepared, _ = prepare(checked.frame, DataPrepJob.of(cfg), checked.plan, checked.fingerprint)
    return prepared


def _objective(prepared, tmp_path, rungs: bool = True) -> TrainerObjective:
    return TrainerObjective(
        "lstm",
        prepared,
        dict(get_family("lstm").defaults),
        epochs=6,
        loss=loss_for(prepared.task),
        seed=3,
        threads=1,
        rung_dir=tmp_path / "rungs" if rungs else None,
    )


def test_a_promoted_config_starts_its_next_rung_from_its_checkpoint(prepared, tmp_path):
    objective = _objective(prepared, tmp_path)
    low = objective(PARAMS, 1 / 3)
    assert low.continued_from is None and len(low.curve) == 6
    high = objective(PARAMS, 1.0)
    assert high.continued_from == pytest.approx(1 / 3)
    assert len(high.curve) == continued_epochs(6, 1 / 3, 1.0) == 4  # 6 passes over all the data, in samples seen
    untrained = build_model(get_family("lstm"), ModelShape(prepared.n_features, prepared.n_outputs, 8), PARAMS, 3)
    criterion = torch.nn.MSELoss()
    val = (torch.as_tensor(prepared.val.X, dtype=torch.float32), torch.as_tensor(prepared.val.y, dtype=torch.float32))
    untrained_loss = evaluate_loss(untrained, *val, criterion)
    # the first epoch on all the data starts where the rung below ended, not where an untrained model starts
    assert abs(high.curve[0] - low.loss) < 0.25 * abs(untrained_loss - low.loss)
    assert high.loss <= low.loss  # the rung's result counts the checkpoint it started from (validated first)
    scratch = _objective(prepared, tmp_path / "other", rungs=False)(PARAMS, 1.0)
    assert scratch.continued_from is None and len(scratch.curve) == 6


def test_a_rung_kept_before_a_stop_is_read_back_and_continuation_can_be_off(prepared, tmp_path):
    objective = _objective(prepared, tmp_path)
    first = objective(PARAMS, 1 / 9)
    kept = list((tmp_path / "rungs").glob("*.pt"))
    assert len(kept) == 1
    again = objective(PARAMS, 1 / 9)  # e.g. a rerun after a kill between training it and recording it
    assert (again.loss, again.curve, again.seconds) == (first.loss, first.curve, first.seconds)
    other = {**PARAMS, "lr": 0.005}
    assert objective(other, 1 / 3).continued_from is None  # another config never continues from this one
    off = _objective(prepared, tmp_path / "off", rungs=False)
    off(PARAMS, 1 / 9)
    assert off(PARAMS, 1 / 3).continued_from is None and not (tmp_path / "off" / "rungs").exists()


def _run_worker(root, kill: bool) -> int:
    command = [sys.executable, "-m", "tests.continuation_worker", str(root), *(["kill"] if kill else [])]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300).returncode


def _events(root) -> list[dict]:
    return [json.loads(line) for line in (root / "evaluations.log").read_text().splitlines()]


def test_killed_between_rungs_of_a_continued_config_one_rerun_recomputes_nothing(tmp_path):
    assert _run_worker(tmp_path, kill=True) == -signal.SIGKILL
    before = [e for e in _events(tmp_path) if e["event"] == "done"]
    assert before and all(e["from"] is None for e in before)  # killed right after the first promotion
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = optuna.load_study(study_name="continued", storage=storage).trials
    assert [t for t in killed if t.state == TrialState.RUNNING], "the kill left no trial to resume"

    assert _run_worker(tmp_path, kill=False) == 0
    events = _events(tmp_path)
    done = [(e["config"], round(e["fraction"], 6)) for e in events if e["event"] == "done"]
    assert len(done) == len(set(done)), "a rung of a config was trained twice"
    promoted = [e for e in events if e["event"] == "done" and e["fraction"] > 0.12]
    assert promoted and all(e["from"] is not None for e in promoted)  # every promoted rung continued
    # the config promoted before the kill went on from its checkpoint at 1/9 after the rerun
    first_promoted = next(e for e in events if e["event"] == "done" and e["from"] is not None)
    assert first_promoted["from"] == pytest.approx(1 / 9)
    trials = optuna.load_study(study_name="continued", storage=storage).trials
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    counted = [t for t in trials if t.user_attrs.get("outcome") in ("complete", "pruned", "failed")]
    assert len(counted) == N_TRIALS
    # what a config reaching all the data trained, in passes over all the data: about one full training
    for config in {e["config"] for e in events if e["event"] == "done" and e["fraction"] == 1.0}:
        rungs = [e for e in events if e["event"] == "done" and e["config"] == config]
        passes = sum(e["epochs"] * e["fraction"] for e in rungs)
        assert passes <= 1.1 * EPOCHS, rungs
