"""The ``automl`` command (``automl/cli.py``; also ``python -m automl``)."""
