"""The pipeline's stages and what they stand on, one room per pipeline step, in the order data flows:

- ``data_prep/``: read and check a table once, then split, impute, scale and window it (``PreparedData``);
- ``warm_start/``: rank past runs by how alike their data is and fit their best configs into this run's space;
- ``search_stage/``: open the study and run a search strategy (sampling with multi-fidelity, or PBT) on the torch
  objective, each trial tracked in MLflow; the engine itself is the library ``search/``;
- ``final_train/``: train the best config further as the final plan says, test it against its baselines, register it;
- ``registry/``: the registered raw-data model, its ``champion`` alias, and batch prediction with it;
- ``tracking/`` (MLflow and Prefect UI edges, every MLflow name) and ``runtime/`` (local state, the Prefect server,
  stage caching, the run budget) are what every stage stands on.

At the root: ``space.py`` (a config's search space in the library's types), ``pipeline_run.py`` (the parent MLflow run
and the summary recorded on it) and ``summary.py`` (what a run returns, and its renderings). The flows in ``flows/``
call the stages in order.
"""
