"""Data prep: windows, chronological splits without leakage, train-only scaling, imputation, and data errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automl.configs import DataError, load_config
from automl.tasks.data_prep import DataPrepJob, fingerprint, load_and_check, plan_data, prepare, read_table
from tests.helpers import REPO, make_series, write_config


def _prepared(tmp_path, frame, **data):
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    cfg = load_config(write_config(tmp_path, path, data=data))
    checked = load_and_check(cfg)
    table, plan, fp = checked.frame, checked.plan, checked.fingerprint
    return cfg, *prepare(table, DataPrepJob.of(cfg), plan, fp)


@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.2, 0.1), (0.1, 0.25)])
def test_holdout_sizes_are_the_sizes_train_test_split_gives(val, test):
    """The classes-per-split check predicts the split sizes: they must be the ones the split really has."""
    from sklearn.model_selection import train_test_split

    from automl.configs import SplitConfig
    from automl.tasks.data_prep.tabular import holdout_sizes

    split = SplitConfig(train=round(1 - val - test, 10), val=val, test=test)
    for rows in range(20, 400):
        _, rest = train_test_split(np.arange(rows), test_size=val + test, random_state=0)
        val_rows, test_rows = train_test_split(rest, test_size=test / (val + test), random_state=0)
        assert holdout_sizes(rows, split) == {"test": len(test_rows), "val": len(val_rows)}, rows


def test_series_windows_follow_lookback_and_horizon(tmp_path):
    frame = make_series(200)
    frame["sales"] = np.arange(200, dtype=float)  # the target is its own row index
    frame["temperature"] = 0.0
    _, prepared, _ = _prepared(tmp_path, frame, lookback=8, horizon=2)
    assert prepared.train.X.shape[1:] == (8, 2) and prepared.train.y.shape[1] == 2
    raw_X = prepared.train.X[:, :, 0] * prepared.target_std + prepared.target_mean
    raw_y = prepared.to_original_units(prepared.train.y)
    np.testing.assert_allclose(raw_y[:, 0], raw_X[:, -1] + 1, atol=1e-3)  # next step after the window
    np.testing.assert_allclose(raw_y[:, 1], raw_X[:, -1] + 2, atol=1e-3)
    np.testing.assert_allclose(np.diff(raw_X[0]), 1.0, atol=1e-3)


def test_series_splits_are_chronological_and_scaled_on_train_only(tmp_path):
    frame = make_series(200)
    frame["sales"] = np.arange(200, dtype=float)
    _, prepared, rows = _prepared(tmp_path, frame.sample(frac=1, random_state=0), lookback=8, horizon=2)
    targets = {name: prepared.to_original_units(getattr(prepared, name).y) for name in ("train", "val", "test")}
    assert targets["train"].max() < targets["val"].min() <= targets["val"].max() < targets["test"].min()
    n_train_rows = int(200 * 0.7)
    assert targets["train"].max() == n_train_rows - 1  # no train window reaches into validation rows
    train_values = np.arange(n_train_rows, dtype=float)
    assert prepared.target_mean == pytest.approx(train_values.mean())
    assert prepared.target_std == pytest.approx(train_values.std())
    assert list(rows["train"]["week"]) == sorted(rows["train"]["week"])  # shuffled input, sorted output
    assert rows["train"]["week"].max() < rows["val"]["week"].min()


def test_series_missing_values_are_filled_forward_and_counted(tmp_path):
    frame = make_series(200)
    frame.loc[0, "sales"] = np.nan
    _, prepared, rows = _prepared(tmp_path, frame)
    assert prepared.card["missing_filled"] == {"sales": 4}
    assert not np.isnan(prepared.train.X).any()
    filled = pd.concat(rows.values())["sales"]
    assert filled.iloc[6] == filled.iloc[4]  # row 5 and 6 were missing: carried forward from row 4
    assert prepared.card["meta_features"]["n_rows"] == 200
    assert 0 <= prepared.card["meta_features"]["seasonality_strength"] <= 1


def _fortnightly_from(frame: pd.DataFrame, row: int) -> pd.DataFrame:
    """``frame`` weekly up to ``row``, every other week from there on (the test rows and the lookback before)."""
    days = np.concatenate([[0], np.where(np.arange(1, len(frame)) < row, 7, 14).cumsum()])
    return frame.assign(week=(pd.Timestamp("2000-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["sales"]), "data.target: column 'sales' not found"),
        (lambda f: f.drop(columns=["week"]), "data.time_column: column 'week' not found"),
        (lambda f: f.assign(sales="high"), "data.target: column 'sales' must be numeric"),
        (lambda f: f.assign(sales=np.nan), "data.target: column 'sales' has no values"),
        (lambda f: f.head(20), "data.path: too few rows (20) for lookback 8 + horizon 2"),
        (lambda f: pd.concat([f, f.tail(1)]), "data.time_column: column 'week' has duplicate timestamps"),
        (lambda f: f.assign(week="someday"), "data.time_column: column 'week' is not a date/time"),
        (lambda f: f.assign(temperature=np.nan), "column 'temperature': all values are missing"),
        (
            lambda f: _fortnightly_from(f, 150),
            "data.time_column: the test rows and the 8 before them do not keep the file's step (column 'week': rows "
            "are 14 days apart; the model was trained on steps of 7 days)",
        ),
    ],
)
def test_series_data_errors_are_one_line(tmp_path, mutate, message):
    with pytest.raises(DataError) as info:
        _prepared(tmp_path, mutate(make_series(200)))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        read_table(empty)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read .*broken\.parquet"):
        read_table(broken)
    semicolons = tmp_path / "semi.csv"
    semicolons.write_text("a;b\n1;2\n3;4\n")
    with pytest.raises(DataError, match="does not look comma-separated"):
        read_table(semicolons)


def test_parquet_input_and_fingerprint(tmp_path):
    frame = make_series(120)
    csv, parquet = tmp_path / "a.csv", tmp_path / "a.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet, index=False)
    assert read_table(parquet).shape == frame.shape
    assert fingerprint(csv) == fingerprint(csv) != fingerprint(parquet)


def test_tabular_classification_is_stratified_imputed_and_one_hot():
    cfg = load_config(REPO / "configs" / "mlp_tabular.yaml")
    checked = load_and_check(cfg)
    table, plan, fp = checked.frame, checked.plan, checked.fingerprint
    assert plan.task == "classification" and set(plan.categorical) == {"island", "sex"}
    prepared, rows = prepare(table, DataPrepJob.of(cfg), plan, fp)
    assert prepared.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert "island=Biscoe" in prepared.feature_names and not np.isnan(prepared.train.X).any()
    shares = {
        name: np.bincount(getattr(prepared, name).y, minlength=3) / len(getattr(prepared, name))
        for name in ("train", "val", "test")
    }
    for name in ("val", "test"):
        np.testing.assert_allclose(shares[name], shares["train"], atol=0.06)
    assert set(rows["train"].index).isdisjoint(rows["test"].index)
    numeric = [i for i, n in enumerate(prepared.feature_names) if "=" not in n]
    np.testing.assert_allclose(prepared.train.X[:, numeric].mean(axis=0), 0, atol=1e-5)
    assert prepared.card["missing_imputed_total"] == 19


def test_tabular_regression_task_is_inferred_from_a_numeric_target(tmp_path):
    cfg = load_config(REPO / "configs" / "mlp_tabular.yaml", ["data.target=body_mass_g"])
    table = read_table(cfg.data.path)
    plan = plan_data(table, DataPrepJob.of(cfg))
    assert plan.task == "regression"
    prepared, _ = prepare(table, DataPrepJob.of(cfg), plan)
    assert prepared.card["rows_without_target"] == 2
    assert prepared.to_original_units(prepared.train.y).mean() == pytest.approx(prepared.target_mean)


def test_the_checked_table_goes_to_the_flow_but_not_into_prefects_database():
    """automl run reads and checks the data once and hands it to the flow; Prefect stores a placeholder for that
    parameter, not the table (the config itself is stored, as JSON)."""
    from automl.flows.pipeline import checked_pipeline

    cfg = load_config(REPO / "configs" / "lstm_baseline.yaml")
    checked = load_and_check(cfg)
    stored = checked_pipeline.serialize_parameters({"cfg": cfg, "checked": checked, "study_name": None})
    assert stored["checked"] == "<CheckedData>"
    assert stored["cfg"]["name"] == "lstm_baseline" and stored["cfg"]["search"]["backend"] == cfg.search.backend


@pytest.mark.parametrize(
    ("freq", "season"),
    [("15min", 96), ("30min", 48), ("h", 24), ("D", 7), ("W-SAT", 52), ("MS", 12), ("QS", 4), ("YS", 1), ("7s", 1)],
)
def test_the_season_follows_the_time_columns_step(freq, season):
    from automl.tasks.data_prep.meta_features import infer_season

    assert infer_season(pd.Series(pd.date_range("2001-01-01", periods=40, freq=freq))) == season


def test_an_irregular_time_column_has_no_season():
    from automl.tasks.data_prep.meta_features import infer_season

    steps = np.random.default_rng(0).integers(1, 200, size=60).cumsum()
    times = pd.Series(pd.Timestamp("2001-01-01") + pd.to_timedelta(steps, unit="h"))
    assert infer_season(times) == 1
    assert infer_season(times.head(1)) == 1  # no step at all


def test_the_season_is_resolved_and_recorded(tmp_path):
    frame = make_series(200)  # weekly; 140 training rows
    _, prepared, _ = _prepared(tmp_path, frame)
    assert prepared.season == prepared.card["season"] == 52 and "season_note" not in prepared.card
    _, prepared, _ = _prepared(tmp_path, frame, season=140)  # as long as the training rows: allowed
    assert prepared.season == prepared.card["season"] == 140
    assert prepared.target_history[prepared.test_first_rows[0]] == pytest.approx(
        prepared.to_original_units(prepared.test.y)[0, 0]
    )
    with pytest.raises(DataError, match=r"^data\.season: 141 is longer than the training rows \(140\)$"):
        _prepared(tmp_path, frame, season=141)


def test_an_inferred_season_longer_than_the_training_rows_falls_back_to_one(tmp_path):
    _, prepared, _ = _prepared(tmp_path, make_series().head(60))  # weekly (52), 42 training rows
    assert prepared.season == prepared.card["season"] == 1
    assert "implies 52, more than the training rows (42); 1 is used" in prepared.card["season_note"]
