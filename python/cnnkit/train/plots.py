"""The lecture's babysitting plots, as PNG files (matplotlib, Agg backend: no display needed).

loss.png      loss per iteration, raw and smoothed (is it falling? too fast, too slow, noisy?)
accuracy.png  train and validation accuracy per epoch (the gap signals overfitting)
lr.png        the learning rate per iteration
ratios.png    update/weight ratio per layer over time, with the 1e-3 rule of thumb
filters.png   the first convolution's filters as images ("visualise the weights")

and the LR range test's curve (``plot_lr_find``, ``ck.lr_find(...).plot(path)``).
"""
import os

import numpy as np

from .._xp import is_device_array


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def smooth(values, window=None):
    """Moving average over `window` points (default: about 2% of the run, at least 1)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    window = window or max(1, v.size // 50)
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, kernel, mode="valid")


def first_conv_weight(model):
    """The weight of the first Conv2d in `model` (in layer order), or None."""
    from ..layers import Conv2d
    for _, layer in model.named_layers():
        if isinstance(layer, Conv2d):
            w = layer.weight.data
            return w.get() if is_device_array(w) else np.asarray(w)
    return None


def filter_grid(w, pad=1):
    """Tile filters w (K, C, R, S) into one image laid out as CS231n's visualize_grid: a ceil(sqrt(K)) square
    grid with `pad` pixels of 0 between tiles (none around them), each filter scaled to [0, 1] on its own, as
    in the lecture's pictures. (H, W, 3) RGB when C == 3, else (H, W), the mean over channels."""
    K, C, R, S = w.shape
    img = w.transpose(0, 2, 3, 1) if C == 3 else w.mean(axis=1)[..., None]
    lo = img.reshape(K, -1).min(axis=1).reshape(K, 1, 1, 1)
    hi = img.reshape(K, -1).max(axis=1).reshape(K, 1, 1, 1)
    img = (img - lo) / np.maximum(hi - lo, 1e-12)
    g = int(np.ceil(np.sqrt(K)))
    ch = img.shape[-1]
    grid = np.zeros((g * R + (g - 1) * pad, g * S + (g - 1) * pad, ch))
    for k in range(K):
        r, c = divmod(k, g)
        grid[r * (R + pad):r * (R + pad) + R, c * (S + pad):c * (S + pad) + S] = img[k]
    return grid if ch == 3 else grid[..., 0]


def plot_history(history, folder, model=None):
    plt = _plt()
    os.makedirs(folder, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(folder, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    it = history.iterations
    if it["step"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(it["step"], it["loss"], lw=0.6, alpha=0.4, label="loss")
        ax.plot(it["step"], smooth(it["loss"]), lw=1.5, label="smoothed")
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss")
        ax.set_title("Training loss")
        ax.legend()
        save(fig, "loss.png")

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(it["step"], it["lr"])
        ax.set_xlabel("iteration")
        ax.set_ylabel("learning rate")
        ax.set_title("Learning rate")
        save(fig, "lr.png")

    if history.epochs:
        fig, ax = plt.subplots(figsize=(6, 4))
        ep = [e["epoch"] for e in history.epochs]
        for key, label in (("train_acc", "train"), ("val_acc", "validation")):
            vals = [e.get(key) for e in history.epochs]
            if any(v is not None for v in vals):
                ax.plot(ep, [np.nan if v is None else v for v in vals], marker="o", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_title("Accuracy (the gap is overfitting)")
        ax.legend()
        save(fig, "accuracy.png")

    if history.ratios:
        fig, ax = plt.subplots(figsize=(6, 4))
        layers = sorted({k for r in history.ratios for k in r["ratios"]})
        steps = [r["step"] for r in history.ratios]
        for name in layers:
            ax.plot(steps, [r["ratios"].get(name, np.nan) for r in history.ratios], label=name)
        ax.axhline(1e-3, color="k", ls="--", lw=0.8, label="1e-3")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("|update| / |weight|")
        ax.set_title("Update/weight ratio per layer")
        ax.legend(fontsize=7)
        save(fig, "ratios.png")

    w = first_conv_weight(model) if model is not None else None
    if w is not None:
        fig, ax = plt.subplots(figsize=(4, 4))
        grid = filter_grid(w)
        ax.imshow(grid, cmap=None if grid.ndim == 3 else "gray", interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"First-layer filters {tuple(w.shape)}")
        save(fig, "filters.png")
    return written


def plot_lr_find(result, path=None):
    """The LR range test as fast.ai and Keras draw it: loss (raw and smoothed) against the learning rate on a
    log axis, the suggestion marked. Returns the Figure (made without pyplot, so no display backend is
    touched); writes a PNG to `path` when given."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if result.lrs:
        ax.plot(result.lrs, result.losses, lw=0.8, alpha=0.4, label="loss")
        ax.plot(result.lrs, result.smoothed, lw=1.5, label="smoothed")
    if result.suggestion is not None:
        i = result.lrs.index(result.suggestion)
        ax.plot([result.suggestion], [result.smoothed[i]], ls="", marker="o", ms=8, color="red",
                label=f"suggestion {result.suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    title = "LR range test"
    if result.suggestion is None and getattr(result, "reason", None):
        title += ": no suggestion"
    ax.set_title(title)
    if result.lrs:
        ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=100, format="png")
    return fig
