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

3. **Qeq on the water clusters** (``--part qeq-water``).  Per-species (H, O) hardness J,
   Gaussian width σ and electronegativity χ fitted by hypergradient descent to the
   PBE/def2-SVP cluster dipoles, to the Hirshfeld charges or to the density-fit charges of
   :func:`jaxlr.data.load_water_clusters`, on the split jaxlr's water models use
   (:func:`jaxlr.data.water_cluster_splits`, seed 0, ``extra=False``: 400 train / 50 validation /
   50 test),
   early stopping on the validation clusters.  Two constraint sets: the
   total charge only (plain Qeq; charge may flow between molecules) and every molecule
   neutral (a fluctuating-charge water: H assigned to its nearest O).  Compared with the
   values jaxlr uses by default (``QeqModel``: J = 10 V/e, σ = 1 Å for every species; χ,
   which QeqModel predicts with a network, at the Rappé–Goddard values) on the test
   clusters, and the monomer dipole checked against PBE and experiment.  Writes
   ``hyper_qeq_water.json`` and ``hyper_qeq_water.png``.

4. **The density model's per-species parameters on the water clusters**
   (``--part density-water``).  The multipolar charge equilibration of the density model
   with per-species parameters only (:func:`jaxlr.hyper.density_loss`: s and p basis
   widths, a positive hardness per shell, s linear terms; every molecule neutral; the
   reference basis and a fixed neutral promolecule, the training clusters' mean density
   per element) fitted by hypergradient descent to the PBE density coefficients (Coulomb
   metric, eV/atom) or to the PBE dipoles of the first ``--density-train`` clusters of the
   training pool, early stopping on the 50 validation clusters.  Scored on the 50 test
   clusters against the defaults (reference widths, hardness 10 everywhere as
   ``DensityModel`` starts, no linear term: the promolecule alone): Coulomb-metric error,
   dipole RMSE, density-fit charge RMSE and the ESP RMSE on Merz–Kollman shells against the
   reference fit (:func:`jaxlr.train.esp_rmse`), beside the Qeq study's dipole result.
   Writes ``hyper_density_water.json`` and ``hyper_density_water.png``.

Run:  python benchmarks/bench_hyper.py [--part all|qeq-dimers|ridge|qeq-water|density-water] [--grid 6]
                                       [--steps 60] [--out benchmarks/results]
      python benchmarks/bench_hyper.py --part ridge --grid 6 --estimate   # time one grid point, no grid
      taskset -c 0 python benchmarks/bench_hyper.py --part density-water  # 8 min on a loaded 2-core VM

On a loaded 2-core machine pin the density part to one core (``taskset -c 0``): unpinned, the
batched dense solves ran about 14× slower there (one value-and-gradient on 100 clusters: 16.4 s
against 1.17 s pinned).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxlr.data import (  # noqa: E402
    Dataset,
    load_charged_dimers,
    load_water_clusters,
    mean_coefficients,
    water_cluster_splits,
)
from jaxlr.hyper import (  # noqa: E402
    check_hyper,
    density_data,
    density_errors,
    density_loss,
    density_predictions,
    kfold_cv_error,
    optimize,
    qeq_data,
    qeq_loss,
    ridge_cv_loss,
    ridge_predictions,
    study_problem,
)

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


def qeq_model_defaults() -> dict:
    """The hardness (V/e) and Gaussian width (Å) that ``jaxlr.models.QeqModel`` starts every species at."""
    from jaxlr.models import QeqModel

    fields = {f.name: f.default for f in dataclasses.fields(QeqModel)}
    return {"hardness": float(fields["hardness"]), "sigma": float(fields["sigma"])}


#: the water monomer's experimental geometry (r_OH Å, ∠HOH degrees; Benedict, Gailar & Plyler 1956)
#: and dipole (1.8546 D, Clough, Beers, Klein & Rothman 1973; 1 D = 0.2081943 e·Å)
WATER_EXP = dict(r_oh=0.9572, angle=104.52, dipole_debye=1.8546)
DEBYE = 0.2081943
#: what the water Qeq fits target (the loss), and the constraint sets
WATER_FITS = ("dipole", "hirshfeld", "density")
WATER_CONSTRAINTS = ("total", "molecules")


