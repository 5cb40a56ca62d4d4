"""Open-boundary LODE features by real-space quadrature around each atom (molecules, clusters).

With no cell, V_a(x) = Σ_{j∈a} v(|x − R_j|), v(s) = erf(s/(√2 σ_L))/s (the potential of a
unit Gaussian, no Coulomb constant), and

    ⟨a n l m|V_i⟩ = Σ_{j∈a} Φ_nl(r_ij) Y_lm(r̂_ij),     r_ij = R_j − R_i,

because each v(|x − r|) is symmetric about the axis r̂: by the Funk–Hecke theorem its
projection on Y_lm(x̂) over a sphere |x| = x is ``2π ∫_{−1}^{1} v(√(x²+r²−2xrt)) P_l(t) dt
· Y_lm(r̂)``, and the pair function is the remaining radial quadrature

    Φ_nl(r) = ∫_0^{r_c} R_n(x) x² h_l(x, r) dx,   h_l(x, r) = 2π ∫_{−1}^{1} v(s(t)) P_l(t) dt.

Split v(s) = 1/s − erfc(s/(√2σ))/s:

* the 1/s part is the Laplace expansion, h_l = 4π/(2l+1) x_<^l/x_>^{l+1}, integrated by
  Gauss–Legendre on [0, min(r, r_c)] and [min(r, r_c), r_c] (smooth on each piece);
* the short-ranged erfc part, after the substitution t → s (dt = −s ds/(xr)), is
  ``−(2π/(xr)) ∫_{|x−r|}^{x+r} erfc(s/(√2σ)) P_l(t(s)) ds`` — a smooth integrand —
  integrated only where s < 8.5·√2σ (erfc below 1e-33 beyond), on x-pieces split at
  x = r, with Gauss–Legendre in s.  Every length scale of the quadrature follows σ, so
  a tiny σ (point-charge limit) is as accurate as a wide one.

The atom's own Gaussian (r = 0) contributes ``√(4π) ∫ R_n x erf(x/√2σ) dx`` to l = 0
(:func:`jaxlr.features._lode_kspace.self_projection`), unless excluded.  All pairs are
evaluated (O(N²) pair functions, rows processed in blocks under ``lax.map``): meant for
molecules and clusters up to a few thousand atoms.  Differentiable with respect to
positions, σ_L and basis widths (the quadrature nodes move with r and σ).

The multipole variant gives V_a, E = −∇V_a and ∂E_α/∂x_β = −∂_α∂_β V_a at each atom from
closed forms of v and its derivatives (a power series near s = 0).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf, erfc

from ..performance import costs
from ._harmonics import real_spherical_harmonics
from ._lode_kspace import radial_evaluator, self_projection
from ._lode_ksum import l_of_lm, species_onehot
from ._pair_table import interpolate_pair_table

__all__ = ["blocked_rows", "lode_direct", "lode_direct_multipoles", "pair_radial_functions"]

#: Gauss–Legendre nodes per x-piece of the point (Laplace) part and of the erfc part, and in s
POINT_NODES = 40
CORR_NODES = 32
S_NODES = 32
#: the erfc part is dropped beyond s = ERFC_RANGE · √2 σ (erfc(8.5) ≈ 6e-33)
ERFC_RANGE = 8.5
#: pairs per block when the pair functions come from a table (an interpolation per pair)
TABLE_BLOCK_PAIRS = 16384


def _gl(n: int, dtype):
    t, w = np.polynomial.legendre.leggauss(n)
    return jnp.asarray(0.5 * (t + 1.0), dtype), jnp.asarray(0.5 * w, dtype)


def _pieces(lo, mid, hi, t, w):
    """Nodes and weights on [lo, mid] ∪ [mid, hi] (arrays of shape r.shape + (2n,))."""
    lo, mid, hi = lo[..., None], mid[..., None], hi[..., None]
    x = jnp.concatenate([lo + (mid - lo) * t, mid + (hi - mid) * t], axis=-1)
    wx = jnp.concatenate([(mid - lo) * w, (hi - mid) * w], axis=-1)
    return x, wx


def _legendre(t, max_l: int):
    """P_l(t), l = 0..max_l, stacked on the last axis."""
    p = [jnp.ones_like(t)]
    if max_l >= 1:
        p.append(t)
    for l in range(1, max_l):
        p.append(((2 * l + 1) * t * p[l] - l * p[l - 1]) / (l + 1))
    return jnp.stack(p, axis=-1)


def pair_radial_functions(r, sigma, widths, *, cutoff: float, max_angular: int, radial=None):
    """Φ_nl(r) for distances r > 0 (see the module docstring): (..., n_max, L+1).

    Args:
      r: (...) pair distances in Å, strictly positive (traced).  sigma: σ_L in Å (traced).
      widths: (n_max,) GTO widths in Å (traced).  cutoff: r_c (static).  max_angular: L.
      radial: optional ``r ↦ R_n(r)`` (:func:`jaxlr.features._lode_kspace.radial_evaluator`
        of the same widths), to reuse one basis transform across calls.

    Returns:
      Φ_nl(r) such that the pair contributes Φ_nl(r) Y_lm(r̂) to ⟨a n l m|V_i⟩.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> pair_radial_functions(jnp.array([1.0, 5.0]), 0.5, jnp.asarray(gto_widths(3.0, 2)),
      ...                       cutoff=3.0, max_angular=1).shape
      (2, 2, 2)
    """
    dtype = jnp.result_type(r, sigma, widths)
    r = jnp.asarray(r, dtype)
    sigma = jnp.asarray(sigma, dtype)
    L = max_angular
    rc = jnp.asarray(cutoff, dtype)
    zero = jnp.zeros_like(r)
    ls = jnp.arange(L + 1, dtype=dtype)
    if radial is None:
        radial = radial_evaluator(jnp.asarray(widths, dtype), cutoff)

    # ---- point part: 4π/(2l+1) ∫ R_n x² x_<^l / x_>^{l+1} dx -------------------------------
    t, w = _gl(POINT_NODES, dtype)
    mid = jnp.minimum(r, rc)
    x, wx = _pieces(zero, mid, rc + zero, t, w)                       # (..., 2P)
    inner = jnp.arange(2 * POINT_NODES) < POINT_NODES                 # x < r on the first piece
    # ≤ 1 (an empty second piece when r > r_c has x = r_c < r and zero weight)
    ratio = jnp.where(inner, x / r[..., None], jnp.minimum(r[..., None] / x, 1.0))
    denom = jnp.where(inner, r[..., None], x)
    kern = jnp.stack([ratio**l for l in range(L + 1)], axis=-1) / denom[..., None]  # (..., 2P, L+1)
    kern = kern * (4.0 * math.pi / (2.0 * ls + 1.0))
    basis = radial(x)                                                 # (..., 2P, n)
    phi = jnp.einsum("...x,...xn,...xl->...nl", wx * x * x, basis, kern)

    # ---- erfc part: −(2π/(x r)) ∫ erfc(s/√2σ) P_l(t(s)) ds over |x−r| < s < min(x+r, s_max) --
    s_max = ERFC_RANGE * math.sqrt(2.0) * sigma
    tc, wc = _gl(CORR_NODES, dtype)
    lo = jnp.clip(r - s_max, 0.0, rc)
    mid = jnp.clip(r, 0.0, rc)
    hi = jnp.clip(r + s_max, 0.0, rc)
    x, wx = _pieces(lo, mid, hi, tc, wc)                              # (..., 2C)
    xs = jnp.where(x > 0, x, 1.0)
    s_lo = jnp.abs(x - r[..., None])
    s_hi = jnp.maximum(jnp.minimum(x + r[..., None], s_max), s_lo)
    ts, ws = _gl(S_NODES, dtype)
    s = s_lo[..., None] + (s_hi - s_lo)[..., None] * ts               # (..., 2C, S)
    wsv = (s_hi - s_lo)[..., None] * ws
    rx = (xs * r[..., None])[..., None]
    cos_t = jnp.clip((xs[..., None] ** 2 + r[..., None, None] ** 2 - s * s) / (2.0 * rx), -1.0, 1.0)
    f = wsv * erfc(s / (math.sqrt(2.0) * sigma))
    h = jnp.einsum("...s,...sl->...l", f, _legendre(cos_t, L))        # (..., 2C, L+1)
    h = -2.0 * math.pi * h / (xs * r[..., None])[..., None]
    basis = radial(x)
    phi = phi + jnp.einsum("...x,...xn,...xl->...nl", wx * x * x, basis, h)
    return phi


def masked_index(species_index, atom_mask):
    """Species index with masked atoms (``atom_mask`` False) set to −1 (padding)."""
    species_index = jnp.asarray(species_index)
    if atom_mask is None:
        return species_index
    return jnp.where(jnp.asarray(atom_mask, bool), species_index, -1)


def _row_blocks(n: int, n_cols: int) -> int:
    return max(1, min(n, costs().lode_direct_block_pairs // max(1, n_cols)))


def blocked_rows(fn, n: int, block: int, dtype):
    """Apply ``fn(rows)`` over rows 0…n−1 in blocks of ``block`` (``lax.map``) and concatenate.

    ``rows`` is a (block,) int32 array of row indices, −1 for the padding of the last block;
    the outputs (a pytree of arrays with a leading block axis) come back with n rows.

    Example:
      >>> import jax.numpy as jnp
      >>> blocked_rows(lambda rows: 2 * rows, 5, 2, jnp.int32).tolist()
      [0, 2, 4, 6, 8]
    """
    n_blocks = -(-n // block)
    idx = np.full(n_blocks * block, -1, dtype=np.int32)
    idx[:n] = np.arange(n)
    out = jax.lax.map(fn, jnp.asarray(idx.reshape(n_blocks, block)))
    return jax.tree_util.tree_map(lambda a: a.reshape((n_blocks * block,) + a.shape[2:])[:n], out)


def _row_pairs(idx, valid, exclude_center: bool):
    """Atoms ``i`` of a block of rows and the (B, N) mask of the pairs (i, j) that count.

    ``idx`` (B,) row indices, −1 for the padding rows of the last block (mapped to atom 0
    with no pair counting); ``valid`` (N,) real atoms.  With ``exclude_center`` the pair
    (i, i) does not count.
    """
    ok = idx >= 0
    i = jnp.where(ok, idx, 0)
    use = ok[:, None] & valid[i][:, None] & valid[None, :]
    if exclude_center:
        use = use & (jnp.arange(valid.shape[0])[None, :] != i[:, None])
    return i, use


def lode_direct(positions, species_index, sigma, widths, *, n_species: int, cutoff: float,
                max_angular: int, exclude_center: bool = False, atom_mask=None, table=None):
    """Open-boundary LODE features ⟨a n l m|V_i⟩ by real-space quadrature (jittable).

    Args:
      positions: (N, 3) Å.  species_index: (N,) int in [0, n_species), −1 for padding.
      sigma: σ_L in Å (traced).  widths: (n_max,) GTO widths in Å (traced).
      n_species, cutoff (r_c, Å), max_angular (L): static.
      exclude_center: leave out the atom's own Gaussian.
      atom_mask: optional (N,) bool, True for real atoms (combined with
        ``species_index ≥ 0``).  Masked atoms contribute nothing and get zero features;
        every pair that does not count is evaluated on a stand-in distance and direction
        (double ``where``), so values and derivatives stay finite wherever the padding
        atoms sit — on top of each other or of real atoms included.
      table: optional :class:`jaxlr.features._pair_table.PairTable` of the same σ_L,
        widths, r_c and L: the pair functions are then interpolated from it instead of
        integrated per pair (orders of magnitude cheaper; see that module for its error).

    Returns:
      (N, n_species, n_max, (L+1)²) features (e/Å · Å^{3/2}; no k_e factor).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> R = jnp.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.5, 0]])
      >>> lode_direct(R, jnp.array([0, 1, 1]), 0.5, jnp.asarray(gto_widths(3.0, 4)),
      ...             n_species=2, cutoff=3.0, max_angular=2).shape
      (3, 2, 4, 9)
    """
    dtype = positions.dtype
    n = positions.shape[0]
    L = max_angular
    lidx = l_of_lm(L)
    sigma = jnp.asarray(sigma, dtype)
    species_index = masked_index(species_index, atom_mask)
    onehot = species_onehot(species_index, n_species, dtype)
    valid = species_index >= 0
    n_max = widths.shape[0]
    phi0 = jnp.zeros((n_max, L + 1), dtype).at[:, 0].set(
        self_projection(sigma, widths, cutoff=cutoff) * math.sqrt(4.0 * math.pi))
    radial = radial_evaluator(jnp.asarray(widths, dtype), cutoff)

    def rows(idx):
        i, use = _row_pairs(idx, valid, exclude_center)
        # pairs that do not count (padding, or the other end of a padding row) see a
        # stand-in unit vector; coincident real pairs take the own-Gaussian limit
        rij = jnp.where(use[..., None], positions[None, :, :] - positions[i][:, None, :],
                        jnp.asarray([0.0, 0.0, 1.0], dtype))           # (B, N, 3)
        d2 = jnp.sum(rij * rij, axis=-1)
        apart = d2 > 0
        d = jnp.sqrt(jnp.where(apart, d2, 1.0))
        if table is None:
            phi = pair_radial_functions(d, sigma, widths, cutoff=cutoff, max_angular=L, radial=radial)
        else:
            phi = interpolate_pair_table(table, d)
        phi = jnp.where(apart[..., None, None], phi, phi0)               # coincident: own-Gaussian limit
        y = real_spherical_harmonics(rij, L)                             # (B, N, LM)
        weight = jnp.where(use[..., None], onehot[None], jnp.zeros((), dtype))  # (B, N, A)
        return jnp.einsum("bjnq,bjq,bja->banq", phi[..., lidx], y, weight)

    block = _row_blocks(n, n) if table is None else max(1, min(n, TABLE_BLOCK_PAIRS // max(1, n)))
    return blocked_rows(rows, n, block, dtype)


# ---- multipoles ------------------------------------------------------------------------------
_SERIES_MAX = 2.0
_SERIES_TERMS = 32


def _f_derivatives(y):
    """F(y) = erf(√y)/√y and its first two derivatives, y ≥ 0 (series below y = 2)."""
    small = y < _SERIES_MAX
    ys = jnp.where(small, y, 0.0)
    c = 2.0 / math.sqrt(math.pi)
    a = [(-1.0) ** k / (math.factorial(k) * (2 * k + 1)) for k in range(_SERIES_TERMS)]

    def poly(coeffs):
        acc = jnp.zeros_like(ys)
        for cf in reversed(coeffs):
            acc = acc * ys + cf
        return c * acc

    f_s = poly(a)
    d1_s = poly([k * a[k] for k in range(1, _SERIES_TERMS)])
    d2_s = poly([k * (k - 1) * a[k] for k in range(2, _SERIES_TERMS)])
    yl = jnp.where(small, _SERIES_MAX, y)
    root = jnp.sqrt(yl)
    e = jnp.exp(-yl) / math.sqrt(math.pi)
    f_l = erf(root) / root
    d1_l = (e - 0.5 * f_l) / yl
    d2_l = (-e - 1.5 * d1_l) / yl
    return (jnp.where(small, f_s, f_l), jnp.where(small, d1_s, d1_l), jnp.where(small, d2_s, d2_l))


def lode_direct_multipoles(positions, species_index, sigma, *, n_species: int, exclude_center: bool = False,
                           atom_mask=None):
    """Potential, field and field gradient of each species density at each atom (open boundary).

    ``V_a(R_i) = Σ_{j∈a} erf(r_ij/√2σ)/r_ij``, ``E = −∇V_a``, ``field_gradient = ∂E_α/∂x_β``.
    With v(s) = g(s²): ∇V = Σ_j 2g'(u)(R_i − R_j), ∇∇V = Σ_j [2g'(u)·1 + 4g''(u) r r^T].

    Args:
      positions: (N, 3) Å.  species_index: (N,) int, −1 for padding.  sigma: σ_L in Å
        (traced).  n_species (static).  exclude_center: leave out the own Gaussian.
      atom_mask: optional (N,) bool, True for real atoms (as in :func:`lode_direct`).

    Returns:
      ``(potential (N, A), field (N, A, 3), field_gradient (N, A, 3, 3))`` in e/Å, e/Å², e/Å³.

    Example:
      >>> import jax.numpy as jnp
      >>> pot, field, grad = lode_direct_multipoles(jnp.array([[0.0, 0, 0], [4.0, 0, 0]]), jnp.array([0, 0]),
      ...                                           0.5, n_species=1, exclude_center=True)
      >>> round(float(pot[0, 0]), 6), round(float(field[0, 0, 0]), 6)   # 1/r, −1/r²
      (0.25, -0.0625)
    """
    dtype = positions.dtype
    n = positions.shape[0]
    sigma = jnp.asarray(sigma, dtype)
    species_index = masked_index(species_index, atom_mask)
    onehot = species_onehot(species_index, n_species, dtype)
    valid = species_index >= 0
    s2 = 2.0 * sigma * sigma
    norm = 1.0 / (math.sqrt(2.0) * sigma)

    def rows(idx):
        i, use = _row_pairs(idx, valid, exclude_center)
        rij = jnp.where(use[..., None], positions[None, :, :] - positions[i][:, None, :],
                        jnp.zeros((), dtype))                           # R_j − R_i (0 if unused)
        u = jnp.sum(rij * rij, axis=-1)
        f, d1, d2 = _f_derivatives(u / s2)
        g, g1, g2 = norm * f, norm * d1 / s2, norm * d2 / (s2 * s2)
        weight = jnp.where(use[..., None], onehot[None], jnp.zeros((), dtype))
        pot = jnp.einsum("bj,bja->ba", g, weight)
        field = jnp.einsum("bj,bjx,bja->bax", 2.0 * g1, rij, weight)      # −∇V = Σ 2g' (R_j − R_i)
        hess = (jnp.einsum("bj,bja->ba", 2.0 * g1, weight)[..., None, None] * jnp.eye(3, dtype=dtype)
                + jnp.einsum("bj,bjx,bjy,bja->baxy", 4.0 * g2, rij, rij, weight))
        return pot, field, -hess

    # the own Gaussian is the j = i pair: g(0) = √(2/π)/σ, no field, −2g'(0)·1 = √(2/π)/(3σ³)·1
    return blocked_rows(rows, n, _row_blocks(n, n), dtype)
