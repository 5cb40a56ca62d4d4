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


def ridge_fit(A, y, log_lambda, *, weights=None, derivative_rows=None, derivative_targets=None,
              derivative_weights=None):
    """Ridge weights for standardised columns of ``A`` (jittable, implicit derivatives).

    Optional derivative rows (e.g. force rows −∂features/∂R with force targets) join the
    same least-squares problem: they are scaled by the same column scales but not centred,
    and have no offset (a derivative of a constant vanishes).  The offset and the column
    means and scales come from the value rows alone, so the intercept stays the weighted
    mean of ``y`` (it decouples exactly from θ because the value rows are centred).

    Args:
      A: (K, D) design matrix.  y: (K,) targets.
      log_lambda: () natural log of the relative regulariser λ (λ′ = λ tr(XᵀWX)/D, the
        trace over every weighted row, derivative rows included).
      weights: (K,) non-negative row weights (0 leaves a row out), or None.
      derivative_rows: (K′, D) rows of derivatives of the design, or None.
      derivative_targets: (K′,) their targets.  derivative_weights: (K′,) non-negative
        weights (default 1).

    Returns:
      ``(theta (D,), mean (D,), scale (D,), offset ())``: predictions are
      ``((A − mean) / scale) @ theta + offset`` for values and
      ``(derivative_rows / scale) @ theta`` for derivatives.

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
    if derivative_rows is not None:
        G = jnp.asarray(derivative_rows, A.dtype)
        wg = (jnp.ones(G.shape[0], A.dtype) if derivative_weights is None
              else jnp.asarray(derivative_weights, A.dtype))
        X = jnp.concatenate([X, G / scale])
        r = jnp.concatenate([r, jnp.asarray(derivative_targets, A.dtype)])
        w = jnp.concatenate([w, wg])
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


def kfold_cv_error(A, y, log_lambda, fold_ids, *, derivative_rows=None, derivative_targets=None,
                   derivative_fold_ids=None, derivative_weight: float = 1.0, parts: bool = False):
    """Root mean square k-fold cross-validation error of ridge regression (jittable).

    Each fold is predicted by the ridge model fitted on the other folds (all with the same
    λ); the error is the RMS over all held-out predictions.  With derivative rows (force
    rows −∂features/∂R and force targets) the fit minimises
    ``Σ_values Δ² + c² Σ_derivatives Δ²`` with ``c = derivative_weight · √(K_v / K_d)``
    (K_v, K_d: the cross-validation rows of each kind, so each kind weighs as its mean
    square error), and the error is ``√(MSE_values + derivative_weight² · MSE_derivatives)``
    over the held-out rows.

    Args:
      A: (K, D) design.  y: (K,) targets.  log_lambda: () log relative regulariser.
      fold_ids: (K,) integer fold labels (static numpy; :func:`kfold_indices`), −1 for
        rows that are never used (neither fitted nor scored).
      derivative_rows: (K′, D) derivative rows, or None.  derivative_targets: (K′,).
      derivative_fold_ids: (K′,) static fold labels of the derivative rows (−1: unused).
      derivative_weight: relative weight of the derivative error (e.g. Å, so that a
        force error in eV/Å weighs as an energy error in eV).
      parts: also return the RMS errors of the values and of the derivatives.

    Returns:
      () RMS error in the units of y; with ``parts``, ``(error, value_rmse, derivative_rmse)``.

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
    with_d = derivative_rows is not None
    if with_d:
        G = jnp.asarray(derivative_rows, A.dtype)
        yd = jnp.asarray(derivative_targets, A.dtype)
        dfold = np.asarray(derivative_fold_ids)
        if dfold.shape != (G.shape[0],) or yd.shape != (G.shape[0],):
            raise ValueError(f"derivative rows {G.shape}, targets {yd.shape} and fold ids {dfold.shape} must agree.")
        n_v, n_d = int((fold_ids >= 0).sum()), int((dfold >= 0).sum())
        c2 = float(derivative_weight) ** 2 * n_v / max(n_d, 1)
    sq, count, sq_d, count_d = 0.0, 0, 0.0, 0
    for f in folds:
        train = jnp.asarray((fold_ids >= 0) & (fold_ids != f), A.dtype)
        test = fold_ids == f
        extra = {}
        if with_d:
            extra = dict(derivative_rows=G, derivative_targets=yd,
                         derivative_weights=jnp.asarray(c2 * ((dfold >= 0) & (dfold != f)), A.dtype))
        theta, mean, scale, offset = ridge_fit(A, y, log_lambda, weights=train, **extra)
        pred = ((A[test] - mean) / scale) @ theta + offset
        sq = sq + jnp.sum((pred - y[test]) ** 2)
        count += int(test.sum())
        if with_d and (dfold == f).any():
            dtest = dfold == f
            sq_d = sq_d + jnp.sum(((G[dtest] / scale) @ theta - yd[dtest]) ** 2)
            count_d += int(dtest.sum())
    mse = sq / count
    mse_d = sq_d / max(count_d, 1)
    err = jnp.sqrt(mse + float(derivative_weight) ** 2 * mse_d) if with_d and count_d else jnp.sqrt(mse)
    if parts:
        return err, jnp.sqrt(mse), jnp.sqrt(jnp.asarray(mse_d, A.dtype))
    return err
