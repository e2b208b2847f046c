"""The steps of ``automl predict`` (automl/cli.py's ``_predict``), each timed, for ``benchmarks/predict_startup.py``:
the same calls in the same order, with a clock read between them. Prints one JSON line of seconds since the launch
(``PREDICT_LAUNCHED_AT``, the parent's ``time.time()`` just before it started this process):

    PREDICT_LAUNCHED_AT=... .venv/bin/python benchmarks/_predict_phases.py MODEL_URI DATA OUT [--rolling]
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import time

_started = time.time()


def main() -> None:
    launched = float(os.environ["PREDICT_LAUNCHED_AT"])
    uri, data, out = sys.argv[1:4]
    rolling = "--rolling" in sys.argv[4:]
    marks = {"interpreter": _started - launched}
    atexit.register(gc.freeze)  # as automl.cli.main does: the final garbage collection skips what is alive at exit

    def mark(name: str) -> None:
        marks[name] = time.time() - launched

    from pathlib import Path

    import automl.cli  # noqa: F401  (what the command imports before it runs)
    from automl.tasks.runtime.state import configure_environment, local_state

    configure_environment()
    from automl.tasks.registry import prediction

    mark("imports")
    prediction.check_output(Path(out))
    frame = prediction.read_rows(Path(data))
    mark("read")
    prediction.open_registry(local_state())
    mark("registry")
    model = prediction.load_registered_model(uri)
    mark("model_load")
    prediction.check_rows(model, frame, rolling, Path(data), lambda line: None)
    predictions = prediction.score_rows(model, frame, rolling)
    mark("predict")
    prediction.write_predictions(predictions, Path(out))
    mark("write")
    marks["rows_out"] = len(predictions)
    import json

    print(json.dumps(marks), flush=True)


if __name__ == "__main__":
    main()
