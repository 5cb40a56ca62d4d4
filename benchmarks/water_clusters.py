"""The water-cluster experiment (issue 22): five jaxlr models on the same PBE/def2-SVP splits.

    python benchmarks/water_clusters.py [--models local,lode,latent,qeq,density] [--sizes 25,100,all]
                                        [--epochs 300] [--weights energy=100,forces=1,dipole=10,coefficients=1]
                                        [--pool all|seed0] [--fragments cluster|molecules] [--ema-decay 0.99]
                                        [--save DIR] [--quick] [--out benchmarks/results/water]

Data: :func:`jaxlr.data.load_water_clusters` ((H2O)n, n = 1–8), one fixed split
(:func:`jaxlr.data.water_cluster_splits`, seed 0): 10 % of the seed-0 set test, 10 %
validation (early stopping), the rest of it and then the seed-1 set the training pool (900;
``--pool seed0``: the 400 of the seed-0 set only); a learning curve takes the first k
structures of the pool, so k ≤ 400 draws on the seed-0 set alone.  ``--fragments molecules``
makes every water its own neutral fragment in every split (the charge models then move no
charge between molecules).  Every model is trained on energies and
forces; the charge-bearing ones (latent, Qeq, density) also on the dipole; the density model
also on the density coefficients in the Coulomb metric, in the data's own basis, with the
training set's mean coefficients per element as its promolecule.

Loss weights (``--weights``): every term is a mean square in its own unit — per-atom energy
(eV/atom)², forces (eV/Å)², dipole (e·Å)², density error energy (eV/atom) — so energy gets
weight 100 and the dipole 10 to be heard beside the forces.  ``--save DIR`` writes the model
trained on the largest size to ``DIR/water-MODEL`` (a :func:`jaxlr.train.save` checkpoint
whose metadata hold the level of theory, the data set and split, the weights and the test
metrics) — the shipped pretrained models are made so.

Reported on the test split: energy RMSE (meV/atom), force RMSE (meV/Å), dipole RMSE (e·Å),
for the density model the Coulomb-metric error (meV/atom), and for the charge-bearing models
the ESP RMSE on Merz–Kollman shells (mHa/e) against the reference density fit and against the
exact PBE potential (:func:`jaxlr.data.load_water_esp`; the reference fit itself is 1.1–1.6
mHa/e from it) — charge models with their charges as point charges and as Gaussians of their
own widths (:func:`esp_scores`); size transfer to (H2O)12/16
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
    "local": dict(hidden=(128, 128)),
    "lode": dict(hidden=(128, 128)),
    "latent": dict(hidden=(128, 128), charge_hidden=(32,)),
    "qeq": dict(hidden=(128, 128), chi_hidden=(32,)),
    "density": dict(hidden=(128, 128), coef_hidden=(32,), learn_widths=False),
}
#: descriptor of every model: chosen on the validation split among (4.5 Å, 6, 3, 0.4 Å; 64²),
#: (5.0, 8, 4, 0.3; 64²) and (4.5, 8, 3, 0.3; 128²) — force RMSE 234 / 287 / 209 meV/Å for a
#: local model after 60 epochs
LOCAL = dict(cutoff=4.5, max_radial=8, max_angular=3, sigma=0.3)


def _splits(seed: int = 0, extra: bool = True, fragments: str = "cluster"):
    return tuple(_fragmented(ds, fragments) for ds in data.water_cluster_splits(seed=seed, extra=extra))


def _fragmented(dataset, fragments: str):
    """``fragments="molecules"``: every water its own neutral fragment (no charge flows between
    molecules); ``"cluster"``: the dataset as it is."""
    if fragments == "cluster":
        return dataset
    out = []
    for s in dataset:
        frag = data.detect_fragments(s.positions, s.numbers)
        out.append(s.replace(fragments=frag, fragment_charges=np.zeros(int(frag.max()) + 1)))
    return data.Dataset(out)


def split_call(extra: bool) -> str:
    return "jaxlr.data.water_cluster_splits(seed=0" + ("" if extra else ", extra=False") + ")"


def build(model: str, train):
    hyper = dict(MODEL_HYPER[model])
    if model == "density":
        basis = [(z, *w) for z, w in data.reference_basis(train[0]).items()]
        hyper.update(basis=basis, promolecule=data.mean_coefficients(train))
    return build_potential(model, species=(1, 8), local=dict(LOCAL), **hyper)


DEFAULT_WEIGHTS = {"energy": 100.0, "forces": 1.0, "dipole": 10.0, "coefficients": 1.0}


def weights_for(model: str, base: dict | None = None) -> dict:
    base = dict(DEFAULT_WEIGHTS if base is None else base)
    w = {"energy": base["energy"], "forces": base["forces"]}
    if model in CHARGED:
        w["dipole"] = base["dipole"]
    if model == "density":
        w["coefficients"] = base["coefficients"]
    return w


def parse_weights(text: str) -> dict:
    out = dict(DEFAULT_WEIGHTS)
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if key not in out or not value:
            raise SystemExit(f"--weights: expected NAME=VALUE with NAME in {sorted(out)}, got {item!r}")
        out[key] = float(value)
    return out


def metadata(model: str, row: dict, weights: dict, n_train: int, n_valid: int, n_test: int, epochs: int,
             extra: bool = True) -> dict:
    """What a user needs to judge a shipped model (stored under ``extra`` in its config)."""
    ds = data.load_water_clusters()
    info = ds[0].info
    prov = {k: (info[k].item() if hasattr(info[k], "item") else info[k])
            for k in ("level", "basis", "auxbasis", "grid_level", "conv_tol", "pyscf_version") if k in info}
    return {
        "description": f"jaxlr {model} model of (H2O)n clusters, n = 1-8, trained on PBE/def2-SVP energies, "
                       "forces" + (", dipoles" if model in CHARGED else "") +
                       (" and density coefficients (Coulomb metric)" if model == "density" else ""),
        "level_of_theory": prov or "RKS PBE/def2-SVP, density fitting def2-universal-jkfit, grids level 3",
        "training_set": "jaxlr.data.load_water_clusters()",
        "split_function": split_call(extra),
        "split": (f"seed 0 permutation of the seed-0 set: {n_test} test, {n_valid} validation; training: the first "
                  f"{n_train} of the pool (the rest of the seed-0 set" + (", then the seed-1 set)" if extra else ")")),
        "elements": ["H", "O"],
        "open_boundary_only": True,
        "units": {"energy": "eV (total energy)", "forces": "eV/Å", "dipole": "e·Å"},
        "weights": weights,
        "max_epochs": epochs,
        "test_metrics": row["test"],
        "transfer_metrics": row.get("transfer"),
        "trained_with": "benchmarks/water_clusters.py",
    }


def _force_range(pool) -> float:
    return max(float(np.abs(s.targets["forces"]).max()) for s in pool)


def score(res, model: str, test, force_range: float | None = None) -> dict:
    """Test metrics: RMSE and MAE over the whole split, and over the structures whose largest
    force component lies inside the training pool's range (``force_range``, eV/Å) — one
    rattled trimer of the test split (32 eV/Å, against ≤ 17 eV/Å in the pool) otherwise
    dominates every RMSE — and over the snapshots that were not rattled."""
    targets = ("energy", "forces") + (("dipole",) if model in CHARGED else ()) + \
        (("coefficients",) if model == "density" else ())
    m = evaluate(res.potential, res.variables, test, targets=targets).result()
    out = {"energy_meV_atom": 1e3 * m["energy_per_atom"]["rmse"], "forces_meV_A": 1e3 * m["forces"]["rmse"],
           "energy_mae_meV_atom": 1e3 * m["energy_per_atom"]["mae"], "forces_mae_meV_A": 1e3 * m["forces"]["mae"]}
    subsets = {"unrattled": [s for s in test if not s.info.get("rattled", False)]}
    if force_range is not None:
        subsets["in_range"] = [s for s in test if float(np.abs(s.targets["forces"]).max()) <= force_range]
        out["n_out_of_range"] = len(test) - len(subsets["in_range"])
    for key, subset in subsets.items():
        if 0 < len(subset) < len(test):
            ms = evaluate(res.potential, res.variables, data.Dataset(subset), targets=targets).result()
            out[f"energy_meV_atom_{key}"] = 1e3 * ms["energy_per_atom"]["rmse"]
            out[f"forces_meV_A_{key}"] = 1e3 * ms["forces"]["rmse"]
            if "dipole" in ms:
                out[f"dipole_eA_{key}"] = ms["dipole"]["rmse"]
    if "dipole" in m:
        out["dipole_eA"] = m["dipole"]["rmse"]
    if "density_coulomb" in m:
        out["density_coulomb_meV_atom"] = 1e3 * m["density_coulomb"]["mae"]
    if model in CHARGED:
        out.update(esp_scores(res, test))
    return out


def _rms(values) -> float:
    """RMS over structures of per-structure RMSEs (NaN entries, structures without a value, left out)."""
    values = np.asarray(values, dtype=float)
    return float(np.sqrt(np.mean(values[np.isfinite(values)] ** 2)))


def esp_scores(res, test) -> dict:
    """ESP errors (mHa/e, RMS over the test structures of each structure's RMSE on its
    Merz–Kollman shells) of a charge-bearing model's density — the density model's
    coefficients, or a charge model's charges as point charges (0.1 Å Gaussians):

    * ``esp_rmse_mHa_e`` against the reference density fit (``coefficients``);
    * ``reference_fit_esp_mHa_e``: the fit against the exact PBE potential as stored with
      the data (``info["esp_rmse"]``);
    * ``esp_exact_rmse_mHa_e`` against the exact PBE potential
      (:func:`jaxlr.data.load_water_esp`, when bundled) and ``reference_fit_esp_exact_mHa_e``,
      the fit against it on the same points (it reproduces ``reference_fit_esp_mHa_e``);
    * charge models also ``esp_exact_rmse_own_widths_mHa_e``: their charges as Gaussians of
      their own learned σ_Z, the density of their Coulomb energy.
    """
    try:
        exact = data.load_water_esp()
    except FileNotFoundError:
        exact = None
    esp = density_esp_errors(res.potential, res.variables, test, exact=exact)
    out = {"esp_rmse_mHa_e": _rms(esp["model"]), "reference_fit_esp_mHa_e": _rms(esp["reference_fit"])}
    if exact is not None:
        out["esp_exact_rmse_mHa_e"] = _rms(esp["model_vs_exact"])
        out["reference_fit_esp_exact_mHa_e"] = _rms(esp["fit_vs_exact"])
        out["n_esp_exact"] = int(np.isfinite(esp["model_vs_exact"]).sum())
        if "coefficients" not in res.potential.predicts:
            own = density_esp_errors(res.potential, res.variables, test, exact=exact, charge_widths="model")
            out["esp_exact_rmse_own_widths_mHa_e"] = _rms(own["model_vs_exact"])
    return out


def rescore(folder: Path) -> None:
    """Recompute the metrics of saved ``water-*`` checkpoints and rewrite their metadata (each
    scored with the force range of the pool its metadata names)."""
    from types import SimpleNamespace

    from jaxlr.train import load, save

    test = _splits()[2]
    for path in sorted(p for p in folder.iterdir() if p.name.startswith("water-")):
        model = path.name.removeprefix("water-")
        pot, v = load(path)
        res = SimpleNamespace(potential=pot, variables=v)
        extra = dict(json.loads((path / "config.json").read_text())["extra"])
        pool = _splits(extra="extra=False" not in extra.get("split_function", ""))[0]
        extra["test_metrics"] = score(res, model, test, _force_range(pool))
        extra["transfer_metrics"] = transfer(res, model)
        save(path, pot, v, extra=extra)
        print(path.name, json.dumps(extra["test_metrics"]), json.dumps(extra["transfer_metrics"]), flush=True)


def transfer(res, model: str, fragments: str = "cluster") -> dict | None:
    try:
        big = _fragmented(data.load_water_transfer(), fragments)
    except FileNotFoundError:
        return None
    targets = ("energy", "forces") + (("dipole",) if model in CHARGED else ())
    m = evaluate(res.potential, res.variables, big, targets=targets, batch_size=4).result()
    out = {"energy_meV_atom": 1e3 * m["energy_per_atom"]["rmse"], "forces_meV_A": 1e3 * m["forces"]["rmse"]}
    if "dipole" in m:
        out["dipole_eA"] = m["dipole"]["rmse"]
    return out


def plot(results: dict, path: Path) -> None:
    """Learning curves: test RMSE against training size, one fixed colour per model. Energy and
    forces leave out the out-of-range test structures (their RMSE is dominated by one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    keys = [(("energy_meV_atom_in_range", "energy_meV_atom"), "energy RMSE, in range / meV atom⁻¹"),
            (("forces_meV_A_in_range", "forces_meV_A"), "force RMSE, in range / meV Å⁻¹"),
            (("dipole_eA",), "dipole RMSE / e Å"),
            (("esp_exact_rmse_mHa_e", "esp_rmse_mHa_e"), "ESP RMSE / mHa e⁻¹")]
    colours = {m: f"C{k}" for k, m in enumerate(MODEL_HYPER)}
    fig, axes = plt.subplots(1, len(keys), figsize=(15, 3.6))
    for ax, (names, label) in zip(axes, keys):
        for model, rows in results.items():
            pts = []
            for r in rows:
                key = next((k for k in names if k in r["test"]), None)
                if key is not None:
                    pts.append((r["n_train"], r["test"][key]))
            if pts:
                ax.loglog(*zip(*pts), "o-", color=colours.get(model), label=model)
        ax.set_xlabel("training structures")
        ax.set_ylabel(label)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="local,lode,latent,qeq,density")
    ap.add_argument("--sizes", default="25,100,all", help="training sizes (structures), 'all' = the whole pool")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--patience", type=int, default=60)
    ap.add_argument("--weights", default="", help="loss weights NAME=VALUE,... (default energy=100,forces=1,"
                    "dipole=10,coefficients=1)")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine schedule)")
    ap.add_argument("--ema-decay", type=float, default=None,
                    help="validate and keep an exponential moving average of the parameters (e.g. 0.99)")
    ap.add_argument("--save", default=None, help="write the model of the largest size to SAVE/water-MODEL")
    ap.add_argument("--rescore", default=None, help="only recompute the metrics of the checkpoints in this folder")
    ap.add_argument("--pool", choices=("all", "seed0"), default="all",
                    help="training pool: both bundled sets (900) or the seed-0 set's 400 (water_cluster_splits' extra)")
    ap.add_argument("--fragments", choices=("cluster", "molecules"), default="cluster",
                    help="charge-model constraint: the cluster's total charge, or every water neutral")
    ap.add_argument("--quick", action="store_true", help="2 sizes, 5 epochs (a smoke run)")
    ap.add_argument("--out", default="benchmarks/results/water")
    args = ap.parse_args()
    if args.rescore:
        rescore(Path(args.rescore))
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODEL_HYPER]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(MODEL_HYPER)}")
    pool, valid, test = _splits(extra=args.pool == "all", fragments=args.fragments)
    sizes = [len(pool) if s == "all" else int(s) for s in args.sizes.split(",")]
    epochs = args.epochs
    base_weights = parse_weights(args.weights)
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
            weights = weights_for(model, base_weights)
            res = fit(build(model, train), train, valid, weights=weights, epochs=epochs,
                      batch_size=min(16, max(2, n // 4)), learning_rate=args.lr, patience=args.patience,
                      ema_decay=args.ema_decay,
                      progress=True, dtype="float64", plots=False)
            row = {"n_train": n, "seconds": time.perf_counter() - t0, "epochs": len(res.history),
                   "test": score(res, model, test, _force_range(pool))}
            if n == sizes[-1]:
                row["transfer"] = transfer(res, model, args.fragments)
                if args.save:
                    from jaxlr.train import save

                    meta = metadata(model, row, weights, n, len(valid), len(test), epochs, args.pool == "all")
                    meta["ema_decay"] = args.ema_decay
                    save(Path(args.save) / f"water-{model}", res.potential, res.variables, extra=meta)
            results[model].append(row)
            print(f"{model:8s} n={n:4d} {row['seconds']:7.0f} s  " +
                  "  ".join(f"{k} {v:.4g}" for k, v in row["test"].items()), flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "learning_curves.png")
    print("\n| model | n_train | E RMSE meV/atom | F RMSE meV/Å | μ RMSE e·Å | ESP vs fit mHa/e | ESP vs PBE mHa/e |")
    print("|---|---|---|---|---|---|---|")
    for model, rows in results.items():
        for r in rows:
            t = r["test"]
            print(f"| {model} | {r['n_train']} | {t['energy_meV_atom']:.2f} | {t['forces_meV_A']:.0f} | "
                  f"{t.get('dipole_eA', float('nan')):.4f} | {t.get('esp_rmse_mHa_e', float('nan')):.2f} | "
                  f"{t.get('esp_exact_rmse_mHa_e', float('nan')):.2f} |")
    print(f"wrote {out / 'results.json'} and {out / 'learning_curves.png'}")


if __name__ == "__main__":
    main()
