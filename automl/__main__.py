"""Run the command line: ``python -m automl ...`` is ``automl ...``."""

import sys

from automl.cli import main

sys.exit(main())
