"""Padding many structures into one batch for ``jax.vmap`` (host side, numpy).

Structures with different atom counts and cells are padded to a common ``N`` (and a
common neighbour capacity ``M``); padding atoms get charge 0, width 1 Å, position 0 and
``atom_mask = False``, and they are excluded from every neighbour list, so they
contribute exactly nothing and receive zero force.  All structures share one static
mesh (the finest needed by any of them) so the batch compiles once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..system._neighbors import Neighbors, neighbor_list, with_capacity

__all__ = ["Batch", "pad_batch"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """Padded structures (a pytree; leading axis B = number of structures).

    Attributes:
      positions: (B, N, 3) Å.  charges: (B, N) e.  sigma: (B, N) Å or None.
      cell: (B, 3, 3) or None.  atom_mask: (B, N) bool.  neighbors: stacked
      :class:`Neighbors` with arrays of shape (B, N, M[, 3]), or None.
    """

    positions: jax.Array
    charges: jax.Array
    atom_mask: jax.Array
    cell: jax.Array | None = None
    sigma: jax.Array | None = None
    neighbors: Neighbors | None = None


def pad_batch(structures, *, cutoff: float | None = None, n_atoms: int | None = None,
              capacity: int | None = None, dtype=None) -> Batch:
    """Pad a list of structures into a :class:`Batch`.

    Args:
      structures: sequence of dicts with keys ``positions`` (n, 3), ``charges`` (n,), and
        optionally ``cell`` (3, 3) (all or none periodic) and ``sigma`` (n,).
      cutoff: build full neighbour lists with this real-space cutoff (Å); None: no lists
        (open-boundary ``method="direct"`` then needs all pairs, see
        :func:`jaxlr.neighbor_list` with a large cutoff).
      n_atoms: padded atom count (default: the largest).  capacity: neighbour slots.
      dtype: floating dtype of the arrays (default float of the inputs).

    Example:
      >>> import numpy as np, jaxlr
      >>> s1 = dict(positions=np.random.rand(4, 3) * 6, charges=np.array([1., -1, 1, -1]), cell=np.eye(3) * 6)
      >>> s2 = dict(positions=np.random.rand(2, 3) * 5, charges=np.array([1., -1]), cell=np.eye(3) * 5)
      >>> b = jaxlr.pad_batch([s1, s2], cutoff=4.0)
      >>> b.positions.shape
      (2, 4, 3)
    """
    if len(structures) == 0:
        raise ValueError("pad_batch needs at least one structure.")
    periodic = ["cell" in s and s["cell"] is not None for s in structures]
    if any(periodic) and not all(periodic):
        raise ValueError("all structures of a batch must be periodic, or none.")
    gaussian = ["sigma" in s and s["sigma"] is not None for s in structures]
    if any(gaussian) and not all(gaussian):
        raise ValueError("all structures of a batch must have sigma, or none.")
    sizes = [len(np.asarray(s["charges"])) for s in structures]
    n = max(sizes) if n_atoms is None else int(n_atoms)
    if n < max(sizes):
        raise ValueError(f"n_atoms={n} is smaller than the largest structure ({max(sizes)} atoms).")
    b = len(structures)
    pos = np.zeros((b, n, 3))
    q = np.zeros((b, n))
    sig = np.ones((b, n))
    mask = np.zeros((b, n), dtype=bool)
    cells = np.zeros((b, 3, 3))
    for k, s in enumerate(structures):
        m = sizes[k]
        p = np.asarray(s["positions"], dtype=np.float64)
        if p.shape != (m, 3):
            raise ValueError(f"structure {k}: positions must have shape ({m}, 3), got {p.shape}.")
        pos[k, :m] = p
        q[k, :m] = np.asarray(s["charges"], dtype=np.float64)
        mask[k, :m] = True
        if gaussian[0]:
            sig[k, :m] = np.asarray(s["sigma"], dtype=np.float64)
        if periodic[0]:
            cells[k] = np.asarray(s["cell"], dtype=np.float64)
    nbrs = None
    if cutoff is not None:
        lists = [neighbor_list(pos[k], cutoff, cells[k] if periodic[0] else None, atom_mask=mask[k])
                 for k in range(b)]
        cap = max(nl.capacity for nl in lists) if capacity is None else int(capacity)
        lists = [with_capacity(nl, cap) for nl in lists]
        nbrs = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *lists)
    dt = dtype or jnp.zeros(()).dtype
    return Batch(positions=jnp.asarray(pos, dt), charges=jnp.asarray(q, dt), atom_mask=jnp.asarray(mask),
                 cell=jnp.asarray(cells, dt) if periodic[0] else None,
                 sigma=jnp.asarray(sig, dt) if gaussian[0] else None, neighbors=nbrs)
