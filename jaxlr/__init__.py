"""jaxlr — pure-JAX long-range atomistic machine learning.

The package is layered; ``ls jaxlr/`` shows the layers (README, "Architecture"):

* :mod:`jaxlr.system` — host preparation (numpy, eager): input checks, cell geometry,
  neighbour lists;
* :mod:`jaxlr.electrostatics` — the jittable engine: kernels, real space, Ewald, smooth PME;
* :mod:`jaxlr.equilibration` — constrained quadratic solves: Qeq and density coefficients,
  differentiated implicitly;
* :mod:`jaxlr.features` — local (SOAP-like) and long-range (LODE) descriptors;
* :mod:`jaxlr.tuning` — host error models, parameter choice and explicit plans;
* the front doors below (eager: validate → plan → jitted core → result);
* :mod:`jaxlr.data`, :mod:`jaxlr.models` (flax), :mod:`jaxlr.train` (optax) and
  :mod:`jaxlr.cli` — loaded only when imported (``import jaxlr`` loads no flax or optax).

Front doors: :func:`coulomb` (energies, potentials, forces, stress of point or Gaussian
charges), :func:`qeq` (charge equilibration), :func:`density_qeq` (density coefficients),
:func:`lode` / :func:`lode_multipoles` and :func:`spherical_expansion` (features).  The
jittable functional layer beneath them: :func:`coulomb_energy`, :func:`coulomb_terms`,
:func:`qeq_solve`, :func:`qeq_energy`, :func:`density_solve`, :func:`lode_features`,
:func:`spherical_expansion_terms`, with :class:`Neighbors` lists from
:func:`neighbor_list`.  Units: Å, eV, e; ``KE`` = Hartree·Bohr = 14.399645351950548
eV·Å/e².  Enable float64 in your scripts with ``jax.config.update("jax_enable_x64",
True)`` when you need it; jaxlr never flips it.
"""

from ._api.coulomb import CoulombResult as CoulombResult
from ._api.coulomb import coulomb as coulomb
from ._api.density import density_qeq as density_qeq
from ._api.density import polarizability as polarizability
from ._api.lode import lode as lode
from ._api.lode import lode_multipoles as lode_multipoles
from ._api.qeq import QeqResult as QeqResult
from ._api.qeq import qeq as qeq
from ._version import version as __version__
from .electrostatics import CoulombParams as CoulombParams
from .electrostatics import MeshSpec as MeshSpec
from .electrostatics import coulomb_energy as coulomb_energy
from .electrostatics import coulomb_terms as coulomb_terms
from .equilibration import DensityParams as DensityParams
from .equilibration import DensityResult as DensityResult
from .equilibration import GaussianBasis as GaussianBasis
from .equilibration import QeqParams as QeqParams
from .equilibration import SolverInfo as SolverInfo
from .equilibration import density_solve as density_solve
from .equilibration import project_density as project_density
from .equilibration import qeq_energy as qeq_energy
from .equilibration import qeq_solve as qeq_solve
from .features import LodeMultipoles as LodeMultipoles
from .features import LodeParams as LodeParams
from .features import LodeResult as LodeResult
from .features import SphericalExpansion as SphericalExpansion
from .features import lode_features as lode_features
from .features import spherical_expansion as spherical_expansion
from .features import spherical_expansion_terms as spherical_expansion_terms
from .system import Neighbors as Neighbors
from .system import neighbor_list as neighbor_list
from .tuning import tune_coulomb as tune_coulomb
from .units import KE as KE

#: subpackages loaded on first attribute access (they import flax, optax, ASE, …)
_LAZY = ("data", "models", "train", "cli", "testing", "md", "ase", "hyper", "parallel")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'jaxlr' has no attribute {name!r}")


__all__ = [
    "__version__",
    "KE",
    "CoulombParams",
    "CoulombResult",
    "DensityParams",
    "DensityResult",
    "GaussianBasis",
    "LodeMultipoles",
    "LodeParams",
    "LodeResult",
    "MeshSpec",
    "Neighbors",
    "QeqParams",
    "QeqResult",
    "SolverInfo",
    "SphericalExpansion",
    "coulomb",
    "coulomb_energy",
    "coulomb_terms",
    "density_qeq",
    "density_solve",
    "lode",
    "lode_features",
    "lode_multipoles",
    "neighbor_list",
    "polarizability",
    "project_density",
    "qeq",
    "qeq_energy",
    "qeq_solve",
    "spherical_expansion",
    "spherical_expansion_terms",
    "tune_coulomb",
]
