"""Gradient-based hyperparameter studies against grid search (plain script; prints tables).

1. **Charged dimers, multi-scale LODE ridge model.**  Binding energies of the bundled
   cation–anion dimers (trained below 6 Å, the cookbook's protocol) from ridge regression
   on ν = 1 LODE ⊕ ρ ⊗ V features.  Four hyperparameters at once — σ_L (``lode_sigma``),
   the local density width (``density_sigma``), the GTO width scale (``radial_scale``)
   and the log-regulariser (``log_lambda``) — are tuned two ways on the same 5-fold
   cross-validation error of the near dimers: hypergradient descent (Adam on the
   log-parameters, :func:`jaxlr.hyper.optimize`) and a grid search over the same box
   (grid^4 points; the features are computed once per point of the three feature
   hyperparameters and every λ is tried on them, so the grid costs grid^3 feature
   evaluations).  Reported: the best CV error each finds, the far-set (≥ 6 Å) RMSE of the
   final model, the wall time and the number of feature evaluations: one
   value-and-gradient call counts one (its forward and reverse pass through the
   features, about 2–3 forward passes of work), a grid point counts one, and the
   distinct feature evaluations of the grid (grid^3) are given beside it.
   A plot of the CV error along the gradient trajectory, against each hyperparameter,
   with the grid's best point and the grid's profile (the lowest CV error over the other
   hyperparameters at each grid value) is written to ``benchmarks/results/``.
2. **Qeq on the dimers.**  Per-species hardness and Gaussian widths fitted so that Qeq,
   constrained only to a neutral dimer, moves the right charge between the monomers: the
   loss is the RMS error of each monomer's summed Qeq charge against its formal charge
   (+1 / −1, the dimers' ``fragment_charges``), starting from the default parameters
   (χ from Pauling electronegativities is held fixed).

Run:  python benchmarks/bench_hyper.py [--grid 6] [--steps 60] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

from jaxlr.data import load_charged_dimers  # noqa: E402
from jaxlr.hyper import optimize, qeq_data, qeq_loss, ridge_cv_loss, ridge_predictions, study_problem  # noqa: E402

#: the README's multi-scale LODE ridge model (jaxlr demo): cutoff 3 Å, 4 radial functions, l = 0
BASIS = dict(kind="lode", cutoff=3.0, max_radial=4, max_angular=0)
START = dict(lode_sigma=1.0, density_sigma=0.5, radial_scale=1.0, cutoff_width=0.5, log_lambda=float(np.log(1e-4)))
#: the box both searches explore (log-uniform grid points between the bounds)
BOX = dict(lode_sigma=(0.4, 3.0), density_sigma=(0.25, 1.5), radial_scale=(0.5, 2.0),
           log_lambda=(float(np.log(1e-9)), float(np.log(1e-1))))


def dimer_problem(folds: int = 5):
    """RidgeData of binding energies (rows dimer − monomer A − monomer B, CV on the near dimers), far rows."""
    data, far = study_problem({"data": {"source": "charged_dimers", "folds": folds}, "features": BASIS})
    return data, ~far


#: Rappé & Goddard, J. Phys. Chem. 95, 3358 (1991), QEq electronegativities χ (eV) — held fixed
RG_CHI = {1: 4.528, 6: 5.343, 7: 6.899, 8: 8.741}
#: and their idempotentials J (eV), for comparison with the fitted hardness
RG_J = {1: 13.890, 6: 10.126, 7: 11.760, 8: 13.364}


def qeq_study(steps: int = 80) -> dict:
    """Hardness and widths fitted to the monomers' formal charges (Qeq constrained to a neutral dimer)."""
    dimers = load_charged_dimers()
    species = tuple(dimers.species)
    data = qeq_data(dimers, target="fragment_charges", electronegativity=[RG_CHI[z] for z in species])
    n = len(species)
    start = {"hardness": np.full(n, 10.0), "sigma": np.full(n, 1.0)}     # QeqModel's defaults
    rg = {"hardness": np.array([RG_J[z] for z in species]), "sigma": np.full(n, 1.0)}
    t = optimize(qeq_loss, start, data, steps=steps, learning_rate=0.05, patience=20)
    return dict(species=species, default_rmse=float(qeq_loss(start, data)),
                rappe_goddard_rmse=float(qeq_loss(rg, data)), fitted_rmse=t.best_loss, fitted=t.best,
                evaluations=t.evaluations, seconds=t.seconds)