def neutral_molecules(structure):
    """The structure with every water molecule a neutral fragment (each H belongs to its nearest O)."""
    z = np.asarray(structure.numbers)
    r = np.asarray(structure.positions)
    oxygens, hydrogens = np.flatnonzero(z == 8), np.flatnonzero(z == 1)
    labels = np.empty(len(z), np.int64)
    labels[oxygens] = np.arange(len(oxygens))
    labels[hydrogens] = np.argmin(np.linalg.norm(r[hydrogens, None] - r[None, oxygens], axis=-1), axis=1)
    if not np.all(np.bincount(labels, minlength=len(oxygens)) == 3):
        raise ValueError(f"structure {structure.info.get('structure_id')} does not split into H2O molecules.")
    return structure.replace(fragments=labels, fragment_charges=np.zeros(len(oxygens)))


def water_problem(constraint: str, seed: int = 0, batch_size: int = 128):
    """QeqData of the water clusters by split and target: ``{(split, target): QeqData}`` with
    split in train/valid/test and target in :data:`WATER_FITS` (the two charge targets are
    ``qeq_data(target="charges")`` on the Hirshfeld or the density-fit charges)."""
    chi = [RG_CHI[1], RG_CHI[8]]
    out = {}
    for charges in ("hirshfeld", "density"):
        splits = water_cluster_splits(charges=charges, seed=seed, extra=False)
        for split, part in zip(("train", "valid", "test"), splits):
            if constraint == "molecules":
                part = Dataset([neutral_molecules(s) for s in part])
            for fit in ((charges, "dipole") if charges == "hirshfeld" else (charges,)):
                out[split, fit] = qeq_data(part, target="dipole" if fit == "dipole" else "charges",
                                           electronegativity=chi, species=(1, 8), batch_size=batch_size)
    return out


def water_monomer(r_oh: float, angle: float) -> np.ndarray:
    """(3, 3) positions (Å) of O, H, H with the O–H length ``r_oh`` and the H–O–H angle (degrees)."""
    half = np.radians(angle) / 2
    return np.array([[0.0, 0.0, 0.0], [r_oh * np.sin(half), 0.0, r_oh * np.cos(half)],
                     [-r_oh * np.sin(half), 0.0, r_oh * np.cos(half)]])


@jax.jit
def _neutral_qeq_dipole(r, z, h):
    from jaxlr.equilibration import qeq_solve

    q, _, _ = qeq_solve(r, h["electronegativity"][z], h["hardness"][z], h["sigma"][z], method="direct")
    return jnp.linalg.norm(q @ r)


def qeq_dipoles(hyper: dict, structures) -> np.ndarray:
    """|Σ q R| (e·Å) of neutral Qeq (total charge 0) on each open structure; species channels (H, O)."""
    h = {k: jnp.asarray(v, jnp.float64) for k, v in hyper.items()}
    return np.array([float(_neutral_qeq_dipole(jnp.asarray(s.positions),
                                               jnp.asarray((np.asarray(s.numbers) == 8).astype(np.int32)), h))
                     for s in structures])


_QEQ_LOSS = jax.jit(qeq_loss)      # one compilation per data layout, shared by every row


def _water_row(hyper: dict, data: dict, monomers, pbe_monomer: float) -> dict:
    host = {k: np.asarray(v, np.float64) for k, v in hyper.items()}
    check_hyper(host, n_species=2)
    test = {fit: float(_QEQ_LOSS(host, data["test", fit])) for fit in WATER_FITS}
    exp = water_monomer(WATER_EXP["r_oh"], WATER_EXP["angle"])
    from jaxlr.data import Structure

    mono_exp = float(qeq_dipoles(host, [Structure(positions=exp, numbers=[8, 1, 1])])[0])
    mono_data = float(qeq_dipoles(host, monomers).mean())
    return dict(hyper={k: v.tolist() for k, v in host.items()}, test_dipole_rmse=test["dipole"],
                test_hirshfeld_rmse=test["hirshfeld"], test_density_rmse=test["density"],
                monomer_dipole_experimental_geometry=mono_exp, monomer_dipole_data_mean=mono_data,
                pbe_monomer_dipole_data_mean=pbe_monomer)


