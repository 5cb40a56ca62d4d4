"""Generate the bundled random point-charge data set (Grisafi & Ceriotti, JCP 151, 204105 (2019)).

Each structure: 64 point charges (32 of +1 e written as Na, 32 of −1 e written as Cl) in a
cubic box whose edge is uniform in [12, 20] Å, placed by random sequential insertion with
rejection so that no two charges are closer than 2.5 Å under the periodic minimum-image
convention.  Positions (and the box edge) are rounded to the 6 decimals written to the file
*before* the energies are computed, so the file is self-consistent to float64 round-off.
Reference values: the Ewald energy (eV), forces (eV/Å, rounded to 6 decimals) and stress
(eV/Å³, ASE sign) of the point charges, from :func:`jaxlr.coulomb` with ``method="ewald"``
and ``accuracy=1e-8`` in float64 (tin-foil boundary, neutral cells).

Run (float64 is switched on inside ``main``; takes about a minute on 2 CPU cores)::

    python -m jaxlr.data.generate.point_charges [--n 2000] [--seed 2019] [--out PATH]

The default output is ``jaxlr/datasets/data/point_charges.xyz.gz`` (extended XYZ, gzip with
a zero timestamp, so identical inputs give identical bytes).  Per frame: ``energy``,
``stress``, ``total_charge=0`` and ``box`` (edge, Å) in the comment line; ``forces`` and
``charges`` per atom (ASE names the charge column ``charge``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import time

import numpy as np

N_ATOMS = 64
EDGE_RANGE = (12.0, 20.0)
MIN_DISTANCE = 2.5
DECIMALS = 6
ACCURACY = 1e-8
DEFAULT_SEED = 2019


def random_positions(rng: np.random.Generator, edge: float, n: int = N_ATOMS,
                     min_distance: float = MIN_DISTANCE, decimals: int = DECIMALS,
                     max_attempts: int = 200_000) -> np.ndarray:
    """``n`` points in a cubic box of edge ``edge`` Å, pairwise minimum-image distance ≥ ``min_distance``.

    Random sequential insertion: uniform candidates, rounded to ``decimals`` decimals, are
    accepted when far enough from every accepted point.  Returns an (n, 3) float64 array
    with coordinates in [0, edge]; raises ``RuntimeError`` after ``max_attempts`` candidates.

    Example:
      >>> p = random_positions(np.random.default_rng(0), 14.0)
      >>> p.shape
      (64, 3)
    """
    pts = np.empty((n, 3))
    count = 0
    for _ in range(max_attempts):
        cand = np.round(rng.uniform(0.0, edge, 3), decimals)
        d = pts[:count] - cand
        d -= edge * np.round(d / edge)
        if count == 0 or np.min(np.einsum("ij,ij->i", d, d)) >= min_distance**2:
            pts[count] = cand
            count += 1
            if count == n:
                return pts
    raise RuntimeError(f"could not place {n} points {min_distance} Å apart in a {edge} Å box "
                       f"within {max_attempts} attempts.")


def min_image_distance(positions: np.ndarray, edge: float) -> float:
    """Smallest pairwise minimum-image distance (Å) of points in a cubic box of edge ``edge``."""
    d = positions[:, None, :] - positions[None, :, :]
    d -= edge * np.round(d / edge)
    r = np.sqrt(np.sum(d * d, axis=-1))
    r[np.diag_indices(len(positions))] = np.inf
    return float(r.min())


def generate(n_structures: int, seed: int = DEFAULT_SEED, *, verbose: bool = True):
    """Generate ``n_structures`` point-charge structures (needs float64 enabled in jax).

    Returns a list of ``ase.Atoms`` with a ``SinglePointCalculator`` holding energy (eV),
    forces (eV/Å, rounded to ``DECIMALS``), stress (eV/Å³) and per-atom charges (e), and
    ``info["total_charge"] = 0.0``, ``info["box"]`` (edge, Å).

    Example:
      >>> # import jax; jax.config.update("jax_enable_x64", True)
      >>> # frames = generate(10)
    """
    import jax
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..._api.coulomb import coulomb
    from ...electrostatics._ewald import half_space_kvectors
    from ...system._neighbors import neighbor_list, with_capacity
    from ...tuning._coulomb import tune_coulomb

    if not jax.config.jax_enable_x64:
        raise RuntimeError("generate() needs float64: jax.config.update('jax_enable_x64', True).")
    rng = np.random.default_rng(seed)
    base = np.array([1.0] * (N_ATOMS // 2) + [-1.0] * (N_ATOMS // 2))

    # pass 1: geometries and tuned parameters (host); fixes one neighbour capacity for all
    geoms = []
    capacity = 0
    t0 = time.perf_counter()
    for _ in range(n_structures):
        edge = round(float(rng.uniform(*EDGE_RANGE)), DECIMALS)
        charges = rng.permutation(base)
        positions = random_positions(rng, edge)
        cell = np.eye(3) * edge
        params = tune_coulomb(positions, charges, cell, method="ewald", accuracy=ACCURACY,
                              n_atoms=N_ATOMS, dtype="float64")
        nbrs = neighbor_list(positions, params.cutoff, cell)
        capacity = max(capacity, int(np.asarray(nbrs.mask).sum(axis=1).max()))
        geoms.append((edge, charges, positions, cell, params.cutoff))
    capacity = int(8 * np.ceil(capacity / 8))
    t1 = time.perf_counter()
    if verbose:
        print(f"placed {n_structures} structures in {t1 - t0:.1f} s; neighbour capacity {capacity}", flush=True)

    # pass 2: energies through the front door; with one neighbour capacity the compiled
    # function is reused (a new compile only when the k-vector chunk count changes)
    frames = []
    compiles = set()
    for k, (edge, charges, positions, cell, cutoff) in enumerate(geoms):
        nbrs = with_capacity(neighbor_list(positions, cutoff, cell), capacity)
        res = coulomb(positions, charges, cell=cell, method="ewald", accuracy=ACCURACY, neighbors=nbrs)
        compiles.add(half_space_kvectors(cell, res.params.k_cutoff).shape)
        forces = np.round(np.asarray(res.forces), DECIMALS)
        atoms = Atoms(numbers=np.where(charges > 0, 11, 17), positions=positions, cell=cell, pbc=True)
        atoms.info["total_charge"] = 0.0
        atoms.info["box"] = edge
        atoms.calc = SinglePointCalculator(atoms, energy=float(res.energy), forces=forces,
                                           stress=np.asarray(res.stress), charges=charges.copy())
        frames.append(atoms)
        if verbose and (k + 1) % 500 == 0:
            print(f"  {k + 1} energies, {time.perf_counter() - t1:.1f} s", flush=True)
    t2 = time.perf_counter()
    if verbose:
        print(f"energies in {t2 - t1:.1f} s ({1e3 * (t2 - t1) / max(1, n_structures):.1f} ms each, "
              f"{len(compiles)} distinct k-vector shapes = compilations)", flush=True)
    return frames


def write_gzip_extxyz(path: str, frames) -> None:
    """Write ``frames`` as extended XYZ into a gzip file with a fixed (zero) timestamp."""
    import ase.io

    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as text:
        ase.io.write(text, frames, format="extxyz")


def default_output() -> str:
    """``jaxlr/datasets/data/point_charges.xyz.gz`` next to this file."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "point_charges.xyz.gz")


def main(argv=None) -> None:
    """Command line: generate, write and re-read the data set."""
    import jax

    jax.config.update("jax_enable_x64", True)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="number of structures (default 2000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out", default=default_output(), help="output .xyz.gz path")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    frames = generate(args.n, args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_gzip_extxyz(args.out, frames)
    print(f"wrote {args.out}: {len(frames)} structures, {os.path.getsize(args.out) / 1e6:.2f} MB, "
          f"{time.perf_counter() - start:.1f} s in total", flush=True)

    # consistency check: the file as read back reproduces the stored energies exactly
    from ..._api.coulomb import coulomb
    from .._structures import read_structures

    for k, s in enumerate(read_structures(args.out, index=":3")):
        res = coulomb(s.positions, s.targets["charges"], cell=s.cell, method="ewald", accuracy=ACCURACY)
        rel = abs(float(res.energy) - float(s.targets["energy"])) / abs(float(s.targets["energy"]))
        print(f"re-read structure {k}: relative energy difference {rel:.1e}")

if __name__ == "__main__":
    main()
