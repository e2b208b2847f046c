"""Every name the pipeline writes to and reads from MLflow (tags, params, metrics, artifacts, aliases), and the keys
of its Prefect artifacts: the tracking layout in one place, as Kedro's catalog is. Plain constants, no imports.

Names with ``{...}`` are templates (``SPLIT_FILE.format(split="train")``); ``*_PREFIX`` names are followed by a
metric, param or timestamp. The registered model's own directory (``torch_model``, ``preprocessing.json``) is named
in tasks/registry/raw_model.py, which ships inside the model and so imports nothing of this package.
"""

# --- experiments ----------------------------------------------------------------------------------------------
# MLflow 3's UI shows an experiment in its GenAI view unless this tag says it trains models (the UI's own
# "experiment type" switch writes the same tag and value).
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
IMPORTED_EXPERIMENT = "imported-configs"  # where ``automl configs import`` stores configs

# --- run roles: tag ROLE on every run, and its values ---------------------------------------------------------
ROLE = "automl.role"
PIPELINE_ROLE = "pipeline"
STAGE_ROLE = "stage"
TRIAL_ROLE = "trial"
IMPORTED_ROLE = "imported"
SCORE_ROLE = "score"
LR_FIND_ROLE = "lr_find"  # ``automl lr-find``: also the run's name
FINAL_TRAINING_ROLE = "final_training"  # one training of the final stage, nested under its run
STAGE = "automl.stage"  # on stage runs: one of STAGES
STAGES = ("data_prep", "warm_start", "search", "final_train")

# --- pipeline (parent) run tags: what later runs look it up by -------------------------------------------------
FAMILY = "automl.model_family"
TASK_TYPE = "automl.task_type"
FINGERPRINT = "automl.dataset_fingerprint"  # also on imported runs and on model versions
STUDY = "automl.study_name"
CONFIG_HASH = "automl.config_hash"
CONFIG_NAME = "automl.config_name"
DATA_SOURCE = "automl.data_source"
META_FEATURES = "automl.meta_features"
SPACE_SIGNATURE = "automl.space_signature"
HOST = "automl.host"  # the process that owns a RUNNING pipeline run
PID = "automl.pid"

# --- pipeline run params, metrics and artifacts: the summary --------------------------------------------------
BEST_PARAM_PREFIX = "best_"  # best_<param>, also on imported runs
MODEL_FAMILY_PARAM = "model_family"
BACKEND_PARAM = "backend"  # also on the search run
SAMPLER_PARAM = "sampler"
FIDELITY_PARAM = "fidelity"
N_TRIALS_PARAM = "n_trials"
BEST_VAL_LOSS = "best_val_loss"  # also on the search run and on imported runs
TEST_METRIC_PREFIX = "test_"  # test_<metric>: on the pipeline and final_train runs, and as model version tags
BASELINE_METRIC_PREFIX = "baseline_"  # baseline_<baseline>_<metric>: on the pipeline and final_train runs
TRIALS_METRIC_PREFIX = "trials_"  # trials_<outcome>: on the pipeline and search runs
TOTAL_SECONDS_METRIC = "total_seconds"
BEST_CONFIG_FILE = "best_config.json"  # what warm start and ``automl configs`` read; also on imported runs
SUMMARY_JSON_FILE = "summary.json"
SUMMARY_MD_FILE = "summary.md"
CONFIG_FILE = "config.yaml"

# --- imported runs (``automl configs import``) -----------------------------------------------------------------
IMPORTED_FROM = "automl.imported_from"
SOURCE_RUN_ID = "automl.source_run_id"
TRANSFERRED_CONFIG_FILE = "transferred_config.json"

# --- data_prep stage run ----------------------------------------------------------------------------------------
ROWS_PARAM = "rows"
FEATURES_PARAM = "features"
TASK_PARAM = "task"
KIND_PARAM = "kind"
MISSING_FILLED_METRIC = "missing_values_filled"
SPLIT_SIZE_METRIC = "{split}_size"
DATA_CARD_FILE = "data_card.json"
SPLIT_FILE = "splits/{split}.parquet"  # each split is also an MLflow dataset input, its context the split's name

