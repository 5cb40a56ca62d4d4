"""Reproduce the model comparison of the README (issue: models and training).

    python benchmarks/reproduce_models.py [--quick] [--out results_models.json]

1. Random point charges (bundled, 2000 boxes): learning curves of linear models on local
   invariants (6 Å cutoff) and on ν = 1 LODE, training sizes 10 … 1500, test on the last
   500; relative RMSE = RMSE / std(E_test); ridge λ by 5-fold CV on the training rows.
2. Charged dimers (bundled charge-charge.xyz): trained below 6 Å, binding-energy RMSE on
   the dimers from 6 Å: local ridge, multi-scale LODE ridge (binding energies fitted
   directly), and latent-charge, Qeq and density (multipolar Qeq) networks trained on dimer
   + monomer energies.
3. The Qeq model: charges of the same geometry in two charge states, and the binding
   energy of a dimer pulled apart against k_e q_A q_B / r.

Float64.  Prints tables and writes a JSON file with every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

from jaxlr.cli import _demo as ex


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer structures and epochs (a smoke run)")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--out", default="benchmarks/results_models.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"machine: {platform.processor() or platform.machine()}, {jax.devices()[0].platform}, "
          f"jax {jax.__version__}")
    if args.quick:
        curves = ex.point_charge_curves(600, 200, (10, 100, 400), log=print)
        epochs = 20
    else:
        print("1. point charges: relative energy RMSE vs training size")
        curves = ex.point_charge_curves(2000, 500, (10, 30, 100, 300, 1000, 1500), log=print)
        epochs = args.epochs
    print("2. charged dimers, binding-energy RMSE (eV), trained < 6 Å")
    ridge = ex.dimer_ridge(log=print)
    nets = {}
    qeq_fit = None
    for model, label in (("latent", "latent-charge network"), ("qeq", "Qeq network"),
                         ("density", "density network")):
        t = time.perf_counter()
        res = ex.train_dimer_model(model, epochs=epochs, progress=False)
        b = ex.dimer_binding(res.potential, res.variables)
        nets[label] = dict(near_rmse=b["near_rmse"], far_rmse=b["far_rmse"], seconds=time.perf_counter() - t,
                           epochs=epochs)
        print(f"  {label:18s} near RMSE {b['near_rmse']:.3f} eV, far RMSE {b['far_rmse']:.3f} eV "
              f"({nets[label]['seconds']:.0f} s)")
        if model == "qeq":
            qeq_fit = res
    checks = ex.qeq_checks(qeq_fit.potential, qeq_fit.variables)
    cs = checks["charge_states"]
    print(f"3. Qeq charge states: same cation geometry, Q = {cs['total_charges']}: charge sums {cs['sums']}, "
          f"largest atomic change {cs['max_charge_change']:.3f} e")
    print(f"   {'r/Å':>6s} {'E_bind/eV':>10s} {'k_e qA qB/r':>12s}")
    for row in checks["tail"]:
        print(f"   {row['r']:6.1f} {row['binding']:10.4f} {row['coulomb']:12.4f}")

    print("\nREADME table")
    sizes = curves[list(curves)[0]]["train_sizes"]
    print("| model | " + " | ".join(f"n={m}" for m in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name, c in curves.items():
        print(f"| {name} | " + " | ".join(f"{100 * e:.2g}%" for e in c["relative_rmse"]) + " |")
    print("\n| dimer model | near (< 6 Å, train) RMSE / eV | far (≥ 6 Å, test) RMSE / eV |")
    print("|---|---|---|")
    for name, r in list(ridge.items()) + list(nets.items()):
        print(f"| {name} | {r['near_rmse']:.3f} | {r['far_rmse']:.3f} |")
    out = dict(point_charges=curves, dimers_ridge=ridge, dimers_networks=nets, qeq_checks=checks,
               seconds=time.perf_counter() - t0)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"\nwritten {args.out} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
