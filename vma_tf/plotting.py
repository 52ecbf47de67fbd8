"""Image grids for sample figures (matplotlib, headless)."""

from __future__ import annotations

import os
import pathlib

import numpy as np


def check_figure_file(flag: str, path: str | os.PathLike):
    """Fails (nothing written) unless `path` can be written as a figure: a
    file `workdir.check_output_file` accepts, with a suffix matplotlib writes
    (`.png`, `.pdf`, `.svg`, ...).

    Returns:
        The absolute `pathlib.Path`.

    Raises:
        WorkdirError: the one-line reason, naming `flag`.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from vma_tf.workdir import WorkdirError, check_output_file

    kinds = sorted(FigureCanvasBase.get_supported_filetypes())
    if pathlib.Path(path).suffix[1:].lower() not in kinds:
        raise WorkdirError(
            f"{flag}={path} must end in a figure suffix: "
            f"{', '.join('.' + k for k in kinds)}"
        )
    return check_output_file(flag, path)


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


def _figure(width=5.0, height=3.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _errorbar(ax, xs, entries, key="nll_bound", **kw):
    ax.errorbar(
        xs,
        [e[key]["mean"] for e in entries],
        yerr=[1.96 * e[key]["stderr"] for e in entries],
        marker="o",
        capsize=2,
        **kw,
    )


def memory_sizes(records: list[dict], memory_size: int | None = None) -> list[int]:
    """The |M| whose log bounds kl_a on the curves: each evaluated split's
    own (`memory_size` of its rows: recall's `*_m2048` splits have 2048),
    else `memory_size`; sorted, without repeats."""
    sizes = {int(r["memory_size"]) for r in records if r.get("memory_size")}
    return sorted(sizes or ({int(memory_size)} if memory_size else set()))


def learning_curves(path, records: list[dict], memory_size: int | None = None):
    """nll_bound and kl_a per split against step, from metrics.jsonl records.

    Args:
        path: PNG to write.
        records: dicts with `split`, `step` and metrics (metrics.jsonl lines).
        memory_size: |M|; draws the log|M| ceiling of kl_a (the records'
            own `memory_size`s when they have them: `memory_sizes`).
    """
    fig = _figure(9, 3.5)
    ax_nll, ax_kl = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    splits = sorted({r["split"] for r in records})
    for split in splits:
        rs = [r for r in records if r["split"] == split and "nll_bound" in r]
        steps = [r["step"] for r in rs]
        ax_nll.plot(steps, [r["nll_bound"] for r in rs], label=split)
        if any("kl_a" in r for r in rs):
            ax_kl.plot(steps, [r.get("kl_a", np.nan) for r in rs], label=split)
    for size in memory_sizes(records, memory_size):
        ax_kl.axhline(np.log(size), color="k", ls="--", lw=1, label=f"log {size}")
    ax_nll.set(xlabel="step", ylabel="nll_bound (nats)", title="-L_K")
    ax_kl.set(xlabel="step", ylabel="nats", title="KL(q(a|x) || p(a))")
    for ax in (ax_nll, ax_kl):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    lo = [r["nll_bound"] for r in records if "nll_bound" in r]
    if lo:  # Ignore the first steps' huge values.
        ax_nll.set_ylim(min(lo) - 2, np.percentile(lo, 95) + 2)
    fig.tight_layout()
    fig.savefig(path)


def address_histograms(path, x, memory, probs, top: int = 5):
    """Fig. 3: per target, q(a|x) over memory and its `top` entries.

    Args:
        path: PNG to write.
        x: `[n, H, W]` targets.
        memory: `[|M|, H, W]` entries.
        probs: `[n, |M|]` q(a|x).
        top: entries shown per target.
    """
    n = len(x)
    fig = _figure(2.2 + 0.7 * top + 3, 1.1 * n)
    grid = fig.add_gridspec(n, 2 + top, width_ratios=[1, 4] + [1] * top)
    for i in range(n):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(x[i], cmap="gray_r", vmin=0, vmax=1)
        ax.set_axis_off()
        ax = fig.add_subplot(grid[i, 1])
        ax.bar(np.arange(probs.shape[1]), probs[i], width=1.0)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=5)
        best = np.argsort(-probs[i])[:top]
        for j, a in enumerate(best):
            ax = fig.add_subplot(grid[i, 2 + j])
            ax.imshow(memory[a], cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{probs[i, a]:.2f}", fontsize=6)
            ax.set_axis_off()
    fig.savefig(path, bbox_inches="tight")


def entry_samples(path, entries, samples, title: str | None = None):
    """Fig. 2B / 4A: each row is a memory entry (left) then samples given it.

    Args:
        path: PNG to write.
        entries: `[R, H, W]` memory entries.
        samples: `[R, C, H, W]` samples of p(x|m_a).
    """
    rows = np.concatenate([entries[:, None], samples], axis=1)
    save_grid(path, rows, title)


def recall_sizes_figure(path, results: dict):
    """NLL and kl_a against log|M| (recall_sizes protocol)."""
    entries = [results[k] for k in sorted(results, key=int)]
    logs = [e["log_memory_size"] for e in entries]
    fig = _figure(9, 3.5)
    ax = fig.add_subplot(1, 2, 1)
    _errorbar(ax, logs, entries)
    ax.set(xlabel="log |M|", ylabel="nll_bound (nats)")
    ax = fig.add_subplot(1, 2, 2)
    _errorbar(ax, logs, entries, "kl_a", label="KL(q(a|x)||p(a))")
    ax.plot(logs, logs, "k--", lw=1, label="log |M|")
    ax.set(xlabel="log |M|", ylabel="nats")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def robustness_figure(path, results: dict):
    """Fig. 5: NLL against characters in memory (A) and examples per char (B)."""
    fig = _figure(9, 3.5)
    ax = fig.add_subplot(1, 2, 1)
    a = [results["A_classes"][k] for k in sorted(results["A_classes"], key=int)]
    cs = [e["classes"] for e in a]
    _errorbar(ax, cs, a, label="model")
    ax.plot(cs, [e["optimal_reference"] for e in a], "k--", lw=1, label="L(1)+log C")
    ax.set(xscale="log", xlabel="characters C in memory", ylabel="nll_bound (nats)")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    b = results["B_examples_per_class"]
    b = [b[k] for k in sorted(b, key=int)]
    _errorbar(ax, [e["memory_per_class"] for e in b], b)
    ax.set(xlabel="examples per character (all in memory)", ylabel="nll_bound (nats)")
    fig.tight_layout()
    fig.savefig(path)


def kl_breakdown_figure(path, runs: dict):
    """Fig. 4B: kl_a, kl_z and NLL per run (labelled by examples per class)."""
    fig = _figure(5, 3.5)
    ax = fig.add_subplot()
    names = list(runs)
    width = 0.27
    for j, key in enumerate(("kl_a", "kl_z", "nll_bound")):
        ax.bar(
            np.arange(len(names)) + (j - 1) * width,
            [runs[n][key]["mean"] for n in names],
            width,
            yerr=[1.96 * runs[n][key]["stderr"] for n in names],
            label=key,
        )
    ax.set_xticks(
        np.arange(len(names)),
        [f"{runs[n]['memory_per_class']}/class" for n in names],
    )
    ax.set(ylabel="nats")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def budget_curves(path, curves: dict, papers: dict | None = None) -> None:
    """Learning curves of long runs: `curves` `label -> [(step, bound,
    seconds)]` (`time_to_quality.curve`), each with its paper number from
    `papers` (`label -> nats or None`) as a dashed line of its colour."""
    from matplotlib import rcParams

    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, points) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        steps, bounds, _ = zip(*points)
        ax.plot(steps, bounds, label=label, color=color)
        paper = (papers or {}).get(label)
        if paper is not None:
            ax.axhline(paper, color=color, linestyle="--", linewidth=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("periodic bound, valid or test (nats; dashed: paper)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