def qeq_water_study(steps: int = 300, learning_rate: float = 0.05, patience: int = 30, progress: bool = True,
                    constraints=WATER_CONSTRAINTS, fits=WATER_FITS) -> dict:
    """Per-species J, σ, χ of Qeq fitted to the water clusters' dipoles or charges (see the module docstring)."""
    defaults = qeq_model_defaults()
    chi = np.array([RG_CHI[1], RG_CHI[8]])
    start = {"hardness": np.full(2, defaults["hardness"]), "sigma": np.full(2, defaults["sigma"]),
             "electronegativity": chi}
    rappe = {"hardness": np.array([RG_J[1], RG_J[8]]), "sigma": np.full(2, defaults["sigma"]),
             "electronegativity": chi}
    monomers = list(load_water_clusters(n_waters=1))
    pbe_monomer = float(np.mean([np.linalg.norm(s.targets["dipole"]) for s in monomers]))
    scale = {}
    result = dict(species=[1, 8], split=dict(seed=0, convention="jaxlr.data.water_cluster_splits"),
                  defaults=defaults, start=_to_lists(start), steps=steps, learning_rate=learning_rate,
                  patience=patience, experimental=dict(WATER_EXP, dipole_eA=WATER_EXP["dipole_debye"] * DEBYE),
                  pbe_monomer_dipole=pbe_monomer, n_monomers=len(monomers), runs={})
    for constraint in constraints:
        data = water_problem(constraint)
        n = {split: sum(int(np.asarray(b.structure_mask).sum()) for b in data[split, "dipole"].batches)
             for split in ("train", "valid", "test")}
        result["sizes"] = n
        for fit in WATER_FITS:      # the error of predicting zero, for scale
            d = data["test", fit]
            scale[fit] = float(_QEQ_LOSS({"hardness": np.full(2, 1e9), "sigma": np.ones(2)}, d))
        result["test_reference_rms"] = scale
        runs = {"defaults": _water_row(start, data, monomers, pbe_monomer),
                "rappe_goddard": _water_row(rappe, data, monomers, pbe_monomer)}
        for fit in fits:
            print(f"  Qeq water, {constraint}-charge constraint, fitted to {fit} "
                  f"({n['train']} train / {n['valid']} valid clusters)", flush=True)
            t = optimize(qeq_loss, start, data["train", fit], valid_fn=qeq_loss, valid_data=data["valid", fit],
                         steps=steps, learning_rate=learning_rate, patience=patience, progress=progress)
            row = _water_row(t.best, data, monomers, pbe_monomer)
            row.update(fit=fit, value_and_gradient_calls=len(t.loss), validation_calls=len(t.valid),
                       evaluations=t.evaluations, seconds=t.seconds, stopped=t.stopped,
                       best_step=int(np.argmin(t.valid)), train_loss=_sig(t.loss), valid_loss=_sig(t.valid),
                       trajectory={k: _sig([h[k] for h in t.hyper]) for k in start})   # (steps, 2) per name
            runs[f"fit_{fit}"] = row
        result["runs"][constraint] = runs
    return result


def _sig(values, digits: int = 6):
    """Nested lists of floats rounded to ``digits`` significant digits (keeps the json small)."""
    return np.vectorize(lambda v: float(f"{v:.{digits}g}"))(np.asarray(values, np.float64)).tolist()


def _to_lists(h: dict) -> dict:
    return {k: np.asarray(v, np.float64).tolist() for k, v in h.items()}


WATER_LABELS = {"defaults": "jaxlr defaults (J = 10 V/e, σ = 1 Å; χ Rappé–Goddard)",
                "rappe_goddard": "Rappé–Goddard J and χ, σ = 1 Å", "fit_dipole": "fitted to dipoles",
                "fit_hirshfeld": "fitted to Hirshfeld charges", "fit_density": "fitted to density-fit charges"}
CONSTRAINT_LABELS = {"total": "total charge", "molecules": "each H2O neutral"}


