"""Pair kernels of the Coulomb interaction between point and Gaussian charges.

All kernels are the *energy per unit charge product*, without the Coulomb constant:
the pair energy is ``KE · q_i q_j · K(r)``.  Conventions (DESIGN.md):

* point charges, open boundary:            K = 1/r
* Gaussian charges (γ² = σ_i² + σ_j²):      K = erf(r / (√2 γ)) / r
* Ewald real space, point charges:          K = erfc(r / (√2 s)) / r
* Ewald real space, Gaussian charges:       K = [erf(r/√2γ) − erf(r/√2s)] / r
                                              = [erfc(r/√2s) − erfc(r/√2γ)] / r

``s`` is the Ewald smearing: the long-range part is the potential of Gaussians of
standard deviation ``s`` (reciprocal factor exp(−k²s²/2)).  The Gaussian form is written
as a difference of erfc's so that it keeps full relative precision at large r, where
both erf's are 1 to machine precision.  Kernels are elementwise and must be evaluated
at r > 0; callers guard r = 0 (masked pairs) with a double ``where``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["erfc_exp", "pair_kernel", "pair_kernel_dr", "self_kernel"]

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


#: erfc(x) = t e^{-x²} P(2t − 1) with t = S/(S + x), x ≥ 0, S = 3: P is a polynomial fit of
#: erfcx(x)/t on t ∈ (0, 1] (Chebyshev interpolation converted to monomials, Σ|a_k| ≈ 1 so
#: Horner's rule loses nothing), made by ``benchmarks/fit_erfc.py``; coefficients a_0 … a_n
_ERFC_SCALE = 3.0
_ERFC_POLY = {
    "double": (0.3580023023627793, 0.2944648177232638, 0.19674278570145645, 0.10348908730245361,
               0.039842587093356856, 0.00894241149213387, -0.0004041388486312801,
               -0.0010113535088162567, -0.0001827700614339949, 9.225658284290493e-05,
               3.5854428941088804e-05, -1.012375478428419e-05, -5.824932702866891e-06,
               1.5642288291692072e-06, 9.240158496212939e-07, -3.0758346289220534e-07,
               -1.3838920481292384e-07, 5.633866045674496e-08, 1.7171543213735205e-08,
               -6.079081234816697e-09, -1.2839949283208695e-09),
    "single": (0.35800235000614833, 0.2944648036705131, 0.1967403957366608, 0.10348979187526376,
               0.03986203550895754, 0.008936693250990432, -0.0004606807256359586,
               -0.0009948215137039747, -0.00011254419486550059, 7.194788178232247e-05),
}


def horner(coefs, y):
    """Σ_k coefs[k] y^k by Horner's rule (coefs: Python floats, lowest power first)."""
    out = jnp.zeros_like(y) + coefs[-1]
    for coef in coefs[-2::-1]:
        out = out * y + coef
    return out


@jax.custom_jvp
def erfc_exp(x):
    """``(erfc(x), exp(−x²))`` for x ≥ 0 from one exponential (jittable, differentiable).

    The Ewald real-space kernel needs erfc for the energy and exp(−x²) for the force;
    computing erfc as ``t e^{−x²} P(2t − 1)`` (t = 3/(3 + x), P a fitted polynomial)
    lets both share the exponential and costs one division and a Horner sum instead of
    the three rational branches of the library erfc.  Relative error of erfc on
    0 ≤ x ≤ 6: below 1e-14 in float64 (degree 20), 1.5e-6 in float32 (degree 9), the
    same as ``jax.scipy.special.erfc``; both values underflow to 0 together at large x.
    Derivatives are exact: d erfc/dx = −(2/√π) e^{−x²}.

    Args:
      x: array of any shape, x ≥ 0 (negative x is not supported), float32 or float64.

    Returns:
      ``(erfc(x), exp(−x²))``, each shaped like ``x``.

    Example:
      >>> e, g = erfc_exp(jnp.array([0.0, 1.0]))
      >>> [round(float(v), 6) for v in e], [round(float(v), 6) for v in g]
      ([1.0, 0.157299], [1.0, 0.367879])
    """
    x = jnp.asarray(x)
    coef = _ERFC_POLY["double" if x.dtype == jnp.float64 else "single"]
    t = _ERFC_SCALE / (_ERFC_SCALE + x)
    poly = horner(coef, 2.0 * t - 1.0)
    e = jnp.exp(-x * x)
    return t * e * poly, e


@erfc_exp.defjvp
def _erfc_exp_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    value, e = erfc_exp(x)
    return (value, e), (-(2.0 / _SQRT_PI) * e * dx, -2.0 * x * e * dx)


#: below x = r/(√2 w) = 0.5, erf(x)/x is summed as its Taylor series in x²; above, erf(x)
#: is 1 − erfc(x) from :func:`erfc_exp`, whose exponential the slope reuses
_SERIES_X = 0.5
_C = math.sqrt(2.0 / math.pi)
#: Taylor coefficients of erf(x)/x · √π/2 = Σ_n (−1)^n x^{2n} / (n! (2n + 1)) in x², and
#: of its x²-derivative.  Below x = 0.5 the kernels here sum the first 12 (float64) or 6
#: (float32) terms, whose first omitted terms are 5e-18 and 3e-8; :mod:`jaxlr.electrostatics`
#: sums all 16 for four derivatives
ERF_SERIES = tuple((-1.0) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(16))
ERF_SERIES_D1 = tuple(n * a for n, a in enumerate(ERF_SERIES))[1:]
_ERF_TERMS = {"double": 12, "single": 6}


