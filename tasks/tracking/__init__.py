"""The tracking edges: every MLflow name (``catalog``), MLflow experiments and runs (``runs``), what the Prefect UI
shows (``prefect_ui``) and headless plotting (``plotting``)."""
