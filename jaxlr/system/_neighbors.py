"""Neighbour lists for the real-space sums: host construction and a jax-md adapter.

jaxlr's real-space kernels read a *dense, full* neighbour list: row ``i`` lists every
neighbour ``j`` of atom ``i`` (both ``(i, j)`` and ``(j, i)`` are present, and so are
periodic images of ``i`` itself), padded to a fixed capacity ``M``.  The dense full
layout turns every per-atom sum (potentials, forces) into a reduction along an axis
instead of a scatter, which is what makes forces cheap on CPU and GPU alike.

Two ways to obtain one:

* :func:`neighbor_list` — host side (numpy, eager), any cell shape and any cutoff, also
  cutoffs larger than half the box (many images of the same pair).  The pair search is
  done by `vesin <https://github.com/Luthaf/vesin>`_.  Integer cell shifts are stored, so
  the displacement ``R[j] - R[i] + shifts @ cell`` follows a traced cell and stress by
  automatic differentiation is right.
* :func:`from_jax_md` — wraps a jax-md ``Dense`` neighbour list (built and updated inside
  jitted MD); displacements then use the minimum-image convention in fractional
  coordinates, valid while the cutoff is below half the smallest cell width (jax-md's own
  requirement).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._cell import perpendicular_widths
from ._checks import check_cell, check_positions, concrete_or_none

__all__ = ["Neighbors", "neighbor_list", "with_capacity", "from_jax_md", "pair_displacements"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Neighbors:
    """Dense full neighbour list (a pytree; every field is an array or ``None``).

    Attributes:
      idx: (N, M) int32, neighbour indices; padded slots point at the atom itself.
      mask: (N, M) bool, True for real pairs.
      shifts: (N, M, 3) int8 integer cell shifts such that the displacement is
        ``R[idx] - R[:, None] + shifts @ cell``; ``None`` means: minimum image
        (periodic) or no shift (open boundary).
      overflow: () bool, True if a list built under jit ran out of capacity (the
        jax-md adapter); host-built lists never overflow.
    """

    idx: jax.Array
    mask: jax.Array
    shifts: jax.Array | None = None
    overflow: jax.Array | None = None

    @property
    def capacity(self) -> int:
        """Number of neighbour slots per atom, M."""
        return self.idx.shape[-1]


def round_capacity(m: int) -> int:
    """Round a capacity up (≈ +10 %, to a multiple of 8) so small changes don't recompile."""
    return int(8 * np.ceil(max(1, 1.1 * m) / 8))


def neighbor_list(positions, cutoff: float, cell=None, *, capacity: int | None = None,
                  atom_mask=None) -> Neighbors:
    """Build a dense full neighbour list on the host (numpy, eager).

    Args:
      positions: (N, 3) Å, concrete.
      cutoff: real-space cutoff in Å (> 0); any value, also above half the box.
      cell: (3, 3) rows are lattice vectors (periodic in 3D), or ``None`` (open boundary).
      capacity: neighbour slots per atom, M.  Default: the largest count rounded up
        by ~10 % (so that repeated calls with slightly different positions reuse the
        compiled function).  A capacity below the largest count raises ``ValueError``.
      atom_mask: optional (N,) bool; atoms marked False (padding) get no neighbours and
        are nobody's neighbour.

    Returns:
      :class:`Neighbors` with ``shifts`` (int8) when periodic, ``None`` otherwise.

    Example:
      >>> import numpy as np, jaxlr
      >>> nl = jaxlr.neighbor_list(np.random.rand(10, 3) * 5, cutoff=4.0, cell=np.eye(3) * 5)
      >>> nl.idx.shape[0]
      10
    """
    import vesin

    positions = check_positions(positions)
    pos = concrete_or_none(positions)
    if pos is None:
        raise ValueError("neighbor_list needs concrete positions (it runs on the host); "
                         "inside jit use a jax-md neighbour list and jaxlr.system.from_jax_md.")
    pos = np.asarray(pos, dtype=np.float64)
    n = pos.shape[0]
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"cutoff must be a positive finite number of Å, got {cutoff}.")
    nl = vesin.NeighborList(cutoff=float(cutoff), full_list=True)
    if cell is not None:
        c = concrete_or_none(check_cell(cell))
        if c is None:
            raise ValueError("neighbor_list needs a concrete cell.")
        c = np.asarray(c, dtype=np.float64)
        span = float(np.ptp(pos @ np.linalg.inv(c), axis=0).max()) if n > 1 else 0.0
        if cutoff / perpendicular_widths(c).min() + span > 126:
            raise ValueError(f"cutoff {cutoff} Å spans more than 126 cell widths; use a larger cell, a "
                             "smaller cutoff, or wrap the positions into the cell.")
        i, j, s = nl.compute(pos, c, True, "ijS")
    else:
        i, j = nl.compute(pos, np.zeros((3, 3)), False, "ij")
        s = None
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    if atom_mask is not None:
        am = np.asarray(atom_mask, dtype=bool)
        if am.shape != (n,):
            raise ValueError(f"atom_mask must have shape ({n},), got {am.shape}.")
        keep = am[i] & am[j]
        i, j = i[keep], j[keep]
        s = None if s is None else s[keep]
    counts = np.bincount(i, minlength=n)
    needed = int(counts.max()) if counts.size else 0
    if capacity is None:
        capacity = round_capacity(needed)
    elif capacity < needed:
        raise ValueError(f"capacity={capacity} is smaller than the largest neighbour count {needed}; "
                         "raise it or leave it as None.")
    order = np.argsort(i, kind="stable")
    i, j = i[order], j[order]
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(i.size) - start[i]
    idx = np.repeat(np.arange(n)[:, None], capacity, axis=1).astype(np.int32)
    mask = np.zeros((n, capacity), dtype=bool)
    idx[i, slot] = j
    mask[i, slot] = True
    shifts = None
    if s is not None:
        shifts = np.zeros((n, capacity, 3), dtype=np.int8)
        shifts[i, slot] = s[order]
        shifts = jnp.asarray(shifts)
    return Neighbors(idx=jnp.asarray(idx), mask=jnp.asarray(mask), shifts=shifts,
                     overflow=jnp.asarray(False))


