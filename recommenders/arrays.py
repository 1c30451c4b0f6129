"""Checks of model arrays read from a version's files: one that would break every answer is refused at load."""

from __future__ import annotations

import numpy as np


def check_array(array: np.ndarray, shape: tuple[int | None, ...], name: str) -> None:
    """Refuse (ValueError) an array of another shape (None: any length there) or with a NaN or infinity:
    loaded, it failed every request or scored every product NaN (an answer neither degraded nor serialisable)."""
    if array.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(array.shape, shape, strict=False)
    ):
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
