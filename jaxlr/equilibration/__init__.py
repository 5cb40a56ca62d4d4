"""TODO"""

from ._density import GaussianBasis, assemble_local, assemble_linear, DensityParams, DensityResult, density_solve, per_atom_widths
from ._density_fit import GaussianDensity, ProjectionResult, fit_density, project_density
from ._precondition import preconditioner_mesh, mesh_correction
from ._qeq import SOLVERS, QeqParams, QeqSolution, qeq_energy, qeq_solve
from ._solvers import SolverInfo, dense_kkt_solve, implicit_solve, kkt_matvec, solve_dense, solve_pcg, spd_solve

__all__ = [
    "DensityParams",
    "DensityResult",
    "GaussianBasis",
    "GaussianDensity",
    "ProjectionResult",
    "QeqParams",
    "QeqSolution",
    "SOLVERS",
    "SolverInfo",
    "assemble_linear",
    "assemble_local",
    "dense_kkt_solve",
    "density_solve",
    "fit_density",
    "implicit_solve",
    "kkt_matvec",
    "mesh_correction",
    "per_atom_widths",
    "preconditioner_mesh",
    "project_density",
    "qeq_energy",
    "qeq_solve",
    "solve_dense",
    "solve_pcg",
    "spd_solve",
]
