"""Real-space pair sums with derivatives that cost one extra reduction, not a scatter.

``real_space_energy`` returns ``E = ½ KE Σ_i Σ_j q_i q_j K(r_ij)`` over a dense *full*
neighbour list (every pair twice, periodic images included), with the kernels of
:mod:`jaxlr.kernels`.  Its derivative rule (``jax.custom_jvp``) uses the symmetry of the
full list: every per-atom derivative — potentials φ_i = ∂E/∂q_i, forces, ∂E/∂σ_i — is a
sum along the neighbour axis, so forces never need the scatter-add that plain reverse-mode
autodiff of a gather produces.  The rule is built from ordinary differentiable JAX
operations, so second derivatives (∂F/∂q, Hessian-vector products, training on forces)
are exact too; JAX differentiates the rule itself.

Derivatives with respect to the cell (for stress) and the Ewald smearing are included:
the displacement is ``R_j − R_i + n_ij · cell`` with integer shifts ``n_ij``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from .kernels import pair_kernel, pair_kernel_dr
from .neighbors import Neighbors, pair_displacements
from .units import KE

__all__ = ["real_space_energy"]


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def _neighbor_values(x, nbrs: Neighbors | None):
    """x (N, ...) → values at the neighbours, (N, M, ...) (or (1, N, ...) for all pairs)."""
    if nbrs is None:
        return x[None]
    return x[nbrs.idx]


def _pair_data(positions, charges, sigma, cell, nbrs):
    d, n, mask = pair_displacements(positions, cell, nbrs)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    # double where: masked slots get r = 1, coincident centres r = 0 with a finite
    # gradient (Gaussian kernels are finite there)
    live = mask & (r2 > 0)
    r = jnp.where(mask, jnp.where(live, jnp.sqrt(jnp.where(live, r2, 1.0)), 0.0), 1.0)
    qq = charges[:, None] * _neighbor_values(charges, nbrs)
    qq = jnp.where(mask, qq, 0.0)
    gamma = None
    if sigma is not None:
        gamma = jnp.sqrt(sigma[:, None] ** 2 + _neighbor_values(sigma, nbrs) ** 2)
    return d, n, mask, r, qq, gamma


def _energy(positions, charges, sigma, cell, smearing, nbrs):
    _, _, _, r, qq, gamma = _pair_data(positions, charges, sigma, cell, nbrs)
    return 0.5 * KE * jnp.sum(qq * pair_kernel(r, gamma, smearing))


@jax.custom_jvp
def real_space_energy(positions, charges, sigma, cell, smearing, nbrs):
    """Real-space (pair) Coulomb energy in eV over a dense full neighbour list.

    Args:
      positions: (N, 3) Å.  charges: (N,) e.  sigma: (N,) Gaussian widths in Å or None
        (point charges).  cell: (3, 3) or None.  smearing: Ewald smearing s (Å, scalar)
        or None for the bare interaction (open boundary).
      nbrs: :class:`jaxlr.Neighbors` (full list) or None for all pairs (open boundary,
        (N, N) layout, fine up to a few thousand atoms).

    Returns:
      scalar energy ``½ KE Σ_i Σ_j q_i q_j K(r_ij)`` (eV).  Self-energies are not included.
    """
    return _energy(positions, charges, sigma, cell, smearing, nbrs)


def _real_space_jvp(primals, tangents):
    positions, charges, sigma, cell, smearing, nbrs = primals
    t_pos, t_q, t_sig, t_cell, t_s, _ = tangents
    d, n, mask, r, qq, gamma = _pair_data(positions, charges, sigma, cell, nbrs)
    need_r = not _is_zero(t_pos) or (cell is not None and not _is_zero(t_cell))
    if need_r:
        kern, k_r = pair_kernel_dr(r, gamma, smearing)
    else:
        kern = pair_kernel(r, gamma, smearing)
    energy = 0.5 * KE * jnp.sum(qq * kern)
    tangent = jnp.zeros_like(energy)

    if not _is_zero(t_q):
        qj = jnp.where(mask, _neighbor_values(charges, nbrs), 0.0)
        potentials = KE * jnp.sum(qj * kern, axis=1)
        tangent = tangent + jnp.sum(potentials * t_q)

    if need_r:
        # w_ij d_ij = dE_pair/dd_ij for the full-list energy ½ Σ qq K(|d|)
        w = KE * qq * k_r / jnp.where(r > 0, r, 1.0)  # k_r = 0 at coincident Gaussian centres
        if not _is_zero(t_pos):
            # ∂E/∂R_i, both (i,j) and (j,i) terms of the full list
            grad_pos = -jnp.stack([jnp.sum(w * d[a], axis=1) for a in range(3)], axis=-1)
            tangent = tangent + jnp.sum(grad_pos * t_pos)
        if cell is not None and n is not None and not _is_zero(t_cell):
            grad_cell = 0.5 * jnp.stack([jnp.stack([jnp.sum(w * n[a] * d[b]) for b in range(3)])
                                         for a in range(3)])
            tangent = tangent + jnp.sum(grad_cell * t_cell)

    if sigma is not None and not _is_zero(t_sig):
        _, k_g = jax.jvp(lambda g: pair_kernel(r, g, smearing), (gamma,), (jnp.ones_like(gamma),))
        grad_sig = KE * sigma * jnp.sum(qq * k_g / gamma, axis=1)
        tangent = tangent + jnp.sum(grad_sig * t_sig)

    if smearing is not None and not _is_zero(t_s):
        _, k_s = jax.jvp(lambda s: pair_kernel(r, gamma, s), (smearing,), (jnp.ones_like(smearing),))
        tangent = tangent + 0.5 * KE * jnp.sum(qq * k_s) * t_s

    return energy, tangent


real_space_energy.defjvp(_real_space_jvp, symbolic_zeros=True)
