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


def pair_kernel(r, gamma=None, smearing=None):
    """Pair kernel K(r) (1/Å) for point (``gamma=None``) or Gaussian charges.

    Args:
      r: distances in Å, > 0 (any shape).
      gamma: combined width √(σ_i² + σ_j²) in Å broadcastable to ``r``, or None.
      smearing: Ewald smearing s in Å (scalar) for the real-space part of a periodic
        sum, or None for the bare (open-boundary) interaction.

    Example:
      >>> float(pair_kernel(2.0))
      0.5
    """
    if smearing is None:
        if gamma is None:
            return 1.0 / r
        return erf(r / (_SQRT2 * gamma)) / r
    screened = erfc(r / (_SQRT2 * smearing))
    if gamma is None:
        return screened / r
    return (screened - erfc(r / (_SQRT2 * gamma))) / r


def pair_kernel_dr(r, gamma=None, smearing=None):
    """Kernel and its radial derivative, ``(K(r), dK/dr)``, sharing the transcendental work.

    dK/dr = −K/r + √(2/π) [e^{−r²/2γ²}/γ − e^{−r²/2s²}/s] / r, with the terms of absent
    widths dropped (point charges: no γ term; open boundary: no s term).  Same arguments
    as :func:`pair_kernel`; exact, so it can be differentiated again.
    """
    k = pair_kernel(r, gamma, smearing)
    inv_r = 1.0 / r
    g = jnp.zeros_like(r)
    c = math.sqrt(2.0 / math.pi)
    if gamma is not None:
        g = g + c * jnp.exp(-0.5 * (r / gamma) ** 2) / gamma
    if smearing is not None:
        g = g - c * jnp.exp(-0.5 * (r / smearing) ** 2) / smearing
    return k, (g - k) * inv_r


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
