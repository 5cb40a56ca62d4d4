"""Host error models, parameter choice and explicit plans (numpy only, never jitted).

:func:`tune_coulomb` picks smearing, cutoff, mesh and spline order (or k-cutoff) of least
estimated cost for a requested accuracy; :func:`tune_lode` and :func:`tune_density` do the
same for LODE features and density solves; :func:`plan_coulomb` / :func:`plan_qeq` return
an immutable :class:`CoulombPlan` that a moving system carries along (``plan.update``).
"""

from ._coulomb import (
    ORDERS,
    PME_ERROR_FIT,
    ewald_kspace_error,
    force_scale,
    pme_mesh_error,
    real_space_error,
    tune_coulomb,
)
from ._density import tune_density
from ._lode import basis_extent, multipole_pme_error, tune_lode
from ._lode_error import DIRECTIONS, K_NODES, LATTICE_TERMS, LodeErrorModel
from ._plan import CAPACITY_SLACK, CoulombPlan, check_plan, choose_solver, plan_coulomb, plan_qeq

__all__ = [
    "DIRECTIONS",
    "K_NODES",
    "LATTICE_TERMS",
    "LodeErrorModel",
    "ORDERS",
    "PME_ERROR_FIT",
    "basis_extent",
    "CAPACITY_SLACK",
    "CoulombPlan",
    "check_plan",
    "choose_solver",
    "plan_coulomb",
    "plan_qeq",
    "ewald_kspace_error",
    "force_scale",
    "multipole_pme_error",
    "pme_mesh_error",
    "real_space_error",
    "tune_coulomb",
    "tune_density",
    "tune_lode",
]
