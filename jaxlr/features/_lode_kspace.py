"""Radial integrals shared by the reciprocal-space LODE routes (k-sum and PME).

The projection of a plane wave on the local basis inside the sphere |x| < r_c is, by the
plane-wave expansion ``e^{ik·x} = 4π Σ_l i^l j_l(kx) Σ_m Y_lm(k̂) Y_lm(x̂)``,

    ∫_{|x|<r_c} R_n(|x|) Y_lm(x̂) e^{ik·x} d³x = 4π i^l Y_lm(k̂) I_nl(k),
    I_nl(k) = ∫_0^{r_c} R_n(r) j_l(kr) r² dr.

Both routes work with the *reduced* integral ``J_nl(k) = I_nl(k) / k^l``, which is an
entire, even function of k (finite at k = 0, where ``J_nl(0) = ∫ R_n r^{l+2} dr / (2l+1)!!``),
because ``Y_lm(k̂) I_nl(k) = S_lm(k) J_nl(k)`` with the solid harmonic ``S_lm(k) = k^l Y_lm(k̂)``
— a polynomial — so no direction of a zero vector is ever needed.

Contents:

* :func:`spherical_bessel_reduced` — ``g_l(z) = j_l(z)/z^l`` for l = 0…L, stable for all
  z ≥ 0 (power series below a per-l switch point, upward recurrence above it).
* :func:`reduced_radial_integral` — J_nl(k) by Gauss–Legendre quadrature on [0, r_c].
* :func:`radial_integral_table` / :func:`interpolate_radial_integral` — J_nl on a uniform
  k grid with exact derivatives, cubic Hermite interpolation (what the PME mesh uses).
* :func:`self_projection` — the projection of an atom's own Gaussian potential (l = 0 only).

All functions are jittable and differentiable with respect to k, σ_L and the basis widths;
the cutoff and the sizes are static.
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ._radial import radial_quadrature, radial_transform

__all__ = ["spherical_bessel_reduced", "spherical_bessel", "reduced_radial_integral", "radial_evaluator",
           "projected_bessel", "radial_nodes", "radial_points", "radial_integral_table", "hermite_basis",
           "interpolate_radial_integral", "self_projection", "TABLE_STEP"]

#: step of the Hermite table in units of 1/r_c: Δk·r_c = 0.02 keeps the cubic Hermite error
#: (Δk r_c)^4/384 ≈ 4e-10 relative to the scale of J_nl
TABLE_STEP = 0.02


def _double_factorial_odd(l: int) -> float:
    """(2l+1)!! = 1·3·5···(2l+1)."""
    return float(np.prod(np.arange(1, 2 * l + 2, 2, dtype=np.float64)))


def _switch(l: int) -> float:
    """Below this z the power series is used for g_l (upward recurrence is unstable for z ≲ l)."""
    return float(max(l, 2) + 1)


@lru_cache(maxsize=None)
def _series_terms(l: int) -> int:
    """Number of series terms for g_l at z < _switch(l) (host): next term < 1e-18 of the first."""
    x = 0.5 * _switch(l) ** 2
    term, k = 1.0, 0
    while term > 1e-18 or k < 4:
        k += 1
        term *= x / (k * (2 * l + 2 * k + 1))
    return k


def spherical_bessel_reduced(z, max_l: int):
    """Reduced spherical Bessel functions ``g_l(z) = j_l(z) / z^l`` for l = 0 … max_l.

    ``g_l`` is entire and even in z, ``g_l(0) = 1/(2l+1)!!`` and ``g_l'(z) = −z g_{l+1}(z)``.
    For each l the power series ``g_l(z) = Σ_k (−z²/2)^k / (k! (2l+1)!! Π_{i≤k}(2l+2i+1))``
    is used below ``z = max(l, 2) + 1`` (where upward recurrence would amplify round-off),
    and the upward recurrence ``g_{l+1} = ((2l+1) g_l − g_{l−1}) / z²`` from
    ``g_0 = sin z / z`` above it; both branches are evaluated on safe arguments and selected
    with a double ``where``, so values and derivatives are finite everywhere.

    Args:
      z: (...) array, z ≥ 0 (dimensionless).
      max_l: largest l (static).

    Returns:
      (..., max_l + 1) array, dtype of z.

    Example:
      >>> import jax.numpy as jnp
      >>> g = spherical_bessel_reduced(jnp.array(0.0), 2)   # 1, 1/3, 1/15
      >>> [round(float(v), 6) for v in g]
      [1.0, 0.333333, 0.066667]
    """
    return bessel_reduced(jnp.asarray(z), max_l, jnp)


def bessel_reduced(z, max_l: int, xp):
    """:func:`spherical_bessel_reduced` for the array module ``xp`` (jax.numpy, or numpy on the host)."""
    # upward recurrence on a clamped argument (valid for z ≥ 1; selected only above the switch)
    zr = xp.where(z < 1.0, 1.0, z)
    inv2 = 1.0 / (zr * zr)
    rec = [xp.sin(zr) / zr]
    if max_l >= 1:
        rec.append((rec[0] - xp.cos(zr)) * inv2)
    for l in range(1, max_l):
        rec.append(((2 * l + 1) * rec[l] - rec[l - 1]) * inv2)
    rec = xp.stack(rec, axis=-1)
    # power series for all l at once (Horner, vectorised over l; each l on its own safe argument)
    ls = np.arange(max_l + 1)
    switch = np.array([_switch(l) for l in ls])
    terms = max(_series_terms(l) for l in ls)
    small = z[..., None] < xp.asarray(switch, z.dtype)
    x = -0.5 * xp.square(xp.where(small, z[..., None], 0.0))
    acc = xp.ones_like(x)
    for k in range(terms, 0, -1):          # host coefficients cast to the input dtype
        acc = 1.0 + x * acc * xp.asarray(1.0 / (k * (2 * ls + 2 * k + 1)), x.dtype)
    norm = xp.asarray([1.0 / _double_factorial_odd(l) for l in ls], x.dtype)
    return xp.where(small, acc * norm, rec)


def spherical_bessel(z, max_l: int):
    """Spherical Bessel functions ``j_l(z)`` for l = 0 … max_l, z ≥ 0: (..., max_l + 1).

    ``j_l = z^l g_l`` with :func:`spherical_bessel_reduced` (integer powers by products,
    finite derivatives at z = 0).

    Example:
      >>> import jax.numpy as jnp
      >>> round(float(spherical_bessel(jnp.array(1.0), 1)[1]), 6)   # sin 1 − cos 1
      0.301169
    """
    z = jnp.asarray(z)
    g = spherical_bessel_reduced(z, max_l)
    powers = [jnp.ones_like(z)]
    for _ in range(max_l):
        powers.append(powers[-1] * z)
    return g * jnp.stack(powers, axis=-1)


def radial_points(cutoff: float, k_max: float) -> int:
    """Gauss–Legendre nodes on [0, r_c] for I_nl(k) up to k_max (host rule).

    j_l(kr) makes about k_max·r_c/π half-oscillations on [0, r_c]; Gauss–Legendre resolves
    them to round-off with ≈ k_max·r_c/2 + 40 nodes (checked against twice as many in the
    tests).

    Example:
      >>> radial_points(4.0, 9.0)
      58
    """
    return int(math.ceil(0.5 * float(k_max) * float(cutoff))) + 40


def _powers(r, n: int):
    """[r^0, r^1, …, r^n] stacked on the last axis."""
    out = [jnp.ones_like(r)]
    for _ in range(n):
        out.append(out[-1] * r)
    return jnp.stack(out, axis=-1)


def radial_evaluator(widths, cutoff: float):
    """``r ↦ R_n(r)`` with the Löwdin transform of the basis computed once (traced in widths).

    Equal to :func:`jaxlr.features.radial_basis` (``R_n = Σ_m C_nm s_m g_m``, with
    ``(C, s) = radial_transform(widths, cutoff)`` and g_m = r^m e^{−r²/2σ_m²}), but the
    returned function can be called many times — inside loops — without recomputing the
    overlap matrix and its inverse square root.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> radial_evaluator(jnp.asarray(gto_widths(3.0, 2)), 3.0)(jnp.array([0.5, 1.0])).shape
      (2, 2)
    """
    widths = jnp.asarray(widths)
    coefficients, scales = radial_transform(widths, cutoff)
    n_max = widths.shape[0]

    def evaluate(r):
        r = jnp.asarray(r, widths.dtype)
        g = _powers(r, n_max - 1) * jnp.exp(-(r * r)[..., None] / (2.0 * widths * widths))
        return (g * scales) @ coefficients.T

    return evaluate


def radial_nodes(widths, *, cutoff: float, n_points: int, radial=None):
    """Gauss–Legendre nodes r_q (Q,) and weighted basis values w_q R_n(r_q) (Q, n_max) on [0, r_c].

    ``radial``: optional :func:`radial_evaluator` of the same widths (reused transform).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> r, wr = radial_nodes(jnp.asarray(gto_widths(3.0, 2)), cutoff=3.0, n_points=20)
      >>> r.shape, wr.shape
      ((20,), (20, 2))
    """
    nodes, weights = radial_quadrature(cutoff, n_points)
    r = jnp.asarray(nodes, widths.dtype)
    radial = radial_evaluator(widths, cutoff) if radial is None else radial
    return r, radial(r) * jnp.asarray(weights, widths.dtype)[:, None]


def projected_bessel(k, nodes, max_angular: int, derivative: bool = False):
    """J_nl(k) from precomputed :func:`radial_nodes` ``(r, w R)``: (..., n_max, L+1) (and dJ/dk).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> nodes = radial_nodes(jnp.asarray(gto_widths(3.0, 2)), cutoff=3.0, n_points=40)
      >>> projected_bessel(jnp.array([0.0, 1.0]), nodes, 2).shape
      (2, 2, 3)
    """
    r, basis = nodes
    k = jnp.asarray(k, basis.dtype)
    rl = _powers(r, max_angular + 2)                                                # (Q, L+3)
    z = k[..., None] * r                                                            # (..., Q)
    g = spherical_bessel_reduced(z, max_angular + 1 if derivative else max_angular)  # (..., Q, L+1|2)
    value = jnp.einsum("...ql,qn,ql->...nl", g[..., : max_angular + 1], basis, rl[:, : max_angular + 1])
    if not derivative:
        return value
    dvalue = -k[..., None, None] * jnp.einsum("...ql,qn,ql->...nl", g[..., 1:], basis, rl[:, 2:])
    return value, dvalue


def reduced_radial_integral(k, widths, *, cutoff: float, max_angular: int, n_points: int,
                            derivative: bool = False):
    """``J_nl(k) = I_nl(k)/k^l = ∫_0^{r_c} R_n(r) r^l g_l(kr) r² dr`` by Gauss–Legendre quadrature.

    Args:
      k: (...) wave numbers |k| ≥ 0 in 1/Å (traced).
      widths: (n_max,) GTO widths in Å (traced), see :func:`jaxlr.features.gto_widths`.
      cutoff: r_c in Å (static).  max_angular: L (static).  n_points: quadrature nodes
        (static, e.g. :func:`radial_points`).
      derivative: also return dJ_nl/dk = −k ∫ R_n r^{l+4} g_{l+1}(kr) dr.

    Returns:
      (..., n_max, L+1) array (units Å^{3/2+l}); with ``derivative`` a pair of them.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> J = reduced_radial_integral(jnp.linspace(0, 3, 4), jnp.asarray(gto_widths(4.0, 3)),
      ...                             cutoff=4.0, max_angular=2, n_points=64)
      >>> J.shape
      (4, 3, 3)
    """
    widths = jnp.asarray(widths, jnp.result_type(k, widths))
    return projected_bessel(k, radial_nodes(widths, cutoff=cutoff, n_points=n_points), max_angular, derivative)


def radial_integral_table(nodes, k_top, *, max_angular: int, n_table: int):
    """Values and k-derivatives of J_nl on the uniform grid k_t = t·k_top/(n_table−1).

    Args:
      nodes: ``(r, w R)`` from :func:`radial_nodes`.  k_top: largest |k| (traced).
      max_angular: L.  n_table: grid size (static).

    Returns:
      ``(values, derivatives)``, each (n_table, n_max, L+1); feed them to
      :func:`interpolate_radial_integral` together with the same ``k_top`` (traced).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> nodes = radial_nodes(jnp.asarray(gto_widths(3.0, 2)), cutoff=3.0, n_points=40)
      >>> values, derivatives = radial_integral_table(nodes, 5.0, max_angular=1, n_table=64)
      >>> values.shape, derivatives.shape
      ((64, 2, 2), (64, 2, 2))
    """
    grid = jnp.linspace(0.0, 1.0, n_table, dtype=nodes[1].dtype) * k_top
    return projected_bessel(grid, nodes, max_angular, derivative=True)


def hermite_basis(k, k_top, n_table: int):
    """Interval indices (..., int32) and cubic Hermite weights (..., 4) for k in [0, k_top].

    The weights multiply (f_i, Δ f'_i, f_{i+1}, Δ f'_{i+1}); Δ = k_top/(n_table−1) is
    folded into the derivative weights.

    Example:
      >>> import jax.numpy as jnp
      >>> i, w = hermite_basis(jnp.array(2.5), 10.0, 11)      # k = 2.5 lies in [2, 3]: halfway
      >>> int(i), [round(float(v), 4) for v in w]
      (2, [0.5, 0.125, 0.5, -0.125])
    """
    step = k_top / (n_table - 1)
    t = k / step
    i = jnp.clip(jnp.floor(t), 0, n_table - 2)
    s = t - i
    s2 = s * s
    s3 = s2 * s
    w = jnp.stack([2 * s3 - 3 * s2 + 1, (s3 - 2 * s2 + s) * step, -2 * s3 + 3 * s2, (s3 - s2) * step], axis=-1)
    return i.astype(jnp.int32), w


def interpolate_radial_integral(table, index, weights):
    """Cubic Hermite interpolation of one table column.

    Args:
      table: ``(values, derivatives)`` columns, each (n_table,) (one (n, l) channel).
      index, weights: from :func:`hermite_basis`.

    Returns:
      J at the points of ``index`` (same shape).

    Example:
      >>> import jax.numpy as jnp
      >>> grid = jnp.linspace(0.0, 1.0, 11)
      >>> i, w = hermite_basis(jnp.array(0.55), 1.0, 11)        # cubic f = k³ is reproduced
      >>> round(float(interpolate_radial_integral((grid**3, 3 * grid**2), i, w)), 6)
      0.166375
    """
    values, derivatives = table
    return (weights[..., 0] * values[index] + weights[..., 1] * derivatives[index]
            + weights[..., 2] * values[index + 1] + weights[..., 3] * derivatives[index + 1])


#: the own Gaussian's potential erf(x/√2σ)/x reaches 1/x to 1e-17 beyond x = SELF_SPLIT·σ
SELF_SPLIT = 8.5
SELF_POINTS = 48


def self_projection(sigma, widths, *, cutoff: float, radial=None):
    """Projection of an atom's own unit-Gaussian potential on its own basis, (n_max,).

    ``⟨n 0 0|v_self⟩ = √(4π) ∫_0^{r_c} R_n(x) x erf(x/(√2 σ)) dx`` (only l = 0 is nonzero:
    the potential is spherically symmetric about the centre).  Gauss–Legendre on
    [0, min(8.5σ, r_c)] and on the rest, so a tiny σ (steep erf) is integrated accurately.

    Args:
      sigma: σ_L in Å (traced scalar).  widths: (n_max,) Å (traced).  cutoff: r_c (static).
      radial: optional :func:`radial_evaluator` of the same widths (reused transform).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> self_projection(1.0, jnp.asarray(gto_widths(4.0, 3)), cutoff=4.0).shape
      (3,)
    """
    dtype = jnp.result_type(sigma, widths)
    sigma = jnp.asarray(sigma, dtype)
    t, w = np.polynomial.legendre.leggauss(SELF_POINTS)
    t = jnp.asarray(0.5 * (t + 1.0), dtype)
    w = jnp.asarray(0.5 * w, dtype)
    split = jnp.minimum(SELF_SPLIT * sigma, cutoff)
    x = jnp.concatenate([split * t, split + (cutoff - split) * t])
    wx = jnp.concatenate([split * w, (cutoff - split) * w])
    if radial is None:
        radial = radial_evaluator(jnp.asarray(widths, dtype), cutoff)
    basis = radial(x)
    f = wx * x * jax.scipy.special.erf(x / (math.sqrt(2.0) * sigma))
    return math.sqrt(4.0 * math.pi) * (f @ basis)