# --- warm_start stage run ---------------------------------------------------------------------------------------
ENABLED_PARAM = "enabled"
TOP_K_PARAM = "top_k"
CANDIDATES_METRIC = "candidates"
ENQUEUED_METRIC = "enqueued"
CANDIDATES_FILE = "candidates.csv"
QUEUED_CONFIGS_FILE = "queued_configs.json"

# --- search stage run (besides BACKEND_PARAM ... N_TRIALS_PARAM, BEST_VAL_LOSS and TRIALS_METRIC_PREFIX) ------------
RUNG_FRACTIONS_PARAM = "rung_fractions"
SCHEDULER_PARAM = "scheduler"
BRACKETS_PARAM = "brackets"  # the Hyperband brackets used (1: successive halving)
CONTINUATION_PARAM = "continuation"  # search.continuation
COST_AWARE_PARAM = "cost_aware"  # search.cost_aware
TIMEOUT_PARAM = "timeout"
EPOCHS_PARAM = "epochs"  # also on the final_train run
N_STARTUP_TRIALS_PARAM = "n_startup_trials"
STUDY_NAME_PARAM = "study_name"
CV_FOLDS_PARAM = "cv_folds"  # search.cv: also on the final_train run
CV_KIND_PARAM = "cv_kind"
CV_GAP_PARAM = "cv_gap"
CV_PRUNING_PARAM = "cv_pruning"
CV_PLOT_FILE = "plots/cv_fold_scores.png"  # the top configs' validation loss per fold
PARALLELISM_PARAM = "parallelism"
TRIAL_TIMEOUT_PARAM = "trial_timeout"
BEST_TRIAL_METRIC = "best_trial"
SEARCH_SECONDS_METRIC = "search_seconds"
ENGINE_OVERHEAD_SHARE_METRIC = "engine_overhead_share"
IMPORTANCE_METRIC_PREFIX = "importance_"  # importance_<param>
BEST_PARAMS_FILE = "best_params.json"
BEST_TRIAL_WEIGHTS_FILE = "best_trial_weights.pt"  # the winner's best epoch on all the data (a torch state dict)
PARAM_IMPORTANCES_FILE = "param_importances.json"
TRIALS_PARQUET_FILE = "trials.parquet"
TRIALS_CSV_FILE = "trials.csv"
SEARCH_PLOT_FILE = "plots/{plot}.png"  # Optuna's plots, each as a picture
SEARCH_PLOTS_HTML = "plots/search_plots.html"  # the same plots, interactive, in one page with plotly inside (offline)

STRATEGY_PARAM = "strategy"  # sample | pbt
# search.strategy pbt: the search run's params pbt_<key> (search.pbt), its lineage and schedules, and its plots
PBT_PARAM_PREFIX = "pbt_"
PBT_EXPLOIT_STEPS_METRIC = "pbt_exploit_steps"
PBT_INTERVALS_METRIC = "pbt_intervals"
PBT_BEST_LOSS_METRIC = "pbt_best_val_loss"  # one step per interval: the population's best so far
PBT_LINEAGE_FILE = "pbt_lineage.csv"  # one row per member and interval: params, loss, exploited_from
PBT_SCHEDULE_FILE = "pbt_schedule.json"  # the best member's params per interval (also on the pipeline run)
PBT_LOSSES_PLOT = "plots/pbt_population_val_loss.png"
PBT_SCHEDULES_PLOT = "plots/pbt_lr_schedules.png"
# search.lr_range auto: the range test's suggestion and the lr bounds the search used
LR_RANGE_SUGGESTION_METRIC = "lr_range_suggestion"
LR_RANGE_LOW_PARAM = "lr_range_low"
LR_RANGE_HIGH_PARAM = "lr_range_high"
LR_RANGE_PLOT = "plots/lr_range.png"

