"""Figures and PNGs of reconstructions (matplotlib, Agg backend; the ``data`` extra).

Images are display arrays: (H, W) grey/magnitude or (C, H, W) colour, shown on one range
``[lo, hi]`` (:func:`display_range` of the reference) so that images side by side compare; error
maps use ``inferno`` on ``[0, err_max]``. Volumes (D, H, W) are shown as orthogonal central slices.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["pyplot", "display_range", "to_rgb", "save_png", "error_map", "panel_title", "summary_figure",
           "curve_figure", "volume_slices_figure", "montage"]


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def display_range(ref: np.ndarray) -> tuple[float, float]:
    """The display range of an image and of every image compared with it: [min(0, lo), hi]."""
    lo, hi = min(0.0, float(ref.min())), float(ref.max())
    return lo, hi if hi > lo else lo + 1.0


def to_rgb(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(C, H, W) colour -> (H, W, 3) in [0, 1]; (H, W) unchanged."""
    if img.ndim == 2:
        return img
    return np.clip((np.moveaxis(img, 0, -1) - lo) / (hi - lo), 0, 1)


def save_png(path: Path, img: np.ndarray, lo: float, hi: float, cmap: str = "gray") -> None:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        pyplot().imsave(path, to_rgb(img, lo, hi))
    else:
        pyplot().imsave(path, img, cmap=cmap, vmin=lo, vmax=hi)


def error_map(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|img - ref| (averaged over colour channels)."""
    err = np.abs(img - ref)
    return err if err.ndim == 2 else err.mean(0)


def panel_title(name: str, q: dict | None) -> str:
    """A panel's name, with PSNR (and SSIM) when ``q`` holds its quality."""
    if not q:
        return name
    ssim = "" if q.get("ssim") is None else f", SSIM {q['ssim']:.3f}"
    return f"{name}\nPSNR {q['psnr']:.2f} dB{ssim}"


def summary_figure(path: Path, panels: list[tuple[str, np.ndarray, dict | None]], lo: float, hi: float,
                   errors: list[tuple[str, np.ndarray]], err_max: float) -> None:
    """truth | baseline | reconstruction | error maps: one colour scale for the images, one for the errors."""
    plt = pyplot()
    n = len(panels) + len(errors)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.7), squeeze=False)
    for ax, (name, img, q) in zip(axes[0], panels):
        ax.imshow(to_rgb(img, lo, hi), cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(panel_title(name, q), fontsize=10)
    for ax, (name, err) in zip(axes[0][len(panels):], errors):
        im = ax.imshow(err, cmap="inferno", vmin=0, vmax=err_max)
        ax.set_title(name, fontsize=10)
    for ax in axes[0]:
        ax.set_axis_off()
    if errors:
        fig.colorbar(im, ax=list(axes[0][len(panels):]), fraction=0.046, pad=0.02)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def curve_figure(path: Path, loss: list[float], iters: list[int], psnr: list[float], sigma: list[float],
                 baseline_psnr: float | None, label: str, baseline_name: str, dc_psnr: float | None = None) -> None:
    """Loss (log scale) and the PSNR trace (``psnr`` at iterations ``iters``) against iteration; the
    noise level on a second axis where there is one; the PSNR after a final data-consistency step
    as one marked point."""
    plt = pyplot()
    rows = 2 if psnr else 1
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.8 * rows + 0.4), sharex=True, squeeze=False)
    ax = axes[0][0]
    if loss:
        its = np.arange(1, len(loss) + 1)
        pos = np.asarray(loss, dtype=np.float64)
        ax.plot(its, pos, lw=0.8, color="tab:blue")
        if (pos > 0).all():
            ax.set_yscale("log")
    ax.set_ylabel("loss", color="tab:blue")
    ax.set_title(f"{label}: loss, PSNR and noise level per iteration", fontsize=10)
    if sigma:
        per = max(len(loss), 1) / len(sigma)  # SDI: one level per K iterations
        ax2 = ax.twinx()
        ax2.step(np.arange(len(sigma) + 1) * per, [sigma[0]] + list(sigma), where="pre", color="tab:red", lw=1.0)
        ax2.set_ylabel("noise level σ", color="tab:red")
    if rows == 2:
        bx = axes[1][0]
        bx.plot(iters, psnr, marker=".", ms=3, color="tab:green", label=label)
        if baseline_psnr is not None and math.isfinite(baseline_psnr):
            bx.axhline(baseline_psnr, ls="--", color="gray", label=baseline_name)
        if dc_psnr is not None and math.isfinite(dc_psnr):
            bx.plot([iters[-1]], [dc_psnr], marker="*", ms=12, ls="none", color="tab:purple",
                    label=f"{label} + final DC")
        bx.set_ylabel("PSNR (dB)")
        bx.legend(loc="lower right", fontsize=8)
    axes[-1][0].set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def volume_slices_figure(path: Path, rows: list[tuple[str, np.ndarray]], truth: np.ndarray | None) -> None:
    """Orthogonal central slices of volumes (D, H, W): one row per volume, plus error rows against the truth."""
    plt = pyplot()
    vmax = float(truth.max()) if truth is not None else max(float(v.max()) for _, v in rows)
    panels = [(n, v, "gray", vmax) for n, v in rows]
    if truth is not None:
        panels = [("truth", truth, "gray", vmax)] + panels
        panels += [(f"|{n} - truth|", np.abs(v - truth), "inferno", 0.2 * vmax) for n, v in rows]
    fig, axes = plt.subplots(len(panels), 3, figsize=(7.5, 2.5 * len(panels)), squeeze=False)
    for r, (name, v, cmap, top) in enumerate(panels):
        c = [s // 2 for s in v.shape]
        for col, img in enumerate((v[c[0]], v[:, c[1]], v[:, :, c[2]].T)):
            ax = axes[r, col]
            ax.imshow(img, cmap=cmap, vmin=0, vmax=top)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def montage(path: Path, images: np.ndarray, lo: float, hi: float, gap: int = 2) -> None:
    """The images (N, H, W) of a stack (slices of a scan) tiled row by row on a near-square grid,
    one grey scale ``[lo, hi]``, as one PNG."""
    n, H, W = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (H + gap) - gap, cols * (W + gap) - gap), lo, dtype=np.float64)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[r * (H + gap):r * (H + gap) + H, c * (W + gap):c * (W + gap) + W] = img
    save_png(path, grid, lo, hi)
