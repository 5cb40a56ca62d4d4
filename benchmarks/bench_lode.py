"""LODE feature benchmark: k-sum vs PME (vs featomic's LodeSphericalExpansion), and the
calibration of the PME multipole error envelope.

Workload: water-like boxes (0.1 atoms/Å³, random rigid H₂O molecules, 2 species), cubic cell,
N = 3·⌊N/3⌋ atoms.  Hyperparameters matched to featomic's conventions (see
tests/test_lode.py::test_featomic_lode_agreement): density SmearedPowerLaw(σ = 1 Å,
exponent 1) = our unit Gaussians, Gto(max_radial = 5, radius = 4 Å) = our
``cutoff = 5·4 Å, radial_widths = gto_widths(4, 6)``, max_angular = 4.  float64 everywhere.

Each (method, N) runs in its own subprocess (clean peak-RSS measurement); timings are the
best of ``--repeat`` calls after a first call that includes compilation (reported
separately).  Accuracy is measured at the smallest N against a converged k-sum (relative
RMS over all entries): featomic with its default k_cutoff = 1.2π/σ, jaxlr with the
requested ``--accuracy``.

Usage:
  python benchmarks/bench_lode.py                       # 1k, 4k, 16k (+64k with --sizes)
  python benchmarks/bench_lode.py --sizes 1000,4000,16000,64000 --featomic-python /path/bin/python
  python benchmarks/bench_lode.py --calibrate           # re-measure the multipole error envelope
  python benchmarks/bench_lode.py --open                # clusters: per-pair quadrature vs pair-function table

The feature tuner's error model has no fitted constants; benchmarks/calibrate_lode_error.py
checks it (and the achieved/requested accuracy of the tuner) against converged k-sums.

featomic is optional: it is imported in a worker process run with ``--featomic-python``
(default: this interpreter); when it cannot be imported, its rows are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

SIGMA, RADIUS, N_RADIAL, MAX_ANGULAR = 1.0, 4.0, 6, 4
DENSITY = 0.1


def water_box(n_atoms: int, seed: int = 0):
    """Random rigid water molecules at 0.1 atoms/Å³: (positions, atomic numbers, cell)."""
    rng = np.random.default_rng(seed)
    n_mol = n_atoms // 3
    n = 3 * n_mol
    box = (n / DENSITY) ** (1.0 / 3.0)
    oxygen = rng.uniform(0.0, box, (n_mol, 3))
    half = math.radians(104.52) / 2.0
    local = 0.9572 * np.array([[math.sin(half), math.cos(half), 0.0], [-math.sin(half), math.cos(half), 0.0]])
    q, _ = np.linalg.qr(rng.normal(size=(n_mol, 3, 3)))
    hydrogens = oxygen[:, None, :] + np.einsum("hk,mjk->mhj", local, q)
    positions = np.concatenate([oxygen[:, None, :], hydrogens], axis=1).reshape(n, 3)
    numbers = np.tile([8, 1, 1], n_mol)
    return positions, numbers, np.eye(3) * box


# ---- workers (run in subprocesses) -------------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_jaxlr(method: str, n: int, accuracy: float, repeat: int, save: str | None) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    from jaxlr._api.lode import lode
    from jaxlr.features._radial import gto_widths

    positions, numbers, cell = water_box(n)
    kw = dict(cell=cell, cutoff=5 * RADIUS, max_radial=N_RADIAL, max_angular=MAX_ANGULAR, sigma=SIGMA,
              radial_widths=gto_widths(RADIUS, N_RADIAL), method=method, accuracy=accuracy)
    rss0 = _peak_rss_mb()
    t = time.perf_counter()
    res = lode(positions, numbers, **kw)
    res.values.block_until_ready()
    first = time.perf_counter() - t
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        res = lode(positions, numbers, **kw)
        res.values.block_until_ready()
        times.append(time.perf_counter() - t)
    if save:
        np.save(save, np.asarray(res.values))
    p = res.params
    detail = (f"mesh {p.mesh.shape} p={p.mesh.order}" if p.method == "pme" else f"k_c={p.k_cutoff:.2f}/Å")
    return dict(method=method, n=len(numbers), time=min(times), compile=first - min(times),
                rss=_peak_rss_mb(), rss_before=rss0, detail=detail)


def worker_featomic(n: int, repeat: int, save: str | None) -> dict:
    import ase
    import featomic

    positions, numbers, cell = water_box(n)
    atoms = ase.Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)
    calc = featomic.LodeSphericalExpansion(
        density=featomic.density.SmearedPowerLaw(smearing=SIGMA, exponent=1),
        basis=featomic.basis.TensorProduct(max_angular=MAX_ANGULAR,
                                           radial=featomic.basis.Gto(max_radial=N_RADIAL - 1, radius=RADIUS)))
    rss0 = _peak_rss_mb()
    t = time.perf_counter()
    desc = calc.compute(atoms)
    first = time.perf_counter() - t
    times = [first]
    for _ in range(repeat - 1):
        t = time.perf_counter()
        desc = calc.compute(atoms)
        times.append(time.perf_counter() - t)
    if save:
        out = np.zeros((len(numbers), 2, N_RADIAL, (MAX_ANGULAR + 1) ** 2))
        for key, block in desc.items():
            l = int(key["o3_lambda"])
            a = [1, 8].index(int(key["neighbor_type"]))
            ns = np.asarray(block.properties.column("n"))
            centers = np.asarray(block.samples.column("atom"))
            out[centers[:, None], a, ns[None, :], l * l:(l + 1) ** 2] = np.asarray(block.values).transpose(0, 2, 1)
        np.save(save, out)
    return dict(method="featomic", n=len(numbers), time=min(times), compile=0.0, rss=_peak_rss_mb(),
                rss_before=rss0, detail="k_c=1.2π/σ (default)")


# ---- driver ------------------------------------------------------------------------------------
def run_worker(args: list[str], python: str = sys.executable, timeout: float = 3600.0) -> dict | None:
    cmd = [python, os.path.abspath(__file__), "--worker"] + args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  ({' '.join(args)}: timed out after {timeout:.0f} s)")
        return None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
        print(f"  ({' '.join(args)}: failed: {tail[0][:160]})")
        return None
    return json.loads(lines[-1])


def exponent(rows):
    """Least-squares slope of log(time) against log(N)."""
    if len(rows) < 2:
        return float("nan")
    x = np.log([r["n"] for r in rows])
    y = np.log([r["time"] for r in rows])
    return float(np.polyfit(x, y, 1)[0])


def featomic_available(python: str) -> bool:
    """Whether ``python`` can import featomic and ase (the optional peer)."""
    try:
        out = subprocess.run([python, "-c", "import featomic, ase"], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def benchmark(opts):
    sizes = [int(s) for s in opts.sizes.split(",")]
    if not featomic_available(opts.featomic_python):
        print(f"featomic is not importable by {opts.featomic_python}: its rows are skipped "
              "(pip install featomic ase, or pass --featomic-python).")
        opts.featomic_max = 0
    print(f"LODE benchmark: water-like boxes (0.1 atoms/Å³, 2 species), σ_L = {SIGMA} Å, GTO radius "
          f"{RADIUS} Å × {N_RADIAL} radial, L = {MAX_ANGULAR}; float64; requested accuracy {opts.accuracy:g}")
    tmp = tempfile.mkdtemp(prefix="bench_lode_")
    # accuracy at the smallest size against a converged k-sum
    n0 = sizes[0]
    ref_file = os.path.join(tmp, "ref.npy")
    errors = {}
    if run_worker(["ksum", str(n0), "1e-9", "1", ref_file]) is not None:
        ref = np.load(ref_file)
        for name, args, py in (("pme", ["pme", str(n0), str(opts.accuracy), "1"], sys.executable),
                               ("ksum", ["ksum", str(n0), str(opts.accuracy), "1"], sys.executable),
                               ("featomic", ["featomic", str(n0), "0", "1"], opts.featomic_python)):
            if name == "featomic" and not opts.featomic_max:
                continue
            f = os.path.join(tmp, f"{name}.npy")
            if run_worker(args + [f], python=py) is not None:
                v = np.load(f)
                errors[name] = float(np.sqrt(np.mean((v - ref) ** 2)) / np.sqrt(np.mean(ref ** 2)))
    print(f"\nmeasured relative RMS feature error at N = {3 * (n0 // 3)} (vs k-sum at 1e-9): "
          + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    rows = {"pme": [], "ksum": [], "featomic": []}
    print(f"\n{'N':>7} {'method':>9} {'time [s]':>10} {'compile [s]':>12} {'peak RSS [MB]':>14}  detail")
    for n in sizes:
        plan = [("pme", ["pme", str(n), str(opts.accuracy), str(opts.repeat)], sys.executable)]
        if n <= opts.ksum_max:
            plan.append(("ksum", ["ksum", str(n), str(opts.accuracy), str(opts.repeat)], sys.executable))
        if n <= opts.featomic_max:
            plan.append(("featomic", ["featomic", str(n), "0", str(opts.repeat)], opts.featomic_python))
        for name, args, py in plan:
            r = run_worker(args, python=py)
            if r is None:
                continue
            rows[name].append(r)
            print(f"{r['n']:>7} {name:>9} {r['time']:>10.3f} {r['compile']:>12.2f} {r['rss']:>14.0f}  {r['detail']}",
                  flush=True)
    print("\nratios (time of the other method / time of PME):")
    pme = {r["n"]: r["time"] for r in rows["pme"]}
    for name in ("ksum", "featomic"):
        for r in rows[name]:
            if r["n"] in pme:
                print(f"  N = {r['n']:>6}: {name} / pme = {r['time'] / pme[r['n']]:.1f}")
    print("\nscaling exponents (time ∝ N^a, least squares over the sizes run):")
    for name, rs in rows.items():
        if len(rs) >= 2:
            print(f"  {name:>9}: a = {exponent(rs):.2f}  (N = {rs[0]['n']} … {rs[-1]['n']})")


# ---- open boundary: per-pair quadrature against the pair-function table -----------------------------
def open_boundary(opts):
    """Open-boundary LODE (clusters): the exact per-pair quadrature against the Hermite table
    of the pair functions that the models use (LodeParams("direct", n_table=...)), on water
    droplets cut from the water-like box, with the multi-scale model's basis of the water
    benchmark (r_c 4.5 Å, 8 radial, L = 3, σ_L 1 Å).  Features and their position gradient
    (forces), float64, best of --repeat after compilation; error of the table relative to
    the quadrature (RMS over all entries)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from jaxlr.features import LodeParams, direct_table_size, gto_widths, lode_features

    rc, n_rad, lmax, sigma = 4.5, 8, 3, 1.0
    widths = jnp.asarray(gto_widths(rc, n_rad))
    n_table = direct_table_size(sigma, widths, rc)
    print(f"open-boundary LODE, water droplets, σ_L = {sigma} Å, r_c = {rc} Å, {n_rad} radial, L = {lmax}, "
          f"table of {n_table} nodes; float64; {machine_line()}")
    print(f"\n{'atoms':>6} {'route':>10} {'features [ms]':>14} {'+ gradient [ms]':>16} {'compile [s]':>12} "
          f"{'rel. error':>11}")
    for n in [int(v) for v in opts.open_sizes.split(",")]:
        pos, numbers, cell = water_box(3000)
        centre = pos[np.argmin(np.linalg.norm(pos - cell.diagonal() / 2, axis=1))]
        mol = np.argsort(np.linalg.norm(pos[::3] - centre, axis=1))[: max(1, n // 3)]
        keep = (3 * mol[:, None] + np.arange(3)).ravel()
        R = jnp.asarray(pos[keep])
        species = jnp.asarray((numbers[keep] == 8).astype(np.int32))
        out = {}
        for route, table in (("quadrature", None), ("table", n_table)):
            if route == "quadrature" and len(keep) > opts.open_exact_max:
                continue
            params = LodeParams("direct", cutoff=rc, max_radial=n_rad, max_angular=lmax, n_species=2, n_table=table)

            def feats(r, params=params):
                return lode_features(r, species, sigma=sigma, widths=widths, params=params)

            f = jax.jit(feats)
            g = jax.jit(jax.value_and_grad(lambda r, feats=feats: jnp.sum(jnp.sin(feats(r)))))
            t0 = time.perf_counter()
            v = f(R).block_until_ready()
            jax.block_until_ready(g(R))
            compile_s = time.perf_counter() - t0
            times = []
            for fn in (f, g):
                best = np.inf
                for _ in range(opts.repeat):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(R))
                    best = min(best, time.perf_counter() - t0)
                times.append(best)
            out[route] = (np.asarray(v), times)
            err = ""
            if route == "table" and "quadrature" in out:
                ref = out["quadrature"][0]
                err = f"{np.sqrt(np.mean((np.asarray(v) - ref) ** 2) / np.mean(ref ** 2)):.1e}"
            print(f"{len(keep):>6} {route:>10} {1e3 * times[0]:>14.1f} {1e3 * times[1]:>16.1f} {compile_s:>12.1f} "
                  f"{err:>11}", flush=True)
        if len(out) == 2:
            q, t = out["quadrature"][1], out["table"][1]
            print(f"{'':>6} {'speed-up':>10} {q[0] / t[0]:>14.0f} {q[1] / t[1]:>16.0f}")


def machine_line() -> str:
    import platform

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores, load average {load}"


# ---- calibration of the PME multipole error envelope ------------------------------------------------
def calibrate(opts):
    """Measure the errors of the PME multipoles against converged k-sums for several σ_L /
    box combinations, spline orders and mesh spacings, and fit ``log ε = a + b log(h/σ)``
    per spline order (upper envelope) — the numbers of
    :data:`jaxlr.features._lode.MULTIPOLE_ERROR_FIT`.  (The features use the parameter-free
    model of :mod:`jaxlr.tuning`; see benchmarks/calibrate_lode_error.py.)"""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    import jaxlr
    from jaxlr.features._lode_ksum import ksum_cutoff, lode_ksum_multipoles
    from jaxlr.features._lode_pme import make_lode_pme_multipoles
    from jaxlr.system._cell import perpendicular_widths

    rng = np.random.default_rng(3)
    n = 24
    records = []
    for sigma, box in ((1.0, 8.0), (0.5, 7.0), (2.0, 12.0)):
        cell = box * (np.eye(3) + rng.uniform(-0.1, 0.1, (3, 3)))
        positions = rng.uniform(0, 1, (n, 3)) @ cell
        species = jnp.asarray(rng.integers(0, 2, n))
        kc = ksum_cutoff(sigma, 1e-12)
        kv = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, kc))
        ref_mp = [np.asarray(a) for a in lode_ksum_multipoles(jnp.asarray(positions), species, jnp.asarray(cell),
                                                               sigma, kv, n_species=2)]
        widths = perpendicular_widths(cell)
        for p in opts.orders:
            for x in (0.8, 0.6, 0.45, 0.33, 0.25):
                shape = tuple(max(p, jaxlr.system.fft_friendly(int(np.ceil(wd / (x * sigma))))) for wd in widths)
                if max(shape) > 80:
                    continue
                spec = jaxlr.MeshSpec(shape, p)
                mp = jax.jit(make_lode_pme_multipoles(spec, n_species=2))(jnp.asarray(positions), species,
                                                                          jnp.asarray(cell), sigma)
                rec = dict(sigma=sigma, p=p, x=float(max(widths / np.array(shape)) / sigma),
                           multipoles=max(float(np.sqrt(np.mean((np.asarray(a) - b) ** 2)) / np.sqrt(np.mean(b ** 2)))
                                          for a, b in zip(mp, ref_mp)))
                records.append(rec)
                print(json.dumps(rec), flush=True)

    def envelope(points):
        x = np.log([q[0] for q in points])
        y = np.log([q[1] for q in points])
        a = np.stack([np.ones_like(x), x], axis=1)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        coef[0] += float(np.max(y - a @ coef))
        return tuple(round(float(c), 3) for c in coef)

    mps = {}
    for r in records:
        if r["multipoles"] > 1e-10:
            mps.setdefault(r["p"], []).append((r["x"], r["multipoles"]))
    print("MULTIPOLE_ERROR_FIT =", {p: envelope(v) for p, v in sorted(mps.items())})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,4000,16000")
    parser.add_argument("--accuracy", type=float, default=1e-4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ksum-max", type=int, default=4000, help="largest N for the O(N²) k-sum")
    parser.add_argument("--featomic-max", type=int, default=4000, help="largest N for featomic (O(N²))")
    parser.add_argument("--featomic-python", default=sys.executable,
                        help="interpreter with featomic and ase installed (default: this one)")
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--orders", default="4,6,8,10,12")
    parser.add_argument("--open", action="store_true",
                        help="open-boundary clusters: per-pair quadrature against the pair-function table")
    parser.add_argument("--open-sizes", default="24,96,300", help="droplet sizes (atoms) for --open")
    parser.add_argument("--open-exact-max", type=int, default=100, help="largest droplet for the quadrature route")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.worker:
        method, n, acc, repeat, *save = opts.worker
        save = save[0] if save else None
        if method == "featomic":
            result = worker_featomic(int(n), int(repeat), save)
        else:
            result = worker_jaxlr(method, int(n), float(acc), int(repeat), save)
        print(json.dumps(result))
        return
    if opts.calibrate:
        opts.orders = [int(p) for p in opts.orders.split(",")]
        calibrate(opts)
        return
    if opts.open:
        open_boundary(opts)
        return
    benchmark(opts)


if __name__ == "__main__":
    main()