def water_tables(result: dict) -> str:
    """Markdown tables of :func:`qeq_water_study`: test errors, fitted values, monomer dipole."""
    lines = ["| constraint | parameters | test μ RMSE (e·Å) | test q RMSE, Hirshfeld (e) | test q RMSE, density fit (e) "
             "| evaluations (value+grad / valid) | wall s | stopped (best step) |", "|---|---|---|---|---|---|---|---|"]
    for constraint, runs in result["runs"].items():
        for key, r in runs.items():
            extra = ("– | – | –" if "fit" not in r else
                     f"{r['value_and_gradient_calls']} / {r['validation_calls']} | {r['seconds']:.0f} | "
                     f"{r['stopped']} ({r['best_step']})")
            lines.append(f"| {CONSTRAINT_LABELS[constraint]} | {WATER_LABELS[key]} | {r['test_dipole_rmse']:.4f} | "
                         f"{r['test_hirshfeld_rmse']:.4f} | {r['test_density_rmse']:.4f} | {extra} |")
    lines += ["", "| constraint | parameters | J_H, J_O (V/e) | σ_H, σ_O (Å) | χ_H, χ_O (V) | χ_O − χ_H (V) "
              "| monomer μ, exp. geometry (e·Å) | monomer μ, mean of data monomers: Qeq (e·Å) |",
              "|---|---|---|---|---|---|---|---|"]
    for constraint, runs in result["runs"].items():
        for key, r in runs.items():
            h = r["hyper"]
            lines.append(f"| {CONSTRAINT_LABELS[constraint]} | {WATER_LABELS[key]} | "
                         f"{h['hardness'][0]:.2f}, {h['hardness'][1]:.2f} | {h['sigma'][0]:.3f}, {h['sigma'][1]:.3f} | "
                         f"{h['electronegativity'][0]:.3f}, {h['electronegativity'][1]:.3f} | "
                         f"{h['electronegativity'][1] - h['electronegativity'][0]:.3f} | "
                         f"{r['monomer_dipole_experimental_geometry']:.4f} | {r['monomer_dipole_data_mean']:.4f} |")
    e, z = result["experimental"], result["test_reference_rms"]
    lines += ["", f"for scale, the RMS of the test references (the error of predicting zero): dipole components "
              f"{z['dipole']:.4f} e·Å, Hirshfeld charges {z['hirshfeld']:.4f} e, density-fit charges "
              f"{z['density']:.4f} e", f"monomer dipole: PBE/def2-SVP mean over the {result['n_monomers']} data monomers "
              f"{result['pbe_monomer_dipole']:.4f} e·Å; experiment {e['dipole_debye']} D = {e['dipole_eA']:.4f} e·Å "
              f"(r_OH {e['r_oh']} Å, ∠HOH {e['angle']}°)"]
    return "\n".join(lines)


