"""Cost of forces relative to the energy alone (jaxlr PME, plain script).

For random neutral ±1 charges at 0.1 atoms/Å³, times the jitted energy alone and the
energy + forces (+ potentials) of :func:`jaxlr.coulomb_terms`, with tuned parameters at a
relative force accuracy of 1e-4 (float32) and 1e-6 (float64).  The custom derivative
rules reuse the mesh potential and the pair kernels.  The two functions are called in
turn, 60 rounds; each one's median and fastest call are reported (on a shared 2-core
machine the medians of millisecond calls drift by up to 2× between runs; the fastest
calls are stable to a few per cent).  The last column is the scratch
memory XLA reserves for one energy + forces call (``memory_analysis().temp_size_in_bytes``):
with glibc, buffers above about 32 MB are returned to the system after every call, and
each call then pays page faults again.

With ``--parts`` it also times the two halves on their own, energy and energy + forces
(gradient with respect to the positions), fastest calls: the real-space pair sum
(:func:`jaxlr.electrostatics._realspace.real_space_energy`) and the mesh part
(:func:`jaxlr.electrostatics._pme.pme_reciprocal_energy`); and the mesh energy followed by the inverse
FFT of the potential in one call, whose excess over the mesh energy is what the inverse
FFT costs inside the pipeline (on a 2-core VM about twice its cost on its own).

With ``--pieces`` it also times the mesh steps on their own (fastest calls): spreading
the charges, the forward FFT, the inverse FFT and the interpolation of potentials and
gradients at the atoms (:mod:`jaxlr.electrostatics` internals), and the interpolation's cost per
stencil value (atoms × p³).  It also times a *window gather*: the bare sum of the p³
mesh values around each atom, with no weights and no derivatives.  An interpolation
that reads its windows through an XLA gather is not faster than that (gathers of p²
rows or of flat indices were slower still), so with both ``--parts`` and ``--pieces``
the script prints a floor for the ratio of energy + forces to energy alone:

    floor = (real E + mesh E + inverse FFT + window gather) / (real E + mesh E),

the ratio even if real-space forces cost nothing and the interpolation cost only its
gather; and the same floor with the inverse FFT's cost inside the pipeline.

With ``--stress`` it also times energy + forces + stress (``stress=True``, as
:func:`jaxlr.coulomb` does by default for periodic systems) in the same rounds, and
prints its fastest call against that of energy + forces.

With ``--profile`` it also prints, from a ``jax.profiler`` trace of ten interpolation
calls, the XLA operations that take most of the interpolation's time.

Run:  python benchmarks/bench_forces_overhead.py [--sizes 4000 16000] [--parts] [--pieces] [--stress] [--profile]
"""

import argparse
import collections
import glob
import gzip
import json
import statistics
import tempfile

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from bench_coulomb import interleaved_times  # noqa: E402  (same folder)

