"""tools/ink.py: ink pixels per binary image."""

import numpy as np
import pytest
from helpers import load_tool

TOOL = load_tool("ink")


def test_ink_stats_counts_ink_pixels_per_image_over_any_leading_shape():
    images = np.zeros([2, 2, 3, 3], np.uint8)  # [characters, drawings, H, W]
    images[0, 0, 0, :] = 1  # 3 ink pixels
    images[0, 1, :, 0] = 1  # 3
    images[1, 0] = 1  # 9
    # images[1, 1] blank: 0
    n, pixels, mean, stderr = TOOL.ink_stats(images)
    assert (n, pixels) == (4, 9)
    assert mean == pytest.approx(15 / 4)
    assert stderr == pytest.approx(np.std([3, 3, 9, 0], ddof=1) / 2)


def test_ink_stats_of_one_image_has_no_spread():
    assert TOOL.ink_stats(np.ones([1, 2, 2], np.uint8)) == (1, 4, 4.0, 0.0)
