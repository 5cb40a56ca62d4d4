"""jaxlr — pure-JAX long-range atomistic machine learning.

Front doors: :func:`coulomb` (energies, potentials, forces, stress of point or Gaussian
charges: open boundary, Ewald, smooth PME).  The jittable functional layer beneath it is
:func:`coulomb_energy` / :func:`coulomb_terms` with :class:`Neighbors` lists from
:func:`neighbor_list` (host) or :func:`from_jax_md` (inside jitted MD).
Units: Å, eV, e; ``KE`` = 14.399645 eV·Å/e².  Enable float64 in your scripts with
``jax.config.update("jax_enable_x64", True)`` when you need it; jaxlr never flips it.
"""

from .batch import Batch, pad_batch
from .coulomb import METHODS, CoulombParams, CoulombResult, coulomb, coulomb_energy, coulomb_terms
from .ewald import ewald_reciprocal_energy, half_space_kvectors
from .kernels import pair_kernel, self_kernel
from .neighbors import Neighbors, from_jax_md, neighbor_list
from .pme import MeshSpec, influence_function, make_reciprocal_energy, pme_reciprocal_energy
from .realspace import real_space_energy
from .tuning import fft_friendly, tune_coulomb
from .units import KE

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "KE",
    "METHODS",
    "CoulombParams",
    "CoulombResult",
    "MeshSpec",
    "Neighbors",
    "coulomb",
    "coulomb_energy",
    "coulomb_terms",
    "ewald_reciprocal_energy",
    "fft_friendly",
    "from_jax_md",
    "half_space_kvectors",
    "influence_function",
    "make_reciprocal_energy",
    "neighbor_list",
    "pad_batch",
    "pair_kernel",
    "pme_reciprocal_energy",
    "real_space_energy",
    "self_kernel",
    "tune_coulomb",
]
