"""The ``jaxlr`` command line.

- ``jaxlr demo``: on the bundled data, trains local and long-range models for a few CPU
  minutes and prints the comparison (point-charge learning curve, charged-dimer
  extrapolation, charge states and Coulomb tail of a Qeq model) and where the plots went.
- ``jaxlr fit CONFIG``: train from a TOML config (see :mod:`jaxlr.train`).
- ``jaxlr eval CHECKPOINT DATA``: MAE/RMSE of a saved model on an extended-XYZ file.
- ``jaxlr md [STRUCTURE] --model nacl|nacl-qeq|CHECKPOINT``: molecular dynamics (NVE, NVT,
  NPT) with jax-md; thermo.csv, trajectory.extxyz, restart.npz and plots (:mod:`jaxlr.cli._md`).
- ``jaxlr tour``: the electrostatics engine — Madelung constants from Ewald and PME,
  PME-versus-Ewald agreement, timings of energy + forces.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

__all__ = ["main", "demo", "tour"]

# fractional coordinates (conventional cubic cells), charges, nearest-neighbour distance / a,
# and the literature Madelung constant (nearest-neighbour normalisation)
_CRYSTALS = {
    "NaCl (rock salt)": (
        [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]],
        [1, 1, 1, 1, -1, -1, -1, -1], 0.5, 1.747564594633182),
    "CsCl": ([[0, 0, 0], [.5, .5, .5]], [1, -1], np.sqrt(3) / 2, 1.762674773070988),
    "zinc blende": (
        [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
         [.25, .25, .25], [.25, .75, .75], [.75, .25, .75], [.75, .75, .25]],
        [1, 1, 1, 1, -1, -1, -1, -1], np.sqrt(3) / 4, 1.638055053388789),
}


def _timeit(fn, repeat=5):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def tour(sizes=(1000, 4000)) -> None:
    """Run the engine tour (float64 for accuracy, float32 and float64 timings)."""
    import jax

    jax.config.update("jax_enable_x64", True)  # a script may; the library never does
    import jax.numpy as jnp

    from .._api.coulomb import coulomb, evaluate_coulomb
    from .._version import version
    from ..system._neighbors import neighbor_list
    from ..testing import random_ionic_system
    from ..tuning._coulomb import force_scale, tune_coulomb
    from ..units import KE

    print(f"jaxlr {version} — pure-JAX long-range electrostatics (jax {jax.__version__}, "
          f"{jax.devices()[0].platform})\n")
    print("1. Madelung constants (point charges, a = 5 Å, rotated and skewed cell):")
    print(f"   {'crystal':18s} {'Ewald':>18s} {'PME (1e-6)':>14s} {'literature':>18s}")
    rng = np.random.default_rng(0)
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    for name, (frac, q, dnn, ref) in _CRYSTALS.items():
        a = 5.0
        cell = np.eye(3) * a
        skew = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]]) @ cell  # same lattice, skewed vectors
        pos = (np.asarray(frac, float) @ cell) @ rot.T
        skew = skew @ rot.T
        q = np.asarray(q, float)
        n_pairs = len(q) / 2
        e_ew = coulomb(pos, q, cell=skew, method="ewald", accuracy=1e-12).energy
        e_pme = coulomb(pos, q, cell=skew, method="pme", accuracy=1e-6).energy
        m_ew = -float(e_ew) * dnn * a / (KE * n_pairs)
        m_pme = -float(e_pme) * dnn * a / (KE * n_pairs)
        print(f"   {name:18s} {m_ew:18.12f} {m_pme:14.8f} {ref:18.12f}")

    print("\n2. PME vs Ewald, 1,000 random ±1 charges at 0.1 atoms/Å³, triclinic cell (float64):")
    pos, q, cell = random_ionic_system(1000, triclinic=True, seed=1)
    ref = coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-10)
    f0 = force_scale(pos, q, cell)
    print(f"   {'accuracy':>9s} {'mesh':>14s} {'order':>5s} {'cutoff/Å':>8s} {'force err/F0':>12s} "
          f"{'energy err/eV':>13s}")
    for acc in (1e-3, 1e-4, 1e-5, 1e-6):
        res = coulomb(pos, q, cell=cell, method="pme", accuracy=acc)
        err = np.sqrt(np.mean(np.sum((np.asarray(res.forces) - np.asarray(ref.forces)) ** 2, 1))) / f0
        p = res.params
        print(f"   {acc:9.0e} {str(p.mesh.shape):>14s} {p.mesh.order:5d} {p.cutoff:8.2f} {err:12.2e} "
              f"{abs(float(res.energy - ref.energy)):13.2e}")

    print("\n3. Timings, PME energy + forces + stress (median of 5 after warm-up; compile separate):")
    print(f"   {'N':>6s} {'dtype':>8s} {'accuracy':>9s} {'compile/s':>9s} {'time/ms':>8s}")
    for n in sizes:
        pos, q, cell = random_ionic_system(n, seed=n)
        for dtype, acc in (("float32", 1e-4), ("float64", 1e-6)):
            pj = jnp.asarray(pos, dtype)
            qj = jnp.asarray(q, dtype)
            qj = qj - jnp.mean(qj)
            cj = jnp.asarray(cell, dtype)
            t0 = time.perf_counter()
            jax.block_until_ready(coulomb(pj, qj, cell=cj, method="pme", accuracy=acc).forces)
            first = time.perf_counter() - t0
            params = tune_coulomb(pos, q, cell, method="pme", accuracy=acc, dtype=dtype)
            nbrs = neighbor_list(pos, params.cutoff, cell)
            smear = jnp.asarray(params.smearing, dtype)
            run = lambda: jax.block_until_ready(evaluate_coulomb(  # noqa: E731
                pj, qj, cj, None, smear, nbrs, None, method="pme", mesh=params.mesh,
                background=False, want_stress=True))
            t = _timeit(run)
            print(f"   {n:6d} {dtype:>8s} {acc:9.0e} {first:9.2f} {1e3 * t:8.1f}")
    print("\nMore: README.md (benchmarks against jax-pme and torch-pme), tests/ (pytest).")


def demo(run_dir: str = "jaxlr-demo", qeq_epochs: int = 25) -> None:
    """Train local and long-range models on the bundled data and print the comparison."""
    import jax

    jax.config.update("jax_enable_x64", True)  # a script may; the library never does
    from .._version import version
    from ._demo import dimer_binding, dimer_ridge, point_charge_curves, qeq_checks, train_dimer_model

    t0 = time.perf_counter()
    print(f"jaxlr {version} demo (jax {jax.__version__}, {jax.devices()[0].platform}, float64)\n")
    print("1. Random point charges (64 ±1 charges, boxes 12–20 Å, Ewald energies); linear models,")
    print("   relative energy RMSE (RMSE / std of 200 test energies) against training-set size:")
    curves = point_charge_curves(n_structures=600, n_test=200, train_sizes=(10, 100, 400), log=print)
    print("\n2. Charged dimers (cation + anion), trained below 6 Å, binding-energy RMSE from 6 Å on:")
    ridge = dimer_ridge(log=print)
    print(f"   training a Qeq model ({qeq_epochs} epochs; progress below) ...")
    res = train_dimer_model("qeq", epochs=qeq_epochs, run_dir=run_dir, progress=True)
    qeq = dimer_binding(res.potential, res.variables)
    print(f"  {'Qeq network':18s} near RMSE {qeq['near_rmse']:.3f} eV, far RMSE {qeq['far_rmse']:.3f} eV")
    checks = qeq_checks(res.potential, res.variables)
    cs = checks["charge_states"]
    print("\n3. The trained Qeq model:")
    print(f"   same cation geometry, total charge {cs['total_charges'][0]:+.0f} vs {cs['total_charges'][1]:+.0f}: "
          f"charges sum to {cs['sums'][0]:+.3f} / {cs['sums'][1]:+.3f}, largest change of an atom's charge "
          f"{cs['max_charge_change']:.3f} e")
    print(f"   {'r/Å':>6s} {'E_bind/eV':>10s} {'k_e qA qB/r':>12s}")
    for row in checks["tail"]:
        print(f"   {row['r']:6.1f} {row['binding']:10.4f} {row['coulomb']:12.4f}")
    print("\nSummary")
    print(f"   {'model':22s} {'point charges, rel. RMSE':>26s} {'dimers far RMSE/eV':>20s}")
    names = list(curves)
    print(f"   {'local':22s} {100 * curves[names[0]]['relative_rmse'][-1]:25.2g}% "
          f"{ridge[list(ridge)[0]]['far_rmse']:20.3f}")
    print(f"   {'LODE':22s} {100 * curves[names[1]]['relative_rmse'][-1]:25.2g}% "
          f"{ridge[list(ridge)[1]]['far_rmse']:20.3f}")
    print(f"   {'Qeq':22s} {'':>26s} {qeq['far_rmse']:20.3f}")
    print(f"\nPlots, history and checkpoint of the Qeq model: {run_dir}/   ({time.perf_counter() - t0:.0f} s)")
    print("Full reproduction: python benchmarks/reproduce_models.py; engine tour: jaxlr tour.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jaxlr", description="pure-JAX long-range atomistic machine learning")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train local and long-range models on bundled data; print the comparison")
    d.add_argument("--run-dir", default="jaxlr-demo", help="folder for plots, history and checkpoint")
    d.add_argument("--epochs", type=int, default=25, help="epochs of the Qeq model")
    from ..train._config import CONFIG_FORMAT

    f = sub.add_parser("fit", help="train a model from a TOML config",
                       description="Train a model from a TOML configuration: read the data, check it against\n"
                                   "the model and the loss weights (before anything is compiled), train,\n"
                                   "evaluate, and write the run folder (checkpoint, history, metrics, plots).",
                       epilog=CONFIG_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    f.add_argument("config", help="the TOML configuration file (format below)")
    e = sub.add_parser("eval", help="evaluate a checkpoint on an extended-XYZ file")
    e.add_argument("checkpoint", help="checkpoint folder, run folder, or the name of a shipped model")
    e.add_argument("data")
    e.add_argument("--open-boundary", action="store_true", help="treat the structures as open (ignore the cell)")
    e.add_argument("--devices", type=int, default=None,
                   help="split every batch over this many devices (data parallel; default: one device)")
    sub.add_parser("tour", help="electrostatics engine tour: Madelung constants, PME vs Ewald, timings")
    from ..hyper._study import STUDY_FORMAT

    h = sub.add_parser("tune-hyper", help="tune physical hyperparameters by gradient descent on a CV error",
                       description="Hypergradient descent (Adam on log-parameters) on the k-fold cross-validation\n"
                                   "error of a closed-form ridge model on LODE or local features; writes\n"
                                   "trajectory.json and trajectory.png.",
                       epilog=STUDY_FORMAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("config", help="the TOML study configuration (format below)")
    from ._md import add_md_parser

    add_md_parser(sub)
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)  # the command line is a script: float64 available
    try:
        if args.command == "demo":
            demo(args.run_dir, args.epochs)
        elif args.command == "tour":
            tour()
        elif args.command == "fit":
            from ..train._config import run_fit
            run_dir = run_fit(args.config)
            import jax
            if jax.process_index() == 0:          # multi-process runs: one line, from the process that writes
                print(f"run folder: {run_dir}")
        elif args.command == "tune-hyper":
            from ..hyper._study import run_study
            print(f"study folder: {run_study(args.config)}")
        elif args.command == "md":
            from ._md import run_md_command
            run_md_command(args)
        elif args.command == "eval":
            from ..train._config import run_eval
            run_eval(args.checkpoint, args.data, periodic=False if args.open_boundary else None,
                     devices=args.devices)
    except (ValueError, FileNotFoundError) as err:
        print(f"jaxlr {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
