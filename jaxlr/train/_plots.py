"""Training plots (matplotlib, Agg, imported lazily): learning curves and parity plots.

No global matplotlib state is touched: figures are drawn on their own Agg canvas, so an
interactive session's backend is left alone.  When matplotlib is missing the functions
warn and write nothing.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ._loss import UNITS

__all__ = ["learning_curves", "parity", "write_plots"]


def _figure(size=(5.0, 4.0)):
    """A new (figure, axes) on an Agg canvas, or None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        warnings.warn("matplotlib is not installed: plots are skipped (pip install matplotlib).", stacklevel=3)
        return None
    fig = Figure(figsize=size, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def learning_curves(history: list, path) -> Path | None:
    """Train and validation loss against epoch (log y) → ``path`` (PNG); None if skipped.

    Args:
      history: per-epoch dicts with ``"epoch"``, ``"train_loss"`` and optionally
        ``"valid_loss"`` (as :func:`jaxlr.train.fit` records them).
      path: output file.
    """
    made = _figure()
    if made is None:
        return None
    fig, ax = made
    epochs = np.array([h.get("epoch", k + 1) for k, h in enumerate(history)], dtype=float)
    for key, label in (("train_loss", "train"), ("valid_loss", "validation")):
        values = np.array([np.nan if h.get(key) is None else h[key] for h in history], dtype=float)
        ok = np.isfinite(values) & (values > 0)
        if ok.any():
            ax.plot(epochs[ok], values[ok], marker="o" if ok.sum() < 30 else None, ms=3, label=label)
    best = [h["epoch"] for h in history if h.get("best")]
    if best:
        ax.axvline(best[-1], color="0.6", ls=":", lw=1, label=f"best (epoch {best[-1]})")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (weighted MSE)")
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def parity(pred, ref, path, label: str, units: str) -> Path | None:
    """Predicted against reference values with the y = x line, MAE and RMSE in the title.

    Args:
      pred, ref: arrays of the same size (flattened).
      path: output PNG.  label: quantity name (e.g. "forces").  units: e.g. "eV/Å".

    Returns:
      the written path, or None when matplotlib is missing.
    """
    pred = np.asarray(pred, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if pred.shape != ref.shape:
        raise ValueError(f"parity plot of {label}: {pred.size} predictions but {ref.size} references.")
    made = _figure((4.5, 4.5))
    if made is None:
        return None
    fig, ax = made
    if pred.size:
        err = pred - ref
        mae, rmse = float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err ** 2)))
        lo = float(min(pred.min(), ref.min()))
        hi = float(max(pred.max(), ref.max()))
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1)
        ax.scatter(ref, pred, s=6 if pred.size > 200 else 14, alpha=0.6, edgecolors="none")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_title(f"{label}: MAE {mae:.3g}, RMSE {rmse:.3g} {units}", fontsize=9)
    else:
        ax.set_title(f"{label}: no data", fontsize=9)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"reference {label} ({units})")
    ax.set_ylabel(f"predicted {label} ({units})")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path


def write_plots(run_dir, history: list | None, parity_data: dict | None = None, *,
                prefix: str = "parity") -> list[Path]:
    """Write ``learning_curves.png`` and one parity plot per entry of ``parity_data``.

    Args:
      run_dir: output folder (created if needed).
      history: per-epoch dicts (see :func:`learning_curves`), or None/empty to skip.
      parity_data: ``{key: (pred, ref)}``; ``key`` is a target name (``"forces"``,
        ``"energy_per_atom"``, ...) optionally prefixed by a split and a slash
        (``"test/forces"``); files are ``{prefix}_{split}_{target}.png``.
      prefix: file name prefix of the parity plots.

    Returns:
      the written files (empty when matplotlib is missing, with a warning).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if history:
        p = learning_curves(history, run_dir / "learning_curves.png")
        if p is None:
            return []
        written.append(p)
    for key, (pred, ref) in (parity_data or {}).items():
        target = key.split("/")[-1]
        units = UNITS.get(target, "")
        label = key.replace("/", " ").replace("_", " ")
        name = f"{prefix}_{key.replace('/', '_')}.png"
        p = parity(pred, ref, run_dir / name, label, units)
        if p is None:
            return written
        written.append(p)
    return written
