"""The front doors (eager): validate → plan → jitted core → result.  Re-exported by :mod:`jaxlr`."""

from .coulomb import CoulombResult, coulomb
from .density import density_qeq, polarizability
from .lode import lode, lode_multipoles
from .qeq import QeqResult, qeq

__all__ = [
    "CoulombResult",
    "QeqResult",
    "coulomb",
    "density_qeq",
    "lode",
    "lode_multipoles",
    "polarizability",
    "qeq",
]
