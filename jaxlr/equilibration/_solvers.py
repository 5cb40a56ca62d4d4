"""Equality-constrained quadratic minimisation: the linear algebra under charge equilibration.

Both charge equilibration (:mod:`jaxlr.equilibration`) and its multipolar generalisation
(:mod:`jaxlr.equilibration`) minimise a quadratic

    E(x) = ½ xᵀ A x − bᵀ x     subject to   Bᵀ x = c,

with A (n, n) symmetric and positive definite on the null space of Bᵀ, B (n, m) the
constraint matrix (one column per fragment, m ≪ n) and c (m,) the constrained totals.
The stationarity (KKT) conditions are

    A x − b = B λ,      Bᵀ x = c,

and the Lagrange multipliers λ are the fragments' chemical potentials ∂E*/∂c.

This module holds two solvers of that system, both plain jittable functions of arrays:

* :func:`solve_dense` — Cholesky factorisation of the shifted matrix A + α B Bᵀ (which
  has the same constrained minimiser and is positive definite for α > 0 whenever A is
  positive definite on null(Bᵀ)) and an m × m Schur complement for λ.  O(n³).
* :func:`solve_pcg` — matrix-free projected preconditioned conjugate gradients: iterates
  stay on the constraint set, the preconditioner M (a positive diagonal, plus an optional
  correction) is projected in the M⁻¹ metric so that it keeps them there.  Each iteration
  costs one ``matvec``.  Convergence is judged on the projected residual
  ``‖A x − b − B λ‖`` relative to its value at the starting point of the constraint set.

Neither is differentiated directly: :func:`implicit_solve` wraps them in
``jax.lax.custom_linear_solve`` so that derivatives follow by the implicit function
theorem (one more solve of the same system), never by unrolling iterations
(:func:`solve_dense` is the wrapped :func:`dense_kkt_solve`).  The dense factorisations run
one system at a time under ``vmap``: batched LAPACK calls on the CPU can deadlock XLA's
thread pool when two of them run at once.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_batching import sequential_vmap

__all__ = ["SolverStatus", "SolverInfo", "dense_kkt_solve", "implicit_solve", "kkt_matvec", "solve_dense", "solve_pcg",
           "spd_solve"]


class SolverInfo(NamedTuple):
    """Status of a constrained solve (a pytree of arrays).

    Attributes:
      converged: () bool.  For the dense solver: the factorisation was finite (False
        means A is not positive definite on the constraint space).
      iterations: () int32, matvecs spent by the iterative solver (0 for dense).
      residual: () relative projected residual ‖A x − b − B λ‖ / reference.
    """

    converged: jax.Array
    iterations: jax.Array
    residual: jax.Array


class SolverStatus:
    """Mixin of result types that carry ``info: SolverInfo``: ``.converged``, ``.residual``
    and ``.iterations`` read through to it."""

    @property
    def converged(self) -> jax.Array:
        return self.info.converged

    @property
    def residual(self) -> jax.Array:
        return self.info.residual

    @property
    def iterations(self) -> jax.Array:
        return self.info.iterations


def kkt_matvec(matvec: Callable, B):
    """Symmetric (indefinite) KKT operator on stacked vectors ``y = [x; μ]`` (n + m,).

    ``y ↦ [A x + B μ; Bᵀ x]``.  With ``μ = −λ`` the constrained problem reads
    ``K y = [b; c]``; this is the operator handed to ``jax.lax.custom_linear_solve``
    (``symmetric=True``).  Stacking into one array (rather than a tuple) keeps the
    right-hand side a single linear input, which reverse-mode transposition requires.
    """
    n = B.shape[0]

    def op(y):
        x, mu = y[:n], y[n:]
        return jnp.concatenate([matvec(x) + B @ mu, B.T @ x])

    return op


def _empty_columns(B):
    """diag(1) on constraints that act on no variable (empty fragments of a padded batch).

    Such a constraint reads 0 = c_f; with this shift its multiplier is c_f (0 for an empty
    fragment of total 0) instead of a singular m × m system.
    """
    return jnp.diag((jnp.sum(B * B, axis=0) == 0).astype(B.dtype))


def _dense_kkt(A, b, B, c):
    """The Cholesky solve of :func:`solve_dense` for one system (not differentiable in reverse mode)."""
    n = A.shape[0]
    # shift by α B Bᵀ: same minimiser on the constraint set, and positive definite
    # although A itself may not be (periodic Coulomb matrices are only definite on
    # neutral charge vectors); α on the scale of A keeps the conditioning
    alpha = jnp.maximum(jnp.trace(A) / n, jnp.finfo(A.dtype).tiny)
    chol = jnp.linalg.cholesky(A + alpha * (B @ B.T))
    # one triangular solve pair for b and the constraint columns together
    sol = jax.scipy.linalg.cho_solve((chol, True), jnp.concatenate([(b + alpha * (B @ c))[:, None], B], axis=1))
    y0, Y = sol[:, 0], sol[:, 1:]
    schur = B.T @ Y + _empty_columns(B)
    lam = jnp.linalg.solve(schur, c - B.T @ y0)
    x = y0 + Y @ lam
    ok = jnp.all(jnp.isfinite(chol))
    res = _relative_residual(A @ x - b - B @ lam, b, A @ x)
    return x, lam, SolverInfo(converged=ok, iterations=jnp.zeros((), jnp.int32), residual=res)


# Batched LAPACK calls on the CPU split large batches over XLA's intra-op thread pool and
# block a pool thread until the pieces finish; two such calls running at once (independent
# solves of one program, or consecutive programs under asynchronous dispatch) can block
# every pool thread and hang the process (seen on a 2-core machine during training).
# Looping over the batch keeps every LAPACK call unbatched, so it runs inline on its thread.
_dense_kkt_sequential = sequential_vmap(_dense_kkt)


def dense_kkt_solve(A, b, B, c):
    """Solve one constrained problem by Cholesky factorisation: the solver of :func:`solve_dense`.

    Same arguments and returns as :func:`solve_dense`.  Use it as the ``solver`` of
    :func:`implicit_solve`, which supplies the derivatives: it runs forward and under
    ``vmap`` (one system after another: batched LAPACK calls can deadlock XLA's CPU thread
    pool) but is not differentiable in reverse mode by itself.

    Example:
      >>> import jax.numpy as jnp
      >>> x, lam, info = dense_kkt_solve(2.0 * jnp.eye(2), jnp.array([1.0, -1.0]), jnp.ones((2, 1)), jnp.zeros(1))
      >>> [round(float(v), 6) for v in x]
      [0.5, -0.5]
    """
    return _dense_kkt_sequential(A, b, B, c)


def solve_dense(A, b, B, c):
    """Exact solution of the constrained quadratic problem by Cholesky factorisation.

    Args:
      A: (n, n) symmetric, positive definite on null(Bᵀ).
      b: (n,) linear term (E = ½xᵀAx − bᵀx).
      B: (n, m) constraint matrix.  c: (m,) constrained totals (Bᵀx = c).

    Returns:
      ``(x (n,), lam (m,), info)`` with ``A x − b = B lam``; ``info.converged`` is False
      when the factorisation failed (A indefinite on the constraint space).  Derivatives
      with respect to A, b, B and c (forward and reverse mode) follow from the implicit
      function theorem (:func:`implicit_solve`).  Under ``vmap`` the systems are factorised
      one after another (see :data:`dense_kkt_solve`).  O(n³).

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.array([[2.0, 0.0], [0.0, 2.0]]); B = jnp.ones((2, 1))
      >>> x, lam, info = solve_dense(A, jnp.array([1.0, -1.0]), B, jnp.zeros(1))
      >>> [round(float(v), 6) for v in x], round(float(lam[0]), 6) + 0.0
      ([0.5, -0.5], 0.0)
    """
    return implicit_solve(lambda v: A @ v, b, B, c, lambda bb, cc: dense_kkt_solve(A, bb, B, cc))


def spd_solve(A, b):
    """x = A⁻¹ b for a symmetric positive-definite A (n, n) and b (n,) or (n, k), by Cholesky.

    Differentiable (implicitly, through ``jax.lax.custom_linear_solve``) and safe under
    ``vmap`` like :func:`solve_dense` (the systems are factorised one after another).
    Jittable, so definiteness is not checked: an A that is not positive definite gives
    NaN (test ``jnp.isfinite``; :func:`solve_dense` reports it in ``info.converged``).
    Raises ValueError when the shapes do not fit.

    Example:
      >>> import jax.numpy as jnp
      >>> [round(float(v), 6) for v in spd_solve(jnp.array([[4.0, 0.0], [0.0, 2.0]]), jnp.array([1.0, 1.0]))]
      [0.25, 0.5]
    """
    A, b = jnp.asarray(A), jnp.asarray(b)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ValueError(f"spd_solve needs A of shape (n, n) and b of shape (n,) or (n, k); "
                         f"got A {A.shape} and b {b.shape}.")
    return jax.lax.custom_linear_solve(lambda v: A @ v, b, lambda _, r: _cholesky_solve(A, r), symmetric=True)


@sequential_vmap
def _cholesky_solve(A, r):
    return jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(A), True), r)


def _relative_residual(r, b, ax):
    scale = jnp.maximum(jnp.linalg.norm(b), jnp.linalg.norm(ax))
    return jnp.linalg.norm(r) / jnp.where(scale > 0, scale, 1.0)


def solve_pcg(matvec: Callable, b, B, c, diagonal, *, x0=None, tol=1e-6, maxiter=500,
              correction: Callable | None = None):
    """Constrained minimiser by projected preconditioned conjugate gradients (matrix-free).

    Args:
      matvec: x ↦ A x, (n,) → (n,), A symmetric positive definite on null(Bᵀ).
      b: (n,) linear term.  B: (n, m) constraint matrix.  c: (m,) totals.
      diagonal: (n,) positive diagonal preconditioner M ≈ diag(A).
      x0: optional (n,) warm start (e.g. the previous MD step's charges); it is first
        moved onto the constraint set along M⁻¹B.
      tol: relative tolerance on the projected residual, measured against the projected
        residual at the constraint-set point nearest the origin (so the reference does
        not depend on the warm start).
      maxiter: maximum number of iterations (static).
      correction: optional ``r ↦ Δ r`` added to ``M⁻¹ r`` (a symmetric long-range
        correction of the preconditioner, with ``M⁻¹ + Δ`` positive definite); the sum
        is projected onto null(Bᵀ) in the M⁻¹ metric.

    Returns:
      ``(x, lam, info)`` as :func:`solve_dense`; ``info.converged`` is False if ``maxiter``
      was reached first.

    Example:
      >>> import jax.numpy as jnp
      >>> A = jnp.array([[2.0, 0.5], [0.5, 2.0]]); B = jnp.ones((2, 1))
      >>> x, lam, info = solve_pcg(lambda v: A @ v, jnp.array([1.0, -1.0]), B, jnp.zeros(1),
      ...                          jnp.diag(A), tol=1e-10)
      >>> [round(float(v), 6) for v in x], bool(info.converged)
      ([0.666667, -0.666667], True)
    """
    inv_d = 1.0 / diagonal
    MB = inv_d[:, None] * B
    S = B.T @ MB + _empty_columns(B)                  # (m, m) = Bᵀ M⁻¹ B
    S_inv = jnp.linalg.inv(S)

    def to_constraints(x):                           # nearest point of {Bᵀx = c} in the M metric
        return x + MB @ (S_inv @ (c - B.T @ x))

    def precondition(r):                              # M⁻¹-projected preconditioner
        z = inv_d * r
        if correction is not None:
            z = z + correction(r)
        return z - MB @ (S_inv @ (B.T @ z))

    def multipliers(r):                               # λ from r = b − A x ≈ −B λ
        return -(S_inv @ (MB.T @ r))

    def project(r):
        # r ↦ r + B λ(r): the part of the residual that the constraints cannot absorb.
        # CG only ever uses rᵀz with Bᵀz = 0, so r may be replaced by its projection;
        # doing so every step keeps r small at convergence (no cancellation against the
        # large −Bλ part) — the residual update of Gould, Hribar & Nocedal (2001).
        w = multipliers(r)
        return r + B @ w, w

    xp = to_constraints(jnp.zeros_like(b))
    r_ref, _ = project(b - matvec(xp))
    ref = jnp.linalg.norm(r_ref)
    ref = jnp.where(ref > 0, ref, 1.0)
    x = xp if x0 is None else to_constraints(x0)
    r, lam = project(b - matvec(x))                   # invariant: b − A x = r − B λ
    z = precondition(r)
    p = z
    rz = jnp.vdot(r, z)
    threshold = tol * ref

    def cond(state):
        x, r, lam, p, rz, k = state
        return (jnp.linalg.norm(r) > threshold) & (k < maxiter) & (rz > 0) & jnp.isfinite(rz)

    def body(state):
        x, r, lam, p, rz, k = state
        ap = matvec(p)
        pap = jnp.vdot(p, ap)
        alpha = rz / jnp.where(pap > 0, pap, 1.0)
        x = x + alpha * p
        r, w = project(r - alpha * ap)
        lam = lam + w
        z = precondition(r)
        rz_new = jnp.vdot(r, z)
        beta = rz_new / rz
        p = z + beta * p
        p = p - MB @ (S_inv @ (B.T @ p))              # keep rounding from leaving the constraint set
        return x, r, lam, p, rz_new, k + 1

    state = (x, r, lam, p, rz, jnp.zeros((), jnp.int32))
    x, r, lam, p, rz, k = jax.lax.while_loop(cond, body, state)
    residual = jnp.linalg.norm(r) / ref
    info = SolverInfo(converged=residual <= tol, iterations=k, residual=residual)
    return x, lam, info


def implicit_solve(matvec: Callable, b, B, c, solver: Callable):
    """Solve the constrained problem with ``solver`` and differentiate it implicitly.

    Args:
      matvec: x ↦ A x; may close over traced arrays (positions, cell, widths, J …):
        derivatives with respect to them follow from the implicit function theorem.
      b, B, c: as in :func:`solve_dense`.
      solver: ``(b, c) ↦ (x, lam, info)`` for the same A and B — :func:`solve_dense` or
        :func:`solve_pcg` with A and the preconditioner bound.  It is called again, with
        other right-hand sides, for every derivative (JVP or VJP).

    Returns:
      ``(x, lam, info)``; derivatives of x and λ with respect to b, c and anything
      ``matvec`` closes over are exact up to the solver tolerance, whatever the solver.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> B = jnp.ones((2, 1)); c = jnp.zeros(1)
      >>> def x0(b, a):                          # first coordinate of the minimiser
      ...     A = jnp.array([[a, 0.5], [0.5, 2.0]])
      ...     return implicit_solve(lambda v: A @ v, b, B, c, lambda bb, cc: solve_dense(A, bb, B, cc))[0][0]
      >>> round(float(jax.grad(x0, argnums=1)(jnp.array([1.0, -1.0]), 2.0)), 6)   # d x0 / d A_00 = −2/(A_00 + 1)²
      -0.222222
    """
    op = kkt_matvec(matvec, B)
    n = B.shape[0]

    def solve(_, rhs):
        x, lam, info = solver(rhs[:n], rhs[n:])
        return jnp.concatenate([x, -lam]), info

    y, info = jax.lax.custom_linear_solve(op, jnp.concatenate([b, c]), solve, symmetric=True, has_aux=True)
    return y[:n], -y[n:], info
