"""What a run runs on: the local state folder (``state``), the temporary Prefect API (``prefect_server``), which
stage results a resumed run reuses (``caching``), and the wall-clock budget (``budget``)."""
