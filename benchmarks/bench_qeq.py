"""Charge equilibration: matrix-free PCG vs dense solves vs one PME evaluation.

Random periodic systems of Gaussian charges at 0.1 atoms/Å³ (χ ~ N(0, 1.5) V,
J ~ U(3, 9) V/e, σ ~ U(0.8, 1.2) Å), float64, electrostatics at relative force accuracy
1e-6, solver tolerance 1e-6.  For each N it prints the time of

* ``pcg``:   jaxlr.qeq(solver="pcg") — solve + forces (PME matvec, mesh preconditioner),
  with its iteration count (and the Jacobi-only count for comparison);
* ``dense``: jaxlr.qeq(solver="dense") — Ewald Coulomb matrix + Cholesky, while it fits;
* ``linalg``: the same Ewald matrix handed to a plain ``jnp.linalg.solve`` of the bordered
  KKT system (the baseline a user would write), while it fits;
* ``pme``:   one jaxlr.coulomb(method="pme") energy + forces at the same accuracy;

and the ratios pcg/pme and linalg/pcg.  Timings exclude compilation (best of repeats
after a warm-up call) and the one-off planning (``jaxlr.tuning.plan_qeq`` /
``plan_coulomb``: a repeated or moving system carries a plan), and include the
neighbour lists; ``unplanned s`` is the same PCG call without a plan, tuning afresh.

Usage: python benchmarks/bench_qeq.py [--dense-max N] [N ...]    (default 1000 4000 16000 64000)

``--dense-max`` (default 4000) is the largest N that runs the dense solves; at N = 16,000
the Coulomb matrix alone is 2 GB and the dense solves need about 8 GB and several minutes.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxlr  # noqa: E402
from jaxlr.testing import random_ionic_system  # noqa: E402
from jaxlr.tuning import plan_coulomb, plan_qeq  # noqa: E402

ACCURACY = 1e-6
DENSE_MAX = 4000        # default; dense matrices beyond this take minutes / gigabytes (--dense-max N)


def best_time(fn, repeats):
    fn()  # warm-up / compile
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(out)
        best = min(best, time.perf_counter() - t)
    return best


def system(n, seed=0):
    positions, _, cell = random_ionic_system(n, density=0.1, seed=seed)[:3]
    rng = np.random.default_rng(seed)
    return positions, rng.normal(0.0, 1.5, n), rng.uniform(3.0, 9.0, n), rng.uniform(0.8, 1.2, n), cell


def linalg_solve(positions, chi, hard, sigma, cell):
    """Baseline: build the same Ewald Coulomb matrix, then jnp.linalg.solve on the KKT system."""
    params = jaxlr.tune_coulomb(positions, np.where(np.arange(len(chi)) % 2, 1.0, -1.0), cell, sigma,
                                method="ewald", accuracy=ACCURACY)
    nbrs = jaxlr.neighbor_list(positions, params.cutoff, cell)
    kvec = jaxlr.electrostatics.half_space_kvectors(cell, params.k_cutoff)

    @jax.jit
    def run(R, x, J, s, c):
        A = jaxlr.electrostatics.coulomb_matrix(R, cell=c, sigma=s, smearing=params.smearing, neighbors=nbrs, kvectors=kvec)
        n = x.shape[0]
        K = jnp.block([[A + jnp.diag(J), -jnp.ones((n, 1))], [jnp.ones((1, n)), jnp.zeros((1, 1))]])
        sol = jnp.linalg.solve(K, jnp.concatenate([-x, jnp.zeros(1)]))
        return sol[:n]

    return lambda: run(jnp.asarray(positions), jnp.asarray(chi), jnp.asarray(hard), jnp.asarray(sigma),
                       jnp.asarray(cell))


def main(sizes, dense_max=DENSE_MAX):
    print(f"# jaxlr {jaxlr.__version__}, jax {jax.__version__}, {jax.devices()[0].platform}, "
          f"accuracy {ACCURACY:g}, tol {ACCURACY:g}, float64")
    header = f"{'N':>7} {'pcg s':>9} {'iters':>6} {'jacobi':>7} {'dense s':>9} {'linalg s':>9} {'pme s':>9} " \
             f"{'pcg/pme':>8} {'linalg/pcg':>10} {'unplanned s':>11}"
    print(header)
    rows = []
    for n in sizes:
        positions, chi, hard, sigma, cell = system(n)
        repeats = 3 if n <= 16000 else 1

        # a repeated or moving system carries a plan (tuned once); without one every call tunes
        plan = plan_qeq(positions, sigma, cell=cell, solver="pcg", method="pme", accuracy=ACCURACY)

        def pcg():
            return jaxlr.qeq(positions, chi, hard, sigma, cell=cell, solver="pcg", plan=plan).forces

        def pcg_unplanned():
            return jaxlr.qeq(positions, chi, hard, sigma, cell=cell, solver="pcg", method="pme",
                             accuracy=ACCURACY).forces

        t_pcg = best_time(pcg, repeats)
        t_tuned = best_time(pcg_unplanned, repeats)
        res = jaxlr.qeq(positions, chi, hard, sigma, cell=cell, solver="pcg", method="pme",
                        accuracy=ACCURACY)
        jac = jaxlr.qeq(positions, chi, hard, sigma, cell=cell, solver="pcg", method="pme",
                        accuracy=ACCURACY, preconditioner="jacobi")
        q = np.asarray(res.charges)

        cplan = plan_coulomb(positions, q, cell=cell, sigma=sigma, method="pme", accuracy=ACCURACY)

        def pme():
            return jaxlr.coulomb(positions, q, cell=cell, sigma=sigma, plan=cplan).forces

        t_pme = best_time(pme, repeats)
        t_dense = t_lin = float("nan")
        if n <= dense_max:
            def dense():
                return jaxlr.qeq(positions, chi, hard, sigma, cell=cell, solver="dense", accuracy=ACCURACY).forces

            t_dense = best_time(dense, 1)
            lin = linalg_solve(positions, chi, hard, sigma, cell)
            t_lin = best_time(lin, 1)
            err = np.abs(np.asarray(lin()) - q).max()
            assert err < 1e-4, f"linalg and pcg charges differ by {err}"
        row = (n, t_pcg, int(res.iterations), int(jac.iterations), t_dense, t_lin, t_pme, t_pcg / t_pme,
               t_lin / t_pcg)
        rows.append(row)
        print(f"{n:>7} {t_pcg:>9.3f} {row[2]:>6} {row[3]:>7} {t_dense:>9.3f} {t_lin:>9.3f} {t_pme:>9.3f} "
              f"{row[7]:>8.2f} {row[8]:>10.1f} {t_tuned:>11.3f}", flush=True)
    if len(rows) > 1:
        ns = np.log([r[0] for r in rows])
        print(f"# pcg scaling exponent {np.polyfit(ns, np.log([r[1] for r in rows]), 1)[0]:.2f}, "
              f"iterations exponent {np.polyfit(ns, np.log([r[2] for r in rows]), 1)[0]:.2f} "
              f"(Jacobi only {np.polyfit(ns, np.log([r[3] for r in rows]), 1)[0]:.2f})")


if __name__ == "__main__":
    args = sys.argv[1:]
    dense_max = DENSE_MAX
    if "--dense-max" in args:
        i = args.index("--dense-max")
        dense_max = int(args[i + 1])
        del args[i:i + 2]
    main([int(a) for a in args] or [1000, 4000, 16000, 64000], dense_max)