import jaxlr  # noqa: E402
from jaxlr.electrostatics import _pme as pme
from jaxlr.electrostatics._pme import pme_reciprocal_energy
from jaxlr.electrostatics._realspace import real_space_energy
from jaxlr.performance import costs  # noqa: E402
from jaxlr.system._order import spatial_order  # noqa: E402
from jaxlr.testing import random_ionic_system


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000])
    ap.add_argument("--parts", action="store_true", help="also time real space and mesh separately")
    ap.add_argument("--pieces", action="store_true", help="also time the mesh steps separately")
    ap.add_argument("--stress", action="store_true", help="also time energy + forces + stress")
    ap.add_argument("--profile", action="store_true", help="XLA operations of the interpolation")
    args = ap.parse_args(argv)
    parts, pieces, profiles, stresses = [], [], [], []
    print("| N | dtype | accuracy | energy ms median / fastest | energy+forces ms median / fastest "
          "| ratio of medians / fastest | E+F scratch MB |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        pos, q, cell = random_ionic_system(n)
        if n > costs().sort_above:  # jaxlr.coulomb evaluates large systems in a spatially sorted order
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
                r, q, cell=c, smearing=s, neighbors=nb, stress=False, **kw)[:3])
            fns = {"energy": lambda: jax.block_until_ready(energy(r, qq, c, s, nbrs)),
                   "terms": lambda: jax.block_until_ready(terms(r, qq, c, s, nbrs))}
            if args.stress:
                with_stress = jax.jit(lambda r, q, c, s, nb: jaxlr.coulomb_terms(
                    r, q, cell=c, smearing=s, neighbors=nb, stress=True, **kw))
                fns["stress"] = lambda: jax.block_until_ready(with_stress(r, qq, c, s, nbrs))
            for fn in fns.values():  # compile and warm up
                fn()
            t = interleaved_times(fns, min_rounds=60, max_rounds=60)
            te, tf = statistics.median(t["energy"]), statistics.median(t["terms"])
            be, bf = min(t["energy"]), min(t["terms"])
            scratch = terms.lower(r, qq, c, s, nbrs).compile().memory_analysis().temp_size_in_bytes
            print(f"| {n} | {dtype} | {acc:.0e} | {1e3 * te:.1f} / {1e3 * be:.1f} | {1e3 * tf:.1f} / {1e3 * bf:.1f} "
                  f"| {tf / te:.2f} / {bf / be:.2f} | {scratch / 1e6:.1f} |", flush=True)
            if args.stress:
                stresses.append((n, dtype, acc, bf, min(t["stress"])))
            if args.parts:
                parts.append((n, dtype, acc, time_parts(r, qq, c, s, nbrs, p.mesh)))
            if args.pieces:
                pieces.append((n, dtype, p.mesh, time_pieces(r, qq, c, s, p.mesh)))
            if args.profile:
                profiles.append((n, dtype, profile_interpolation(r, qq, c, p.mesh)))
    if stresses:
        print("\nstress, fastest calls: | N | dtype | accuracy | energy+forces ms | energy+forces+stress ms | ratio |")
        for n, dtype, acc, bf, bs in stresses:
            print(f"| {n} | {dtype} | {acc:.0e} | {1e3 * bf:.1f} | {1e3 * bs:.1f} | {bs / bf:.2f} |")
    if parts:
        print("\nfastest calls, ms: | N | dtype | accuracy | real E | real E+F | mesh E | mesh E+F "
              "| mesh E + inverse FFT |")
        for n, dtype, acc, t in parts:
            print(f"| {n} | {dtype} | {acc:.0e} | " + " | ".join(f"{1e3 * t[k]:.2f}" for k in PARTS) + " |")
    if pieces:
        print("\nmesh steps, fastest calls, ms: | N | dtype | mesh, order | " + " | ".join(PIECES)
              + " | interpolation ns per stencil value |")
        for n, dtype, spec, t in pieces:
            per_value = 1e9 * t["interpolate"] / (n * spec.order**3)
            print(f"| {n} | {dtype} | {spec.shape[0]}³, p = {spec.order} | "
                  + " | ".join(f"{1e3 * t[k]:.2f}" for k in PIECES) + f" | {per_value:.1f} |")
    if parts and pieces:
        print("\nfloor of energy + forces / energy alone: | N | dtype | real E + mesh E ms "
              "| inverse FFT + window gather ms | floor | inverse FFT in the pipeline ms "
              "| floor with it | measured ratio of the halves |")
        for (n, dtype, _, tp), (_, _, _, tm) in zip(parts, pieces):
            energy = tp["real E"] + tp["mesh E"]
            extra = tm["inverse FFT"] + tm["window gather"]
            in_pipeline = tp["mesh E + inverse FFT"] - tp["mesh E"]
            both = tp["real E+F"] + tp["mesh E+F"]
            print(f"| {n} | {dtype} | {1e3 * energy:.2f} | {1e3 * extra:.2f} | {(energy + extra) / energy:.2f} "
                  f"| {1e3 * in_pipeline:.2f} | {(energy + in_pipeline + tm['window gather']) / energy:.2f} "
                  f"| {both / energy:.2f} |")
    for n, dtype, ops in profiles:
        print(f"\ninterpolation, {n} atoms, {dtype}: XLA operations by time, ms per call (profiler on)")
        for name, ms in ops:
            print(f"  {ms:8.3f}  {name}")


def profile_interpolation(r, q, c, spec, calls=10, top=4):
    """The ``top`` XLA operations of :func:`jaxlr.electrostatics._pme.interpolate_mesh` by time per call."""
    frac = r @ jnp.linalg.inv(c)
    mesh = jax.jit(lambda f, q: pme.spread_charges(f, q, spec))(frac, q)
    interpolate = jax.jit(lambda m, f: pme.interpolate_mesh(m, f, spec))
    jax.block_until_ready(interpolate(mesh, frac))
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(interpolate(mesh, frac))
        with gzip.open(glob.glob(f"{folder}/**/*.json.gz", recursive=True)[0]) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total = collections.Counter()
    for e in events:
        # XLA's operations are named after their HLO instructions (fusions, gathers, FFTs)
        if e.get("ph") == "X" and any(k in e["name"] for k in ("fusion", "gather", "scatter", "fft", "reduce")):
            total[e["name"]] += e["dur"] / 1e3 / calls
    return total.most_common(top)


