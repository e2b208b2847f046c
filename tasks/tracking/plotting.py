"""Matplotlib for headless use: figures are drawn off-screen (also from worker threads) and logged to MLflow."""

from __future__ import annotations

from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the off-screen Agg backend (chosen here, when a figure is first drawn, not when a
    module is imported)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
