"""The jittable electrostatics engine: kernels, real space, Ewald and smooth PME.

Pure functions of arrays (positions, charges, cell, widths, smearing traced; method, mesh
and background static): :func:`coulomb_energy` (total energy), :func:`coulomb_terms`
(energy, potentials, forces, stress), :func:`long_range_energy`, the Coulomb matrix and the
s/p Gaussian multipole interactions used by the equilibration solvers.  Custom derivative
rules reuse the mesh potential and pair kernels, and are themselves differentiable.
"""

from ._density_metrics import coulomb_metric, density_esp, density_overlap
from ._energy import coulomb_energy, coulomb_terms, long_range_energy
from ._ewald import ewald_reciprocal_energy, half_space_kvectors, screened_inverse_square, structure_tables
from ._fused import fused_sums
from ._gaussian_multipoles import (
    density_potentials,
    gaussian_kernel,
    interaction_tensor,
    make_pme_matvec,
    multipole_energy,
    multipole_matrix,
    pair_blocks,
    radial_derivatives,
)
from ._kernels import erfc_exp, pair_kernel, pair_kernel_dr, self_kernel
from ._matrix import coulomb_matrix
from ._params import METHODS, CoulombParams
from ._pme import MeshSpec, influence_function, make_reciprocal_energy, pme_reciprocal_energy, spread_charges
from ._realspace import real_space_energy
from ._splines import alias_sum_u, alias_sum_u2, bspline_values, bspline_weights

__all__ = [
    "CoulombParams",
    "METHODS",
    "MeshSpec",
    "alias_sum_u",
    "alias_sum_u2",
    "bspline_values",
    "bspline_weights",
    "coulomb_energy",
    "coulomb_matrix",
    "coulomb_metric",
    "coulomb_terms",
    "density_esp",
    "density_overlap",
    "density_potentials",
    "erfc_exp",
    "ewald_reciprocal_energy",
    "fused_sums",
    "gaussian_kernel",
    "half_space_kvectors",
    "influence_function",
    "interaction_tensor",
    "long_range_energy",
    "make_pme_matvec",
    "make_reciprocal_energy",
    "multipole_energy",
    "multipole_matrix",
    "pair_blocks",
    "pair_kernel",
    "pair_kernel_dr",
    "pme_reciprocal_energy",
    "radial_derivatives",
    "real_space_energy",
    "screened_inverse_square",
    "self_kernel",
    "spread_charges",
    "structure_tables",
]
