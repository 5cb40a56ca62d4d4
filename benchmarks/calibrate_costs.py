"""Measure the tuner's cost constants (jaxlr.performance.Costs.tuner_costs) on this machine (plain script).

Times energy + forces of the real-space sum (per neighbour slot) and of the PME mesh
part (per stencil point and per mesh point, separated by a least-squares fit over
several meshes and orders), for float32 and float64.

Run:  python benchmarks/calibrate_costs.py   (about 3 minutes)
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import jaxlr  # noqa: E402
from jaxlr.electrostatics._pme import MeshSpec, pme_reciprocal_energy
from jaxlr.electrostatics._realspace import real_space_energy


def timed(fn, *args, calls=15):
    """Fastest of ``calls`` timed calls after a warm-up (s): on a shared machine the
    minimum is the reproducible number; medians drift with the neighbours' load."""
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main():
    rng = np.random.default_rng(0)
    n = 4000
    length = (n / 0.1) ** (1 / 3)
    cell = np.eye(3) * length
    pos = rng.random((n, 3)) * length
    q = rng.choice([-1.0, 1.0], n)
    q -= q.mean()
    for dtype in ("float32", "float64"):
        r, c, qq = (jnp.asarray(x, dtype) for x in (pos, cell, q))
        s = jnp.asarray(1.2, dtype)
        per_slot = []
        for rc in (3.5, 5.0, 7.0):
            nb = jaxlr.neighbor_list(pos, rc, cell)
            f = jax.jit(jax.value_and_grad(lambda r, q: real_space_energy(r, q, None, c, s, nb), argnums=(0, 1)))
            per_slot.append(timed(f, r, qq) / (n * nb.capacity))
        rows, times = [], []
        for k in (32, 48, 64, 80, 96):
            for p in (4, 5, 6, 7, 8):
                spec = MeshSpec((k, k, k), p)
                f = jax.jit(jax.value_and_grad(lambda r, q: pme_reciprocal_energy(r, q, c, s, spec),
                                               argnums=(0, 1)))
                nm = k**3
                rows.append([n * p**3, nm * np.log2(nm), nm])
                times.append(timed(f, r, qq))
        rows, times = np.array(rows, float), np.array(times)
        # relative least squares: every configuration counts alike, small and large
        coef, *_ = np.linalg.lstsq(rows / times[:, None], np.ones_like(times), rcond=None)
        if coef[2] < 0:  # FFT and elementwise mesh work are nearly collinear: keep the FFT term
            coef2, *_ = np.linalg.lstsq(rows[:, :2] / times[:, None], np.ones_like(times), rcond=None)
            coef = np.array([coef2[0], coef2[1], 0.0])
        resid = rows @ coef / times - 1.0
        print(f"{dtype}: pair slot {np.median(per_slot):.2e} s (per cutoff: "
              f"{', '.join(f'{x:.2e}' for x in per_slot)}), stencil {coef[0]:.2e} s, "
              f"fft {coef[1]:.2e} s, mesh {coef[2]:.2e} s; mesh-part fit residuals "
              f"{100 * np.abs(resid).max():.0f} % max, {100 * np.sqrt(np.mean(resid**2)):.0f} % RMS", flush=True)


if __name__ == "__main__":
    main()