# --- trial runs (nested under the search run) ----------------------------------------------------------------
# PBT: one run per member, with its params per epoch as metrics param_<name>, EPOCH_VAL_LOSS_METRIC per epoch and
# EXPLOITED_FROM_METRIC per interval (the member it copied, -1 when it went on with its own weights)
PBT_MEMBER = "automl.pbt_member"
PBT_PARAM_METRIC = "param_{name}"
EXPLOITED_FROM_METRIC = "exploited_from"
TRIAL_NUMBER = "automl.trial_number"
OUTCOME = "automl.outcome"  # complete | pruned | failed | interrupted
TRIAL_SOURCE = "automl.source"  # sampler | warm_start:<run id> | retry:<trial number>
RETRIED_FROM_TRIAL = "automl.retried_from_trial"
PROMOTIONS = "automl.promotions"
FAIL_REASON = "automl.fail_reason"
RUNG_VERDICT = "automl.rung{rung}_verdict"
RUNG_FRACTION_PARAM = "rung{rung}_fraction"
# the fraction whose checkpoint a rung continued from (search.continuation); absent when it trained from scratch
RUNG_CONTINUED_FROM_PARAM = "rung{rung}_continued_from"
RUNG_VAL_LOSS_METRIC = "rung_val_loss"  # with cross-validation: the mean over the rung's folds
FOLD_VAL_LOSS_METRIC = "val_loss_fold{fold}"  # cross-validation: one step per rung (the rung's step)
RUNG_CURVE_METRIC = "val_loss_rung{rung}"  # one step per epoch
TRAIN_SECONDS_METRIC = "train_seconds"
RUNGS_REACHED_METRIC = "rungs_reached"
VAL_LOSS_METRIC = "val_loss"  # also on the final_train run
MLFLOW_RUN_ATTR = "mlflow_run_id"  # not in MLflow: the Optuna trial's user attr naming its MLflow run

# --- final_train stage run (besides TEST_METRIC_PREFIX, BASELINE_METRIC_PREFIX, EPOCHS_PARAM, VAL_LOSS_METRIC) ----
PATIENCE_PARAM = "patience"
INIT_PARAM = "init"  # best_trial | scratch: where the tuned model's training started
GBM_BEATS_MODEL_TAG = "automl.gbm_validated_better"  # final_train: the default-LightGBM baseline beat the model
CHOSEN_FAMILY_TAG = "automl.chosen_family"  # pipeline run: the family of the single model that went on (auto's pick)
CHOSEN_TAG = "automl.chosen"  # tuned | default_config | ensemble: the model that went on (lowest validation loss)
FINAL_TRAINING_TAG = "automl.final_training"  # on a final training's run: tuned | member_<trial> | default_config
# | refit_<one of those>
CONFIG_KEY_TAG = "automl.config_key"  # on a final training's run: its config (a resumed stage reuses the run's
# checkpoint only for the same config)
TRAINING_CHECKPOINT_FILE = "checkpoint.pt"  # a final training's weights and curves (what a resumed stage loads)
ENSEMBLE_TOP_K_PARAM = "ensemble_top_k"  # final.ensemble.top_k
ENSEMBLE_ROUNDS_PARAM = "ensemble_rounds"  # final.ensemble.rounds
ENSEMBLE_FILE = "ensemble.json"  # the ensemble selection: candidates, picks, weights, losses, kept or not
ENSEMBLE_PLOT = "plots/ensemble_selection.png"  # validation loss against selection rounds
ENSEMBLE_VAL_LOSS_METRIC = "ensemble_val_loss"  # the selected ensemble's validation loss
SINGLE_VAL_LOSS_METRIC = "single_val_loss"  # the single chosen model's (tuned or default config)
SINGLE_METRIC_PREFIX = "single_test_"  # single_test_<metric>: the single chosen model's test metrics
REFIT_TAG = "automl.refit"  # on the final_train run and the version: all (its weights are a refit), or none
REFIT_ROWS_TAG = "automl.refit_rows"  # rows (windows, for a series) the refit trained on
REFIT_EPOCHS_TAG = "automl.refit_epochs"  # epochs of each refit training, as "name=epochs,..."
REFIT_MODEL = "refit_model"  # the refitted raw-data model, logged beside LOGGED_MODEL (the tested one)
TUNED_VAL_LOSS_METRIC = "tuned_val_loss"  # the final training's best validation loss, tuned config
DEFAULT_VAL_LOSS_METRIC = "default_config_val_loss"  # the same for the default config (when it is trained)
CV_MEAN_METRIC = "cv_mean_val_loss"  # the chosen config's validation loss over the search's folds: mean and std
CV_STD_METRIC = "cv_std_val_loss"
START_VAL_LOSS_METRIC = "start_val_loss"  # with init best_trial: the validation loss of the weights it started from
EPOCHS_RUN_METRIC = "epochs_run"
BEST_EPOCH_METRIC = "best_epoch"  # on a final training's run: the epoch whose weights it kept (-1: its start)
EPOCH_TRAIN_LOSS_METRIC = "epoch_train_loss"  # one step per epoch
EPOCH_VAL_LOSS_METRIC = "epoch_val_loss"
REGISTERED_MODEL_TAG = "registered_model"
REGISTERED_VERSION_TAG = "registered_version"
CHAMPION_TAG = "champion"  # "True" | "False"
LOGGED_MODEL = "model"
TEST_PREDICTIONS_FILE = "test_predictions.parquet"
PER_CLASS_METRICS_FILE = "per_class_metrics.csv"
LEARNING_CURVES_PLOT = "plots/learning_curves.png"
PREDICTED_VS_ACTUAL_PLOT = "plots/predicted_vs_actual.png"  # regression and series
CONFUSION_MATRIX_PLOT = "plots/confusion_matrix.png"  # classification

