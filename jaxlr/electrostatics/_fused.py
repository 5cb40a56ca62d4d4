"""Several sums along one axis in a single variadic reduce (one fused loop on CPU).

XLA's CPU backend fuses a variadic ``lax.reduce`` into one loop over all its operands,
whereas separate ``jnp.sum`` calls are each handed to a library reduction that reads its
own materialised operand.  Used by the real-space pair sums (:mod:`jaxlr.electrostatics`,
axis 1) and the PME interpolation (:mod:`jaxlr.electrostatics`, axis 0).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

__all__ = ["fused_sums"]


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def fused_sums(axis: int, *terms):
    """Sums of several arrays of one shape over ``axis``, reduced together.

    Args:
      axis: the summed axis (static Python int).
      terms: arrays of one shape S.

    Returns:
      tuple of ``len(terms)`` arrays of shape S without ``axis``.  Derivatives are plain
      sums (linear), so forward, reverse and higher-order differentiation work (a
      variadic ``lax.reduce`` alone has no derivative rule).

    Example:
      >>> a, b = fused_sums(0, jnp.ones((3, 2)), jnp.arange(6.0).reshape(3, 2))
      >>> a.tolist(), b.tolist()
      ([3.0, 3.0], [6.0, 9.0])
    """
    zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
    return tuple(jax.lax.reduce(terms, zeros, lambda a, b: tuple(x + y for x, y in zip(a, b)), (axis,)))


@fused_sums.defjvp
def _fused_sums_jvp(axis, primals, tangents):
    return fused_sums(axis, *primals), tuple(jnp.sum(t, axis=axis) for t in tangents)
