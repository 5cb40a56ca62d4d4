"""Electrostatics of one padded structure inside a model (static plan + jittable energy).

Open boundary: all pairs from a dense (N, N) list built from the atom mask.  Periodic:
smooth PME with a real-space cutoff no longer than the batch's neighbour cutoff and one
mesh shared by every cell of the data set (so a whole training run compiles once).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..electrostatics._energy import coulomb_energy
from ..electrostatics._pme import MeshSpec
from ..system._cell import fft_friendly, perpendicular_widths
from ..system._neighbors import Neighbors
from ..tuning._coulomb import standin_charges, tune_coulomb

__all__ = ["CoulombSpec", "plan_coulomb", "all_pairs", "coulomb_kwargs", "structure_coulomb_energy"]


@dataclasses.dataclass(frozen=True)
class CoulombSpec:
    """Static Coulomb choices of a model (JSON-friendly).

    Attributes:
      accuracy: target relative RMS force error of the periodic sum.
      smearing: Ewald smearing (Å), mesh (K1, K2, K3) and order of the PME mesh: set by
        :func:`plan_coulomb` for periodic data, None for open boundaries.
    """

    accuracy: float = 1e-5
    smearing: float | None = None
    mesh: tuple | None = None
    order: int = 6


def periodic_cells(cells):
    """The cells as float64 arrays, or None when all are open; a mix raises ValueError."""
    cells = [None if c is None else np.asarray(c, dtype=np.float64) for c in cells]
    if all(c is None for c in cells):
        return None
    if any(c is None for c in cells):
        raise ValueError("a model's cells must be all periodic or all open.")
    return cells


def mesh_spacing(cell: np.ndarray, mesh: MeshSpec) -> float:
    """Largest spacing (Å) of ``mesh`` between mesh planes of ``cell``."""
    mesh_cell = np.asarray(mesh.basis) @ cell
    return float(np.max(perpendicular_widths(mesh_cell) / np.asarray(mesh.shape)))


def shape_for_spacing(cell: np.ndarray, spacing: float) -> tuple:
    """FFT-friendly mesh points along the cell vectors as given for a plane spacing ≤ ``spacing``."""
    return tuple(fft_friendly(int(np.ceil(w / spacing))) for w in perpendicular_widths(cell))


def plan_coulomb(spec: CoulombSpec, cells, cutoff: float) -> CoulombSpec:
    """Choose smearing and a common PME mesh for a family of cells (host).

    The real-space cutoff is the model's neighbour cutoff; the smearing is tuned for the
    largest cell with ±1 stand-in charges at a water-like density, and the mesh spacing
    it needs is applied to every cell (finest over the family).
    """
    cells = periodic_cells(cells)
    if cells is None:
        return spec
    vols = [abs(np.linalg.det(c)) for c in cells]
    big = cells[int(np.argmax(vols))]
    n = max(8, int(0.1 * max(vols)))
    rng = np.random.default_rng(0)
    pos = rng.random((n, 3)) @ big
    p = tune_coulomb(pos, standin_charges(n), big, method="pme", accuracy=spec.accuracy, cutoff=cutoff,
                     order=spec.order)
    h = mesh_spacing(big, p.mesh)
    shape = [0, 0, 0]
    for c in cells:
        fine = shape_for_spacing(c, h)
        shape = [max(shape[d], fine[d], p.mesh.order) for d in range(3)]
    return dataclasses.replace(spec, smearing=float(p.smearing), mesh=tuple(int(k) for k in shape),
                               order=int(p.mesh.order))


def all_pairs(atom_mask) -> Neighbors:
    """A dense full (N, N−…) list of every pair of real atoms (open boundary)."""
    n = atom_mask.shape[0]
    idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :], (n, n))
    mask = atom_mask[:, None] & atom_mask[None, :] & ~jnp.eye(n, dtype=bool)
    return Neighbors(idx=idx, mask=mask)


def coulomb_kwargs(s, spec: CoulombSpec):
    """Keyword arguments of :func:`jaxlr.coulomb_energy` / :func:`jaxlr.qeq_solve` for one structure."""
    if s.cell is None:
        return dict(cell=None, smearing=None, neighbors=all_pairs(s.atom_mask), kvectors=None, method="direct",
                    mesh=None)
    if spec.mesh is None:
        raise ValueError("periodic electrostatics needs a mesh: call Potential.adapted_to(cells) first.")
    return dict(cell=s.cell, smearing=jnp.asarray(spec.smearing, s.positions.dtype), neighbors=s.neighbors,
                kvectors=None, method="pme", mesh=MeshSpec(tuple(spec.mesh), int(spec.order)))


def structure_coulomb_energy(s, charges, sigma, spec: CoulombSpec, background: bool = False):
    """Coulomb energy (eV) of Gaussian charges on one padded structure."""
    return coulomb_energy(s.positions, charges, sigma=sigma, background=background, **coulomb_kwargs(s, spec))
