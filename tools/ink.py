"""Ink per image of each Omniglot dataset the presets train on, train and test.

    python tools/ink.py [DATA_DIR]    # default: $VMA_DATA_DIR

A binary image's bound is paid mostly along its strokes, so datasets with more
ink per image give larger bounds to the same model. Prints one Markdown row per
(dataset, split): images, pixels, mean ink pixels per image (± standard error
over images) and the ink fraction (RESULTS.md "The two Table 1 datasets in
ink": the GMN 28×28 test images carry 14 % more ink than the 26×26 ones of the
second anchor).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def ink_stats(images: np.ndarray) -> tuple[int, int, float, float]:
    """Ink statistics of binary images (ink = 1).

    Args:
        images: `[..., H, W]` of 0/1, any leading shape.

    Returns:
        `(images, pixels per image, mean ink pixels per image, its standard
        error over images)`.
    """
    flat = np.asarray(images).reshape(-1, images.shape[-2] * images.shape[-1])
    ink = flat.sum(axis=1, dtype=np.int64).astype(np.float64)
    stderr = ink.std(ddof=1) / np.sqrt(len(ink)) if len(ink) > 1 else 0.0
    return len(ink), flat.shape[1], float(ink.mean()), float(stderr)


def main(data_dir: str | None) -> None:
    from vma_tf.data import omniglot

    sets = {
        "omniglot_fewshot (26×26, 45/5 alphabets)": omniglot.load_fewshot26,
        "omniglot_bgeval (26×26 nearest, background/evaluation)": omniglot.load_bgeval26,
        "omniglot_gmn (GMN 28×28, background/evaluation)": omniglot.load_gmn28,
        "omniglot_learned (28×28, 15/5 drawings)": omniglot.load_learned28,
    }
    print(
        "| preset data | split | images | pixels | ink pixels per image | ink fraction |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, load in sets.items():
        for split, data in zip(("train", "test"), load(data_dir)):
            images = getattr(data, "images", data)
            n, pixels, ink, se = ink_stats(images)
            print(
                f"| {name} | {split} | {n} | {pixels} | {ink:.1f} ± {se:.1f} | {ink / pixels:.4f} |"
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
