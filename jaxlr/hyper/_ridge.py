"""Closed-form ridge regression and its k-fold cross-validation error, differentiable in the design.

The ridge weights θ = argmin ‖Aθ − y‖² + λ′‖θ‖² solve (AᵀA + λ′I) θ = Aᵀy — or, when there
are more features than rows, the equivalent dual system with the K × K matrix AAᵀ + λ′I
(θ = Aᵀ(AAᵀ + λ′I)⁻¹y), whichever is smaller.  The solve goes through
``jax.lax.custom_linear_solve`` with a Cholesky factorisation, so derivatives with
respect to the design matrix A (and so to every hyperparameter the features depend on),
to y and to λ are implicit — one more triangular solve with the same factor per
derivative — never an unrolled iteration.

Conditioning: the regulariser is relative, λ′ = λ · tr(AᵀA)/D (λ does not depend on the
units or the number of features), and is floored at :data:`LAMBDA_FLOOR` · tr(AᵀA)/D, so
the normal matrix stays positive definite (its condition number ≤ 1 + D/λ_floor) however
collinear the features are; columns are centred and scaled by their root mean square
over the training rows before the fit, with a variance floor (:data:`SCALE_FLOOR` × the
mean column variance) so that columns constant up to rounding are not amplified (the
scale is part of the differentiable program).
All of this runs in the dtype of A: use float64 for hyperparameter studies.  Do not
``jax.vmap`` the solve over hyperparameters on CPU: batched LAPACK calls there can
dead-lock (see the README's note on vmapped dense solves); loop instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LAMBDA_FLOOR", "SCALE_FLOOR", "kfold_cv_error", "kfold_indices", "ridge_fit"]

#: smallest relative regulariser (λ′ ≥ this × tr(AᵀA)/D)
LAMBDA_FLOOR = 1e-12
#: column variances are floored at this × their mean before scaling
SCALE_FLOOR = 1e-6


def ridge_fit(A, y, log_lambda, *, weights=None):
    """Ridge weights for standardised columns of ``A`` (jittable, implicit derivatives).

    Args:
      A: (K, D) design matrix.  y: (K,) targets.
      log_lambda: () natural log of the relative regulariser λ (λ′ = λ tr(AᵀA)/D).
      weights: (K,) non-negative row weights (0 leaves a row out), or None.

    Returns:
      ``(theta (D,), mean (D,), scale (D,), offset ())``: predictions are
      ``((A − mean) / scale) @ theta + offset``.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
      >>> theta, mean, scale, off = ridge_fit(A, A @ jnp.array([2.0, -1.0]) + 0.5, jnp.log(1e-10))
      >>> [round(float(v), 5) for v in ((A - mean) / scale @ theta + off)]
      [2.5, -0.5, 1.5, 3.5]
    """
    A = jnp.asarray(A)
    y = jnp.asarray(y, A.dtype)
    w = jnp.ones(A.shape[0], A.dtype) if weights is None else jnp.asarray(weights, A.dtype)
    total = jnp.sum(w)
    mean = (w @ A) / total
    centred = A - mean
    var = (w @ centred**2) / total
    # columns are scaled by √(var + floor): a (nearly) constant column — its spread at the
    # rounding level — is not blown up to unit variance, where its noise would dominate
    floor = SCALE_FLOOR * jnp.mean(var)
    floor = jnp.where(floor > 0, floor, 1.0)
    scale = jnp.sqrt(var + floor)
    X = centred / scale
    offset = (w @ y) / total
    r = y - offset
    d = X.shape[1]
    level = jnp.sum(w @ X**2) / d                        # tr(XᵀWX)/D
    lam = jnp.maximum(jnp.exp(log_lambda), LAMBDA_FLOOR) * level

    def cholesky_solve(matrix, rhs):
        def matvec(v):
            return matrix @ v

        def solve(_, b):
            factor = jax.scipy.linalg.cho_factor(jax.lax.stop_gradient(matrix))
            return jax.scipy.linalg.cho_solve(factor, b)

        return jax.lax.custom_linear_solve(matvec, rhs, solve, symmetric=True)

    if d <= X.shape[0]:       # primal: (XᵀWX + λ′I) θ = XᵀW r, a D × D factorisation
        theta = cholesky_solve(X.T @ (w[:, None] * X) + lam * jnp.eye(d, dtype=A.dtype), X.T @ (w * r))
    else:                     # dual: θ = XᵀW^½ (W^½XXᵀW^½ + λ′I)⁻¹ W^½ r, a K × K factorisation
        sw = jnp.sqrt(w)
        Xw = sw[:, None] * X
        theta = Xw.T @ cholesky_solve(Xw @ Xw.T + lam * jnp.eye(X.shape[0], dtype=A.dtype), sw * r)
    return theta, mean, scale, offset


def kfold_indices(n: int, folds: int, *, seed: int = 0) -> np.ndarray:
    """(n,) fold labels 0 … folds−1, balanced and shuffled with ``seed`` (host).

    Raises:
      ValueError: ``folds`` < 2 or larger than ``n``.

    Example:
      >>> sorted(np.bincount(kfold_indices(10, 3)).tolist())
      [3, 3, 4]
    """
    if isinstance(folds, bool) or int(folds) != folds or folds < 2:
        raise ValueError(f"folds must be an integer ≥ 2, got {folds!r}.")
    if folds > n:
        raise ValueError(f"folds={folds} is larger than the number of data rows ({n}); use at most {n}.")
    labels = np.arange(n) % int(folds)
    return np.random.default_rng(seed).permutation(labels).astype(np.int32)


def kfold_cv_error(A, y, log_lambda, fold_ids):
    """Root mean square k-fold cross-validation error of ridge regression (jittable).

    Each fold is predicted by the ridge model fitted on the other folds (all with the same
    λ); the error is the RMS over all held-out predictions.

    Args:
      A: (K, D) design.  y: (K,) targets.  log_lambda: () log relative regulariser.
      fold_ids: (K,) integer fold labels (static numpy; :func:`kfold_indices`), −1 for
        rows that are never used (neither fitted nor scored).

    Returns:
      () RMS error in the units of y.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.asarray(np.random.default_rng(0).normal(size=(20, 3)))
      >>> y = A @ jnp.array([1.0, -2.0, 0.5])
      >>> float(kfold_cv_error(A, y, jnp.log(1e-10), kfold_indices(20, 4))) < 1e-6
      True
    """
    fold_ids = np.asarray(fold_ids)
    folds = sorted(int(f) for f in np.unique(fold_ids) if f >= 0)
    A = jnp.asarray(A)
    y = jnp.asarray(y, A.dtype)
    sq, count = 0.0, 0
    for f in folds:
        train = jnp.asarray((fold_ids >= 0) & (fold_ids != f), A.dtype)
        test = fold_ids == f
        theta, mean, scale, offset = ridge_fit(A, y, log_lambda, weights=train)
        pred = ((A[test] - mean) / scale) @ theta + offset
        sq = sq + jnp.sum((pred - y[test]) ** 2)
        count += int(test.sum())
    return jnp.sqrt(sq / count)
