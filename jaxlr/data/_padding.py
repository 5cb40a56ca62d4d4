"""The one padding routine: structures of different sizes into a batch for ``jax.vmap`` (host, numpy).

Structures with different atom counts (and cells) are padded to a common ``N`` and a common
neighbour capacity ``M``.  Padding atoms get position 0, ``atom_mask = False``, species
−1, charge 0 and width 1 Å, and appear in no neighbour list, so they contribute exactly
nothing and receive zero force.  :func:`pad_atoms` and :func:`pad_neighbors` do the
padding for both :func:`pad_batch` (the functional layer) and
:class:`jaxlr.data.BatchLoader` (the models); both build the same :class:`AtomsBatch`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from ..system._neighbors import Neighbors, neighbor_list
from ._batch import AtomsBatch

__all__ = ["far_padding", "pad_atoms", "pad_batch", "pad_neighbors"]


def pad_atoms(values: Sequence, n_atoms: int, *, fill=0, trailing: tuple = (), dtype=np.float64) -> np.ndarray:
    """Stack per-structure arrays with a leading atom axis, padded to ``n_atoms`` (host).

    Args:
      values: B arrays of shape ``(n_b, *trailing)``, or None for a padding structure.
      n_atoms: padded atom count N ≥ every n_b.
      fill: value of the padding slots.  trailing: the per-atom shape.  dtype: numpy dtype.

    Returns:
      ``(B, N, *trailing)`` numpy array.

    Raises:
      ValueError: a structure with more than ``n_atoms`` atoms or the wrong trailing shape.

    Example:
      >>> pad_atoms([np.ones(2), None, np.ones(3)], 4).tolist()
      [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    """
    out = np.full((len(values), int(n_atoms)) + tuple(trailing), fill, dtype=dtype)
    for k, v in enumerate(values):
        if v is None:
            continue
        v = np.asarray(v)
        if v.shape[0] > n_atoms or v.shape[1:] != tuple(trailing):
            raise ValueError(f"structure {k}: per-atom array of shape {v.shape} does not fit "
                             f"({n_atoms}, {', '.join(map(str, trailing))}) — more atoms than the batch's N?")
        out[k, :v.shape[0]] = v
    return out


def pad_neighbors(lists: Sequence, n_atoms: int, capacity: int, *, periodic: bool) -> Neighbors:
    """Stack per-structure neighbour lists into one (B, N, M) :class:`Neighbors` (host).

    Args:
      lists: B tuples ``(idx (n, c), mask (n, c), shifts (n, c, 3) or None)`` with
        c ≤ ``capacity``, or None for a padding structure.
      n_atoms: padded N.  capacity: padded M.  periodic: keep integer image shifts.

    Returns:
      :class:`Neighbors` of jax arrays; empty slots point at the atom itself with
      ``mask = False`` (and shift 0), so gathers stay in range.

    Example:
      >>> nl = pad_neighbors([(np.array([[1], [0]]), np.array([[True], [True]]), None)], 3, 2,
      ...                    periodic=False)
      >>> nl.idx.tolist(), nl.mask.tolist()
      ([[[1, 0], [0, 1], [2, 2]]], [[[True, False], [True, False], [False, False]]])
    """
    b, n, m = len(lists), int(n_atoms), int(capacity)
    idx = np.broadcast_to(np.arange(n, dtype=np.int32)[None, :, None], (b, n, m)).copy()
    mask = np.zeros((b, n, m), dtype=bool)
    shifts = np.zeros((b, n, m, 3), dtype=np.int8) if periodic else None
    for k, entry in enumerate(lists):
        if entry is None:
            continue
        i, msk, sh = entry
        na, c = np.asarray(msk).shape
        if na > n or c > m:
            raise ValueError(f"structure {k}: a neighbour list of {na} atoms × {c} slots does not fit ({n}, {m}).")
        idx[k, :na, :c] = np.where(msk, i, np.arange(na, dtype=np.int32)[:, None])
        mask[k, :na, :c] = msk
        if periodic:
            shifts[k, :na, :c] = np.where(np.asarray(msk)[..., None], sh, 0)
    return Neighbors(idx=jnp.asarray(idx), mask=jnp.asarray(mask),
                     shifts=None if shifts is None else jnp.asarray(shifts), overflow=jnp.zeros(b, dtype=bool))


def pad_batch(structures, *, cutoff: float | None = None, n_atoms: int | None = None,
              capacity: int | None = None, dtype=None) -> AtomsBatch:
    """Pad a list of structures into an :class:`AtomsBatch` for the functional layer.

    Args:
      structures: sequence of dicts with keys ``positions`` (n, 3) Å, ``charges`` (n,) e,
        and optionally ``cell`` (3, 3) Å (all or none periodic), ``sigma`` (n,) Å and
        ``species`` (n,) integer channels.
      cutoff: build full neighbour lists with this real-space cutoff (Å); None: no lists
        (open-boundary ``method="direct"`` then needs all pairs, see
        :func:`jaxlr.neighbor_list` with a large cutoff).
      n_atoms: padded atom count (default: the largest).  capacity: neighbour slots.
      dtype: floating dtype of the arrays (default float of the inputs).

    Returns:
      :class:`AtomsBatch` with ``charges`` (B, N) and ``sigma`` (B, N) or None filled in,
      ``total_charge`` = Σq, one fragment per structure; species 0 unless given.

    Example:
      >>> import numpy as np
      >>> s1 = dict(positions=np.random.rand(4, 3) * 6, charges=np.array([1., -1, 1, -1]), cell=np.eye(3) * 6)
      >>> s2 = dict(positions=np.random.rand(2, 3) * 5, charges=np.array([1., -1]), cell=np.eye(3) * 5)
      >>> b = pad_batch([s1, s2], cutoff=4.0)
      >>> b.positions.shape, b.charges.shape, b.neighbors.idx.shape[:2]
      ((2, 4, 3), (2, 4), (2, 4))
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
    positions = []
    for k, s in enumerate(structures):
        p = np.asarray(s["positions"], dtype=np.float64)
        if p.shape != (sizes[k], 3):
            raise ValueError(f"structure {k}: positions must have shape ({sizes[k]}, 3), got {p.shape}.")
        positions.append(p)
    charges = [np.asarray(s["charges"], np.float64) for s in structures]
    cells = [np.asarray(s["cell"], np.float64) for s in structures] if periodic[0] else None
    nbrs = None
    if cutoff is not None:
        lists = [neighbor_list(positions[k], cutoff, None if cells is None else cells[k]) for k in range(len(sizes))]
        cap = max(nl.capacity for nl in lists) if capacity is None else int(capacity)
        nbrs = pad_neighbors([(np.asarray(nl.idx), np.asarray(nl.mask),
                               None if nl.shifts is None else np.asarray(nl.shifts)) for nl in lists],
                             n, cap, periodic=periodic[0])
    dt = dtype or jnp.zeros(()).dtype
    species = [np.asarray(s.get("species", np.zeros(m, np.int32)), np.int32) for s, m in zip(structures, sizes)]
    return AtomsBatch(
        positions=jnp.asarray(pad_atoms(positions, n, trailing=(3,)), dt),
        species=jnp.asarray(pad_atoms(species, n, fill=-1, dtype=np.int32)),
        atom_mask=jnp.asarray(pad_atoms([np.ones(m, bool) for m in sizes], n, fill=False, dtype=bool)),
        structure_mask=jnp.ones(len(sizes), dtype=bool),
        total_charge=jnp.asarray([float(q.sum()) for q in charges], dt),
        fragments=jnp.asarray(pad_atoms([np.zeros(m, np.int32) for m in sizes], n, fill=-1, dtype=np.int32)),
        fragment_charges=jnp.asarray(np.array([[float(q.sum())] for q in charges]), dt),
        neighbors=nbrs,
        cell=None if cells is None else jnp.asarray(np.stack(cells), dt),
        charges=jnp.asarray(pad_atoms(charges, n), dt),
        sigma=jnp.asarray(pad_atoms([np.asarray(s["sigma"], np.float64) for s in structures], n, fill=1.0), dt)
        if gaussian[0] else None,
    )


def far_padding(positions, atom_mask):
    """Padding atoms moved far apart (open boundary), so no pair of atoms coincides (jittable).

    Padding atoms carry nothing, but coincident points make 1/r and its derivatives 0/0;
    distinct far points (10⁴ Å apart along x) keep every kernel finite.  Gradients with
    respect to the original padding positions are zero.

    Args:
      positions: (N, 3) Å.  atom_mask: (N,) bool, False for padding atoms.

    Returns:
      (N, 3) positions, real atoms unchanged.

    Example:
      >>> import jax.numpy as jnp
      >>> far_padding(jnp.zeros((2, 3)), jnp.array([True, False]))[:, 0].tolist()
      [0.0, 20000.0]
    """
    n = positions.shape[0]
    far = 1.0e4 * jnp.stack([1.0 + jnp.arange(n, dtype=positions.dtype),
                             jnp.zeros(n, positions.dtype), jnp.zeros(n, positions.dtype)], axis=1)
    return jnp.where(atom_mask[:, None], positions, far)

