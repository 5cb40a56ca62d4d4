"""A cubic Hermite table of the open-boundary LODE pair functions Φ_nl(r).

:func:`jaxlr.features._lode_direct.pair_radial_functions` evaluates Φ_nl(r) by a 2-D
Gauss–Legendre quadrature, about 2,000 kernel evaluations per pair — exact (~1e-13) and
differentiable in σ_L and the basis widths, but the dominant cost of open-boundary LODE
for clusters.  Φ_nl depends on the pair only through r, so it can be tabulated once per
(σ_L, widths, r_c, L):

* on r ∈ [0, R_far], R_far = r_c + s_max (s_max = 8.5·√2·σ_L, where erfc < 1e-32), values
  and r-derivatives on a uniform grid and a cubic Hermite interpolant between nodes (C¹,
  so forces stay the exact derivative of a continuous energy);
* beyond R_far the erfc part vanishes and the point part is a multipole tail, exactly
  Φ_nl(r) = A_nl / r^{l+1}, with A_nl = Φ_nl(R_far)·R_far^{l+1} taken from the last node
  (value and slope continuous there).

Node 0 is r = 0: Φ_n0(0) is the atom's own-Gaussian projection, Φ_nl(0) = 0 for l > 0;
the slope there is 0 except for l = 1 (Φ_n1 ∝ r), taken from a short secant.

For the sizes :func:`direct_table_size` picks (spacing min(σ_L, widths)/40) the
interpolation error is ~1e-10 of max|Φ_nl| and ~1e-7 of max|dΦ_nl/dr| for pair distances
≥ 0.3 Å (measured for σ_L = 0.3–2 Å, r_c = 3–4.5 Å, n_max ≤ 8, L ≤ 3; the error falls as
the fourth power of the spacing; ``tests/test_lode.py`` checks it against the quadrature).
Below ~0.03 Å the quadrature itself loses accuracy; atoms are never that close.

When σ_L and the widths are concrete the table is built once at trace time and enters the
compiled function as a constant; when they are traced (hypergradients) it is built in the
trace and stays differentiable.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._lode_direct import ERFC_RANGE, blocked_rows, pair_radial_functions
from ._lode_kspace import radial_evaluator, self_projection
from ._pair_table import PairTable

__all__ = ["direct_pair_table", "direct_table_size", "pair_table"]

#: nodes per Å per (1 Å / shortest length scale): the grid spacing is min(σ_L, widths) / TABLE_DENSITY
TABLE_DENSITY = 40
#: the secant length (Å) for the l = 1 slope at r = 0
_SECANT = 1e-4
#: nodes evaluated per quadrature call while building a table (bounds its memory)
_BUILD_CHUNK = 256


def direct_table_size(sigma: float, widths, cutoff: float) -> int:
    """Table nodes for an interpolation error ~1e-10 of max|Φ_nl| (host).

    The grid spacing is the shortest length scale of Φ_nl — σ_L or the narrowest GTO
    width — divided by :data:`TABLE_DENSITY`, over [0, r_c + 8.5·√2·σ_L].

    Example:
      >>> from jaxlr.features import gto_widths
      >>> direct_table_size(1.0, gto_widths(3.0, 4), 3.0)
      803
    """
    sigma = float(sigma)
    widths = np.asarray(widths, dtype=np.float64)
    if not (sigma > 0 and np.all(widths > 0) and cutoff > 0):
        raise ValueError(f"sigma, widths and cutoff must be positive, got {sigma}, {widths.tolist()}, {cutoff}.")
    step = min(sigma, float(widths.min())) / TABLE_DENSITY
    r_far = cutoff + ERFC_RANGE * math.sqrt(2.0) * sigma
    return int(math.ceil(r_far / step)) + 1


def pair_table(sigma, widths, *, cutoff: float, max_angular: int, n_table: int) -> PairTable:
    """Tabulate Φ_nl(r) of :func:`jaxlr.features._lode_direct.pair_radial_functions`.

    Args:
      sigma: σ_L in Å.  widths: (n_max,) GTO widths in Å (both may be traced).
      cutoff: r_c in Å.  max_angular: L.  n_table: number of nodes ≥ 4 (static; e.g.
        :func:`direct_table_size`).

    Returns:
      :class:`PairTable`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> t = pair_table(1.0, jnp.asarray(gto_widths(3.0, 2)), cutoff=3.0, max_angular=1, n_table=64)
      >>> t.values.shape, t.tail.shape
      ((64, 2, 2), (2, 2))
    """
    if int(n_table) < 4:
        raise ValueError(f"n_table must be at least 4, got {n_table}.")
    widths = jnp.asarray(widths)
    dtype = jnp.result_type(sigma, widths)
    sigma = jnp.asarray(sigma, dtype)
    widths = widths.astype(dtype)
    radial = radial_evaluator(widths, cutoff)
    r_far = cutoff + ERFC_RANGE * math.sqrt(2.0) * sigma
    grid = jnp.linspace(0.0, 1.0, n_table, dtype=dtype)[1:] * r_far

    def phi(r):
        return pair_radial_functions(r, sigma, widths, cutoff=cutoff, max_angular=max_angular, radial=radial)

    def value_and_slope(r):
        return jax.jvp(phi, (r,), (jnp.ones_like(r),))

    def nodes(idx):                       # a block of node indices, −1 for the padding of the last
        return value_and_slope(jnp.where(idx >= 0, grid[jnp.maximum(idx, 0)], 1.0))

    v, d = blocked_rows(nodes, grid.shape[0], _BUILD_CHUNK, dtype)
    n_max, L = widths.shape[0], max_angular
    own = self_projection(sigma, widths, cutoff=cutoff) * math.sqrt(4.0 * math.pi)
    v0 = jnp.zeros((n_max, L + 1), dtype).at[:, 0].set(own)
    d0 = jnp.zeros((n_max, L + 1), dtype)
    if L >= 1:
        d0 = d0.at[:, 1].set(phi(jnp.asarray([_SECANT], dtype))[0, :, 1] / _SECANT)
    values = jnp.concatenate([v0[None], v], axis=0)
    slopes = jnp.concatenate([d0[None], d], axis=0)
    ls = jnp.arange(L + 1, dtype=dtype)
    tail = values[-1] * r_far ** (ls + 1.0)
    return PairTable(values=values, slopes=slopes, r_far=r_far, tail=tail)


def direct_pair_table(sigma, widths, params, dtype) -> PairTable:
    """The :class:`PairTable` of ``params`` ("direct", ``n_table`` set) for σ_L and widths.

    When neither σ_L nor the widths is a JAX tracer (a model's fixed settings), the table is
    computed on the host once per (σ_L, widths, r_c, L, n_table, dtype) — cached — and enters
    a compiled function as a constant.  Traced values (hypergradients, ``jax.grad`` in σ_L)
    build it inside the trace, differentiable.

    Args:
      sigma: σ_L in Å.  widths: (n_max,) GTO widths in Å.  params: :class:`jaxlr.LodeParams`.
      dtype: the features' floating dtype.

    Example:
      >>> import numpy as np
      >>> from jaxlr.features import LodeParams, gto_widths
      >>> p = LodeParams("direct", cutoff=3.0, max_radial=2, max_angular=1, n_species=1, n_table=64)
      >>> direct_pair_table(1.0, gto_widths(3.0, 2), p, np.float32).values.shape
      (64, 2, 2)
    """
    if isinstance(sigma, jax.core.Tracer) or isinstance(widths, jax.core.Tracer):
        return pair_table(jnp.asarray(sigma, dtype), jnp.asarray(widths, dtype), cutoff=params.cutoff,
                          max_angular=params.max_angular, n_table=params.n_table)
    key = (float(sigma), tuple(float(w) for w in np.asarray(widths).ravel()), float(params.cutoff),
           int(params.max_angular), int(params.n_table), np.dtype(dtype).name)
    return PairTable(*(jnp.asarray(a) for a in _host_table(*key)))


@functools.lru_cache(maxsize=32)
def _host_table(sigma: float, widths: tuple, cutoff: float, max_angular: int, n_table: int, dtype: str):
    with jax.ensure_compile_time_eval():
        t = pair_table(jnp.asarray(sigma, dtype), jnp.asarray(widths, dtype), cutoff=cutoff,
                       max_angular=max_angular, n_table=n_table)
        return tuple(np.asarray(a) for a in (t.values, t.slopes, t.r_far, t.tail))
