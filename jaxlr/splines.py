"""Cardinal B-splines for charge assignment and their Fourier-space sums.

``M_p`` is the cardinal B-spline of order ``p`` (piecewise polynomial of degree p−1,
support [0, p)).  A charge at scaled fractional coordinate ``w`` (mesh units) is
assigned to the ``p`` mesh points ``floor(w) − j`` (j = 0 … p−1) with weights
``M_p(w − floor(w) + j)``; interpolation of a mesh field back to the charge uses the
same weights, and the derivative weights ``M_p'`` give the gradient.

Host helpers (numpy) give the exact alias sums of the B-spline's Fourier transform,
needed by the influence functions in :mod:`jaxlr.pme`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import jax.numpy as jnp

__all__ = ["bspline_weights", "bspline_values", "alias_sum_u", "alias_sum_u2"]


def bspline_weights(t, order: int):
    """Weights and derivative weights of the cardinal B-spline (jittable).

    Args:
      t: fractional offsets in [0, 1), any shape S.
      order: spline order p ≥ 2 (static).

    Returns:
      (w, dw), each of shape S + (p,): ``w[..., j] = M_p(t + j)``, ``dw[..., j] = M_p'(t + j)``.
      The weights sum to 1 and the derivative weights to 0 for every t.

    Example:
      >>> w, dw = bspline_weights(jnp.array(0.5), 4)
      >>> [round(float(x), 6) for x in w]
      [0.020833, 0.479167, 0.479167, 0.020833]
    """
    # Recursion M_k(x) = [x M_{k-1}(x) + (k - x) M_{k-1}(x - 1)] / (k - 1) evaluated on the
    # k points x = t + j; m[j] holds M_k(t + j).
    m = [t, 1.0 - t]  # order 2: M_2(t) = t, M_2(t + 1) = 1 - t
    lower = m
    for k in range(3, order + 1):
        lower = m
        new = []
        for j in range(k):
            x = t + j
            left = lower[j] if j < k - 1 else 0.0
            right = lower[j - 1] if j >= 1 else 0.0
            new.append((x * left + (k - x) * right) / (k - 1))
        m = new
    if order == 2:
        lower = [jnp.ones_like(t)]
    # M_p'(x) = M_{p-1}(x) - M_{p-1}(x - 1)
    dm = []
    for j in range(order):
        a = lower[j] if j < order - 1 else 0.0
        b = lower[j - 1] if j >= 1 else 0.0
        dm.append(a - b + jnp.zeros_like(t))
    return jnp.stack(m, axis=-1), jnp.stack(dm, axis=-1)


@lru_cache(maxsize=None)
def bspline_values(order: int) -> tuple[float, ...]:
    """Exact values M_p(k) at the integers k = 0 … p (host, float64)."""
    def m(p, x):
        if p == 1:
            return 1.0 if 0.0 <= x < 1.0 else 0.0
        return (x * m(p - 1, x) + (p - x) * m(p - 1, x - 1.0)) / (p - 1)
    return tuple(m(order, float(k)) for k in range(order + 1))


def alias_sum_u(m: np.ndarray, n_mesh: int, order: int) -> np.ndarray:
    """Σ_a Û(m/K + a) for the centred B-spline's Fourier transform Û(ξ) = sinc(ξ)^p.

    By Poisson summation this equals Σ_n M_p(p/2 + n) cos(2π m n / K) (even p), the
    classic SPME "b-factor" modulus.  Host numpy, float64, shape of ``m``.
    """
    vals = bspline_values(order)
    out = np.zeros(np.shape(m), dtype=np.float64)
    for k, v in enumerate(vals):
        if v != 0.0:
            out += v * np.cos(2.0 * math.pi * np.asarray(m) * (k - order / 2) / n_mesh)
    return out


def alias_sum_u2(m: np.ndarray, n_mesh: int, order: int) -> np.ndarray:
    """Σ_a Û(m/K + a)² = Σ_n M_{2p}(p + n) cos(2π m n / K): the exact alias sum of Û².

    (The autocorrelation of M_p is M_{2p} shifted by p.)  Host numpy, float64.
    """
    vals = bspline_values(2 * order)
    out = np.zeros(np.shape(m), dtype=np.float64)
    for k, v in enumerate(vals):
        if v != 0.0:
            out += v * np.cos(2.0 * math.pi * np.asarray(m) * (k - order) / n_mesh)
    return out
