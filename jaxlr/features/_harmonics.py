"""Real spherical harmonics and real Wigner matrices.

Convention (the sphericart / featomic one, used by every jaxlr feature):

* Orthonormal over the unit sphere: ``∫ Y_lm Y_l'm' dΩ = δ_ll' δ_mm'``.
* Flat layout along the last axis, index ``l² + l + m``: l = 0..L, m = −l..l, so an
  expansion up to ``max_angular = L`` has ``(L+1)²`` components.
* No Condon–Shortley phase.  m > 0 ∝ cos(mφ), m < 0 ∝ sin(|m|φ), m = 0 ∝ P_l(cos θ);
  explicitly ``Y_lm = N_lm P_l^|m|(cos θ) · {√2 cos(mφ), 1, √2 sin(|m|φ)}`` with
  ``N_lm = √((2l+1)/(4π) (l−|m|)!/(l+|m|)!)`` and P_l^m without the (−1)^m factor.
  Hence ``l = 1`` is ``√(3/4π) (y, z, x)/r``.

Implementation: the solid harmonics ``r^l Y_lm`` are homogeneous polynomials of
(x, y, z) and are built with the standard stable recurrences on Cartesian components
(as in sphericart, Bigi et al., J. Chem. Phys. 159, 064802 (2023)):

* ``C_m + i S_m = (x + i y)^m`` by ``C_{m+1} = x C_m − y S_m``, ``S_{m+1} = x S_m + y C_m``;
* ``Q_m^m = (2m−1)!!``, ``Q_{m+1}^m = (2m+1) z Q_m^m``,
  ``(l−m) Q_l^m = (2l−1) z Q_{l−1}^m − (l+m−1) r² Q_{l−2}^m``;
* ``r^l Y_lm = N_lm Q_l^|m| · {√2 C_m, 1, √2 S_|m|}``.

These polynomials are exact, smooth everywhere and well conditioned for L ≲ 20.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["real_spherical_harmonics", "solid_harmonics", "wigner_d_real", "lm_index", "n_harmonics"]


def n_harmonics(max_angular: int) -> int:
    """Number of (l, m) components up to ``max_angular``: ``(L+1)²``."""
    return (int(max_angular) + 1) ** 2


def lm_index(l: int, m: int) -> int:
    """Position of (l, m) in the flat layout: ``l² + l + m``."""
    return l * l + l + m


def _check_max_angular(max_angular) -> int:
    if isinstance(max_angular, bool) or int(max_angular) != max_angular or max_angular < 0:
        raise ValueError(f"max_angular must be an integer >= 0, got {max_angular!r}.")
    return int(max_angular)


def _check_vectors(vectors):
    """(..., 3) floating-point array (integers promoted), else a ValueError."""
    v = jnp.asarray(vectors)
    if not jnp.issubdtype(v.dtype, jnp.floating):
        v = v.astype(jnp.result_type(float))
    if v.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape (..., 3), got {v.shape}.")
    return v


def _normalisation(l: int, m: int) -> float:
    """N_lm (times √2 for m ≠ 0), in float64 on the host."""
    m = abs(m)
    n = math.sqrt((2 * l + 1) / (4 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
    return n * math.sqrt(2.0) if m else n


def _solid(x, y, z, max_angular: int, xp=jnp):
    """The (L+1)² solid harmonics r^l Y_lm for Cartesian components x, y, z: (..., (L+1)²).

    ``xp`` is the array module (jax.numpy in the library, numpy for host helpers).  The
    recurrences run over l with all m at once (vectors over m), which keeps the traced
    program small (O(L) operations instead of O(L²)).
    """
    L = max_angular
    r2 = (x * x + y * y + z * z)[..., None]
    x_, z_ = x[..., None], z[..., None]
    # C_m + i S_m = (x + i y)^m for m = 0..L
    c, s = [xp.ones_like(x)], [xp.zeros_like(x)]
    for m in range(L):
        c.append(x * c[m] - y * s[m])
        s.append(x * s[m] + y * c[m])
    c, s = xp.stack(c, axis=-1), xp.stack(s, axis=-1)
    ones = xp.ones_like(x_)
    out = []
    q_prev2, q_prev = None, None            # Q_{l−2}^m (m ≤ l−2), Q_{l−1}^m (m ≤ l−1)
    for l in range(L + 1):
        top = float(np.prod(np.arange(2 * l - 1, 0, -2, dtype=np.float64)))   # Q_l^l = (2l−1)!!
        if l == 0:
            q = ones
        else:
            m = xp.asarray(np.arange(l), dtype=x.dtype)
            lower = (2 * l - 1) * z_ * q_prev
            if l >= 2:
                pad = xp.concatenate([q_prev2, xp.zeros_like(x_)], axis=-1)
                lower = lower - (l + m - 1) * r2 * pad
            q = xp.concatenate([lower / (l - m), top * ones], axis=-1)
        q_prev2, q_prev = q_prev, q
        # m = −l..l: Q_l^|m| and (S_|m| for m < 0, C_m for m ≥ 0), by slices (no gathers)
        q_full = xp.concatenate([q[..., l:0:-1], q], axis=-1) if l else q
        trig = xp.concatenate([s[..., l:0:-1], c[..., : l + 1]], axis=-1)
        norm = xp.asarray([_normalisation(l, m) for m in range(-l, l + 1)], dtype=x.dtype)
        out.append(norm * q_full * trig)
    return xp.concatenate(out, axis=-1)


def solid_harmonics(vectors, max_angular: int):
    """Real solid harmonics ``r^l Y_lm(r̂)``: homogeneous polynomials, smooth everywhere.

    Args:
      vectors: (..., 3) Cartesian vectors (Å or any unit; the result carries unit^l).
      max_angular: L ≥ 0 (static Python int).

    Returns:
      (..., (L+1)²) in the dtype of ``vectors``, ordered l = 0..L, m = −l..l (index
      ``l² + l + m``); normalisation and signs as :func:`real_spherical_harmonics`.

    Example:
      >>> import jax.numpy as jnp
      >>> s = solid_harmonics(jnp.array([0.0, 0.0, 2.0]), 1)   # √(1/4π), 2·√(3/4π)·(0, 1, 0)
      >>> [round(float(v), 5) for v in s]
      [0.28209, 0.0, 0.97721, 0.0]
    """
    L = _check_max_angular(max_angular)
    v = _check_vectors(vectors)
    # y, z, x order is only the output convention; the recurrences take (x, y, z)
    return _solid(v[..., 0], v[..., 1], v[..., 2], L)


def real_spherical_harmonics(vectors, max_angular: int):
    """Real spherical harmonics ``Y_lm(r̂)`` of the direction of ``vectors``.

    Orthonormal on the unit sphere, l = 0..L and m = −l..l along the last axis (index
    ``l² + l + m``), no Condon–Shortley phase, m > 0 ∝ cos(mφ), m < 0 ∝ ``sin(|m|φ)``; so
    ``l = 1`` gives ``√(3/4π) (y, z, x)/r`` (sphericart/featomic convention).

    Only the direction matters.  For the zero vector the result is ``Y_00 = 1/√(4π)``
    and 0 for l > 0, with finite (zero) gradients: the direction is computed from a safe
    substitute vector and selected away (double ``where``), so ``jax_debug_nans`` stays
    quiet.  Works under jit/vmap/grad; dtype follows the input.

    Args:
      vectors: (..., 3) Cartesian vectors.
      max_angular: L ≥ 0 (static Python int; tested up to 12).

    Returns:
      (..., (L+1)²) array.

    Example:
      >>> import jax.numpy as jnp
      >>> y = real_spherical_harmonics(jnp.array([1.0, 0.0, 0.0]), 1)   # √(3/4π)·(y, z, x)
      >>> [round(float(v), 5) for v in y]
      [0.28209, 0.0, 0.0, 0.4886]
    """
    L = _check_max_angular(max_angular)
    v = _check_vectors(vectors)
    # scale by the largest component first so |v|² neither under- nor overflows; the
    # result does not depend on the scale, so it is held constant under differentiation
    # (exact, and avoids 1/vmax² underflowing in the derivative of v / vmax)
    vmax = jax.lax.stop_gradient(jnp.max(jnp.abs(v), axis=-1, keepdims=True))
    zero = vmax == 0.0
    safe_max = jnp.where(zero, 1.0, vmax)
    w = v / safe_max
    w = jnp.where(zero, jnp.asarray([0.0, 0.0, 1.0], dtype=v.dtype), w)
    u = w / jnp.sqrt(jnp.sum(w * w, axis=-1, keepdims=True))
    y = _solid(u[..., 0], u[..., 1], u[..., 2], L)
    is_l0 = np.arange((L + 1) ** 2) == 0
    return jnp.where(zero & ~is_l0, jnp.zeros((), v.dtype), y)


def wigner_d_real(rotation, max_angular: int) -> np.ndarray:
    """Block-diagonal real Wigner matrix D(R) with ``Y(R x) = D(R) Y(x)`` (host, numpy).

    ``R x`` is the rotation acting on a column vector x (for row-vector arrays:
    ``x @ R.T``).  Each l-block (2l+1)×(2l+1) is obtained by a least-squares fit on random
    sample directions, exact to round-off because Y_l spans an invariant subspace.
    D is orthogonal for a proper or improper rotation.  Meant for tests and analysis.

    Args:
      rotation: (3, 3) orthogonal matrix.
      max_angular: L ≥ 0.

    Returns:
      ((L+1)², (L+1)²) float64 numpy array, zero outside the l-blocks.

    Example:
      >>> D = wigner_d_real(np.eye(3), 2)
      >>> bool(np.allclose(D, np.eye(9)))
      True
    """
    L = _check_max_angular(max_angular)
    rot = np.asarray(rotation, dtype=np.float64)
    if rot.shape != (3, 3):
        raise ValueError(f"rotation must be a (3, 3) matrix, got shape {rot.shape}.")
    rng = np.random.default_rng(1234)
    pts = rng.normal(size=(max(64, 4 * (2 * L + 1)), 3))
    ya = np.asarray(solid_harmonics_numpy(pts, L))
    yb = np.asarray(solid_harmonics_numpy(pts @ rot.T, L))
    d = np.zeros(((L + 1) ** 2, (L + 1) ** 2))
    for l in range(L + 1):
        sl = slice(l * l, (l + 1) ** 2)
        dt, *_ = np.linalg.lstsq(ya[:, sl], yb[:, sl], rcond=None)
        d[sl, sl] = dt.T
    return d


def solid_harmonics_numpy(vectors: np.ndarray, L: int) -> np.ndarray:
    """Float64 numpy evaluation of the solid harmonics (host helper, same recurrences)."""
    v = np.asarray(vectors, dtype=np.float64)
    return _solid(v[..., 0], v[..., 1], v[..., 2], L, xp=np)
