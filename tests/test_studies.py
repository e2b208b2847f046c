"""The Optuna storages of the pipeline (tasks/search_stage/studies.py): a journal file's folder is made as a SQLite
database's is, the config check having found that it can be."""

from __future__ import annotations

import optuna

from automl.tasks.search_stage.studies import make_storage


def test_a_journal_storage_in_a_folder_not_made_yet_is_made_and_holds_studies(tmp_path):
    path = tmp_path / "not" / "yet" / "studies.log"
    storage = make_storage(f"journal://{path}")
    optuna.create_study(study_name="journal", storage=storage)
    assert path.is_file() and optuna.get_all_study_names(storage) == ["journal"]