# --- registered model versions ------------------------------------------------------------------------------------
CHAMPION_ALIAS = "champion"
PIPELINE_RUN_TAG = "pipeline_run_id"  # the pipeline run that registered the version
PRIMARY_METRIC_TAG = "automl.primary_metric"  # besides FINGERPRINT and test_<metric> (TEST_METRIC_PREFIX)
CHAMPION_MOVE_PREFIX = "automl.champion_move."  # <epoch ms>: a JSON record of one move of the champion alias
# The champion decision (tasks.final_train.promotion): automl.promotion.<field of PromotionSummary>, e.g. rows
PROMOTION_PREFIX = "automl.promotion."

# --- scoring runs (ROLE score, in the config's experiment) ----------------------------------------------------------
MODEL_NAME = "automl.model_name"  # the registered model and version that scored
MODEL_VERSION = "automl.model_version"
MODEL_URI_PARAM = "model_uri"
MODEL_NAME_PARAM = "model_name"
MODEL_VERSION_PARAM = "model_version"
DATA_PATH_PARAM = "data_path"
OUTPUT_PATH_PARAM = "output_path"
ROLLING_PARAM = "rolling"
ROWS_SCORED_METRIC = "rows_scored"
PREDICTIONS_METRIC = "predictions"
SECONDS_METRIC = "seconds"
SCORING_INPUT_CONTEXT = "scoring"  # the scored rows as an MLflow dataset input
PREDICTIONS_FILE = "predictions.parquet"

# --- lr_find runs (``automl lr-find``: ROLE lr_find, in the config's experiment) -------------------------------------
SUGGESTED_LR_METRIC = "suggested_lr"
LR_FIND_LOSS_METRIC = "lr_find_loss"  # one step per batch of the range test: its raw loss (also on the search run)
LR_FIND_LR_METRIC = "lr_find_lr"  # one step per batch: its learning rate (also on the search run)
LR_FIND_BATCH_SIZE_PARAM = "lr_find_batch_size"  # besides MODEL_FAMILY_PARAM and the tested config's params
LR_FIND_STEPS_PARAM = "lr_find_steps"
LR_FIND_DIVERGED_PARAM = "lr_find_diverged"
LR_FIND_PLOT = "lr_range.png"  # also the file's name under the state folder (``LocalState.lr_find``)
LR_RANGE_NOTE = "automl.lr_range"  # search.lr_range auto: on the search run, what the narrowing did (one line)

# --- Prefect artifacts on the flow run: keys <config>-<suffix> -----------------------------------------------------
SUMMARY_ARTIFACT = "summary"
TRIALS_ARTIFACT = "trials"
SEARCH_PROGRESS_ARTIFACT = "search-progress"
SCORING_ARTIFACT = "scoring"
