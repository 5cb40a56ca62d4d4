"""TODO"""

from ._coulomb import ORDERS, PME_ERROR_FIT, force_scale, real_space_error, ewald_kspace_error, pme_mesh_error, tune_coulomb
from ._density import tune_density
from ._lode import multipole_pme_error, basis_extent, tune_lode
from ._lode_error import LodeErrorModel, K_NODES, DIRECTIONS, LATTICE_TERMS
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
