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
from fractions import Fraction
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
    """Values M_p(k) of the cardinal B-spline at the integers k = 0 … p (host, float64).

    Uses the explicit sum ``M_p(k) = 1/(p−1)! Σ_{j=0}^{k} (−1)^j C(p, j) (k − j)^{p−1}``
    evaluated exactly in integers (Eulerian numbers) and rounded once to float64, so every
    value is correctly rounded and the cost is O(p²) big-integer operations (order 24
    takes well under a millisecond; the plain recursion needed 2^p calls).  M_p(0) and
    M_p(p) are 0 for p ≥ 2 (support [0, p), half-open, so M_1(0) = 1); the values sum to 1.

    Args:
      order: spline order p ≥ 1 (Python int).

    Returns:
      tuple of p + 1 floats ``(M_p(0), M_p(1), …, M_p(p))``.

    Example:
      >>> [round(v, 12) for v in bspline_values(4)]
      [0.0, 0.166666666667, 0.666666666667, 0.166666666667, 0.0]
    """
    if isinstance(order, bool) or int(order) != order or order < 1:
        raise ValueError(f"the B-spline order must be an integer ≥ 1, got {order!r}.")
    p = int(order)
    denominator = math.factorial(p - 1)
    values = []
    for k in range(p + 1):
        # (k − j)_+^{p−1} with 0^0 = 1 (the half-open support of M_1); exact integers
        numerator = sum((-1) ** j * math.comb(p, j) * (k - j) ** (p - 1) for j in range(min(k, p) + 1))
        values.append(float(Fraction(numerator, denominator)))
    return tuple(values)


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
