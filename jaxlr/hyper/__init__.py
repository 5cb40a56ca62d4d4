"""Gradient-based hyperparameter studies: validation losses differentiated through features and solves.

A study is a pure function ``loss(hyper, data) -> scalar`` (jittable, differentiable in
``hyper``) and an optimiser over it:

* :func:`ridge_cv_loss` — k-fold cross-validation RMSE of a closed-form ridge model on
  LODE ⊕ ρ⊗V (or local) features — energies, and forces when asked for
  (``ridge_data(..., force_weight=w)``) — differentiable in σ_L, the density widths, the
  GTO radial widths, the cutoff switch's smoothness and the log-regulariser; data from
  :func:`ridge_data` (the features of real atoms and pairs only, :func:`flat_features`);
* :func:`qeq_loss` — the error of charge-equilibration charges or dipoles, differentiable
  in per-species hardness, Gaussian widths and electronegativities; data from
  :func:`qeq_data` (the structures' fragments, e.g. every molecule neutral, are the
  solve's constraints; without them only the total charge);
* :func:`density_loss` — the same for the multipolar (s + p Gaussian) charge
  equilibration of the density model with per-species parameters only: the error of the
  density in the Coulomb metric (eV/atom), of dipoles or of charges, differentiable in
  the s and p basis widths, a positive diagonal hardness per shell and the s linear terms
  (``s_widths``, ``p_widths``, ``shell_hardness``, ``linear``); data from
  :func:`density_data` (reference coefficients less a fixed neutral promolecule),
  all errors at once from :func:`density_errors`, the densities from
  :func:`density_predictions`;
* :func:`optimize` — Adam (optax) on log-parameters with early stopping (the
  :class:`HyperTrajectory` says why a run stopped);
  :func:`grid_search` — the same loss on a grid, to compare;
* :func:`run_study` / ``jaxlr tune-hyper CONFIG`` — a study from a TOML file
  (:data:`STUDY_FORMAT`), writing the trajectory and a plot.

Ridge, Qeq and density solves are differentiated implicitly (``custom_linear_solve``),
never by unrolling.  Static choices — cutoffs (they fix neighbour capacities), basis
sizes (the number of functions per species), species, folds, constraints, solvers — are
not differentiable.
"""

from ._density_loss import (
                            DENSITY_HYPER,
                            DENSITY_TARGETS,
                            DensityData,
                            density_data,
                            density_errors,
                            density_loss,
                            density_predictions,
)
from ._features import FEATURE_KINDS, FeatureSpec, FlatStructures, flat_features, flatten_structures, structure_features
from ._loss import (
                    HYPER_DOMAINS,
                    QEQ_TARGETS,
                    QeqData,
                    RidgeData,
                    check_hyper,
                    qeq_data,
                    qeq_loss,
                    ridge_cv_errors,
                    ridge_cv_loss,
                    ridge_data,
                    ridge_predictions,
)
from ._optimize import UNCONSTRAINED, HyperTrajectory, grid_search, optimize
from ._ridge import LAMBDA_FLOOR, SCALE_FLOOR, kfold_cv_error, kfold_indices, ridge_fit
from ._study import STUDY_FORMAT, run_study, study_problem

__all__ = [
    "DENSITY_HYPER",
    "DENSITY_TARGETS",
    "FEATURE_KINDS",
    "HYPER_DOMAINS",
    "LAMBDA_FLOOR",
    "QEQ_TARGETS",
    "SCALE_FLOOR",
    "STUDY_FORMAT",
    "UNCONSTRAINED",
    "DensityData",
    "FeatureSpec",
    "FlatStructures",
    "HyperTrajectory",
    "QeqData",
    "RidgeData",
    "check_hyper",
    "density_data",
    "density_errors",
    "density_loss",
    "density_predictions",
    "flat_features",
    "flatten_structures",
    "grid_search",
    "kfold_cv_error",
    "kfold_indices",
    "optimize",
    "qeq_data",
    "qeq_loss",
    "ridge_cv_errors",
    "ridge_cv_loss",
    "ridge_data",
    "ridge_fit",
    "ridge_predictions",
    "run_study",
    "structure_features",
    "study_problem",
]