def plot_water(result: dict, path: Path) -> Path | None:
    """Loss against the step and the trajectories of J, σ and χ_O − χ_H of every water fit."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    constraints = list(result["runs"])
    fig = Figure(figsize=(13, 2.9 * len(constraints)), dpi=70)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(constraints), 4, squeeze=False)
    colors = dict(zip(WATER_FITS, ("C0", "C1", "C2")))
    for row, constraint in zip(axes, constraints):
        for key, r in result["runs"][constraint].items():
            if "fit" not in r:
                continue
            c = colors[r["fit"]]
            steps = np.arange(len(r["train_loss"]))
            row[0].plot(steps, r["train_loss"], "-", color=c, label=f"{r['fit']} (train)")
            row[0].plot(steps, r["valid_loss"], ":", color=c, label="valid")
            row[0].plot(r["best_step"], r["valid_loss"][r["best_step"]], "*", color=c, ms=10, mec="k")
            traj = {k: np.asarray(v) for k, v in r["trajectory"].items()}
            for name, ax in (("hardness", row[1]), ("sigma", row[2])):
                ax.plot(steps, traj[name][:, 1], "-", color=c, label=f"O, {r['fit']}")
                ax.plot(steps, traj[name][:, 0], "--", color=c, label=f"H, {r['fit']}")
            chi = traj["electronegativity"]
            row[3].plot(steps, chi[:, 1] - chi[:, 0], "-", color=c, label=r["fit"])
        row[0].set_yscale("log")
        row[0].set_ylabel(f"{CONSTRAINT_LABELS[constraint]}\nRMSE (e·Å or e)")
        row[1].set_ylabel("J (V/e)")
        row[2].set_ylabel("σ (Å)")
        row[2].set_yscale("log")
        row[3].set_ylabel("χ_O − χ_H (V)")
        for ax in row:
            ax.set_xlabel("step")
        row[0].legend(fontsize=6)
        row[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


#: what the density-model fits target (DensityData.target)
DENSITY_FITS = ("coefficients", "dipole")
DENSITY_LABELS = {"defaults": "defaults: reference widths, hardness 10, no linear term (the promolecule alone)",
                  "fit_coefficients": "fitted to the density (Coulomb metric)", "fit_dipole": "fitted to dipoles"}


def density_problem(n_train: int, seed: int = 0, batch_size: int = 32):
    """``({(split, fit): DensityData}, promolecule, {split: structures})`` of the water clusters: the first
    ``n_train`` clusters of the training pool, the validation and the test clusters, every molecule
    neutral, the reference basis, and the training clusters' mean density per element (neutral) as
    the fixed promolecule of every split."""
    pool, valid, test = water_cluster_splits(charges="density", seed=seed, extra=False)
    parts = {"train": list(pool)[:n_train], "valid": list(valid), "test": list(test)}
    promolecule = mean_coefficients(parts["train"])
    data = {}
    for split, part in parts.items():
        d = density_data([neutral_molecules(s) for s in part], target="coefficients", promolecule=promolecule,
                         batch_size=batch_size)
        for fit in DENSITY_FITS:
            data[split, fit] = dataclasses.replace(d, target=fit)
    return data, promolecule, parts


_DENSITY_ERRORS = jax.jit(density_errors)
_DENSITY_PREDICT = jax.jit(density_predictions)


def density_esp(hyper: dict, data) -> np.ndarray:
    """Per structure of ``data``, the RMS difference (mHa/e) between the potentials of the model density
    (promolecule + x) and of the reference density on the Merz–Kollman shells (:func:`jaxlr.train.esp_rmse`;
    the promolecule is the same in both, so it compares x with reference − promolecule)."""
    from jaxlr.train import esp_rmse

    species = np.asarray(data.basis.species)
    out = []
    for b, pred in enumerate(_DENSITY_PREDICT(hyper, data)):
        batch = data.batches[b]
        mask = np.asarray(batch.atom_mask)
        for k in np.flatnonzero(np.asarray(batch.structure_mask)):
            n = int(mask[k].sum())
            out.append(esp_rmse(np.asarray(batch.positions[k, :n]), species[np.asarray(batch.species[k, :n])],
                                np.asarray(pred["coefficients"][k, :n]), np.asarray(pred["basis_widths"][k, :n]),
                                np.asarray(data.coefficients[b][k, :n]), np.asarray(data.coefficient_widths[b][k, :n])))
    return np.asarray(out)


def _density_row(hyper: dict, test) -> dict:
    host = {k: np.asarray(v, np.float64) for k, v in hyper.items()}
    check_hyper(host, data=test)
    e = _DENSITY_ERRORS(host, test)
    esp = density_esp(host, test)
    return dict(hyper=_to_lists(host), test_coulomb_eV_per_atom=float(e["coefficients"]),
                test_dipole_rmse=float(e["dipole"]), test_charge_rmse=float(e["charges"]),
                test_esp_rmse_mHa_e=float(np.sqrt(np.mean(esp**2))))


def density_water_study(n_train: int = 100, steps: int = 150, learning_rate: float = 0.1, patience: int = 20,
                        progress: bool = True, fits=DENSITY_FITS) -> dict:
    """The density model's per-species parameters fitted to the water clusters (module docstring, part 4)."""
    t0 = time.perf_counter()
    data, promolecule, parts = density_problem(n_train)
    train0 = data["train", "coefficients"]
    start = {k: np.asarray(v) for k, v in train0.default_hyper().items()}
    test = data["test", "coefficients"]
    fit_esp = np.array([float(s.info["esp_rmse"]) for s in parts["test"]])
    result = dict(species=list(train0.basis.species), basis=dict(s_widths=train0.basis.s_widths,
                                                                  p_widths=train0.basis.p_widths),
                  split=dict(seed=0, convention="jaxlr.data.water_cluster_splits",
                             train="the first n_train clusters of the 400-cluster pool"),
                  sizes={k: len(v) for k, v in parts.items()}, promolecule=promolecule, start=_to_lists(start),
                  steps=steps, learning_rate=learning_rate, patience=patience,
                  reference_fit_esp_vs_exact_mHa_e=float(np.sqrt(np.mean(fit_esp**2))),
                  data_seconds=time.perf_counter() - t0, runs={})
    result["runs"]["defaults"] = _density_row(start, test)
    for fit in fits:
        print(f"  density model on water, fitted to {fit} ({len(parts['train'])} train / {len(parts['valid'])} "
              "valid clusters)", flush=True)
        t = optimize(density_loss, start, data["train", fit], valid_fn=density_loss, valid_data=data["valid", fit],
                     steps=steps, learning_rate=learning_rate, patience=patience, progress=progress)
        row = _density_row(t.best, test)
        row.update(fit=fit, value_and_gradient_calls=len(t.loss), validation_calls=len(t.valid),
                   evaluations=t.evaluations, seconds=t.seconds, stopped=t.stopped, best_step=int(np.argmin(t.valid)),
                   train_loss=_sig(t.loss), valid_loss=_sig(t.valid),
                   trajectory={k: _sig([h[k] for h in t.hyper]) for k in start})
        result["runs"][f"fit_{fit}"] = row
    return result


