"""jaxlr — pure-JAX long-range atomistic machine learning.

Front doors: :func:`coulomb` (energies, potentials, forces, stress of point or Gaussian
charges: open boundary, Ewald, smooth PME) and :func:`qeq` (charge equilibration, dense or
matrix-free, differentiated implicitly; functional layer :func:`qeq_solve` /
:func:`qeq_energy`).  The jittable functional layer beneath it is
:func:`coulomb_energy` / :func:`coulomb_terms` with :class:`Neighbors` lists from
:func:`neighbor_list` (host) or :func:`from_jax_md` (inside jitted MD).
Units: Å, eV, e; ``KE`` = 14.399645 eV·Å/e².  Enable float64 in your scripts with
``jax.config.update("jax_enable_x64", True)`` when you need it; jaxlr never flips it.
"""

from .batch import Batch, pad_batch
from .constraints import SolverInfo, dense_kkt_solve, implicit_solve, solve_dense, solve_pcg, spd_solve
from .coulomb import METHODS, CoulombParams, CoulombResult, coulomb, coulomb_energy, coulomb_terms
from .coulomb_matrix import coulomb_matrix
from . import features, models, train
from .models import AtomsBatch, ModelOutput, Potential, build_potential
from .features import (SphericalExpansion, flatten_invariants, gto_widths, power_spectrum, radial_basis,
                       real_spherical_harmonics, spherical_expansion, spherical_expansion_terms)
from .features.lode import (LodeMultipoles, LodeParams, LodeResult, lode, lode_features, lode_multipoles,
                            multipole_features, tune_lode)
from .density import (DensityResult, GaussianBasis, assemble_linear, assemble_local, density_qeq, density_solve,
                      polarizability)
from .density_fit import GaussianDensity, ProjectionResult, project_density
from .multipoles import make_pme_matvec, multipole_matrix
from .ewald import ewald_reciprocal_energy, half_space_kvectors
from .kernels import pair_kernel, self_kernel
from .neighbors import Neighbors, from_jax_md, neighbor_list
from .qeq import QeqParams, QeqResult, qeq, qeq_energy, qeq_solve
from .pme import MeshSpec, influence_function, make_reciprocal_energy, pme_reciprocal_energy
from .realspace import real_space_energy
from .reuse import clear_tuning_cache
from .tuning import fft_friendly, tune_coulomb
from .units import KE

__version__ = "0.1.0"

__all__ = [
    "AtomsBatch",
    "Batch",
    "CoulombParams",
    "CoulombResult",
    "DensityResult",
    "GaussianBasis",
    "GaussianDensity",
    "KE",
    "LodeMultipoles",
    "LodeParams",
    "LodeResult",
    "METHODS",
    "MeshSpec",
    "ModelOutput",
    "Neighbors",
    "Potential",
    "ProjectionResult",
    "QeqParams",
    "QeqResult",
    "SolverInfo",
    "SphericalExpansion",
    "assemble_linear",
    "assemble_local",
    "build_potential",
    "clear_tuning_cache",
    "coulomb",
    "coulomb_energy",
    "coulomb_matrix",
    "coulomb_terms",
    "dense_kkt_solve",
    "density_qeq",
    "density_solve",
    "ewald_reciprocal_energy",
    "features",
    "fft_friendly",
    "flatten_invariants",
    "from_jax_md",
    "gto_widths",
    "half_space_kvectors",
    "implicit_solve",
    "influence_function",
    "lode",
    "lode_features",
    "lode_multipoles",
    "make_pme_matvec",
    "make_reciprocal_energy",
    "models",
    "multipole_features",
    "multipole_matrix",
    "neighbor_list",
    "pad_batch",
    "pair_kernel",
    "pme_reciprocal_energy",
    "polarizability",
    "power_spectrum",
    "project_density",
    "qeq",
    "qeq_energy",
    "qeq_solve",
    "radial_basis",
    "real_space_energy",
    "real_spherical_harmonics",
    "self_kernel",
    "solve_dense",
    "solve_pcg",
    "spd_solve",
    "spherical_expansion",
    "spherical_expansion_terms",
    "train",
    "tune_coulomb",
    "tune_lode",
]
