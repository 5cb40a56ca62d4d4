"""jax-md integration: jaxlr energies as jax-md energy functions, with jax-md neighbour lists.

Factories in the jax-md idiom (``neighbor_fn, energy_fn``, like
``jax_md.energy.lennard_jones_neighbor_list``), set up once on the host and jittable
afterwards:

* :func:`coulomb_neighbor_list` — fixed (or per-call) point / Gaussian charges, PME or
  Ewald, parameters tuned for a requested accuracy;
* :func:`qeq_neighbor_list` — charges re-equilibrated at every call (PCG with a PME
  operator and the mesh preconditioner), and :func:`qeq_nve`, a velocity-Verlet NVE that
  carries the charges in its state with a time-reversible extended-Lagrangian warm start;
* :func:`potential_neighbor_list` — any trained :class:`jaxlr.models.Potential`;
* :func:`tosi_fumi_neighbor_list` — the Tosi–Fumi short range of molten NaCl, with
  :func:`molten_nacl` (a starting box) and :data:`NACL_QEQ` (a toy Qeq variant);
* :func:`run_md` — a driver (what ``jaxlr md`` runs): NVE, NVT or NPT from ``ase.Atoms``
  and a built-in or trained model, in jitted chunks with the overflow loop, writing
  thermo.csv, trajectory.extxyz, restart.npz and plots;
* :func:`energy_drift` — a run's energy drift per atom with a standard error that accounts
  for the correlation of MD energies.

Conventions (module :mod:`jaxlr.md._space`): jax-md's box holds the lattice vectors as
columns (jaxlr's cell is ``box.T``); positions are fractional when the space is
(``space.periodic_general(box)``'s default); only ``Dense`` neighbour lists; an overflowed
list raises when the energy is called eagerly, and inside ``jit`` its
``did_buffer_overflow`` flag must be checked by the loop (reallocate, then redo the steps).
jax-md and flax are imported inside the functions, so ``import jaxlr.md`` stays light.
"""

from ._coulomb import CoulombEnergy, coulomb_neighbor_list
from ._drift import EnergyDrift, energy_drift, statistical_inefficiency
from ._potential import PotentialEnergy, potential_neighbor_list
from ._qeq import XL_COEFFICIENTS, QeqEnergy, QeqNVEState, qeq_neighbor_list, qeq_nve
from ._run import MDResult, run_md
from ._space import box_matrix, cell_from_box
from ._tosi_fumi import (
    NACL_QEQ,
    TOSI_FUMI_NACL,
    NaClQeqParams,
    TosiFumiEnergy,
    TosiFumiParams,
    molten_nacl,
    tosi_fumi_neighbor_list,
    tosi_fumi_pair,
)

__all__ = [
    "XL_COEFFICIENTS",
    "CoulombEnergy",
    "EnergyDrift",
    "MDResult",
    "PotentialEnergy",
    "QeqEnergy",
    "QeqNVEState",
    "box_matrix",
    "cell_from_box",
    "coulomb_neighbor_list",
    "energy_drift",
    "potential_neighbor_list",
    "qeq_neighbor_list",
    "qeq_nve",
    "run_md",
    "statistical_inefficiency",
    # molten NaCl (Tosi–Fumi)
    "NACL_QEQ",
    "TOSI_FUMI_NACL",
    "NaClQeqParams",
    "TosiFumiEnergy",
    "TosiFumiParams",
    "molten_nacl",
    "tosi_fumi_neighbor_list",
    "tosi_fumi_pair",
]
