"""Measure the cost constants of jaxlr.tuning.COSTS on this machine (plain script).

Times energy + forces of the real-space sum (per neighbour slot) and of the PME mesh
part (per stencil point and per mesh point, separated by a least-squares fit over
several meshes and orders), for float32 and float64.

Run:  python benchmarks/calibrate_costs.py
"""

import statistics
import time

import numpy as np
import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

import jaxlr  # noqa: E402
from jaxlr.pme import MeshSpec, pme_reciprocal_energy  # noqa: E402
from jaxlr.realspace import real_space_energy  # noqa: E402


def timed(fn, *args):
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


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
        s = jnp.asarray(1.5, dtype)
        per_slot = []
        for rc in (5.0, 7.0, 9.0):
            nb = jaxlr.neighbor_list(pos, rc, cell)
            f = jax.jit(jax.value_and_grad(lambda r, q: real_space_energy(r, q, None, c, s, nb), argnums=(0, 1)))
            per_slot.append(timed(f, r, qq) / (n * nb.capacity))
        rows, times = [], []
        for k in (24, 36, 48, 64):
            for p in (4, 6, 8):
                spec = MeshSpec((k, k, k), p)
                f = jax.jit(jax.value_and_grad(lambda r, q: pme_reciprocal_energy(r, q, c, s, spec),
                                               argnums=(0, 1)))
                nm = k**3
                rows.append([n * p**3, nm * np.log2(nm), nm])
                times.append(timed(f, r, qq))
        coef, *_ = np.linalg.lstsq(np.array(rows, float), np.array(times), rcond=None)
        print(f"{dtype}: pair slot {np.median(per_slot):.2e} s, stencil {coef[0]:.2e} s, "
              f"fft {coef[1]:.2e} s, mesh {coef[2]:.2e} s")


if __name__ == "__main__":
    main()
