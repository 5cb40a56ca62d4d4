"""Cost of forces relative to the energy alone (jaxlr PME, plain script).

For random neutral ±1 charges at 0.1 atoms/Å³, times the jitted energy alone and the
energy + forces (+ potentials) of :func:`jaxlr.coulomb_terms`, with tuned parameters at a
relative force accuracy of 1e-4 (float32) and 1e-6 (float64).  The custom derivative
rules reuse the mesh potential and the pair kernels.  The two functions are called in
turn, 25 rounds, and each one's median is reported.  The last column is the scratch
memory XLA reserves for one energy + forces call (``memory_analysis().temp_size_in_bytes``):
with glibc, buffers above about 32 MB are returned to the system after every call, and
each call then pays page faults again.

Run:  python benchmarks/bench_forces_overhead.py [--sizes 4000 16000]
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import jaxlr  # noqa: E402
from jaxlr.coulomb import SORT_ABOVE, spatial_order  # noqa: E402
from jaxlr.system import random_ionic_system  # noqa: E402
from bench_coulomb import interleaved_medians  # noqa: E402  (same folder)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000])
    args = ap.parse_args(argv)
    print("| N | dtype | accuracy | energy ms | energy+forces ms | ratio | E+F scratch MB |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        pos, q, cell = random_ionic_system(n)
        if n > SORT_ABOVE:  # jaxlr.coulomb evaluates large systems in a spatially sorted order
            order = spatial_order(pos, cell)
            pos, q = pos[order], q[order]
        for dtype, acc in (("float32", 1e-4), ("float64", 1e-6)):
            p = jaxlr.tune_coulomb(pos, q, cell, method="pme", accuracy=acc, dtype=dtype)
            nbrs = jaxlr.neighbor_list(pos, p.cutoff, cell)
            r, c, qq = (jnp.asarray(x, dtype) for x in (pos, cell, q))
            s = jnp.asarray(p.smearing, dtype)
            kw = dict(method="pme", mesh=p.mesh)
            # the neighbour list is an argument, as in jaxlr.coulomb (not a baked-in constant)
            energy = jax.jit(lambda r, q, c, s, nb: jaxlr.coulomb_energy(
                r, q, cell=c, smearing=s, neighbors=nb, **kw))
            terms = jax.jit(lambda r, q, c, s, nb: jaxlr.coulomb_terms(
                r, q, cell=c, smearing=s, neighbors=nb, want_stress=False, **kw)[:3])
            fns = {"energy": lambda: jax.block_until_ready(energy(r, qq, c, s, nbrs)),
                   "terms": lambda: jax.block_until_ready(terms(r, qq, c, s, nbrs))}
            for fn in fns.values():  # compile and warm up
                fn()
            t = interleaved_medians(fns, min_rounds=25, max_rounds=25)
            te, tf = t["energy"], t["terms"]
            scratch = terms.lower(r, qq, c, s, nbrs).compile().memory_analysis().temp_size_in_bytes
            print(f"| {n} | {dtype} | {acc:.0e} | {1e3 * te:.1f} | {1e3 * tf:.1f} | {tf / te:.2f} | "
                  f"{scratch / 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
