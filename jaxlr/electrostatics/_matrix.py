"""Dense Coulomb matrix of point or Gaussian charges: ``E = ½ qᵀ C q`` (jittable).

The matrix that charge equilibration factorises when the system is small (a few thousand
atoms).  It is built from the same kernels as :func:`jaxlr.coulomb_energy`, so that
``½ qᵀ C q`` equals its energy and ``C q`` its potentials for any charges:

* open boundary: ``C_ij = KE K(r_ij)`` (1/r or erf(r/√2γ_ij)/r) and, for Gaussian
  charges, ``C_ii = KE/(√π σ_i)`` (the self-energy);
* periodic (Ewald): real-space kernels summed over the images of a full neighbour list,
  the reciprocal part ``(4π KE/V) Σ_{k≠0} e^{−k²s²/2}/k² cos(k·(R_i − R_j))`` from the
  explicit half-space k-vectors (as a product of N×K cosine and sine tables, O(N² K)),
  the Ewald self term and, with ``background=True``, the Hessian of the neutralising
  background energy.

For a net-neutral constraint space every choice of smearing gives the same matrix up to
the Ewald accuracy; the charged (background) part only matters through the total charge.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..system._neighbors import Neighbors, pair_displacements
from ..units import KE
from ._ewald import structure_tables
from ._kernels import pair_kernel, self_kernel

__all__ = ["coulomb_matrix"]


def coulomb_matrix(positions, *, cell=None, sigma=None, smearing=None, neighbors: Neighbors | None = None,
                   kvectors=None, background: bool = False, atom_mask=None):
    """Dense (N, N) Coulomb matrix C (eV/e²) with ``E_coul = ½ qᵀ C q``.

    Args:
      positions: (N, 3) Å.
      cell: (3, 3) Å (rows are lattice vectors) for a periodic Ewald sum, or None.
      sigma: (N,) Gaussian widths (Å) or None for point charges (open boundary point
        charges have no self-energy: the diagonal is then zero).
      smearing: Ewald smearing s (Å), periodic only.
      neighbors: full :class:`jaxlr.Neighbors` list with cutoff ≥ the real-space range
        (periodic only).
      kvectors: (n_chunks, chunk, 3) half-space integer k-vectors
        (:func:`jaxlr.electrostatics.half_space_kvectors`), periodic only.
      background: include the neutralising-background term (charged periodic cells).
      atom_mask: (N,) bool, False for padding atoms, or None (all real).  Rows and columns
        of padding atoms are exactly zero, whatever their positions and widths (they may
        coincide with each other or with real atoms, and have σ = 0), and they pass no
        gradient to positions, σ or the cell.

    Returns:
      C (N, N), symmetric.  Differentiable in positions, cell, sigma and smearing.

    Example:
      >>> import jax.numpy as jnp
      >>> R = jnp.array([[0.0, 0, 0], [2.0, 0, 0]])
      >>> C = coulomb_matrix(R)
      >>> round(float(C[0, 1]), 5)   # KE / 2 Å
      7.19982
    """
    dtype = positions.dtype
    n = positions.shape[0]
    live_atoms = None if atom_mask is None else jnp.asarray(atom_mask, bool)
    if live_atoms is not None and sigma is not None:
        sigma = jnp.where(live_atoms, sigma, 1.0)  # padding widths may be 0: keep kernels finite
    if cell is None:
        d = positions[None, :, :] - positions[:, None, :]
        r2 = jnp.sum(d * d, axis=-1)
        off = ~jnp.eye(n, dtype=bool)
        if live_atoms is not None:
            off = off & live_atoms[:, None] & live_atoms[None, :]
        r = jnp.sqrt(jnp.where(off, r2, 1.0))
        gamma = None if sigma is None else jnp.sqrt(sigma[:, None] ** 2 + sigma[None, :] ** 2)
        mat = jnp.where(off, KE * pair_kernel(r, gamma, None), 0.0)
        if sigma is not None:
            diag = KE * self_kernel(sigma, None, dtype)
            mat = mat + jnp.diag(diag if live_atoms is None else jnp.where(live_atoms, diag, 0.0))
        return mat

    smearing = jnp.asarray(smearing, dtype)
    rows = jnp.arange(n)
    idx = neighbors.idx
    d, _ = pair_displacements(positions, cell, rows, idx, neighbors.shifts)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    live = neighbors.mask & (r2 > 0)
    r = jnp.sqrt(jnp.where(live, r2, 1.0))
    gamma = None if sigma is None else jnp.sqrt(sigma[:, None] ** 2 + sigma[idx] ** 2)
    kern = jnp.where(live, KE * pair_kernel(r, gamma, smearing), 0.0)
    mat = jnp.zeros((n, n), dtype).at[jnp.broadcast_to(rows[:, None], idx.shape), idx].add(kern)
    mat = mat + jnp.diag(jnp.broadcast_to(KE * self_kernel(sigma, smearing, dtype), (n,)))

    recip = 2.0 * math.pi * jnp.linalg.inv(cell).T
    volume = jnp.abs(jnp.linalg.det(cell))

    def chunk(acc, m):
        _, psi, c, s = structure_tables(positions, m, recip, smearing)
        return acc + (c * psi) @ c.T + (s * psi) @ s.T, None

    rec, _ = jax.lax.scan(chunk, jnp.zeros((n, n), dtype), jnp.asarray(kvectors))
    # half space: k and −k each contribute (4π KE/V) ψ cos(k·r_ij)/… → factor 2
    mat = mat + (8.0 * math.pi * KE / volume) * rec
    if background:
        # Hessian of −π KE (Q² s² − 2 Q Σ q σ²)/V (see jaxlr.coulomb_energy)
        hess = 2.0 * smearing**2 * jnp.ones((n, n), dtype)
        if sigma is not None:
            hess = hess - 2.0 * (sigma[:, None] ** 2 + sigma[None, :] ** 2)
        mat = mat - (math.pi * KE / volume) * hess
    if live_atoms is not None:
        mat = jnp.where(live_atoms[:, None] & live_atoms[None, :], mat, 0.0)
    return mat
