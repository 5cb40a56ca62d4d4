"""Helpers for tests, benchmarks and examples: random ionic systems and toy model batches (not part of the curated API).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .data._batch import AtomsBatch
from .system._neighbors import neighbor_list, with_capacity

__all__ = ['KJ_MOL_PER_EV', 'openmm_tosi_fumi_system', 'random_ionic_system', 'toy_batch']


def random_ionic_system(n_atoms: int, *, density: float = 0.1, triclinic: bool = False, seed: int = 0):
    """A random neutral system of ±1 point charges (host, numpy) — the benchmark workload.

    Args:
      n_atoms: number of charges N (even N gives exactly neutral ±1 charges; otherwise the
        mean is subtracted).  density: atoms per Å³ (0.1 ≈ liquid water).
      triclinic: a skewed cell of the same volume instead of a cube.  seed: RNG seed.

    Returns:
      (positions (N, 3) Å, charges (N,) e, cell (3, 3) Å, rows are lattice vectors).

    Example:
      >>> pos, q, cell = random_ionic_system(1000)
      >>> pos.shape, round(float(abs(q.sum())), 12)
      ((1000, 3), 0.0)
    """
    rng = np.random.default_rng(seed)
    length = (n_atoms / density) ** (1.0 / 3.0)
    if triclinic:
        cell = np.array([[1.0, 0.0, 0.0], [0.3, 1.0, 0.0], [0.2, 0.25, 1.0]])
        cell *= length / abs(np.linalg.det(cell)) ** (1.0 / 3.0)
    else:
        cell = np.eye(3) * length
    positions = rng.random((n_atoms, 3)) @ cell
    charges = rng.choice([-1.0, 1.0], n_atoms)
    charges -= charges.mean()
    return positions, charges, cell


def toy_batch(species, *, cutoff: float, n_structures: int = 2, n_atoms: int = 6, periodic: bool = False,
              box: float = 7.0, seed: int = 0, pad: int = 2, total_charge: float = 0.0) -> AtomsBatch:
    """A batch of small random structures (atoms ≥ 1.2 Å apart), each padded by ``pad`` slots.

    Structure k has ``n_atoms - k % 2`` real atoms, species drawn from ``species``.
    """
    rng = np.random.default_rng(seed)
    n_pad = n_atoms + pad
    pos = np.zeros((n_structures, n_pad, 3))
    spec = -np.ones((n_structures, n_pad), np.int32)
    mask = np.zeros((n_structures, n_pad), bool)
    lists = []
    cell = np.eye(3) * box
    for k in range(n_structures):
        n = n_atoms - k % 2
        pts = []
        while len(pts) < n:
            p = rng.random(3) * (box if periodic else 0.6 * box)
            if all(np.linalg.norm(p - q) > 1.2 for q in pts):
                pts.append(p)
        pos[k, :n] = pts
        spec[k, :n] = rng.integers(0, len(species), n)
        mask[k, :n] = True
        lists.append(neighbor_list(pos[k], cutoff, cell if periodic else None, atom_mask=mask[k]))
    cap = max(nl.capacity for nl in lists)
    nbrs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *[with_capacity(nl, cap) for nl in lists])
    fr = np.where(mask, 0, -1).astype(np.int32)
    return AtomsBatch(positions=jnp.asarray(pos), species=jnp.asarray(spec), atom_mask=jnp.asarray(mask),
                      structure_mask=jnp.ones(n_structures, bool),
                      total_charge=jnp.full(n_structures, float(total_charge)), fragments=jnp.asarray(fr),
                      fragment_charges=jnp.full((n_structures, 1), float(total_charge)), neighbors=nbrs,
                      cell=jnp.asarray(np.broadcast_to(cell, (n_structures, 3, 3))) if periodic else None)


def single_structure_batch(positions, species_index, *, cutoff: float, n_pad: int | None = None, cell=None,
                           total_charge: float = 0.0) -> AtomsBatch:
    """A batch holding one structure (B = 1), padded to ``n_pad`` atom slots."""
    positions = np.asarray(positions, dtype=np.float64)
    n = positions.shape[0]
    n_pad = n if n_pad is None else int(n_pad)
    pos = np.zeros((n_pad, 3))
    pos[:n] = positions
    mask = np.arange(n_pad) < n
    spec = -np.ones(n_pad, np.int32)
    spec[:n] = species_index
    nl = neighbor_list(pos, cutoff, cell, atom_mask=mask)
    nbrs = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], nl)
    return AtomsBatch(positions=jnp.asarray(pos)[None], species=jnp.asarray(spec)[None],
                      atom_mask=jnp.asarray(mask)[None], structure_mask=jnp.ones(1, bool),
                      total_charge=jnp.full(1, float(total_charge)),
                      fragments=jnp.asarray(np.where(mask, 0, -1).astype(np.int32))[None],
                      fragment_charges=jnp.full((1, 1), float(total_charge)), neighbors=nbrs,
                      cell=None if cell is None else jnp.asarray(cell, jnp.float64)[None])


#: kJ/mol per eV (e · N_A / 1000, exact in the SI since 2019)
KJ_MOL_PER_EV = 96.48533212331002


def openmm_tosi_fumi_system(species, cell, *, tolerance: float, cutoff: float = 10.0, barostat=None):
    """The Tosi–Fumi NaCl model of :mod:`jaxlr.md` as an OpenMM ``System`` (the independent reference).

    ``NonbondedForce`` with PME (force group 0; charges ±1, no Lennard-Jones, no switching,
    no dispersion correction) plus the Born–Mayer–Huggins short range as a
    ``CustomNonbondedForce`` with tabulated per-pair parameters (group 1; plain truncation,
    no long-range correction), as ``tosi_fumi_neighbor_list`` + ``coulomb_neighbor_list``
    define it.  OpenMM's units: nm, kJ/mol.

    Args:
      species: (N,) 0 = Na, 1 = Cl.  cell: (3, 3) Å, rows are lattice vectors (OpenMM's
        reduced triclinic form).  tolerance: OpenMM's ``ewaldErrorTolerance``.
      cutoff: real-space cutoff (Å) of both forces.  barostat: an optional OpenMM force
        added last (e.g. ``MonteCarloBarostat``).

    Returns:
      ``openmm.System`` (needs the ``openmm`` package).

    Example:
      >>> # system = openmm_tosi_fumi_system(species, cell, tolerance=1e-6)
    """
    import openmm

    from .md import TOSI_FUMI_NACL as p

    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*(np.asarray(row, float) / 10.0)) for row in cell))
    coulomb = openmm.NonbondedForce()
    coulomb.setNonbondedMethod(openmm.NonbondedForce.PME)
    coulomb.setCutoffDistance(cutoff / 10.0)
    coulomb.setEwaldErrorTolerance(tolerance)
    coulomb.setUseDispersionCorrection(False)
    coulomb.setUseSwitchingFunction(False)
    coulomb.setForceGroup(0)
    short = openmm.CustomNonbondedForce(
        "A*exp((S-r)/rho) - C/r^6 - D/r^8; A=At(t1,t2); S=St(t1,t2); C=Ct(t1,t2); D=Dt(t1,t2)")
    short.addGlobalParameter("rho", p.rho / 10.0)
    for name, table, scale in (("At", p.A, KJ_MOL_PER_EV), ("St", p.sigma, 0.1), ("Ct", p.C, KJ_MOL_PER_EV * 1e-6),
                               ("Dt", p.D, KJ_MOL_PER_EV * 1e-8)):
        values = [float(np.asarray(table)[i, j]) * scale for j in range(2) for i in range(2)]   # x fastest
        short.addTabulatedFunction(name, openmm.Discrete2DFunction(2, 2, values))
    short.addPerParticleParameter("t")
    short.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic)
    short.setCutoffDistance(cutoff / 10.0)
    short.setUseSwitchingFunction(False)
    short.setUseLongRangeCorrection(False)
    short.setForceGroup(1)
    for s in species:
        system.addParticle(p.masses[int(s)])
        coulomb.addParticle(p.charges[int(s)], 0.1, 0.0)
        short.addParticle([float(s)])
    system.addForce(coulomb)
    system.addForce(short)
    if barostat is not None:
        system.addForce(barostat)
    return system
