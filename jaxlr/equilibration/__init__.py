"""Constrained quadratic solves — charge equilibration and density coefficients — differentiated implicitly.

:func:`qeq_solve` / :func:`qeq_energy` (one charge per atom) and :func:`density_solve`
(an s + p Gaussian basis per atom, :class:`GaussianBasis`), dense Cholesky or matrix-free
PCG with a PME operator, every solve returning its :class:`SolverInfo`;
:func:`project_density` fits the basis to a given density in the Coulomb metric.
"""

from ._density import (
    DensityParams,
    DensityResult,
    GaussianBasis,
    assemble_linear,
    assemble_local,
    density_solve,
    per_atom_widths,
)
from ._density_fit import GaussianDensity, ProjectionResult, fit_density, project_density
from ._precondition import mesh_correction, preconditioner_mesh
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
