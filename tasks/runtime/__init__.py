"""What a run runs on: the local state folder (``state``), the temporary Prefect API (``prefect_server``), which
stage results a resumed run reuses (``caching``), the wall-clock budget (``budget``), and Ctrl-C and SIGTERM as a
stop no stage boundary lets through (``interrupts``)."""
