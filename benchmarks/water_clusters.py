"""The water-cluster experiment (issue 22): five jaxlr models on the same PBE/def2-SVP splits.

    python benchmarks/water_clusters.py [--models local,latent,qeq,density] [--sizes 25,100,all]
                                        [--epochs 200] [--quick] [--out benchmarks/results/water]

Data: :func:`jaxlr.data.load_water_clusters` ((H2O)n, n = 1–8), one fixed split (seed 0):
10 % test, 10 % validation (early stopping), the rest the training pool; a learning curve
takes the first k structures of the shuffled pool.  Every model is trained on energies and
forces; the charge-bearing ones (latent, Qeq, density) also on the dipole; the density model
also on the density coefficients in the Coulomb metric, in the data's own basis, with the
training set's mean coefficients per element as its promolecule.

Reported on the test split: energy RMSE (meV/atom), force RMSE (meV/Å), dipole RMSE (e·Å),
and for the density model the Coulomb-metric error (meV/atom) and the ESP RMSE on
Merz–Kollman shells against the reference density (mHa/e; the reference fit is itself
1.1–1.6 mHa/e from the exact PBE potential); size transfer to (H2O)12/16
(:func:`jaxlr.data.load_water_transfer`, when bundled) per atom.  Float64.  Writes
``results.json`` and ``learning_curves.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

import jaxlr.data as data
from jaxlr.models import build_potential
from jaxlr.train import density_esp_errors, evaluate, fit

CHARGED = ("latent", "qeq", "density")
MODEL_HYPER = {
    "local": dict(hidden=(64, 64)),
    "lode": dict(hidden=(64, 64)),
    "latent": dict(hidden=(64, 64), charge_hidden=(32,)),
    "qeq": dict(hidden=(64, 64), chi_hidden=(32,)),
    "density": dict(hidden=(64, 64), coef_hidden=(32,), learn_widths=False),
}
LOCAL = dict(cutoff=4.5, max_radial=6, max_angular=3, sigma=0.4)


def _splits(seed: int = 0):
    ds = data.load_water_clusters()
    order = np.random.default_rng(seed).permutation(len(ds))
    n_test = n_valid = len(ds) // 10
    test = data.Dataset([ds[int(i)] for i in order[:n_test]])
    valid = data.Dataset([ds[int(i)] for i in order[n_test:n_test + n_valid]])
    pool = data.Dataset([ds[int(i)] for i in order[n_test + n_valid:]])
    return pool, valid, test


def build(model: str, train):
    hyper = dict(MODEL_HYPER[model])
    if model == "density":
        basis = [(z, *w) for z, w in data.reference_basis(train[0]).items()]
        hyper.update(basis=basis, promolecule=data.mean_coefficients(train))
    return build_potential(model, species=(1, 8), local=dict(LOCAL), **hyper)


def weights_for(model: str) -> dict:
    w = {"energy": 1.0, "forces": 1.0}
    if model in CHARGED:
        w["dipole"] = 1.0
    if model == "density":
        w["coefficients"] = 1.0
    return w


def score(res, model: str, test) -> dict:
    targets = ("energy", "forces") + (("dipole",) if model in CHARGED else ()) + \
        (("coefficients",) if model == "density" else ())
    m = evaluate(res.potential, res.variables, test, targets=targets).result()
    out = {"energy_meV_atom": 1e3 * m["energy_per_atom"]["rmse"], "forces_meV_A": 1e3 * m["forces"]["rmse"]}
    if "dipole" in m:
        out["dipole_eA"] = m["dipole"]["rmse"]
    if "density_coulomb" in m:
        out["density_coulomb_meV_atom"] = 1e3 * m["density_coulomb"]["mae"]
        esp = density_esp_errors(res.potential, res.variables, test)
        out["esp_rmse_mHa_e"] = float(np.sqrt(np.mean(esp["model"] ** 2)))
        out["reference_fit_esp_mHa_e"] = float(np.sqrt(np.mean(esp["reference_fit"] ** 2)))
    return out


def transfer(res, model: str) -> dict | None:
    try:
        big = data.load_water_transfer()
    except FileNotFoundError:
        return None
    targets = ("energy", "forces") + (("dipole",) if model in CHARGED else ())
    m = evaluate(res.potential, res.variables, big, targets=targets, batch_size=4).result()
    out = {"energy_meV_atom": 1e3 * m["energy_per_atom"]["rmse"], "forces_meV_A": 1e3 * m["forces"]["rmse"]}
    if "dipole" in m:
        out["dipole_eA"] = m["dipole"]["rmse"]
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("energy_meV_atom", "energy RMSE / meV atom⁻¹"), ("forces_meV_A", "force RMSE / meV Å⁻¹"),
            ("dipole_eA", "dipole RMSE / e Å")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (key, label) in zip(axes, keys):
        for model, rows in results.items():
            pts = [(r["n_train"], r["test"][key]) for r in rows if key in r["test"]]
            if pts:
                ax.loglog(*zip(*pts), "o-", label=model)
        ax.set_xlabel("training structures")
        ax.set_ylabel(label)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="local,latent,qeq,density")
    ap.add_argument("--sizes", default="25,100,all", help="training sizes (structures), 'all' = the whole pool")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--patience", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="2 sizes, 5 epochs (a smoke run)")
    ap.add_argument("--out", default="benchmarks/results/water")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_HYPER]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(MODEL_HYPER)}")
    pool, valid, test = _splits()
    sizes = [len(pool) if s == "all" else int(s) for s in args.sizes.split(",")]
    epochs = args.epochs
    if args.quick:
        sizes, epochs = sizes[:2], 5
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}; "
          f"pool {len(pool)}, valid {len(valid)}, test {len(test)}; sizes {sizes}; epochs ≤ {epochs}")
    results = {}
    for model in models:
        results[model] = []
        for n in sizes:
            train = data.Dataset(list(pool)[:n])
            t0 = time.perf_counter()
            res = fit(build(model, train), train, valid, weights=weights_for(model), epochs=epochs,
                      batch_size=min(16, max(2, n // 4)), learning_rate=3e-3, patience=args.patience,
                      progress=True, dtype="float64", plots=False)
            row = {"n_train": n, "seconds": time.perf_counter() - t0, "test": score(res, model, test)}
            if n == sizes[-1]:
                row["transfer"] = transfer(res, model)
            results[model].append(row)
            print(f"{model:8s} n={n:4d} {row['seconds']:7.0f} s  " +
                  "  ".join(f"{k} {v:.4g}" for k, v in row["test"].items()), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "learning_curves.png")
    print("\n| model | n_train | E RMSE meV/atom | F RMSE meV/Å | μ RMSE e·Å | ESP mHa/e |")
    print("|---|---|---|---|---|---|")
    for model, rows in results.items():
        for r in rows:
            t = r["test"]
            print(f"| {model} | {r['n_train']} | {t['energy_meV_atom']:.2f} | {t['forces_meV_A']:.0f} | "
                  f"{t.get('dipole_eA', float('nan')):.4f} | {t.get('esp_rmse_mHa_e', float('nan')):.2f} |")
    print(f"wrote {out / 'results.json'} and {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
