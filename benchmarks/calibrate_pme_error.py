"""Calibrate the PME mesh-error model used by jaxlr.tuning (plain script, float64).

For random neutral systems (±1 charges, 0.1 atoms/Å³, cubic and triclinic cells) it
measures the RMS error of the PME reciprocal-space forces against a converged Ewald
k-sum, expresses it as c = ΔF √(N V s) / (KE Σq²) against x = h/s (h: largest mesh-plane
spacing, s: smearing), and fits log c = a0 + a1 log x + a2 (log x)² for each spline
order.  The printed coefficients are what ``jaxlr.tuning._coulomb.PME_ERROR_FIT`` holds.

Run:  python benchmarks/calibrate_pme_error.py [--orders 4 5 6 7 8]   (about 3 minutes per order on 2 cores)
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxlr.electrostatics._ewald import ewald_reciprocal_energy, half_space_kvectors
from jaxlr.electrostatics._pme import MeshSpec, pme_reciprocal_energy
from jaxlr.system._cell import perpendicular_widths
from jaxlr.units import KE


def measure(rng, n, skew, smearings, orders):
    length = (n / 0.1) ** (1 / 3)
    cell = np.array([[length, 0, 0], [skew * length, length, 0], [0.5 * skew * length, -skew * length, length]])
    pos = rng.random((n, 3)) @ cell
    q = rng.choice([-1.0, 1.0], n)
    q -= q.mean()
    volume = abs(np.linalg.det(cell))
    q2 = np.sum(q**2)
    widths = perpendicular_widths(cell)
    rows = []
    for s in smearings:
        kv = half_space_kvectors(cell, 11.0 / s)
        ref = -jax.grad(lambda r: ewald_reciprocal_energy(r, jnp.asarray(q), jnp.asarray(cell), s, kv))(
            jnp.asarray(pos))
        for p in orders:
            for k in (8, 10, 12, 15, 18, 20, 24, 30, 36, 40, 48):
                h = widths.max() / k
                if k < p or not 0.15 < h / s < 1.6:
                    continue
                spec = MeshSpec((k, k, k), p)
                f = -jax.grad(lambda r: pme_reciprocal_energy(r, jnp.asarray(q), jnp.asarray(cell), s, spec))(
                    jnp.asarray(pos))
                err = np.sqrt(np.mean(np.sum((f - ref) ** 2, axis=1)))
                c = err * np.sqrt(n * volume * s) / (KE * q2)
                rows.append((p, h / s, c))
                print(f"p={p} h/s={h / s:.3f} c={c:.3e} N={n} skew={skew} s={s} K={k}", flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, nargs="+", default=[4, 5, 6, 7, 8])
    orders = tuple(ap.parse_args(argv).orders)
    rng = np.random.default_rng(2)
    rows = []
    for n, skew in ((300, 0.0), (300, 0.3), (500, 0.0)):
        rows += measure(rng, n, skew, (0.9, 1.4, 2.0), orders)
    rows = np.array(rows)
    print("\nPME_ERROR_FIT = {")
    for p in orders:
        sel = rows[(rows[:, 0] == p) & (rows[:, 2] > 1e-11)]
        lx, lc = np.log(sel[:, 1]), np.log(sel[:, 2])
        coef = np.polyfit(lx, lc, 2)[::-1]
        resid = lc - np.polyval(coef[::-1], lx)
        print(f"    {p}: ({coef[0]:.4f}, {coef[1]:.4f}, {coef[2]:.4f}),  # max |log resid| {np.abs(resid).max():.2f}")
    print("}")


if __name__ == "__main__":
    main()
