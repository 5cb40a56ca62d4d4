"""Cardinal B-splines for charge assignment and their Fourier-space sums.

``M_p`` is the cardinal B-spline of order ``p`` (piecewise polynomial of degree p−1,
support [0, p)).  A charge at scaled fractional coordinate ``w`` (mesh units) is
assigned to the ``p`` mesh points ``floor(w) − j`` (j = 0 … p−1) with weights
``M_p(w − floor(w) + j)``; interpolation of a mesh field back to the charge uses the
same weights, and the derivative weights ``M_p'`` give the gradient.

Host helpers (numpy) give the exact alias sums of the B-spline's Fourier transform,
needed by the influence functions in :mod:`jaxlr.electrostatics`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import jax.numpy as jnp
import numpy as np

__all__ = ["bspline_weights", "bspline_values", "alias_sum_u", "alias_sum_u2"]


def _checked_order(order) -> int:
    """``order`` as an int ≥ 1, or a ValueError that says so."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer, float)) or int(order) != order or order < 1:
        raise ValueError(f"the B-spline order must be an integer ≥ 1, got {order!r}.")
    return int(order)


@lru_cache(maxsize=None)
def _piece_coefficients(order: int) -> tuple[tuple[float, ...], ...]:
    """Monomial coefficients of the B-spline's pieces about the middle of the unit interval.

    Row j holds c_jk with ``M_p(t + j) = Σ_k c_jk (t − ½)^k`` for 0 ≤ t < 1, from the
    explicit sum ``M_p(x) = 1/(p−1)! Σ_i (−1)^i C(p, i) (x − i)_+^{p−1}`` expanded in exact
    rational arithmetic and rounded once to float64.  About t = ½ the coefficients are
    small and of mixed sign, so Horner's rule is accurate to a few ulps (orders 2–12).
    """
    p = order
    rows = []
    for j in range(p):
        coef = [Fraction(0)] * p
        for i in range(j + 1):
            a = Fraction(2 * (j - i) + 1, 2)  # t + j − i = (t − ½) + (j − i + ½)
            sign = (-1) ** i * math.comb(p, i)
            for k in range(p):
                coef[k] += sign * math.comb(p - 1, k) * a ** (p - 1 - k)
        rows.append(tuple(float(c / math.factorial(p - 1)) for c in coef))
    return tuple(rows)


def bspline_weights(t, order: int, axis: int = -1):
    """Weights and derivative weights of the cardinal B-spline (jittable).

    Args:
      t: fractional offsets in [0, 1), any shape S.
      order: spline order p ≥ 1 (static).
      axis: where the new axis of length p goes in the result (static, as in
        ``jnp.stack``); the default appends it.

    Returns:
      (w, dw), each of shape S + (p,) for the default axis: ``w[..., j] = M_p(t + j)``,
      ``dw[..., j] = M_p'(t + j)``.  The weights sum to 1 and the derivative weights to 0
      for every t.

    Each piece is a polynomial of degree p − 1 in t − ½, evaluated with its derivative by
    Horner's rule (:func:`_piece_coefficients`): p² multiply-adds and no divisions; in
    float32 the weights are within 3e-8 of the exact ones, about ten times closer than
    the usual recursion in the order k, M_k(x) = [x M_{k−1}(x) + (k − x) M_{k−1}(x − 1)]/(k − 1).

    Example:
      >>> w, dw = bspline_weights(jnp.array(0.5), 4)
      >>> [round(float(x), 6) for x in w]
      [0.020833, 0.479167, 0.479167, 0.020833]
    """
    u = t - 0.5
    w, dw = [], []
    for row in _piece_coefficients(_checked_order(order)):
        value = jnp.full_like(u, row[-1])
        slope = jnp.zeros_like(u)
        for c in row[-2::-1]:
            slope = slope * u + value
            value = value * u + c
        w.append(value)
        dw.append(slope)
    return jnp.stack(w, axis=axis), jnp.stack(dw, axis=axis)


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
    p = _checked_order(order)
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
