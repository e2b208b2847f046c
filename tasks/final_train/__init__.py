"""Final training and evaluation: what the final stage trains (``plan``), how (``training``), how it is scored
(``metrics``, ``baselines``), what it logs (``plots``), registering the model (``registration``) and what the stage
returns (``result``); ``stage`` is the Prefect task that runs them in order."""
