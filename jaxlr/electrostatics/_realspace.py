"""Real-space pair sums with derivatives that cost one extra reduction, not a scatter.

``real_space_energy`` returns ``E = ½ KE Σ_i Σ_j q_i q_j K(r_ij)`` over a dense *full*
neighbour list (every pair twice, periodic images included), with the kernels of
:mod:`jaxlr.electrostatics`.  Its derivative rule (``jax.custom_jvp``) uses the symmetry of the
full list: every per-atom derivative — potentials φ_i = ∂E/∂q_i, forces, ∂E/∂σ_i — is a
sum along the neighbour axis, so forces never need the scatter-add that plain reverse-mode
autodiff of a gather produces.  The rule is built from ordinary differentiable JAX
operations, so second derivatives (∂F/∂q, Hessian-vector products, training on forces)
are exact too; JAX differentiates the rule itself.

Derivatives with respect to the cell (for stress) and the Ewald smearing are included:
the displacement is ``R_j − R_i + n_ij · cell`` with integer shifts ``n_ij``.  The cell
derivative comes from the strain identity Σ_i R_i ⊗ ∂E/∂R_i + cellᵀ ∂E/∂cell = W with
the symmetric pair virial W = ½ KE Σ_ij w_ij d_ij ⊗ d_ij: six more sums per neighbour slot
besides the three of the forces, rather than the nine of Σ w n ⊗ d.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ..performance import costs
from ..system._neighbors import pair_displacements
from ..units import KE
from ._fused import fused_sums
from ._kernels import pair_kernel, pair_kernel_dr

__all__ = ["real_space_energy"]


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)




#: the upper triangle (a ≤ b) of a symmetric 3 × 3 tensor
_UPPER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _row_sums(*terms):
    """Sums over axis 1 of several (B, M) arrays, reduced together in one pass.

    Several sums go into one variadic reduce (:func:`jaxlr.electrostatics.fused_sums`), which
    XLA's CPU backend fuses into a single loop; separate ``jnp.sum`` calls are each
    handed to a library reduction that reads its own materialised operand (real-space
    energy + forces at 4,000 atoms in float64: 4.2 ms with separate sums, 3.6 ms with
    this, ``bench_forces_overhead.py --parts``).
    A single sum is taken as a product with a vector of ones: as a plain ``jnp.sum`` XLA
    handed it, with the pair kernel fused in, to a single-threaded library (YNN) fusion
    that evaluated the kernel operation by operation (real-space energy at 4,000 atoms in
    float64: 14 ms instead of 2.8 ms with the polynomial erfc of :func:`jaxlr.electrostatics.erfc_exp`).
    Both forms are linear, so reverse mode and higher orders work.
    """
    if len(terms) == 1:
        return (terms[0] @ jnp.ones(terms[0].shape[1], terms[0].dtype),)
    return fused_sums(1, *terms)


def _block_terms(positions, charges, sigma, cell, smearing, rows, idx, mask, shifts, need):
    """Per-row energy terms and derivatives for a block of rows of the full neighbour list.

    Args:
      rows: (B,) atom indices of the rows; idx, mask: (B, M) (idx None: all atoms, open
        boundary); shifts: (B, M, 3) integer cell shifts, or None (minimum image when a
        cell is given, none otherwise).  need: static tuple of the wanted outputs among
        "q", "pos", "cell", "sigma", "smearing".

    Returns:
      dict with "energy" (scalar, ½ KE Σ over the block's pairs) and, as asked,
      "phi" (B,), "pos" (B, 3) = ∂E/∂R_rows, "sigma" (B,), "smearing" () and, for
      "cell", "strain" (3, 3): the block's share of cellᵀ ∂E/∂cell (see below), which
      :func:`_real_space_jvp` turns into ∂E/∂cell once, after all blocks are summed.
    """
    d, _ = pair_displacements(positions, cell, rows, idx, shifts)
    if idx is None:
        def at_neighbors(x):
            return x[None, :]
    else:
        def at_neighbors(x):
            return x[idx]
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    # double where: masked slots get r = 1, coincident centres r = 0 with a finite
    # gradient (Gaussian kernels are finite there)
    live = mask & (r2 > 0)
    r = jnp.where(mask, jnp.where(live, jnp.sqrt(jnp.where(live, r2, 1.0)), 0.0), 1.0)
    qj = jnp.where(mask, at_neighbors(charges), 0.0)
    qi = charges[rows]
    gamma = None
    if sigma is not None:
        gamma = jnp.sqrt(sigma[rows][:, None] ** 2 + at_neighbors(sigma) ** 2)
    need_r = "pos" in need or "cell" in need
    if need_r:
        kern, k_r = pair_kernel_dr(r, gamma, smearing)
    else:
        kern = pair_kernel(r, gamma, smearing)
    # every per-row sum the outputs need, reduced in one pass (see _row_sums)
    names, terms = ["phi"], [qj * kern]
    qq = qi[:, None] * qj
    if need_r:
        # w_ij d_ij = dE_pair/dd_ij for the full-list energy ½ Σ q_i q_j K(|d|)
        # (the charges are multiplied in inside the fused sums, so the gathered neighbour
        # charges are never materialised)
        w = qq * (k_r / jnp.where(r > 0, r, 1.0))  # k_r = 0 at coincident centres
        # the cell derivative comes from the pair virial and the position derivatives
        # (see below), so it needs the "pos" sums too
        names += ["pos0", "pos1", "pos2"]
        terms += [w * d[a] for a in range(3)]
        if "cell" in need:
            names += [f"vir{a}{b}" for a, b in _UPPER]
            terms += [w * d[a] * d[b] for a, b in _UPPER]
    if "sigma" in need:
        _, k_g = jax.jvp(lambda g: pair_kernel(r, g, smearing), (gamma,), (jnp.ones_like(gamma),))
        names.append("sigma")
        terms.append(qq * k_g / gamma)
    if "smearing" in need:
        _, k_s = jax.jvp(lambda t: pair_kernel(r, gamma, t), (smearing,), (jnp.ones_like(smearing),))
        names.append("smearing")
        terms.append(qq * k_s)
    sums = dict(zip(names, _row_sums(*terms)))
    phi = KE * sums["phi"]
    out = {"energy": 0.5 * jnp.sum(qi * phi)}
    if "q" in need:
        out["phi"] = phi
    if need_r:
        # ∂E/∂R_i collects the (i, j) and (j, i) terms of the full list
        grad_rows = -KE * jnp.stack([sums[f"pos{a}"] for a in range(3)], axis=-1)
    if "pos" in need:
        out["pos"] = grad_rows
    if "cell" in need:
        # strain identity: scaling positions and cell by (1 + ε) scales every d_ij, so
        # Σ_i R_i ⊗ ∂E/∂R_i + cellᵀ ∂E/∂cell = W, the pair virial ½ KE Σ_ij w_ij d_ij ⊗ d_ij
        # (symmetric: six sums instead of the nine of Σ w n ⊗ d).  It holds for the whole
        # full list, not row by row, but is linear, so the blocks' values add up to it.
        vir = {ab: 0.5 * KE * jnp.sum(sums[f"vir{ab[0]}{ab[1]}"]) for ab in _UPPER}
        virial = jnp.stack([jnp.stack([vir[(min(a, b), max(a, b))] for b in range(3)]) for a in range(3)])
        out["strain"] = virial - positions[rows].T @ grad_rows
    if "sigma" in need:
        out["sigma"] = KE * sigma[rows] * sums["sigma"]
    if "smearing" in need:
        out["smearing"] = 0.5 * KE * jnp.sum(sums["smearing"])
    return out


def _terms(positions, charges, sigma, cell, smearing, nbrs, need):
    """:func:`_block_terms` over all rows, in cache-sized blocks under ``lax.fori_loop``."""
    n_atoms = positions.shape[0]
    if nbrs is None:
        rows = jnp.arange(n_atoms)
        return _block_terms(positions, charges, sigma, cell, smearing, rows, None,
                            ~jnp.eye(n_atoms, dtype=bool), None, need)
    capacity = nbrs.idx.shape[1]
    block = min(n_atoms, max(1, costs().block_slots // max(capacity, 1)))
    if sigma is None and set(need) <= {"q"}:
        limit = costs().single_pass_bytes_energy // positions.dtype.itemsize
    elif sigma is not None and set(need) - {"q"}:
        # derivatives of Gaussian kernels materialise about twice as many arrays: the
        # float64 slot count in any dtype (8,000 atoms × 168 slots in float32: energy +
        # forces + σ-gradient blocked 43 ms, one pass 53 ms; the energy alone one pass
        # 6.3 ms, blocked 16 ms)
        limit = costs().single_pass_bytes // 8
    else:
        limit = costs().single_pass_bytes // positions.dtype.itemsize
    if n_atoms * capacity <= limit:
        return _block_terms(positions, charges, sigma, cell, smearing, jnp.arange(n_atoms), nbrs.idx,
                            nbrs.mask, nbrs.shifts, need)
    # each block's rows of the list are gathered into a contiguous copy (reading them in
    # place through dynamic slices made every block about 1.5× slower); the last block is
    # shifted back to end at row N and its rows that the previous block already summed
    # are masked out, so every pair is counted once
    n_blocks = -(-n_atoms // block)
    probe = jax.eval_shape(lambda: _block_terms(
        positions, charges, sigma, cell, smearing, jnp.arange(block), nbrs.idx[:block], nbrs.mask[:block],
        None if nbrs.shifts is None else nbrs.shifts[:block], need))
    init = {key: (jnp.zeros((n_atoms,) + val.shape[1:], val.dtype) if key in ("phi", "pos", "sigma")
                  else jnp.zeros(val.shape, val.dtype)) for key, val in probe.items()}

    def body(k, acc):
        start = jnp.minimum(k * block, n_atoms - block)
        rows = start + jnp.arange(block)
        fresh = rows >= k * block

        def take(x):
            return jax.lax.dynamic_slice_in_dim(x, start, block, axis=0)

        def rows_of(x):
            return x.at[rows].get(mode="promise_in_bounds")

        out = _block_terms(positions, charges, sigma, cell, smearing, rows, rows_of(nbrs.idx),
                           rows_of(nbrs.mask) & fresh[:, None], None if nbrs.shifts is None else rows_of(nbrs.shifts),
                           need)
        new = {}
        for key, val in out.items():
            if key in ("phi", "pos", "sigma"):
                new[key] = jax.lax.dynamic_update_slice_in_dim(acc[key], take(acc[key]) + val, start, axis=0)
            else:
                new[key] = acc[key] + val
        return new

    return jax.lax.fori_loop(0, n_blocks, body, init)


def _energy(positions, charges, sigma, cell, smearing, nbrs):
    return _terms(positions, charges, sigma, cell, smearing, nbrs, ())["energy"]


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
      Rows are processed in blocks of about :attr:`jaxlr.performance.Costs.block_slots` neighbour slots.
    """
    return _energy(positions, charges, sigma, cell, smearing, nbrs)


def _real_space_jvp(primals, tangents):
    positions, charges, sigma, cell, smearing, nbrs = primals
    t_pos, t_q, t_sig, t_cell, t_s, _ = tangents
    need = tuple(name for name, t, ok in (
        ("q", t_q, True), ("pos", t_pos, True), ("cell", t_cell, cell is not None),
        ("sigma", t_sig, sigma is not None), ("smearing", t_s, smearing is not None))
        if ok and not _is_zero(t))
    out = _terms(positions, charges, sigma, cell, smearing, nbrs, need)
    if "strain" in out:  # cellᵀ ∂E/∂cell, summed over all blocks (see _block_terms)
        out["cell"] = jnp.linalg.solve(cell.T, out.pop("strain"))
    tangent = jnp.zeros_like(out["energy"])
    for name, t in (("phi", t_q), ("pos", t_pos), ("sigma", t_sig), ("cell", t_cell), ("smearing", t_s)):
        if name in out:
            tangent = tangent + jnp.sum(out[name] * t)
    return out["energy"], tangent


real_space_energy.defjvp(_real_space_jvp, symbolic_zeros=True)