def _grid(points: int) -> dict:
    out = {}
    for k, (lo, hi) in BOX.items():
        out[k] = np.linspace(lo, hi, points) if k == "log_lambda" else np.geomspace(lo, hi, points)
    return out


def feature_grid(data, grid: dict, fixed: dict):
    """Grid search over the box: the design is computed once per point of the three feature
    hyperparameters, and the CV error of every λ on it (λ changes only the ridge solve)."""
    import itertools

    import jax.numpy as jnp

    from jaxlr.hyper import HyperTrajectory, kfold_cv_error

    design = jax.jit(lambda h, d: d.design(h))
    cv = jax.jit(lambda a, y, ll: kfold_cv_error(a, y, ll, np.asarray(data.fold_ids)))
    names = [k for k in grid if k != "log_lambda"]
    t0 = time.perf_counter()
    points, losses, n_features = [], [], 0
    combos = list(itertools.product(*(grid[k] for k in names)))
    for step, combo in enumerate(combos):
        if step % max(1, len(combos) // 20) == 0:
            print(f"  grid: design {step}/{len(combos)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        h = dict(zip(names, (float(v) for v in combo)), **fixed)
        a = design({k: jnp.asarray(v) for k, v in dict(h, log_lambda=0.0).items()}, data)
        n_features += 1
        for ll in grid["log_lambda"]:
            points.append(dict(h, log_lambda=float(ll)))
            losses.append(float(cv(a, data.y, ll)))
    i = int(np.argmin(losses))
    return HyperTrajectory(hyper=points, loss=losses, valid=None, best=points[i], best_loss=losses[i],
                           best_valid=None, evaluations=n_features, seconds=time.perf_counter() - t0)


def plot_study(grad, grid, path: Path) -> Path | None:
    """CV error along the gradient trajectory against the step and each hyperparameter, with the
    grid's best point (star) and the grid's profile (lowest CV over the other hyperparameters)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return None
    names = list(BOX)
    fig = Figure(figsize=(15, 3.4), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names) + 1)
    axes[0].plot(grad.loss, "o-", ms=3, label="gradient (Adam)")
    axes[0].axhline(grid.best_loss, color="C3", ls="--", label="grid best")
    axes[0].set_xlabel("step (one value-and-gradient)")
    axes[0].set_ylabel("5-fold CV RMSE, near dimers (eV)")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    gh = {k: np.array([p[k] for p in grid.hyper]) for k in names}
    gl = np.asarray(grid.loss)
    for ax, name in zip(axes[1:], names):
        values = np.unique(gh[name])
        ax.plot(values, [gl[gh[name] == v].min() for v in values], "s:", color="0.5", ms=4, label="grid profile")
        path_v = [h[name] for h in grad.hyper]
        ax.plot(path_v, grad.loss, "o-", ms=3, color="C0", label="gradient path")
        ax.plot(path_v[0], grad.loss[0], "o", color="k", ms=6, label="start")
        best = int(np.argmin(grad.loss))
        ax.plot(path_v[best], grad.loss[best], "*", color="C0", ms=14, mec="k", label="gradient best")
        ax.plot(grid.best[name], grid.best_loss, "*", color="C3", ms=14, mec="k", label="grid best")
        if name != "log_lambda":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yscale("log")
        ax.set_xlabel(name + ("" if name in ("log_lambda", "radial_scale") else " (Å)"))
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _far_rmse(hyper, data, near) -> float:
    pred = np.asarray(ridge_predictions({k: np.asarray(v) for k, v in hyper.items()}, data))
    y = np.asarray(data.y)
    return float(np.sqrt(np.mean((pred[~near] - y[~near]) ** 2)))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", type=int, default=6, help="grid points per hyperparameter (grid^4 points, grid^3 designs)")
    ap.add_argument("--steps", type=int, default=60, help="most hypergradient steps")
    ap.add_argument("--lr", type=float, default=0.08)
    ap.add_argument("--out", default="benchmarks/results", help="folder of hyper_study.json and hyper_study.png")
    ap.add_argument("--skip-ridge", action="store_true", help="only the Qeq study")
    args = ap.parse_args(argv)
    q = qeq_study()
    print("Qeq on the charged dimers: RMS error of each monomer's summed charge against ±1 (e), "
          "χ fixed (Rappé–Goddard)")
    print("| parameters | RMS error (e) |")
    print("|---|---|")
    print(f"| jaxlr defaults (J = 10 V/e, σ = 1 Å) | {q['default_rmse']:.4f} |")
    print(f"| Rappé–Goddard J, σ = 1 Å | {q['rappe_goddard_rmse']:.4f} |")
    print(f"| fitted by hypergradient ({q['evaluations']} evaluations, {q['seconds']:.0f} s) | "
          f"{q['fitted_rmse']:.4f} |")
    print("fitted per species " + ", ".join(
        f"Z={z}: J={j:.2f} V/e σ={w:.3f} Å" for z, j, w in zip(q["species"], q["fitted"]["hardness"],
                                                         q["fitted"]["sigma"])))
    if args.skip_ridge:
        return
    t0 = time.perf_counter()
    data, near = dimer_problem()
    print(f"charged dimers: {int(near.sum())} near (CV, 5 folds) + {int((~near).sum())} far rows; "
          f"{data.combine.shape[1]} structures; data prepared in {time.perf_counter() - t0:.1f} s")
    fixed = {"cutoff_width": START["cutoff_width"]}
    start = {k: v for k, v in START.items() if k != "cutoff_width"}
    grad = optimize(ridge_cv_loss, dict(start, **fixed), data, steps=args.steps, learning_rate=args.lr,
                    fixed=tuple(fixed), patience=15)
    grid = feature_grid(data, _grid(args.grid), fixed)
    rows = []
    for name, t, points in (("hypergradient (Adam)", grad, grad.evaluations),
                            (f"grid {args.grid}^4", grid, len(grid.loss))):
        far = _far_rmse(t.best, data, near)
        rows.append(dict(method=name, cv_rmse=t.best_loss, far_rmse=far, evaluations=points,
                         distinct_features=t.evaluations, seconds=t.seconds,
                         best={k: round(v, 4) for k, v in t.best.items()}))
    start_far = _far_rmse(START, data, near)
    # the first gradient step at which the CV error is at or below the grid's best
    reach = next((k + 1 for k, v in enumerate(grad.loss) if v <= grid.best_loss), None)
    print(f"\nstart (README model): CV RMSE {grad.loss[0]:.4f} eV, far RMSE {start_far:.4f} eV")
    print("| search | best CV RMSE (eV) | far RMSE (eV) | evaluations (distinct feature evaluations) | wall s | "
          "best hyperparameters |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['cv_rmse']:.4f} | {r['far_rmse']:.4f} | {r['evaluations']} "
              f"({r['distinct_features']}) | {r['seconds']:.0f} | {r['best']} |")
    print(f"\ngrid points / gradient evaluations: {len(grid.loss) / grad.evaluations:.1f}x; distinct feature "
          f"evaluations, grid / gradient: {grid.evaluations / grad.evaluations:.1f}x (the grid reuses a design for "
          f"every λ); gradient CV ≤ grid CV: {grad.best_loss <= grid.best_loss}"
          + ("" if reach is None else f", first reached after {reach} evaluations "
             f"({len(grid.loss) / reach:.0f}x fewer than grid points, {grid.evaluations / reach:.1f}x fewer than "
             f"grid designs)"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "hyper_study.json", "w") as fh:
        json.dump(dict(rows=rows, start_far=start_far, reach=reach, trajectory=grad.to_json(), qeq=q,
                       grid=dict(hyper=grid.hyper, loss=grid.loss)), fh, indent=1,
                  default=lambda o: list(o) if isinstance(o, tuple) else str(o))
    png = plot_study(grad, grid, out / "hyper_study.png")
    print(f"results: {out / 'hyper_study.json'}; plot: {png}")


if __name__ == "__main__":
    main()
