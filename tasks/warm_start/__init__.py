"""Warm start: ranking past runs and fitting their best configs into this run's space (``decision``), the stage
that looks them up in MLflow (``stage``), and the config store behind ``automl configs`` (``config_store``)."""
