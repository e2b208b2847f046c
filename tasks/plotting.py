"""Matplotlib for headless use: figures are drawn off-screen (also from worker threads) and logged to MLflow."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

__all__ = ["plt"]
