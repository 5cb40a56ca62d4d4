"""Charge equilibration (Qeq) of Gaussian charges, solved inside the differentiable program.

The Qeq energy (DESIGN.md) of charges q with electronegativities χ (V), hardnesses J
(V/e) and Gaussian widths σ (Å) is

    E(q) = Σ_i (χ_i q_i + ½ J_i q_i²) + E_coul(q; σ),

minimised subject to one total-charge constraint per fragment, Σ_{i∈f} q_i = Q_f
(default: one fragment, the whole system).  With C the (periodic) Coulomb matrix of the
Gaussian charges (``E_coul = ½ qᵀ C q``, self-energies included) the minimiser solves

    (C + diag J) q + χ = Σ_f λ_f 1_f,     Σ_{i∈f} q_i = Q_f,

where λ_f = ∂E*/∂Q_f is the chemical potential of fragment f (V).  The system is
positive definite on the constraint space whenever σ_i > 0 and J_i ≥ 0.

Solvers (``solver=``, :mod:`jaxlr.equilibration`):

* ``"dense"`` — the N×N Coulomb matrix (:func:`jaxlr.electrostatics.coulomb_matrix`,
  open boundary or Ewald) factorised by Cholesky: exact, O(N³), for up to a few thousand
  atoms.
* ``"pcg"`` — matrix-free projected preconditioned conjugate gradients; one matvec is one
  potential evaluation ``C q = ∂E_coul/∂q`` (direct, Ewald or PME: O(N log N)), plus
  J q.  Preconditioner: the diagonal J_i + KE/(√π σ_i), optionally with a long-range
  mesh correction (:mod:`jaxlr.equilibration`) that keeps the iteration count flat as
  the box grows.  A warm start (``guess=``, e.g. the previous MD step's charges) is
  projected onto the constraints first.  Convergence flag, residual and iteration count
  are returned.

Derivatives are implicit: the solve is wrapped in ``jax.lax.custom_linear_solve``, so
derivatives of the charges with respect to χ, J, σ, positions, cell and fragment
charges cost one more solve of the same system (JVP or VJP), never an unrolled loop.
The equilibrated energy :func:`qeq_energy` has its own JVP rule, the envelope theorem
(∂E/∂q = λ on the constraint set): its first derivatives — forces, stress, ∂E/∂χ = q —
need no extra solve and equal the Hellmann–Feynman derivatives at fixed charges; its
second derivatives (training on forces) differentiate through the implicit solve.

Padding: atoms with ``atom_mask`` False (or fragment label −1) get exactly zero charge
and do not perturb the others.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..electrostatics._energy import coulomb_energy, long_range_energy
from ..electrostatics._kernels import pair_kernel
from ..electrostatics._matrix import coulomb_matrix
from ..electrostatics._params import CoulombParams
from ..electrostatics._pme import MeshSpec
from ..system._neighbors import pair_displacements
from ..units import KE
from ._solvers import SolverInfo, dense_kkt_solve, implicit_solve, solve_pcg

__all__ = ['SOLVERS', 'QeqParams', 'QeqSolution', 'qeq_energy', 'qeq_solve']


SOLVERS = ("auto", "dense", "pcg")




def _fragment_matrix(fragments, n_fragments, n, dtype, atom_mask):
    """Constraint matrix B (N, F): B_if = 1 if atom i belongs to fragment f."""
    if fragments is None:
        fragments = jnp.zeros((n,), jnp.int32)
    B = jax.nn.one_hot(fragments, n_fragments, dtype=dtype)   # label −1 → zero row
    if atom_mask is not None:
        B = B * atom_mask[:, None].astype(dtype)
    return B


def _coulomb_potential_fn(positions, sigma, cell, smearing, neighbors, kvectors, method, mesh, background):
    """q ↦ C q, the potentials of charges q (V) at fixed positions.

    With a neighbour list the real-space pair kernels are evaluated once and reused by
    every application (a gather and a multiply-add per pair instead of an erfc); the
    self, reciprocal and background parts come from :func:`jaxlr.coulomb.long_range_energy`.
    Without one (open boundary, all pairs) the potentials are ∂E/∂q of the direct sum.
    """
    def long_range(q):
        return jax.grad(lambda x: long_range_energy(
            positions, x, cell=cell, sigma=sigma, smearing=smearing, kvectors=kvectors, method=method, mesh=mesh,
            background=background))(q)

    if neighbors is None:
        def potential(q):
            return jax.grad(lambda x: coulomb_energy(
                positions, x, cell=cell, sigma=sigma, smearing=smearing, neighbors=None, kvectors=kvectors,
                method=method, mesh=mesh, background=background))(q)
        return potential

    n = positions.shape[0]
    idx = neighbors.idx
    d, _ = pair_displacements(positions, cell, jnp.arange(n), idx, neighbors.shifts)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    live = neighbors.mask & (r2 > 0)
    r = jnp.sqrt(jnp.where(live, r2, 1.0))
    gamma = None if sigma is None else jnp.sqrt(sigma[:, None] ** 2 + sigma[idx] ** 2)
    smear = None if cell is None else jnp.asarray(smearing, positions.dtype)
    kern = jnp.where(live, KE * pair_kernel(r, gamma, smear), 0.0)

    def potential(q):
        return jnp.sum(kern * q[idx], axis=1) + long_range(q)

    return potential


def _padding_safe_sigma(sigma, atom_mask):
    """Widths with padding atoms set to 1 Å: they carry no charge, and any positive width
    keeps their kernels finite even when they coincide (σ = 0 padding would give 0/0)."""
    if atom_mask is None:
        return sigma
    return jnp.where(jnp.asarray(atom_mask, bool), sigma, 1.0)


class QeqSolution(NamedTuple):
    """Output of :func:`qeq_solve` (a pytree; unpacks as ``q, lam, info``).

    Attributes:
      charges: (N,) e, the equilibrated charges (0 on padding atoms).
      chemical_potential: (F,) V, λ_f = ∂E*/∂Q_f, one per fragment.
      info: :class:`jaxlr.SolverInfo` (converged, iterations, residual).
    """

    charges: jax.Array
    chemical_potential: jax.Array
    info: SolverInfo


def qeq_solve(positions, electronegativity, hardness, sigma, *, cell=None, smearing=None, neighbors=None,
              kvectors=None, method: str = "direct", mesh: MeshSpec | None = None, background: bool = False,
              fragments=None, fragment_charges=None, atom_mask=None, solver: str = "dense",
              tol: float = 1e-6, maxiter: int = 1000, guess=None, preconditioner=None):
    """Equilibrated charges — the pure, jittable functional core of :func:`qeq`.

    Args:
      positions: (N, 3) Å.  electronegativity: (N,) χ in V.  hardness: (N,) J in V/e
        (≥ 0).  sigma: (N,) Gaussian widths in Å (> 0).
      cell, smearing, neighbors, kvectors, method, mesh, background: the Coulomb
        evaluation, exactly as in :func:`jaxlr.coulomb_energy` (``method`` "direct",
        "ewald" or "pme"; the dense solver needs "direct" or "ewald").
      fragments: (N,) int labels in [0, F) (−1: padding atom), or None for one fragment.
      fragment_charges: (F,) total charge of each fragment (e); None means neutral, one
        fragment.  F is taken from its shape (static).
      atom_mask: (N,) bool, False for padding atoms (zero charge, no influence; their
        positions may coincide and their widths may be 0).
      solver: "dense" or "pcg" (static).  tol: relative residual of the PCG solve.
      maxiter: PCG iteration cap (static).  guess: (N,) warm start for PCG.
      preconditioner: optional ``r ↦ Δz`` long-range correction for PCG
        (:func:`jaxlr.equilibration.mesh_correction`).

    Returns:
      :class:`QeqSolution` ``(charges (N,), chemical_potential (F,), info)`` with
      ``info`` a :class:`jaxlr.SolverInfo` (converged, iterations, residual); it unpacks
      as a tuple.
      Differentiable (implicitly) in every floating-point input.

    Example:
      >>> import jax.numpy as jnp
      >>> R = jnp.array([[0.0, 0, 0], [3.0, 0, 0]])
      >>> q, mu, info = qeq_solve(R, jnp.array([0.0, 2.0]), jnp.array([5.0, 5.0]), jnp.ones(2))
      >>> round(float(q[0]), 4), bool(info.converged)
      (0.1178, True)
    """
    dtype = positions.dtype
    n = positions.shape[0]
    sigma = _padding_safe_sigma(jnp.asarray(sigma, positions.dtype), atom_mask)
    chi = jnp.asarray(electronegativity, dtype)
    hard = jnp.asarray(hardness, dtype)
    if fragment_charges is None:
        fragment_charges = jnp.zeros((1,), dtype)
    fragment_charges = jnp.asarray(fragment_charges, dtype)
    B = _fragment_matrix(fragments, fragment_charges.shape[0], n, dtype, atom_mask)
    live = None if atom_mask is None else atom_mask.astype(dtype)
    b = -chi if live is None else -chi * live
    kwargs = dict(positions=positions, sigma=sigma, cell=cell, smearing=smearing, neighbors=neighbors,
                  kvectors=kvectors, background=background)

    if solver == "dense":
        if method not in ("direct", "ewald"):
            raise ValueError(f"the dense Qeq solver builds the Coulomb matrix by 'direct' or 'ewald' sums, "
                             f"not {method!r}.")
        A = coulomb_matrix(**kwargs, atom_mask=atom_mask) + jnp.diag(hard)
        if live is not None:
            A = live[:, None] * A * live[None, :] + jnp.diag(1.0 - live)

        def matvec(x):
            return A @ x

        def run(bb, cc):
            return dense_kkt_solve(A, bb, B, cc)
    elif solver == "pcg":
        potential = _coulomb_potential_fn(method=method, mesh=mesh, **kwargs)

        def matvec(x):
            if live is None:
                return potential(x) + hard * x
            return live * (potential(live * x) + hard * x) + (1.0 - live) * x

        diagonal = hard + KE / (math.sqrt(math.pi) * sigma)
        if live is not None:
            diagonal = live * diagonal + (1.0 - live)
        diagonal = jax.lax.stop_gradient(diagonal)
        x0 = None if guess is None else jax.lax.stop_gradient(jnp.asarray(guess, dtype))

        def run(bb, cc):
            # the warm start only helps the primal solve; derivative solves start cold
            return solve_pcg(matvec, bb, B, cc, diagonal, x0=x0, tol=tol, maxiter=maxiter,
                             correction=preconditioner)
    else:
        raise ValueError(f"solver must be 'dense' or 'pcg', got {solver!r}.")
    return QeqSolution(*implicit_solve(matvec, b, B, fragment_charges, run))


def _qeq_total_energy(charges, positions, chi, hard, sigma, cell, smearing, *, neighbors, kvectors, method,
                      mesh, background):
    coul = coulomb_energy(positions, charges, cell=cell, sigma=sigma, smearing=smearing, neighbors=neighbors,
                          kvectors=kvectors, method=method, mesh=mesh, background=background)
    return jnp.sum(chi * charges + 0.5 * hard * charges**2) + coul


def qeq_energy(positions, electronegativity, hardness, sigma, *, cell=None, smearing=None, neighbors=None,
               kvectors=None, method: str = "direct", mesh: MeshSpec | None = None, background: bool = False,
               fragments=None, fragment_charges=None, atom_mask=None, solver: str = "dense",
               tol: float = 1e-6, maxiter: int = 1000, guess=None, preconditioner=None):
    """Equilibrated Qeq energy E* = min_q E(q) (eV), jittable, with envelope-theorem derivatives.

    Arguments as :func:`qeq_solve`.  First derivatives need no extra solve:
    ``−∂E*/∂R`` are the Hellmann–Feynman forces at the equilibrated charges,
    ``∂E*/∂χ = q*``, ``∂E*/∂J = ½ q*²``, ``∂E*/∂Q_f = λ_f``; second derivatives (e.g. of
    forces with respect to χ, for training) differentiate through the implicit solve.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> R = jnp.array([[0.0, 0, 0], [3.0, 0, 0]]); J = jnp.array([5.0, 5.0]); s = jnp.ones(2)
      >>> chi = jnp.array([0.0, 2.0])
      >>> forces = -jax.grad(qeq_energy)(R, chi, J, s)
    """
    statics = dict(neighbors=neighbors, kvectors=kvectors, method=method, mesh=mesh, background=background)
    dtype = positions.dtype
    if fragment_charges is None:
        fragment_charges = jnp.zeros((1,), dtype)
    sigma = _padding_safe_sigma(jnp.asarray(sigma, positions.dtype), atom_mask)

    def solve(R, chi, hard, sig, c, s, qf):
        q, lam, _ = qeq_solve(R, chi, hard, sig, cell=c, smearing=s, fragments=fragments, fragment_charges=qf,
                              atom_mask=atom_mask, solver=solver, tol=tol, maxiter=maxiter, guess=guess,
                              preconditioner=preconditioner, **statics)
        return q, lam

    @jax.custom_jvp
    def energy(R, chi, hard, sig, c, s, qf):
        q, _ = solve(R, chi, hard, sig, c, s, qf)
        return _qeq_total_energy(q, R, chi, hard, sig, c, s, **statics)

    @energy.defjvp
    def _(primals, tangents):
        R, chi, hard, sig, c, s, qf = primals
        q, lam = solve(*primals)
        e, de = jax.jvp(lambda *a: _qeq_total_energy(q, *a, **statics), primals[:6], tangents[:6])
        return e, de + jnp.sum(lam * tangents[6])

    smear = None if smearing is None else jnp.asarray(smearing, dtype)
    return energy(positions, jnp.asarray(electronegativity, dtype), jnp.asarray(hardness, dtype), sigma, cell,
                  smear, jnp.asarray(fragment_charges, dtype))


@dataclasses.dataclass(frozen=True)
class QeqParams:
    """Static choices of a Qeq solve (hashable).

    Attributes:
      solver: "dense" or "pcg".  coulomb: the :class:`jaxlr.CoulombParams` of the
      electrostatics.  tol: PCG relative residual.  maxiter: PCG iteration cap.
      preconditioner: "jacobi" or "mesh" (PCG only).
    """

    solver: str
    coulomb: CoulombParams
    tol: float = 1e-6
    maxiter: int = 1000
    preconditioner: str = "jacobi"
