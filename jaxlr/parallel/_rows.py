"""Real-space Ewald pair sum with the rows of the full neighbour list spread over devices.

Device d holds the rows (atoms) of its slab (:func:`jaxlr.parallel.slab_layout`) and their
dense neighbour lists; positions, charges and widths of all atoms are gathered once
(``all_gather``: 3 + 2 numbers per atom, small next to the lists).  The full list holds
every pair twice, so every per-atom derivative — potentials φ_i = ∂E/∂q_i, forces and the
strain derivative — is a sum along the device's own rows (as in
:func:`jaxlr.electrostatics.real_space_energy`): no scatter, and the only communication is
the ``psum`` of the energy and of the 3×3 strain derivative.  Rows are summed in blocks of
``block`` rows under ``lax.map``.
"""

from __future__ import annotations

from functools import lru_cache

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero
from jax.sharding import PartitionSpec as P

from ..electrostatics import fused_sums, pair_kernel, pair_kernel_dr
from ..system._neighbors import pair_displacements
from ..units import KE

__all__ = ["make_sharded_real_space"]

_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def _row_terms(pos, q, sig, cell, smearing, rows, idx, mask, shifts, derivs: bool):
    """Energy, φ, ∂E/∂R and strain derivative of one block of rows (global atom indices)."""
    d, _ = pair_displacements(pos, cell, rows, idx, shifts)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    live = mask & (r2 > 0)
    r = jnp.where(mask, jnp.where(live, jnp.sqrt(jnp.where(live, r2, 1.0)), 0.0), 1.0)
    qj = jnp.where(mask, q[idx], 0.0)
    qi = q[rows]
    gamma = None if sig is None else jnp.sqrt(sig[rows][:, None] ** 2 + sig[idx] ** 2)
    if not derivs:
        phi = KE * (qj * pair_kernel(r, gamma, smearing)) @ jnp.ones(idx.shape[1], pos.dtype)
        return 0.5 * jnp.sum(qi * phi), phi
    kern, k_r = pair_kernel_dr(r, gamma, smearing)
    w = (qi[:, None] * qj) * (k_r / jnp.where(r > 0, r, 1.0))
    sums = fused_sums(1, qj * kern, *(w * d[a] for a in range(3)), *(w * d[a] * d[b] for a, b in _UPPER))
    phi = KE * sums[0]
    grad = -KE * jnp.stack(sums[1:4], axis=-1)
    vir = {ab: 0.5 * KE * jnp.sum(v) for ab, v in zip(_UPPER, sums[4:])}
    virial = jnp.stack([jnp.stack([vir[(min(a, b), max(a, b))] for b in range(3)]) for a in range(3)])
    strain = virial - pos[rows].T @ grad
    return 0.5 * jnp.sum(qi * phi), phi, grad, strain


@lru_cache(maxsize=32)
def make_sharded_real_space(mesh, block: int, gaussian: bool):
    """Build ``f(positions, charges, sigma, cell, smearing, idx, mask, shifts) -> E_real`` (eV).

    Args of the returned function (global arrays; the atom axis split over ``mesh``):
      positions (P·C, 3) Å, charges (P·C,) e, sigma (P·C,) Å or None (point charges; must
      match ``gaussian``), cell (3, 3), smearing () Å, and the full neighbour list in slot
      numbering: idx, mask (P·C, M), shifts (P·C, M, 3) integer cell shifts.  C must be a
      multiple of ``block``.

    ``½ KE Σ_i Σ_j q_i q_j K(r_ij)`` over the full list, kernels of
    :func:`jaxlr.electrostatics.pair_kernel`.  ``jax.custom_jvp``: derivatives with respect to
    positions, charges and cell are row sums (no scatter); derivatives with respect to σ
    or the smearing are not provided (ValueError at trace time).  ``f.terms(...)`` returns
    ``(energy, φ (P·C,), ∂E/∂R (P·C, 3), cellᵀ ∂E/∂cell (3, 3))``.

    Example:
      >>> from jaxlr.parallel import device_mesh
      >>> f = make_sharded_real_space(device_mesh(1), 64, False)
    """
    axis = mesh.axis_names[0]
    sig_spec = P(axis) if gaussian else None

    def local(pos, q, sig, cell, smearing, idx, mask, shifts, derivs):
        c = pos.shape[0]
        start = jax.lax.axis_index(axis) * c
        all_pos = jax.lax.all_gather(pos, axis, tiled=True)
        all_q = jax.lax.all_gather(q, axis, tiled=True)
        all_sig = None if sig is None else jax.lax.all_gather(sig, axis, tiled=True)
        n_blocks = c // block

        def one(k):
            rows = start + k * block + jnp.arange(block)

            def take(x):
                return jax.lax.dynamic_slice_in_dim(x, k * block, block, axis=0)

            return _row_terms(all_pos, all_q, all_sig, cell, smearing, rows, take(idx), take(mask), take(shifts),
                              derivs)

        out = jax.lax.map(one, jnp.arange(n_blocks))
        energy = jax.lax.psum(jnp.sum(out[0]), axis)
        phi = out[1].reshape(c)
        if not derivs:
            return energy, phi
        return energy, phi, out[2].reshape(c, 3), jax.lax.psum(jnp.sum(out[3], axis=0), axis)

    def run(pos, q, sig, cell, smearing, idx, mask, shifts, derivs):
        rows = P(axis)
        out_specs = (P(), rows) + ((rows, P()) if derivs else ())
        fn = jax.shard_map(lambda *a: local(*a, derivs), mesh=mesh,
                           in_specs=(rows, rows, sig_spec, P(), P(), rows, rows, rows), out_specs=out_specs)
        return fn(pos, q, sig, cell, smearing, idx, mask, shifts)

    @jax.custom_jvp
    def real_space(pos, q, sig, cell, smearing, idx, mask, shifts):
        return run(pos, q, sig, cell, smearing, idx, mask, shifts, False)[0]

    def jvp(primals, tangents):
        pos, q, sig, cell, smearing, idx, mask, shifts = primals
        t_pos, t_q, t_sig, t_cell, t_s = tangents[:5]
        if not (_is_zero(t_sig) and _is_zero(t_s)):
            raise ValueError("the sharded real-space sum has no derivative with respect to the Gaussian widths or "
                             "the Ewald smearing; use the one-device jaxlr.coulomb_energy for those.")
        energy, phi, grad, strain = run(pos, q, sig, cell, smearing, idx, mask, shifts, True)
        tangent = jnp.zeros((), energy.dtype)
        if not _is_zero(t_q):
            tangent = tangent + jnp.sum(phi * t_q)
        if not _is_zero(t_pos):
            tangent = tangent + jnp.sum(grad * t_pos)
        if not _is_zero(t_cell):
            tangent = tangent + jnp.sum(jnp.linalg.solve(cell.T, strain) * t_cell)
        return energy, tangent

    real_space.defjvp(jvp, symbolic_zeros=True)
    real_space.terms = lambda *a: run(*a, True)
    return real_space
