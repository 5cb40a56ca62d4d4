"""What one untuned ``jaxlr.coulomb`` call costs, host side and compiled (plain script).

For random neutral ±1 charges at 0.1 atoms/Å³ and accuracy 1e-6 (float64), times the
pieces of a front-door call that has to choose its own parameters: the host-side tuner
(:func:`jaxlr.tune_coulomb`), the host-side neighbour list (:func:`jaxlr.neighbor_list`,
vesin), the compiled energy + forces with those parameters, and the whole
``jaxlr.coulomb`` call after its first (compiling) call.  Medians of ``--calls`` calls.

Run:  python benchmarks/bench_front_door.py [--sizes 1000 4000 16000] [--calls 5]
"""

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import jaxlr  # noqa: E402
from jaxlr.testing import random_ionic_system


def median_seconds(fn, calls):
    """Median wall time (s) of ``calls`` calls of ``fn`` (which blocks on its result)."""
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--calls", type=int, default=5)
    args = ap.parse_args(argv)
    print("| N | tune_coulomb s | neighbor_list s | compiled energy + forces s | jaxlr.coulomb call s |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        pos, q, cell = random_ionic_system(n)
        params = jaxlr.tune_coulomb(pos, q, cell, accuracy=1e-6)
        nbrs = jaxlr.neighbor_list(pos, params.cutoff, cell)
        r, c, qq = (jnp.asarray(x) for x in (pos, cell, q))
        terms = jax.jit(lambda r, q, c, nb: jaxlr.coulomb_terms(
            r, q, cell=c, smearing=params.smearing, neighbors=nb, method=params.method, mesh=params.mesh,
            kvectors=None if params.method == "pme" else jaxlr.electrostatics.half_space_kvectors(cell, params.k_cutoff),
            want_stress=False)[:3])
        jax.block_until_ready(terms(r, qq, c, nbrs))
        jax.block_until_ready(jaxlr.coulomb(pos, q, cell=cell, accuracy=1e-6).forces)  # compile
        t_tune = median_seconds(lambda: jaxlr.tune_coulomb(pos, q, cell, accuracy=1e-6), args.calls)
        t_list = median_seconds(lambda: jax.block_until_ready(
            jaxlr.neighbor_list(pos, params.cutoff, cell).idx), args.calls)
        t_terms = median_seconds(lambda: jax.block_until_ready(terms(r, qq, c, nbrs)), args.calls)
        t_call = median_seconds(lambda: jax.block_until_ready(
            jaxlr.coulomb(pos, q, cell=cell, accuracy=1e-6).forces), args.calls)
        print(f"| {n} | {t_tune:.3f} | {t_list:.3f} | {t_terms:.3f} | {t_call:.3f} |", flush=True)


if __name__ == "__main__":
    main()