def _row_values(values, digits: int = 3) -> str:
    return "; ".join(", ".join(f"{v:.{digits}g}" for v in row) for row in values)


def density_tables(result: dict) -> str:
    """Markdown tables of :func:`density_water_study`: test errors and fitted values."""
    lines = ["| parameters | test density error ½(Δρ, Δρ)_Coulomb (meV/atom) | μ RMSE (e·Å) | q RMSE, density fit (e) | ESP RMSE (mHa/e) "
             "| value+grad / valid calls | wall s | stopped (best step) |", "|---|---|---|---|---|---|---|---|"]
    for key, r in result["runs"].items():
        extra = ("– | – | –" if "fit" not in r else
                 f"{r['value_and_gradient_calls']} / {r['validation_calls']} | {r['seconds']:.0f} | "
                 f"{r['stopped']} ({r['best_step']})")
        lines.append(f"| {DENSITY_LABELS[key]} | {1000 * r['test_coulomb_eV_per_atom']:.2f} | "
                     f"{r['test_dipole_rmse']:.4f} | {r['test_charge_rmse']:.4f} | {r['test_esp_rmse_mHa_e']:.2f} "
                     f"| {extra} |")
    lines += ["", "| parameters | s widths H; O (Å) | p widths H; O (Å) | hardness H; O (s shells, p shells) "
              "| linear H; O (V) |", "|---|---|---|---|---|"]
    n_s = [len(w) for w in result["basis"]["s_widths"]]
    n_p = [len(w) for w in result["basis"]["p_widths"]]
    for key, r in result["runs"].items():
        h = r["hyper"]
        used = lambda name, counts, offset=0: [row[offset:offset + c] for row, c in zip(h[name], counts)]  # noqa: E731
        hard = [row[:a] + row[len(h["s_widths"][0]):len(h["s_widths"][0]) + b]
                for row, a, b in zip(h["shell_hardness"], n_s, n_p)]
        lines.append(f"| {DENSITY_LABELS[key]} | {_row_values(used('s_widths', n_s))} | "
                     f"{_row_values(used('p_widths', n_p))} | {_row_values(hard)} | "
                     f"{_row_values(used('linear', n_s))} |")
    lines += ["", f"reference fit against the exact PBE potential on the same shells (info['esp_rmse'], RMS over "
              f"the test clusters): {result['reference_fit_esp_vs_exact_mHa_e']:.2f} mHa/e"]
    if result.get("qeq_dipole_molecules") is not None:
        lines.append(f"Qeq study (hyper_qeq_water.json, each molecule neutral, fitted to dipoles): test μ RMSE "
                     f"{result['qeq_dipole_molecules']:.4f} e·Å")
    return "\n".join(lines)


