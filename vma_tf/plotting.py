"""Image grids for sample figures (matplotlib, headless)."""

from __future__ import annotations

import os

import numpy as np


def tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """Tiles `[R, C, H, W]` images into one `[R*(H+pad)-pad, C*(W+pad)-pad]`
    array, padding with 0.5 grey."""
    rows, cols, h, w = images.shape
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), 0.5, np.float32)
    for r in range(rows):
        for c in range(cols):
            out[
                r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w
            ] = images[r, c]
    return out


def save_grid(
    path: str | os.PathLike, images: np.ndarray, title: str | None = None
) -> None:
    """Writes `[R, C, H, W]` images in [0, 1] as a PNG grid."""
    from matplotlib.figure import Figure  # No pyplot: no global backend state.

    grid = tile(images)
    fig = Figure(figsize=(grid.shape[1] / 28, grid.shape[0] / 28 + 0.4), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(grid, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    fig.savefig(path, bbox_inches="tight")
