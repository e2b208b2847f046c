"""The registered model in use: the raw-data pyfunc model (``raw_model``), the ``champion`` alias and its history
(``champion``), and batch prediction with a registered model (``prediction``: ``automl predict``, the score flow)."""
