"""Local and long-range atom-centred features.

* :mod:`~jaxlr.features` — real spherical/solid harmonics (l = 0..L,
  m = −l..l, no Condon–Shortley phase) and real Wigner matrices.
* :mod:`~jaxlr.features` — orthonormal GTO radial basis on [0, r_c].
* :mod:`~jaxlr.features` — spherical expansion of the Gaussian neighbour
  density (SOAP density): front door :func:`spherical_expansion`, jittable core
  :func:`spherical_expansion_terms`.
* :mod:`~jaxlr.features` — power spectra (SOAP and multi-scale ρ⊗V).
"""

from ._harmonics import lm_index, n_harmonics, real_spherical_harmonics, solid_harmonics, wigner_d_real
from ._invariants import flatten_invariants, power_spectrum
from ._lode import LODE_METHODS, LodeMultipoles, LodeParams, LodeResult, lode_features, multipole_features
from ._lode_table import direct_table_size
from ._radial import gto_widths, radial_basis, radial_quadrature, radial_transform
from ._spherical import (
    SphericalExpansion,
    cutoff_function,
    scaled_modified_spherical_bessel,
    spherical_expansion,
    spherical_expansion_terms,
)

__all__ = [
    "LODE_METHODS",
    "LodeMultipoles",
    "LodeParams",
    "LodeResult",
    "lode_features",
    "multipole_features",
    "direct_table_size",
    "SphericalExpansion",
    "cutoff_function",
    "flatten_invariants",
    "gto_widths",
    "lm_index",
    "n_harmonics",
    "power_spectrum",
    "radial_basis",
    "radial_quadrature",
    "radial_transform",
    "real_spherical_harmonics",
    "scaled_modified_spherical_bessel",
    "solid_harmonics",
    "spherical_expansion",
    "spherical_expansion_terms",
    "wigner_d_real",
]