PARTS = ("real E", "real E+F", "mesh E", "mesh E+F", "mesh E + inverse FFT")


def time_parts(r, q, c, s, nbrs, mesh):
    """Fastest of 60 interleaved calls of each half, energy and energy + position gradient.

    Also times the mesh energy followed by the inverse FFT of the potential, in one jitted
    call (the first half of the mesh forces); less "mesh E", that is what the inverse FFT
    costs inside the pipeline, which can differ from the FFT called on its own.
    """
    def real(r, q, nb):
        return real_space_energy(r, q, None, c, s, nb)

    def rec(r, q, nb):
        return pme_reciprocal_energy(r, q, c, s, mesh)

    weights = jnp.asarray(pme._host_tables(mesh)[3], r.dtype)

    def rec_then_inverse_fft(r, q, nb):  # the forward half of pme.make_reciprocal_energy's rule
        mesh_cell = jnp.asarray(mesh.basis, c.dtype) @ c
        qh = jnp.fft.rfftn(pme.spread_charges(r @ jnp.linalg.inv(mesh_cell), q, mesh))
        g = pme.influence_function(mesh_cell, s, mesh)
        energy = 0.5 * jnp.sum(g * weights * (qh.real**2 + qh.imag**2))
        return energy, jnp.sum(jnp.fft.irfftn(g * qh, s=mesh.shape))

    jitted = {"real E": jax.jit(real), "real E+F": jax.jit(jax.value_and_grad(real)),
              "mesh E": jax.jit(rec), "mesh E+F": jax.jit(jax.value_and_grad(rec)),
              "mesh E + inverse FFT": jax.jit(rec_then_inverse_fft)}
    fns = {k: (lambda f=f: jax.block_until_ready(f(r, q, nbrs))) for k, f in jitted.items()}
    for fn in fns.values():
        fn()
    return {k: min(v) for k, v in interleaved_times(fns, min_rounds=60, max_rounds=60).items()}


PIECES = ("spread", "FFT", "inverse FFT", "interpolate", "window gather")


def time_pieces(r, q, c, s, spec):
    """Fastest of 60 interleaved calls of each mesh step (the steps of :mod:`jaxlr.electrostatics`)."""
    frac = r @ jnp.linalg.inv(c)
    spread = jax.jit(lambda f, q: pme.spread_charges(f, q, spec))
    mesh = spread(frac, q)
    rfft = jax.jit(jnp.fft.rfftn)
    qh = rfft(mesh)
    g = pme.influence_function(c, s, spec)
    irfft = jax.jit(lambda g, qh: jnp.fft.irfftn(g * qh, s=spec.shape))
    phi_mesh = irfft(g, qh)
    interpolate = jax.jit(lambda m, f: pme.interpolate_mesh(m, f, spec))
    p = spec.order
    padded = jnp.pad(phi_mesh, [(p - 1, 0)] * 3, mode="wrap")  # the ghost planes of interpolate_mesh
    blocks = pme._atom_blocks(frac, q, p, pme.INTERP_BLOCK_POINTS)
    if blocks is None:
        starts, n_blocks, block = pme._window_offsets(frac, spec)[0], 1, frac.shape[0]
    else:  # the same blocks of atoms as interpolate_mesh
        starts, n_blocks, block = pme._window_offsets(blocks[0], spec)[0], blocks[2], blocks[3]

    def window_sums(m, st):
        return jax.lax.map(lambda k: jnp.sum(jax.lax.gather(
            m, pme._block_rows(st, k, block), pme._GATHER_DIMS, slice_sizes=(p, p, p),
            mode="promise_in_bounds"), axis=(1, 2, 3)), jnp.arange(n_blocks))

    gather = jax.jit(window_sums)
    calls = {"spread": lambda: spread(frac, q), "FFT": lambda: rfft(mesh), "inverse FFT": lambda: irfft(g, qh),
             "interpolate": lambda: interpolate(phi_mesh, frac), "window gather": lambda: gather(padded, starts)}
    fns = {k: (lambda f=f: jax.block_until_ready(f())) for k, f in calls.items()}
    for fn in fns.values():
        fn()
    return {k: min(v) for k, v in interleaved_times(fns, min_rounds=60, max_rounds=60).items()}


if __name__ == "__main__":
    main()
