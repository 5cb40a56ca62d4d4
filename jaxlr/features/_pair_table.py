"""The cubic Hermite table of the open-boundary LODE pair functions Φ_nl(r) and its
interpolation (the table is built by :mod:`jaxlr.features._lode_table`; see there for
its construction and error)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from ._lode_kspace import hermite_basis

__all__ = ["PairTable", "interpolate_pair_table"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PairTable:
    """Φ_nl(r) tabulated for cubic Hermite interpolation (a pytree).

    Attributes:
      values, slopes: (n_table, n_max, L+1) Φ_nl and dΦ_nl/dr at r_t = t·r_far/(n_table − 1).
      r_far: the last node (Å); beyond it Φ_nl(r) = tail_nl / r^{l+1}.
      tail: (n_max, L+1) the multipole tail coefficients A_nl.
    """

    values: jax.Array
    slopes: jax.Array
    r_far: jax.Array
    tail: jax.Array


def interpolate_pair_table(table: PairTable, r):
    """Φ_nl(r) from a :class:`PairTable`: (..., n_max, L+1) for r ≥ 0 of shape (...).

    Differentiable in r (and in the table); r beyond ``table.r_far`` takes the exact tail.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> from jaxlr.features._lode_table import pair_table
      >>> t = pair_table(1.0, jnp.asarray(gto_widths(3.0, 2)), cutoff=3.0, max_angular=1, n_table=400)
      >>> interpolate_pair_table(t, jnp.array([1.5, 40.0])).shape
      (2, 2, 2)
    """
    n_table = table.values.shape[0]
    dtype = table.values.dtype
    r = jnp.asarray(r, dtype)
    inside = r < table.r_far
    r_in = jnp.where(inside, r, 0.0)
    index, w = hermite_basis(r_in, table.r_far, n_table)
    near = (w[..., 0, None, None] * table.values[index] + w[..., 1, None, None] * table.slopes[index]
            + w[..., 2, None, None] * table.values[index + 1] + w[..., 3, None, None] * table.slopes[index + 1])
    ls = jnp.arange(table.tail.shape[-1], dtype=dtype)
    r_out = jnp.where(inside, table.r_far, r)
    far = table.tail * r_out[..., None, None] ** (-(ls + 1.0))
    return jnp.where(inside[..., None, None], near, far)
