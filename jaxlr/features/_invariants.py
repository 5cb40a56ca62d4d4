"""Rotational invariants of spherical expansions (power spectra).

For two expansions with the layout of :func:`jaxlr.features.spherical_expansion` and of
the LODE features — ``(..., S, n_max, (L+1)²)``, last axis l = 0..L, m = −l..l — the
generic power spectrum is::

    p[..., a, n, a', n', l] = Σ_m A[..., a, n, l, m] B[..., a', n', l, m] / √(2l+1).

Each l-block of a real-harmonic expansion transforms under a rotation R with the same
orthogonal Wigner matrix D^l(R), so the m-sums are invariant.  ``B = A`` gives the SOAP
power spectrum; ``A = ρ`` and ``B = V`` (LODE) gives the multi-scale invariants of
Grisafi, Nigam & Ceriotti, Chem. Sci. 12, 2078 (2021).  The 1/√(2l+1) factor follows
featomic's SoapPowerSpectrum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["power_spectrum", "flatten_invariants"]


def power_spectrum(a, b=None):
    """Rotational invariants ``Σ_m a[..., α, n, l, m] b[..., α', n', l, m] / √(2l+1)``.

    Args:
      a: (..., S, n_max, (L+1)²) expansion (e.g. ``spherical_expansion(...).values``).
      b: (..., S', n_max', (L+1)²) second expansion with the same leading axes and the
        same L, or None for ``b = a``.

    Returns:
      (..., S, n_max, S', n_max', L+1) array (dtype promoted from a and b).  No
      symmetry reduction is applied when ``b`` is None (both orderings of (α, n) appear);
      use :func:`flatten_invariants` for a 2-D feature matrix.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((2, 1, 3, 4))           # N = 2, S = 1, n_max = 3, L = 1
      >>> power_spectrum(x).shape
      (2, 1, 3, 1, 3, 2)
    """
    a = jnp.asarray(a)
    b = a if b is None else jnp.asarray(b)
    if a.ndim < 3 or b.ndim < 3:
        raise ValueError(f"expansions must have shape (..., S, n_max, (L+1)^2), got {a.shape} and {b.shape}.")
    n_lm = a.shape[-1]
    L = math.isqrt(n_lm) - 1
    if (L + 1) ** 2 != n_lm:
        raise ValueError(f"the last axis must have (L+1)^2 entries, got {n_lm}.")
    if b.shape[-1] != n_lm:
        raise ValueError(f"a and b must share max_angular: last axes {n_lm} and {b.shape[-1]}.")
    if a.shape[:-3] != b.shape[:-3]:
        raise ValueError(f"a and b must share their leading (atom) axes, got {a.shape[:-3]} and {b.shape[:-3]}.")
    blocks = []
    for l in range(L + 1):
        sl = slice(l * l, (l + 1) ** 2)
        blocks.append(jnp.einsum("...anm,...bkm->...anbk", a[..., sl], b[..., sl],
                                 precision=jax.lax.Precision.HIGHEST) / math.sqrt(2 * l + 1))
    return jnp.stack(blocks, axis=-1)


def flatten_invariants(p):
    """Flatten a power spectrum (..., S, n, S', n', L+1) to (..., S·n·S'·n'·(L+1)).

    Example:
      >>> import jax.numpy as jnp
      >>> flatten_invariants(jnp.zeros((5, 2, 3, 2, 3, 4))).shape
      (5, 144)
    """
    p = jnp.asarray(p)
    if p.ndim < 5:
        raise ValueError(f"expected a power spectrum of shape (..., S, n, S', n', L+1), got {p.shape}.")
    return p.reshape(p.shape[:-5] + (-1,))
