"""Check the LODE error model and the tuner against converged k-sums (float64, CPU).

The model (:mod:`jaxlr.tuning`) has no fitted constant; this script shows how
well it predicts, and what the tuner achieves:

* ``model``: for random two-species cells (cubic and triclinic, σ_L = 0.5 … 2 Å,
  r_c = 2 … 6 Å, and a water-like box with the benchmark basis, r_c = 20 Å) and every
  spline order p = 4 … 12 on three to six mesh spacings, the measured relative RMS PME error
  of the features l ≤ L' (each L' ≤ 4) against a k-sum converged to 1e-13, next to the
  estimate: statistics of ln(estimate / measured), per system;
* ``tuner``: for requested accuracies 1e-3 … 1e-6 the achieved error of the tuned PME mesh
  and of the tuned k-sum cutoff on small periodic systems (``lode(..., accuracy=a)``),
  with the ratio achieved / requested.

Usage:
  python benchmarks/calibrate_lode_error.py                 # both parts (about 20 min on 2 cores)
  python benchmarks/calibrate_lode_error.py --part tuner    # the tuner table only (about 4 min)
  python benchmarks/calibrate_lode_error.py --part model --systems A,D
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

# name: (seed, atoms, box Å, skew, σ_L Å, r_c Å, n_max, L) — random two-species cells
SYSTEMS = {
    "A": (0, 16, 8.0, 0.0, 1.0, 3.5, 4, 4),
    "B": (1, 14, 7.0, 0.12, 0.5, 4.0, 3, 4),
    "C": (2, 20, 12.0, 0.0, 2.0, 5.0, 4, 4),
    "D": (3, 10, 7.5, 0.12, 1.0, 3.0, 3, 4),
    "E": (4, 30, 9.0, 0.1, 0.7, 5.0, 5, 4),
    "F": (5, 12, 10.0, 0.15, 1.5, 3.0, 3, 4),
    "G": (6, 16, 8.0, 0.0, 1.0, 6.0, 4, 4),
    "H": (7, 16, 8.0, 0.05, 1.0, 2.0, 3, 4),
    "I": (8, 54, 12.0, 0.0, 1.0, 3.5, 4, 4),
    "J": (9, 48, 8.0, 0.1, 1.0, 3.5, 4, 4),
    "K": (10, 24, 7.0, 0.2, 0.7, 3.5, 6, 4),
    "W": (0, 90, 0.0, 0.0, 1.0, 20.0, 6, 4),    # water-like box, GTO widths of radius 4 Å
}
ORDERS = (4, 6, 8, 10, 12)
SPACINGS = (0.9, 0.7, 0.55, 0.45, 0.36, 0.3)       # h/σ_L


def random_cell(seed, n, box, skew):
    rng = np.random.default_rng(seed)
    cell = box * (np.eye(3) + rng.uniform(-skew, skew, (3, 3)))
    return rng.uniform(0, 1, (n, 3)) @ cell, rng.integers(0, 2, n), cell


def water_box(n_atoms, seed=0):
    """Random rigid water molecules at 0.1 atoms/Å³ (as benchmarks/bench_lode.py)."""
    rng = np.random.default_rng(seed)
    n_mol = n_atoms // 3
    box = (3 * n_mol / 0.1) ** (1.0 / 3.0)
    oxygen = rng.uniform(0.0, box, (n_mol, 3))
    half = math.radians(104.52) / 2.0
    local = 0.9572 * np.array([[math.sin(half), math.cos(half), 0.0], [-math.sin(half), math.cos(half), 0.0]])
    q, _ = np.linalg.qr(rng.normal(size=(n_mol, 3, 3)))
    hydrogens = oxygen[:, None, :] + np.einsum("hk,mjk->mhj", local, q)
    positions = np.concatenate([oxygen[:, None, :], hydrogens], axis=1).reshape(-1, 3)
    return positions, np.tile([1, 0, 0], n_mol), np.eye(3) * box


def system(name):
    from jaxlr.features._radial import gto_widths

    seed, n, box, skew, sigma, rc, nmax, L = SYSTEMS[name]
    if name == "W":
        positions, species, cell = water_box(n)
        widths = gto_widths(4.0, nmax)
    else:
        positions, species, cell = random_cell(seed, n, box, skew)
        widths = gto_widths(rc, nmax)
    return positions, species, cell, sigma, rc, widths, L


def model_part(names):
    import jax
    import jax.numpy as jnp

    import jaxlr
    from jaxlr.features._lode_kspace import TABLE_STEP, radial_points
    from jaxlr.features._lode_ksum import ksum_cutoff, lode_ksum
    from jaxlr.features._lode_pme import K_NEGLIGIBLE, make_lode_pme
    from jaxlr.system._cell import perpendicular_widths, reduced_basis
    from jaxlr.tuning._lode import _mesh_kmax, basis_extent
    from jaxlr.tuning._lode_error import LodeErrorModel

    print("model: ln(estimate / measured) of the PME feature error, features l ≤ L' for L' = 0 … 4")
    print(f"{'system':>6} {'σ_L':>5} {'r_c':>5} {'N':>4} {'points':>7} {'mean':>7} {'rms':>6} {'min':>7} {'max':>7}")
    everything = []
    for name in names:
        positions, species, cell, sigma, rc, widths, L = system(name)
        sp = jnp.asarray(species)
        w = jnp.asarray(widths)
        kc = ksum_cutoff(sigma, 1e-13)
        kv = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, kc))
        ref = np.asarray(jax.jit(lambda r: lode_ksum(r, sp, jnp.asarray(cell), sigma, w, kv, n_species=2, cutoff=rc,
                                                      max_angular=L, n_points=radial_points(rc, kc)))(
            jnp.asarray(positions)))
        basis = reduced_basis(cell)
        mesh_cell = basis @ cell
        plane = perpendicular_widths(mesh_cell)
        basis_t = tuple(tuple(int(v) for v in row) for row in basis)
        scale = [float(np.sum(ref[..., l * l:(l + 1) ** 2] ** 2)) for l in range(L + 1)]
        models = [LodeErrorModel(cell, sigma, widths, rc, lp, len(positions)) for lp in range(L + 1)]
        logs, seen = [], set()
        for p in ORDERS:
            top = min(L, p - 2)
            for x in SPACINGS if name != "W" else SPACINGS[::2]:
                shape = tuple(max(p, jaxlr.system.fft_friendly(math.ceil(wd / (x * sigma)))) for wd in plane)
                if (p, shape) in seen or max(shape) > 72:
                    continue
                seen.add((p, shape))
                spec = jaxlr.MeshSpec(shape, p, basis=basis_t)
                k_top = min(_mesh_kmax(mesh_cell, shape), K_NEGLIGIBLE / sigma)
                f = make_lode_pme(spec, n_species=2, cutoff=rc, max_angular=top, n_points=radial_points(rc, k_top),
                                  n_table=int(math.ceil(k_top * basis_extent(widths, rc) / TABLE_STEP)) + 2)
                err = np.asarray(jax.jit(f)(jnp.asarray(positions), sp, jnp.asarray(cell), sigma, w)) \
                    - ref[..., : (top + 1) ** 2]
                blocks = [float(np.sum(err[..., l * l:(l + 1) ** 2] ** 2)) for l in range(top + 1)]
                for lp in range(top + 1):
                    measured = math.sqrt(sum(blocks[: lp + 1]) / sum(scale[: lp + 1]))
                    if measured > 3e-9:          # above the floor of the reference and the J_nl table
                        logs.append(math.log(models[lp].pme(p, mesh_cell, shape) / measured))
        v = np.array(logs)
        everything += logs
        print(f"{name:>6} {sigma:>5.2f} {rc:>5.1f} {len(positions):>4} {len(v):>7} {v.mean():>+7.2f} "
              f"{np.sqrt(np.mean(v**2)):>6.2f} {v.min():>+7.2f} {v.max():>+7.2f}", flush=True)
    v = np.array(everything)
    print(f"{'all':>6} {'':>5} {'':>5} {'':>4} {len(v):>7} {v.mean():>+7.2f} {np.sqrt(np.mean(v**2)):>6.2f} "
          f"{v.min():>+7.2f} {v.max():>+7.2f}")


TUNER_CASES = (   # (seed, skew, σ_L, r_c, L, box): random 10-atom two-species cells, n_max = 3
    (0, 0.12, 1.0, 3.0, 3, 7.5),
    (1, 0.0, 1.0, 3.0, 3, 7.5),
    (2, 0.1, 0.6, 4.0, 2, 7.5),
    (3, 0.0, 1.5, 4.0, 4, 9.0),
)


def tuner_part(accuracies):
    from jaxlr._api.lode import lode

    print("tuner: achieved relative RMS error against a k-sum converged to 1e-12 (10 atoms, n_max = 3)")
    print(f"{'seed':>4} {'skew':>5} {'σ_L':>5} {'r_c':>4} {'L':>2} {'method':>6} {'requested':>9} {'achieved':>9} "
          f"{'ratio':>6}  {'estimate':>9}  choice")
    ratios = {"pme": [], "ksum": []}
    z = np.array([8, 1, 1, 8, 1, 1, 8, 1, 1, 1])
    for seed, skew, sigma, rc, L, box in TUNER_CASES:
        rng = np.random.default_rng(seed)
        cell = box * (np.eye(3) + rng.uniform(-skew, skew, (3, 3)))
        frac = rng.uniform(0, 1, (10, 3))
        frac[:2] += 1.0
        positions = frac @ cell
        kw = dict(cell=cell, cutoff=rc, max_radial=3, max_angular=L, sigma=sigma)
        ref = np.asarray(lode(positions, z, method="ksum", accuracy=1e-12, **kw).values)
        for method in ("pme", "ksum"):
            for acc in accuracies:
                res = lode(positions, z, method=method, accuracy=acc, **kw)
                e = float(np.sqrt(np.mean((np.asarray(res.values) - ref) ** 2) / np.mean(ref**2)))
                p = res.params
                choice = f"mesh {p.mesh.shape} p={p.mesh.order}" if method == "pme" else f"k_c={p.k_cutoff:.2f}/Å"
                ratios[method].append(e / acc)
                print(f"{seed:>4} {skew:>5.2f} {sigma:>5.2f} {rc:>4.1f} {L:>2} {method:>6} {acc:>9.0e} {e:>9.2e} "
                      f"{e / acc:>6.2f}  {p.estimated_error:>9.2e}  {choice}", flush=True)
    for method, r in ratios.items():
        print(f"{method}: achieved/requested in [{min(r):.2f}, {max(r):.2f}] over {len(r)} cases")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("model", "tuner", "both"), default="both")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--accuracies", default="1e-3,1e-4,1e-5,1e-6")
    opts = parser.parse_args(argv)
    import jax
    jax.config.update("jax_enable_x64", True)
    t = time.perf_counter()
    if opts.part in ("tuner", "both"):
        tuner_part([float(a) for a in opts.accuracies.split(",")])
    if opts.part in ("model", "both"):
        model_part([s for s in opts.systems.split(",") if s])
    print(f"({time.perf_counter() - t:.0f} s)")


if __name__ == "__main__":
    main()