def with_capacity(nbrs: Neighbors, capacity: int) -> Neighbors:
    """The same host-built list with ``capacity`` slots per atom (host).

    Lets several lists share one capacity (batching) without searching the pairs again:
    extra slots are masked; slots are dropped only where every row has them empty (host
    lists fill each row from the front).

    Args:
      nbrs: a list from :func:`neighbor_list`.  capacity: slots per atom, at least the
        largest neighbour count (else ``ValueError``).

    Returns:
      :class:`Neighbors` with arrays of shape (N, capacity[, 3]).

    Example:
      >>> import numpy as np, jaxlr
      >>> nl = jaxlr.neighbor_list(np.random.rand(10, 3) * 5, cutoff=4.0, cell=np.eye(3) * 5)
      >>> with_capacity(nl, nl.capacity + 8).capacity == nl.capacity + 8
      True
    """
    needed = int(np.asarray(nbrs.mask).sum(axis=1).max(initial=0))
    if capacity < needed:
        raise ValueError(f"capacity={capacity} is smaller than the largest neighbour count {needed}; "
                         "raise it or leave it as None.")
    extra = int(capacity) - nbrs.capacity
    if extra <= 0:
        shifts = None if nbrs.shifts is None else nbrs.shifts[:, :capacity]
        return Neighbors(idx=nbrs.idx[:, :capacity], mask=nbrs.mask[:, :capacity], shifts=shifts,
                         overflow=nbrs.overflow)
    n = nbrs.idx.shape[0]
    self_idx = jnp.broadcast_to(jnp.arange(n, dtype=nbrs.idx.dtype)[:, None], (n, extra))
    shifts = None
    if nbrs.shifts is not None:
        shifts = jnp.concatenate([nbrs.shifts, jnp.zeros((n, extra, 3), nbrs.shifts.dtype)], axis=1)
    return Neighbors(idx=jnp.concatenate([nbrs.idx, self_idx], axis=1),
                     mask=jnp.concatenate([nbrs.mask, jnp.zeros((n, extra), bool)], axis=1),
                     shifts=shifts, overflow=nbrs.overflow)


def from_jax_md(nbrs) -> Neighbors:
    """Wrap a jax-md ``Dense`` neighbour list (``jax_md.partition.NeighborList``).

    jax-md marks empty slots with the index N; they become masked slots here.  The
    result uses the minimum-image convention (``shifts=None``), so it is valid only while
    the cutoff is below half the smallest cell width — jax-md's own requirement.  The
    ``overflow`` flag of jax-md is carried along; check it outside jit and reallocate.
    This function is jittable.

    Example:
      >>> from jax_md import space, partition
      >>> # neighbor_fn = partition.neighbor_list(displacement, box, r_cut, format=partition.Dense)
      >>> # nbrs = neighbor_fn.allocate(R); jaxlr.system.from_jax_md(nbrs)
    """
    idx = jnp.asarray(nbrs.idx)
    n = idx.shape[0]
    mask = idx < n
    self_idx = jnp.broadcast_to(jnp.arange(n, dtype=idx.dtype)[:, None], idx.shape)
    return Neighbors(idx=jnp.where(mask, idx, self_idx).astype(jnp.int32), mask=mask,
                     shifts=None, overflow=jnp.asarray(nbrs.did_buffer_overflow))


def pair_displacements(positions, cell, rows, idx, shifts):
    """Displacements ``d_ij = R_j − R_i`` (with images) for rows of a dense list (jittable).

    Args:
      positions: (N, 3); cell: (3, 3) or None (open boundary).
      rows: (B,) atom indices i of the rows.  idx: (B, M) neighbour indices j, or None for
        all atoms (open boundary, all pairs).  shifts: (B, M, 3) integer cell shifts, or
        None: minimum image when a cell is given.

    Returns:
      (d, n): ``d`` a tuple of three (B, M) arrays (x, y, z components) and ``n`` a tuple
      of three (B, M) float arrays of integer shifts with ``d = R_j − R_i + n @ cell``
      (None when open).  Components are gathered one by one: on CPU, three 1-D gathers are
      about ten times faster than one gather of (N, 3) rows.
    """
    dtype = positions.dtype
    comps = [positions[:, a] for a in range(3)]
    if idx is None:
        d = [c[None, :] - c[rows][:, None] for c in comps]
    else:
        d = [c[idx] - c[rows][:, None] for c in comps]
    if cell is None:
        return tuple(d), None
    if shifts is not None:
        n = [shifts[..., b].astype(dtype) for b in range(3)]
    else:
        inv = jnp.linalg.inv(cell)
        n = [-jnp.round(jax.lax.stop_gradient(sum(d[a] * inv[a, b] for a in range(3)))) for b in range(3)]
    d = [d[a] + sum(n[b] * cell[b, a] for b in range(3)) for a in range(3)]
    return tuple(d), tuple(n)
