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

import jax.numpy as jnp
from jax.scipy.special import erf, erfc

__all__ = ["pair_kernel", "pair_kernel_dr", "self_kernel"]

_SQRT2 = math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


_SERIES_X = 0.05  # below x = r/(√2 w) = 0.05 erf(x)/x is summed as a series (error < 1e-16)
_C = math.sqrt(2.0 / math.pi)


def _erf_over_r(r, width):
    """erf(r/(√2 w))/r and its r-derivative, finite and exact also at r = 0 (coincident Gaussians)."""
    x = r / (_SQRT2 * width)
    small = x < _SERIES_X
    xs = jnp.where(small, x, 0.0)
    x2 = xs * xs
    a = _C / width  # limit at r = 0: √(2/π)/w
    series = a * (1.0 + x2 * (-1.0 / 3.0 + x2 * (1.0 / 10.0 + x2 * (-1.0 / 42.0 + x2 / 216.0))))
    dseries = a * xs * (-2.0 / 3.0 + x2 * (4.0 / 10.0 + x2 * (-6.0 / 42.0 + x2 * 8.0 / 216.0))) / (_SQRT2 * width)
    r_safe = jnp.where(small, 1.0, r)
    value = erf(r_safe / (_SQRT2 * width)) / r_safe
    slope = (_C * jnp.exp(-0.5 * (r_safe / width) ** 2) / width - value) / r_safe
    return jnp.where(small, series, value), jnp.where(small, dseries, slope)


def pair_kernel_dr(r, gamma=None, smearing=None):
    """Kernel and its radial derivative, ``(K(r), dK/dr)`` (see :func:`pair_kernel`).

    Gaussian kernels are finite at r = 0 (two Gaussians on the same centre interact with
    KE q_i q_j √(2/π)/γ_ij) and are evaluated there by a series; point-charge kernels are
    singular at r = 0.  For the Ewald Gaussian kernel the erf-difference form is used at
    short range (r < √2 s) and the erfc-difference form beyond, each where it keeps full
    relative precision.
    """
    if smearing is None:
        if gamma is None:
            return 1.0 / r, -1.0 / (r * r)
        return _erf_over_r(r, gamma)
    x_s = r / (_SQRT2 * smearing)
    if gamma is None:
        k = erfc(x_s) / r
        return k, -(_C * jnp.exp(-x_s * x_s) / smearing + k) / r
    near = x_s < 1.0
    kg, dg = _erf_over_r(r, gamma)
    ks, ds = _erf_over_r(r, smearing)
    r_far = jnp.where(near, 1.0, r)
    k_far = (erfc(r_far / (_SQRT2 * smearing)) - erfc(r_far / (_SQRT2 * gamma))) / r_far
    d_far = (_C * (jnp.exp(-0.5 * (r_far / gamma) ** 2) / gamma
                   - jnp.exp(-0.5 * (r_far / smearing) ** 2) / smearing) - k_far) / r_far
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
        return erfc(r / (_SQRT2 * smearing)) / r
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