def plot_density(result: dict, path: Path) -> Path | None:
    """Validation loss relative to its start, and the O widths relative to the reference, along each fit."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(12, 3.2), dpi=70)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    colors = {"coefficients": "C0", "dipole": "C1"}
    for r in result["runs"].values():
        if "fit" not in r:
            continue
        c = colors[r["fit"]]
        steps = np.arange(len(r["train_loss"]))
        axes[0].plot(steps, np.asarray(r["train_loss"]) / r["train_loss"][0], "-", color=c, label=f"{r['fit']} (train)")
        axes[0].plot(steps, np.asarray(r["valid_loss"]) / r["valid_loss"][0], ":", color=c, label="valid")
        traj = {k: np.asarray(v) for k, v in r["trajectory"].items()}
        for name, ax in (("s_widths", axes[1]), ("p_widths", axes[1]), ("linear", axes[2])):
            values = traj[name][:, 1]                          # oxygen
            if name != "linear":
                values = values / values[0]
            style = {"s_widths": "-", "p_widths": "--", "linear": "-"}[name]
            for k in range(values.shape[1]):
                ax.plot(steps, values[:, k], style, color=c, alpha=0.4 + 0.6 * k / max(values.shape[1] - 1, 1),
                        label=f"{r['fit']}: {name} {k}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss / loss at the defaults")
    axes[1].set_ylabel("O width / reference width (s solid, p dashed)")
    axes[2].set_ylabel("O linear terms (V)")
    for ax in axes:
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=5, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _grid(points: int) -> dict:
    out = {}
    for k, (lo, hi) in BOX.items():
        out[k] = np.linspace(lo, hi, points) if k == "log_lambda" else np.geomspace(lo, hi, points)
    return out


def feature_grid(data, grid: dict, fixed: dict):
    """Grid search over the box: the design is computed once per point of the three feature
    hyperparameters, and the CV error of every λ on it (λ changes only the ridge solve)."""
    import itertools

    from jaxlr.hyper import HyperTrajectory

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


def estimate_grid(points: int) -> dict:
    """Time one grid point of the dimer ridge grid (one design evaluation and one CV solve per λ)
    after compilation, and extrapolate to the points^4 grid (points^3 designs); nothing more runs."""
    t0 = time.perf_counter()
    data, _ = dimer_problem()
    prepare = time.perf_counter() - t0
    grid = _grid(points)
    fixed = {"cutoff_width": START["cutoff_width"]}
    names = [k for k in grid if k != "log_lambda"]
    for combo in np.array(np.meshgrid(*(grid[k] for k in names), indexing="ij")).reshape(len(names), -1).T:
        for ll in grid["log_lambda"]:      # every point inside the domain, before anything compiles
            check_hyper(dict(zip(names, combo), log_lambda=ll, **fixed), data=data)
    design = jax.jit(lambda h, d: d.design(h))
    cv = jax.jit(lambda a, y, ll: kfold_cv_error(a, y, ll, np.asarray(data.fold_ids)))
    corners = [dict(zip(names, (float(grid[k][i % points]) for k in names)), **fixed) for i in (0, points - 1, 1)]
    times = []
    for h in corners:                      # the first call compiles
        t = time.perf_counter()
        a = jax.block_until_ready(design({k: jnp.asarray(v) for k, v in dict(h, log_lambda=0.0).items()}, data))
        times.append(time.perf_counter() - t)
    solves = []
    for ll in [grid["log_lambda"][0]] + list(grid["log_lambda"]):
        t = time.perf_counter()
        float(cv(a, data.y, ll))
        solves.append(time.perf_counter() - t)
    design_s, cv_s = float(np.median(times[1:])), float(np.median(solves[1:]))
    total = points**3 * design_s + points**4 * cv_s + times[0] + solves[0] + prepare
    return dict(points=points, grid_points=points**4, designs=points**3, prepare_s=prepare,
                first_design_s=times[0], design_s=times[1:], cv_solve_s=solves[1:],
                seconds_per_grid_point=design_s / points + cv_s, estimate_s=total)


def run_qeq_dimers() -> dict:
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
    return q


def run_qeq_water(args, out: Path) -> dict:
    t0 = time.perf_counter()
    result = qeq_water_study(steps=args.water_steps, learning_rate=args.water_lr, patience=args.water_patience)
    result["seconds"] = time.perf_counter() - t0
    n = result["sizes"]
    print(f"\nQeq on the water clusters, PBE/def2-SVP, {n['train']} train / {n['valid']} valid / {n['test']} test "
          f"clusters (seed 0); Adam on log J, log σ and χ, lr {args.water_lr}, ≤ {args.water_steps} steps, "
          f"patience {args.water_patience}; total {result['seconds']:.0f} s")
    print(water_tables(result))
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyper_qeq_water.json").write_text(json.dumps(result, separators=(",", ":")))
    png = plot_water(result, out / "hyper_qeq_water.png")
    print(f"results: {out / 'hyper_qeq_water.json'}; plot: {png}")
    return result


def run_density_water(args, out: Path) -> dict:
    t0 = time.perf_counter()
    result = density_water_study(n_train=args.density_train, steps=args.density_steps, learning_rate=args.density_lr,
                                 patience=args.density_patience)
    result["seconds"] = time.perf_counter() - t0
    qeq = out / "hyper_qeq_water.json"
    if qeq.exists():
        result["qeq_dipole_molecules"] = json.loads(qeq.read_text())["runs"]["molecules"]["fit_dipole"][
            "test_dipole_rmse"]
    n = result["sizes"]
    print(f"\ndensity model (per-species parameters) on the water clusters, PBE/def2-SVP, {n['train']} train / "
          f"{n['valid']} valid / {n['test']} test clusters (seed 0), every molecule neutral; Adam on log widths, "
          f"log hardness and the linear terms, lr {args.density_lr}, ≤ {args.density_steps} steps, patience "
          f"{args.density_patience}; total {result['seconds']:.0f} s")
    print(density_tables(result))
    out.mkdir(parents=True, exist_ok=True)
    (out / "hyper_density_water.json").write_text(json.dumps(result, separators=(",", ":")))
    png = plot_density(result, out / "hyper_density_water.png")
    print(f"results: {out / 'hyper_density_water.json'}; plot: {png}")
    return result


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("all", "dimers", "qeq-dimers", "qeq-water", "density-water"), default="all",
                    help="dimers: the Qeq and ridge studies on the charged dimers; qeq-dimers: the Qeq one only; "
                         "qeq-water: the Qeq study on the water clusters; density-water: the density model's "
                         "per-species parameters on the water clusters; all: every part")
    ap.add_argument("--grid", type=int, default=6, help="grid points per hyperparameter (grid^4 points, grid^3 designs)")
    ap.add_argument("--estimate", action="store_true",
                    help="time one point of the ridge grid and print the grid's estimated cost instead of running it")
    ap.add_argument("--steps", type=int, default=60, help="most hypergradient steps (ridge)")
    ap.add_argument("--lr", type=float, default=0.08)
    ap.add_argument("--water-steps", type=int, default=300, help="most hypergradient steps per water Qeq fit")
    ap.add_argument("--water-lr", type=float, default=0.05)
    ap.add_argument("--water-patience", type=int, default=30)
    ap.add_argument("--density-train", type=int, default=100,
                    help="training clusters of the density-water part (the first ones of the 400-cluster pool)")
    ap.add_argument("--density-steps", type=int, default=150, help="most hypergradient steps per density fit")
    ap.add_argument("--density-lr", type=float, default=0.1)
    ap.add_argument("--density-patience", type=int, default=20)
    ap.add_argument("--out", default="benchmarks/results", help="folder of the json and png results")
    ap.add_argument("--skip-ridge", action="store_true", help="the same as --part qeq-dimers")
    args = ap.parse_args(argv)
    part = "qeq-dimers" if args.skip_ridge else args.part
    if args.grid < 2:
        raise ValueError(f"--grid needs at least 2 points per hyperparameter, got {args.grid}.")
    out = Path(args.out)
    if args.estimate:
        e = estimate_grid(args.grid)
        print(f"ridge grid {args.grid}^4 = {e['grid_points']} points ({e['designs']} design evaluations): data "
              f"{e['prepare_s']:.0f} s, first design (compilation) {e['first_design_s']:.0f} s, one design "
              f"{np.median(e['design_s']):.1f} s (runs {', '.join(f'{t:.1f}' for t in e['design_s'])}), one CV solve "
              f"{np.median(e['cv_solve_s']) * 1e3:.0f} ms → {e['seconds_per_grid_point']:.2f} s per grid point, "
              f"about {e['estimate_s'] / 60:.0f} min for the grid")
        return
    if part == "qeq-water":
        run_qeq_water(args, out)
        return
    if part == "density-water":
        run_density_water(args, out)
        return
    q = run_qeq_dimers()
    if part == "qeq-dimers":
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
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "hyper_study.json", "w") as fh:
        json.dump(dict(rows=rows, start_far=start_far, reach=reach, trajectory=grad.to_json(), qeq=q,
                       grid=dict(hyper=grid.hyper, loss=grid.loss)), fh, indent=1,
                  default=lambda o: list(o) if isinstance(o, tuple) else str(o))
    png = plot_study(grad, grid, out / "hyper_study.png")
    print(f"results: {out / 'hyper_study.json'}; plot: {png}")
    if part == "all":
        run_qeq_water(args, out)
        run_density_water(args, out)


if __name__ == "__main__":
    main()