def _erf_over_r(r, width):
    """erf(r/(√2 w))/r, its r-derivative, and erfc(x), exp(−x²) at x = r/(√2 w).

    Finite and exact also at r = 0 (coincident Gaussians): below x = 0.5 a Taylor series
    in x² gives the value and slope; above, ``erf = 1 − erfc`` from one shared exponential
    (:func:`erfc_exp`), accurate to 1e-16 (float64) and 1e-6 (float32) relative, because
    erf(x) ≥ 0.52 there.  The erfc and exponential are returned for the Ewald kernel's
    far-field form.
    """
    x = r / (_SQRT2 * width)
    small = x < _SERIES_X
    xs = jnp.where(small, x, 0.0)
    x2 = xs * xs
    terms = _ERF_TERMS["double" if x2.dtype == jnp.float64 else "single"]
    series = horner(ERF_SERIES[:terms], x2)  # S(x²)
    dseries = horner(ERF_SERIES_D1[:terms - 1], x2)  # S'(x²)
    a = _C / width  # limit at r = 0: √(2/π)/w
    r_safe = jnp.where(small, 1.0, r)
    ec, e = erfc_exp(jnp.where(small, 1.0, x))
    value = (1.0 - ec) / r_safe
    slope = (a * e - value) / r_safe
    # d/dr S(x²) = S'(x²) · 2x · dx/dr with dx/dr = 1/(√2 w)
    dvalue = a * dseries * 2.0 * xs / (_SQRT2 * width)
    return jnp.where(small, a * series, value), jnp.where(small, dvalue, slope), small, ec, e


def pair_kernel_dr(r, gamma=None, smearing=None):
    """Kernel and its radial derivative, ``(K(r), dK/dr)`` (see :func:`pair_kernel`).

    Gaussian kernels are finite at r = 0 (two Gaussians on the same centre interact with
    KE q_i q_j √(2/π)/γ_ij) and are evaluated there by a series; point-charge kernels are
    singular at r = 0.  The Ewald Gaussian kernel is the erf difference where either
    argument is below 0.5 (series) and the erfc difference ``[erfc(r/√2s) − erfc(r/√2γ)]/r``
    beyond, which keeps full relative precision at large r; both forms come from the same
    two :func:`erfc_exp` evaluations.
    """
    if smearing is None:
        if gamma is None:
            return 1.0 / r, -1.0 / (r * r)
        k, dk, *_ = _erf_over_r(r, gamma)
        return k, dk
    x_s = r / (_SQRT2 * smearing)
    if gamma is None:
        ec, e = erfc_exp(x_s)
        k = ec / r
        return k, -(_C * e / smearing + k) / r
    kg, dg, small_g, erfc_g, exp_g = _erf_over_r(r, gamma)
    ks, ds, small_s, erfc_s, exp_s = _erf_over_r(r, smearing)
    near = small_g | small_s
    r_far = jnp.where(near, 1.0, r)
    k_far = (erfc_s - erfc_g) / r_far
    d_far = (_C * (exp_g / gamma - exp_s / smearing) - k_far) / r_far
    return jnp.where(near, kg - ks, k_far), jnp.where(near, dg - ds, d_far)


def pair_kernel(r, gamma=None, smearing=None):
    """Pair kernel K(r) (1/Å) for point (``gamma=None``) or Gaussian charges.

    Args:
      r: distances in Å (any shape); > 0 for point charges, ≥ 0 for Gaussian ones.
      gamma: combined width √(σ_i² + σ_j²) in Å broadcastable to ``r``, or None.
      smearing: Ewald smearing s in Å (scalar) for the real-space part of a periodic
        sum, or None for the bare (open-boundary) interaction.

    Example:
      >>> float(pair_kernel(2.0))
      0.5
    """
    if smearing is None and gamma is None:
        return 1.0 / r
    if gamma is None:
        return erfc_exp(r / (_SQRT2 * smearing))[0] / r
    return pair_kernel_dr(r, gamma, smearing)[0]


def self_kernel(sigma=None, smearing=None, dtype=jnp.float64):
    """Twice the self-energy coefficient: the r → 0 limit of the kernel of an atom with itself.

    The self-energy of atom i is ``½ KE q_i² · self_kernel``: for a Gaussian of width σ
    it is ``KE q²/(2√π σ)`` (limit of erf(r/2σ)/r = 1/(√π σ)); the Ewald split subtracts
    the smearing Gaussian's ``KE q²/(√(2π) s)``.  Point charges without Ewald have none.

    Returns an array broadcast like ``sigma`` (or a scalar).
    """
    out = jnp.zeros((), dtype)
    if sigma is not None:
        out = out + 1.0 / (_SQRT_PI * sigma)
    if smearing is not None:
        out = out - 2.0 / (_SQRT_2PI * smearing)
    return out
