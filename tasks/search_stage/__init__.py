"""The search stage: one stage body (``stage``) that opens the study and the ``search`` run, runs a search
strategy (``strategy``: ``sampling`` or ``pbt``) and builds the ``SearchStageResult`` (``result``); the torch
objective (``objective``), the MLflow run per trial (``trial_runs``), the report (``report``), the Optuna storage
and study (``studies``), the learning-rate range test (``lr_range``) and where evaluations run (``task_runners``).
The engine itself is the library in ``tasks/search``."""
