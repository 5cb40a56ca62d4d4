"""A hyperparameter study from a TOML configuration: ``jaxlr tune-hyper CONFIG`` (host).

Format (every key optional except ``[data] source``)::

    [data]
    source = "charged_dimers"     # the bundled dimers (binding energies, trained < 6 Å), or an
                                  # extended-XYZ file of open-boundary structures with energies
    folds = 5                     # k of the k-fold cross-validation
    seed = 0                      # shuffles the folds
    force_weight = 0.0            # Å; > 0 adds the structures' forces to the fit and the loss

    [features]
    kind = "lode"                 # "lode" (ν=1 LODE ⊕ ρ⊗V) or "local"
    cutoff = 3.0                  # Å, static
    max_radial = 4                # static
    max_angular = 0               # static

    [hyper]                       # start values; all are optimised unless listed in fixed
    lode_sigma = 1.0              # Å  (kind "local": local_sigma instead)
    density_sigma = 0.5           # Å
    radial_scale = 1.0            # or one factor per radial function: [1.0, 1.0, 1.0, 1.0]
    cutoff_width = 0.5            # Å
    log_lambda = -9.2

    [search]
    steps = 60
    learning_rate = 0.08          # Adam step on the log-parameters
    patience = 15
    fixed = ["cutoff_width"]

    [output]
    dir = "hyper-study"           # trajectory.json and trajectory.png are written here

The loss is :func:`jaxlr.hyper.ridge_cv_loss`; for the dimers the far rows (≥ 6 Å) are
scored with the final model and reported in ``trajectory.json``.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from pathlib import Path

import numpy as np

from ._loss import HYPER_DOMAINS, ridge_cv_loss, ridge_data, ridge_predictions
from ._optimize import optimize

__all__ = ["STUDY_FORMAT", "run_study", "study_problem"]

STUDY_FORMAT = __doc__[__doc__.index("Format"):__doc__.index("The loss is")]

_TABLES = {"data": {"source", "folds", "seed", "force_weight"}, "features": {"kind", "cutoff", "max_radial", "max_angular"},
           "hyper": set(HYPER_DOMAINS), "search": {"steps", "learning_rate", "patience", "fixed"},
           "output": {"dir"}}
_DEFAULT_HYPER = {"lode": dict(lode_sigma=1.0, density_sigma=0.5, radial_scale=1.0, cutoff_width=0.5,
                               log_lambda=float(np.log(1e-4))),
                  "local": dict(local_sigma=0.5, radial_scale=1.0, cutoff_width=0.5, log_lambda=float(np.log(1e-4)))}


def _check_keys(config: dict) -> None:
    for table, value in config.items():
        if table not in _TABLES:
            close = difflib.get_close_matches(table, _TABLES, n=1)
            raise ValueError(f"unknown table [{table}]" + (f" (did you mean [{close[0]}]?)" if close else "")
                             + f"; tables: {sorted(_TABLES)}.")
        if not isinstance(value, dict):
            raise ValueError(f"[{table}] must be a table.")
        for key in value:
            if key not in _TABLES[table]:
                close = difflib.get_close_matches(key, _TABLES[table], n=1)
                raise ValueError(f"[{table}] has an unknown key {key!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; valid keys: {sorted(_TABLES[table])}.")


def study_problem(config: dict):
    """``(data, far_rows or None)`` of a study configuration (host): the :class:`RidgeData` to tune on."""
    data_cfg, feat = config.get("data", {}), dict(config.get("features", {}))
    source = data_cfg.get("source")
    if source is None:
        raise ValueError("[data] needs source = \"charged_dimers\" or the path of an extended-XYZ file.")
    folds, seed = int(data_cfg.get("folds", 5)), int(data_cfg.get("seed", 0))
    kw = dict(kind=feat.get("kind", "lode"), cutoff=float(feat.get("cutoff", 3.0)),
              max_radial=int(feat.get("max_radial", 4)), max_angular=int(feat.get("max_angular", 0)),
              folds=folds, seed=seed, force_weight=float(data_cfg.get("force_weight", 0.0)))
    if source == "charged_dimers":
        from ..data._bundled import dimer_monomers, load_charged_dimers
        from ..data._dataset import Dataset

        dimers = load_charged_dimers()
        monomers = dimer_monomers(dimers)
        nd = len(dimers)
        parent = np.array([s.info["parent"] for s in monomers])
        which = np.array([s.info["monomer"] for s in monomers])
        combine = np.zeros((nd, nd + len(monomers)))
        for k in range(nd):
            combine[k, k] = 1.0
            combine[k, nd + np.flatnonzero((parent == k) & (which == "A"))[0]] = -1.0
            combine[k, nd + np.flatnonzero((parent == k) & (which == "B"))[0]] = -1.0
        y = np.array([s.info["binding_energy"] for s in dimers])
        near = np.array([s.info["distance"] < 6.0 for s in dimers])
        return ridge_data(Dataset(list(dimers) + list(monomers)), y, combine=combine, cv_rows=near, **kw), ~near
    from ..data._structures import read_structures

    path = Path(source)
    if not path.exists():
        raise ValueError(f"[data] source {source!r}: no such file (or use \"charged_dimers\").")
    return ridge_data(read_structures(path), **kw), None


def _plot(trajectory, path: Path) -> Path | None:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = sorted(trajectory.hyper[0])
    fig = Figure(figsize=(4.0 * (len(names) + 1) / 2, 6.0), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, (len(names) + 2) // 2, squeeze=False).ravel()
    axes[0].plot(trajectory.loss, "o-", ms=3)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("CV RMSE (eV)")
    for ax, name in zip(axes[1:], names):
        # (steps, components): a per-function or per-species hyperparameter gives one line each
        values = np.asarray([h[name] for h in trajectory.hyper], dtype=float).reshape(len(trajectory.hyper), -1)
        for k in range(values.shape[1]):
            ax.plot(values[:, k], trajectory.loss, "o-", ms=3, label=f"{name}[{k}]" if values.shape[1] > 1 else None)
            ax.plot(values[-1, k], trajectory.loss[-1], "r*", ms=10)
        if values.shape[1] > 1:
            ax.legend(fontsize=7)
        ax.set_xlabel(name)
        ax.set_ylabel("CV RMSE (eV)")
    for ax in axes[len(names) + 1:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    return path


def run_study(config, *, progress: bool = True) -> Path:
    """Run a hyperparameter study from a TOML file (or a dict of its tables); return the output folder.

    Writes ``trajectory.json`` (the hyperparameters and losses of every step, the best
    point, its far-set RMSE when the data have one, evaluations, wall time) and
    ``trajectory.png`` (the loss against the step and against each hyperparameter).

    Raises:
      ValueError: unknown tables or keys (with the closest valid one), a missing data
        source, hyperparameters outside their domain — before anything is compiled.

    Example:
      >>> # jaxlr tune-hyper study.toml      (see STUDY_FORMAT)
    """
    if not isinstance(config, dict):
        config = tomllib.loads(Path(config).read_text())
    _check_keys(config)
    data, far = study_problem(config)
    start = dict(_DEFAULT_HYPER[data.spec.kind], **config.get("hyper", {}))
    search = config.get("search", {})
    steps = int(search.get("steps", 60))
    trajectory = optimize(ridge_cv_loss, start, data, steps=steps, learning_rate=float(search.get("learning_rate", 0.08)),
                          patience=int(search.get("patience", 15)), fixed=tuple(search.get("fixed", ())),
                          progress=progress)
    out = Path(config.get("output", {}).get("dir", "hyper-study"))
    out.mkdir(parents=True, exist_ok=True)
    result = trajectory.to_json()
    if far is not None and far.any():
        pred = np.asarray(ridge_predictions({k: np.asarray(v) for k, v in trajectory.best.items()}, data))
        y = np.asarray(data.y)
        result["far_rmse"] = float(np.sqrt(np.mean((pred[far] - y[far]) ** 2)))
    (out / "trajectory.json").write_text(json.dumps(result, indent=1))
    _plot(trajectory, out / "trajectory.png")
    return out
