"""Periodic LODE features on the smooth-PME mesh — O(N log N).

Route (one species density at a time, on the mesh of :mod:`jaxlr.electrostatics`: fractional
coordinates along the rows of ``spec.basis @ cell``, cardinal B-splines of order p):

1. spread the unit "charges" of species a: Q_a (K1, K2, K3); one forward FFT → Q̂_a;
2. for each radial channel (n, l) multiply by the *radial* filter
   ``G_nl(k) = (16π²/V) ψ(k) J_nl(k) · D(m)``, ψ = e^{−σ_L²k²/2}/k² (0 at k = 0),
   J_nl = I_nl/k^l (:mod:`jaxlr.features`, cubic-Hermite table in |k|),
   D(m) the B-spline deconvolution;
3. one inverse FFT → a real mesh field Φ_anl;
4. interpolate, at each atom, the l-th derivatives of Φ_anl with derivatives of the
   B-spline weights, and combine them with the solid harmonic S_lm of the gradient:

       ⟨a n l m|V_i⟩ = S_lm(∇) Φ_anl (R_i),

   since S_lm(∇) e^{ik·R} = i^l S_lm(k) e^{ik·R} = i^l k^l Y_lm(k̂) e^{ik·R}, which restores
   the factor 4π i^l Y_lm(k̂) I_nl(k) of the k-sum (:mod:`jaxlr.features`).

So the cost is n_species · n_max · (L+1) inverse FFTs (not · (L+1)²), and no spherical
harmonic is ever evaluated on the mesh.  Derivatives with respect to the Cartesian
position follow from those in mesh units w = K u by ∇_R = B ∇_w with
``B = (spec.basis @ cell)⁻¹ · diag(K)``; S_lm(B z) is re-expanded in monomials z^β of
degree l (coefficients by a fixed least-squares fit, traced in B).

Deconvolution ``influence``: ``"optimal"`` (default: D = Û²/(Σ_a Û²(k_a))², the
principal-image optimal influence function of P3M for interpolated values, as
:func:`jaxlr.electrostatics.influence_function`) or ``"spme"`` (D = 1/(Σ_a Û(k_a))², Essmann et al.).
The l-th derivative of the interpolation converges with order p − l, so the spline order
must exceed L + 1 (:func:`check_spec`); the tuner (:func:`jaxlr.tuning.tune_lode`)
picks p and the mesh from a calibrated error model.  Interpolation gathers, per atom, the
p×p×p window of the L+1 fields of one (species, n) channel at once and contracts it with
the derivative weights, atoms on the fast axis (vectorised across atoms).

The multipole variant uses the same machinery with the filter (4π/V) ψ D and derivatives
of order 0, 1, 2: potential, field E = −∇V_a, field gradient ∂E_α/∂x_β.

Everything is differentiable with respect to positions, cell, σ_L and basis widths;
padding atoms (species index −1) neither spread nor receive features.
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._ewald import screened_inverse_square
from ..electrostatics._pme import MeshSpec, k_squared, spread_charges
from ..electrostatics._splines import alias_sum_u, alias_sum_u2, bspline_weights
from ..performance import costs
from ._harmonics import solid_harmonics
from ._lode_kspace import (
    hermite_basis,
    interpolate_radial_integral,
    radial_evaluator,
    radial_integral_table,
    radial_nodes,
    self_projection,
)
from ._lode_ksum import finish_features, finish_multipoles, species_onehot

__all__ = ["make_lode_pme", "make_lode_pme_multipoles", "check_spec", "bspline_derivative_weights", "solid_operator",
           "K_NEGLIGIBLE"]

#: σ_L·k beyond which e^{−σ_L²k²/2} < 3e-18: the J_nl table and the filter stop there
K_NEGLIGIBLE = 9.0


def check_spec(spec: MeshSpec, max_derivative: int) -> None:
    """Refuse meshes the LODE route cannot use (structural, before tracing): a ValueError
    unless the spline order is even, ≥ 4 and ≥ ``max_derivative`` + 2, every mesh dimension
    is at least the order, and the influence is "optimal" or "spme".

    Example:
      >>> import jaxlr
      >>> check_spec(jaxlr.MeshSpec((16, 16, 16), 6), 3)      # fine: returns None
      >>> check_spec(jaxlr.MeshSpec((16, 16, 16), 4), 3)
      Traceback (most recent call last):
      ...
      ValueError: spline order 4 is too low for derivatives of order 3 (max_angular or the multipole order); use order ≥ 5 (≥ 7 recommended).
    """
    if spec.order % 2 or spec.order < 4:
        raise ValueError(f"the PME spline order must be even and ≥ 4, got {spec.order}.")
    if spec.order < max_derivative + 2:
        raise ValueError(f"spline order {spec.order} is too low for derivatives of order {max_derivative} "
                         f"(max_angular or the multipole order); use order ≥ {max_derivative + 2} "
                         f"(≥ {max_derivative + 4} recommended).")
    if min(spec.shape) < spec.order:
        raise ValueError(f"every mesh dimension must be at least the spline order {spec.order}, got {spec.shape}.")
    if spec.influence not in ("optimal", "spme"):
        raise ValueError(f"influence must be 'optimal' or 'spme', got {spec.influence!r}.")


def bspline_derivative_weights(t, order: int, max_derivative: int):
    """r-th derivatives of the cardinal B-spline weights, r = 0 … max_derivative.

    ``out[..., r, j] = M_p^{(r)}(t + j)`` (j = 0 … p−1) from
    ``M_p^{(r)}(x) = Σ_s (−1)^s C(r, s) M_{p−r}(x − s)``.

    Args:
      t: offsets in [0, 1), any shape S.  order: p (static).  max_derivative: r_max ≤ p − 2.

    Returns:
      S + (r_max + 1, p).

    Example:
      >>> import jax.numpy as jnp
      >>> w = bspline_derivative_weights(jnp.array(0.3), 6, 2)
      >>> [abs(round(float(v), 5)) for v in w.sum(axis=-1)]   # Σ_j M^(r) = δ_r0
      [1.0, 0.0, 0.0]
    """
    out = []
    for r in range(max_derivative + 1):
        q = order - r
        lower, _ = bspline_weights(t, q)   # M_q(t + j), j = 0 … q−1
        cols = []
        for j in range(order):
            acc = jnp.zeros_like(t)
            for s in range(r + 1):
                if 0 <= j - s < q:
                    acc = acc + (-1.0) ** s * math.comb(r, s) * lower[..., j - s]
            cols.append(acc)
        out.append(jnp.stack(cols, axis=-1))
    return jnp.stack(out, axis=-2)


def _stencils(frac, spec: MeshSpec, max_derivative: int):
    """Window starts (N, 3) and derivative weights (N, 3, r+1, p) in window order."""
    k = jnp.asarray(spec.shape, frac.dtype)
    w = frac * k
    base = jnp.floor(w)
    wts = bspline_derivative_weights(w - base, spec.order, max_derivative)
    starts = base.astype(jnp.int32) % jnp.asarray(spec.shape, jnp.int32)
    return starts, wts[..., ::-1]


_GATHER = jax.lax.GatherDimensionNumbers(offset_dims=(1, 2, 3, 4), collapsed_slice_dims=(),
                                         start_index_map=(0, 1, 2))


def _at_atoms(fields, starts, weights, spec: MeshSpec, fn):
    """``fn(windows, weights)`` over blocks of atoms, windows (b, p, p, p, F) of the fields.

    ``fields`` (K1, K2, K3, F) get p−1 periodic ghost planes below index 0 on each axis,
    so each atom's stencil is one contiguous window (one gather for all F fields).  Atoms
    are processed in blocks of ≈ ``costs().lode_pme_block_points`` gathered values under ``lax.map``.
    """
    p = spec.order
    padded = fields
    for axis, k in enumerate(spec.shape):
        padded = jax.lax.concatenate([jax.lax.slice_in_dim(padded, k - p + 1, k, axis=axis), padded], axis)
    n_fields = fields.shape[-1]

    def block(args):
        st, wt = args
        vals = jax.lax.gather(padded, st, _GATHER, slice_sizes=(p, p, p, n_fields),
                              mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
        return fn(vals, wt)

    n = starts.shape[0]
    size = max(16, costs().lode_pme_block_points // (p**3 * n_fields))
    if n <= size:
        return block((starts, weights))
    n_blocks = -(-n // size)
    pad = n_blocks * size - n
    st = jnp.concatenate([starts, jnp.zeros((pad, 3), starts.dtype)]).reshape(n_blocks, size, 3)
    wt = jnp.concatenate([weights, jnp.zeros((pad,) + weights.shape[1:], weights.dtype)])
    out = jax.lax.map(block, (st, wt.reshape((n_blocks, size) + weights.shape[1:])))
    return jax.tree_util.tree_map(lambda a: a.reshape((n_blocks * size,) + a.shape[2:])[:n], out)


def _contract(vals, wts, order: int):
    """Σ_xyz vals[n,x,y,z] W0[n,a,x] W1[n,b,y] W2[n,c,z] for a, b, c ≤ order: (n, o+1, o+1, o+1).

    Evaluated with the atom axis last (contiguous), which lets XLA vectorise the three
    small contractions across atoms — 2–3× faster on CPU than batched tiny matmuls.
    """
    v = jnp.moveaxis(vals, 0, -1)                                   # (x, y, z, n)
    w = jnp.moveaxis(wts[:, :, : order + 1], 0, -1)                 # (3, c, p, n)
    t = jnp.einsum("xyzn,czn->xycn", v, w[2])
    t = jnp.einsum("xycn,byn->xbcn", t, w[1])
    return jnp.moveaxis(jnp.einsum("xbcn,axn->abcn", t, w[0]), -1, 0)


def _derivatives(mesh, starts, weights, spec: MeshSpec, order: int):
    """Derivatives ∂^a_{w1} ∂^b_{w2} ∂^c_{w3} of one interpolated mesh field, a, b, c ≤ order.

    Returns (N, order+1, order+1, order+1).
    """
    return _at_atoms(mesh[..., None], starts, weights, spec, lambda v, w: _contract(v[..., 0], w, order))


def _solid_derivatives(fields, starts, weights, spec: MeshSpec, operators):
    """S_lm(∇) of field l at the atoms, for a stack of fields (K1, K2, K3, L+1): (N, (L+1)²).

    One gather of the p×p×p×(L+1) window per atom serves all L+1 fields; field l is then
    contracted with the derivative weights up to order l and combined with the monomial
    coefficients of S_lm(B ∇_w) (``operators[l] = (monomials, coefficients)``).
    """
    def fn(vals, wt):
        out = []
        for l, (mons, coef) in enumerate(operators):
            d = _contract(vals[..., l], wt, l)
            out.append(d[:, mons[:, 0], mons[:, 1], mons[:, 2]] @ coef)
        return jnp.concatenate(out, axis=-1)

    return _at_atoms(fields, starts, weights, spec, fn)


@lru_cache(maxsize=64)
def _deconvolution(spec: MeshSpec):
    """D(m) on the rfft half mesh (host, float64) and the integer frequencies (m1, m2, m3).

    ``"optimal"``: Û²(m/K)/(Σ_a Û²(m/K + a))² per axis (principal image of the optimal
    influence function; Σ_a Û² = Σ_n M_{2p}(p + n) cos(2πmn/K) exactly);
    ``"spme"``: 1/(Σ_a Û(m/K + a))² with Σ_a Û = Σ_n M_p(p/2 + n) cos(2πmn/K) — the
    closed-form alias sums of :mod:`jaxlr.electrostatics` (shared with :mod:`jaxlr.electrostatics`).
    """
    p = spec.order
    k1, k2, k3 = spec.shape
    ms = (np.fft.fftfreq(k1, 1.0 / k1), np.fft.fftfreq(k2, 1.0 / k2), np.arange(k3 // 2 + 1, dtype=np.float64))
    factors = []
    for m, k in zip(ms, spec.shape):
        if spec.influence == "spme":
            factors.append(1.0 / alias_sum_u(m, k, p) ** 2)
        else:
            factors.append(np.sinc(m / k) ** (2 * p) / alias_sum_u2(m, k, p) ** 2)
    d = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    return ms, d


@lru_cache(maxsize=None)
def _monomial_fit(l: int):
    """Monomials (a, b, c) of degree l and the least-squares map from samples to coefficients."""
    mons = [(a, b, l - a - b) for a in range(l, -1, -1) for b in range(l - a, -1, -1)]
    rng = np.random.default_rng(7 + l)
    z = rng.normal(size=(2 * len(mons) + 4, 3))
    vand = np.stack([z[:, 0] ** a * z[:, 1] ** b * z[:, 2] ** c for a, b, c in mons], axis=1)
    return np.array(mons), z, np.linalg.pinv(vand)


def solid_operator(bmat, l: int):
    """Coefficients c[β, m] with S_lm(B z) = Σ_β c[β, m] z^β, |β| = l (traced in B).

    Returns ``(monomials (n_β, 3) numpy int, coefficients (n_β, 2l+1))``.

    Example:
      >>> import jax.numpy as jnp
      >>> mons, coef = solid_operator(jnp.eye(3), 1)      # S_1m(z) = √(3/4π) (z_y, z_z, z_x)
      >>> mons.tolist(), [abs(round(float(c), 5)) for c in coef[0]]
      ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], [0.0, 0.0, 0.4886])
    """
    mons, z, fit = _monomial_fit(l)
    y = solid_harmonics(jnp.asarray(z, bmat.dtype) @ bmat.T, l)[:, l * l:]
    return mons, jnp.asarray(fit, bmat.dtype) @ y


def _mesh_geometry(positions, cell, sigma, spec: MeshSpec):
    """Fractional coordinates, B, volume, |k| (safe), ψ·D on the rfft half mesh."""
    dtype = positions.dtype
    mesh_cell = jnp.asarray(spec.basis, dtype) @ cell
    inv = jnp.linalg.inv(mesh_cell)
    frac = positions @ inv
    bmat = inv * jnp.asarray(spec.shape, dtype)[None, :]
    volume = jnp.abs(jnp.linalg.det(cell))
    (m1, m2, m3), deconv = _deconvolution(spec)
    metric = (2.0 * math.pi) ** 2 * (inv.T @ inv)
    k2 = k_squared(metric, [jnp.asarray(m, dtype) for m in (m1, m2, m3)])
    psi, safe = screened_inverse_square(k2, sigma)
    psi = psi * jnp.asarray(deconv, dtype)
    return frac, bmat, volume, jnp.sqrt(safe), psi


def _species_spectra(frac, species_index, n_species: int, spec: MeshSpec):
    """rfft of the spread unit charges of each species, (A, K1, K2, K3//2+1)."""
    dtype = frac.dtype
    out = []
    for a in range(n_species):
        q = (species_index == a).astype(dtype)
        out.append(jnp.fft.rfftn(spread_charges(frac, q, spec)))
    return jnp.stack(out)


@lru_cache(maxsize=64)
def make_lode_pme(spec: MeshSpec, *, n_species: int, cutoff: float, max_angular: int, n_points: int,
                  n_table: int, exclude_center: bool = False):
    """Build ``f(positions, species_index, cell, sigma, widths) -> (N, A, n_max, (L+1)²)``.

    Args of the factory (static): ``spec`` (:class:`jaxlr.MeshSpec`, order ≥ L + 2),
    ``n_species``, ``cutoff`` r_c (Å), ``max_angular`` L, ``n_points`` (radial quadrature
    nodes of J_nl up to the largest mesh |k|), ``n_table`` (Hermite table size, see
    :data:`jaxlr.features._lode_kspace.TABLE_STEP`), ``exclude_center``.

    Args of the returned function (traced): positions (N, 3) Å; species_index (N,) int,
    −1 for padding; cell (3, 3) Å rows = lattice vectors; sigma σ_L (Å); widths (n_max,) Å.

    Returns the features ⟨a n l m|V_i⟩ (no k_e factor, k = 0 dropped; see
    :mod:`jaxlr.features` for the conventions).

    Example:
      >>> import numpy as np, jax.numpy as jnp, jaxlr
      >>> from jaxlr.features import gto_widths
      >>> f = make_lode_pme(jaxlr.MeshSpec((24, 24, 24), 8), n_species=1, cutoff=3.0, max_angular=2,
      ...                   n_points=96, n_table=400)
      >>> R = jnp.array([[0.0, 0, 0], [3.0, 3, 3]])
      >>> f(R, jnp.array([0, 0]), jnp.eye(3) * 8.0, 1.0, jnp.asarray(gto_widths(3.0, 4))).shape
      (2, 1, 4, 9)
    """
    check_spec(spec, max_angular)
    L = max_angular
    n_total = float(np.prod(spec.shape))

    def features(positions, species_index, cell, sigma, widths):
        dtype = positions.dtype
        sigma = jnp.asarray(sigma, dtype)
        widths = jnp.asarray(widths, dtype)
        n_max = widths.shape[0]
        n = positions.shape[0]
        frac, bmat, volume, kn, psi = _mesh_geometry(positions, cell, sigma, spec)
        base = (16.0 * math.pi**2 * n_total / volume) * psi
        qhat = _species_spectra(frac, species_index, n_species, spec)
        # beyond σ_L k = 9 the Gaussian factor is below 3e-18: the table stops there
        k_top = jnp.minimum(jnp.max(kn), K_NEGLIGIBLE / sigma) * (1.0 + 1e-12)
        radial = radial_evaluator(widths, cutoff)
        nodes = radial_nodes(widths, cutoff=cutoff, n_points=n_points, radial=radial)
        values, derivs = radial_integral_table(nodes, k_top, max_angular=L, n_table=n_table)
        index, hw = hermite_basis(jnp.minimum(kn, k_top), k_top, n_table)
        starts, weights = _stencils(frac, spec, L)
        operators = [solid_operator(bmat, l) for l in range(L + 1)]

        def channel(an):
            a, nn = an // n_max, an % n_max
            fields = []
            for l in range(L + 1):
                j = interpolate_radial_integral((values[:, nn, l], derivs[:, nn, l]), index, hw)
                fields.append(jnp.fft.irfftn(qhat[a] * (base * j).astype(qhat.dtype), s=spec.shape))
            return _solid_derivatives(jnp.stack(fields, axis=-1), starts, weights, spec, operators)

        out = jax.lax.map(channel, jnp.arange(n_species * n_max))               # (A·n, N, (L+1)²)
        result = out.reshape(n_species, n_max, n, (L + 1) ** 2).transpose(2, 0, 1, 3)
        onehot = species_onehot(species_index, n_species, dtype)
        own = self_projection(sigma, widths, cutoff=cutoff, radial=radial) if exclude_center else None
        return finish_features(result, species_index, onehot, own, exclude_center)

    return features


@lru_cache(maxsize=64)
def make_lode_pme_multipoles(spec: MeshSpec, *, n_species: int, exclude_center: bool = False):
    """Build ``f(positions, species_index, cell, sigma) -> (potential, field, field_gradient)``.

    Shapes (N, A), (N, A, 3), (N, A, 3, 3); e/Å, e/Å², e/Å³.  Field E = −∇V_a, field
    gradient ∂E_α/∂x_β = −∂_α∂_β V_a (k = 0 dropped: uniform background per species).
    One inverse FFT per species; derivatives of the B-spline interpolation up to order 2
    (spline order ≥ 4).  Arguments as :func:`make_lode_pme` (no basis).

    Example:
      >>> import jax.numpy as jnp, jaxlr
      >>> f = make_lode_pme_multipoles(jaxlr.MeshSpec((16, 16, 16), 6), n_species=1)
      >>> pot, field, grad = f(jnp.array([[0.0, 0, 0], [3.0, 3, 3]]), jnp.array([0, 0]), jnp.eye(3) * 6.0, 1.0)
      >>> pot.shape, field.shape, grad.shape
      ((2, 1), (2, 1, 3), (2, 1, 3, 3))
    """
    check_spec(spec, 2)
    n_total = float(np.prod(spec.shape))

    def multipoles(positions, species_index, cell, sigma):
        dtype = positions.dtype
        sigma = jnp.asarray(sigma, dtype)
        frac, bmat, volume, _, psi = _mesh_geometry(positions, cell, sigma, spec)
        base = (4.0 * math.pi * n_total / volume) * psi
        qhat = _species_spectra(frac, species_index, n_species, spec)
        starts, weights = _stencils(frac, spec, 2)

        def species(a):
            field = jnp.fft.irfftn(qhat[a] * base.astype(qhat.dtype), s=spec.shape)
            d = _derivatives(field, starts, weights, spec, 2)
            grad_w = jnp.stack([d[:, 1, 0, 0], d[:, 0, 1, 0], d[:, 0, 0, 1]], axis=-1)
            hess_w = jnp.stack([
                jnp.stack([d[:, 2, 0, 0], d[:, 1, 1, 0], d[:, 1, 0, 1]], axis=-1),
                jnp.stack([d[:, 1, 1, 0], d[:, 0, 2, 0], d[:, 0, 1, 1]], axis=-1),
                jnp.stack([d[:, 1, 0, 1], d[:, 0, 1, 1], d[:, 0, 0, 2]], axis=-1)], axis=-2)
            grad = grad_w @ bmat.T
            hess = jnp.einsum("xd,nde,ye->nxy", bmat, hess_w, bmat)
            return d[:, 0, 0, 0], -grad, -hess

        pot, field, grad = jax.lax.map(species, jnp.arange(n_species))
        pot, field, grad = pot.T, field.transpose(1, 0, 2), grad.transpose(1, 0, 2, 3)
        onehot = species_onehot(species_index, n_species, dtype)
        return finish_multipoles(pot, field, grad, species_index, onehot, sigma, exclude_center)

    return multipoles
