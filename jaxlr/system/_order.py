"""Spatial ordering of atoms for cache-friendly mesh and neighbour gathers (host, numpy).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..performance import costs
from ._neighbors import neighbor_list

__all__ = []




def spatial_order(positions: np.ndarray, cell: np.ndarray, spacing: float = 4.0) -> np.ndarray:
    """Permutation that sorts atoms by coarse cells of about ``spacing`` Å (host, numpy).

    Row-major order of the cells of a grid laid along the cell vectors; atoms in the
    same or neighbouring cells end up close in memory.
    """
    frac = np.asarray(positions, dtype=np.float64) @ np.linalg.inv(cell)
    widths = np.array([abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
                       for d in range(3)])
    bins = np.maximum(1, np.floor(widths / spacing)).astype(np.int64)
    idx = np.floor((frac - np.floor(frac)) * bins).astype(np.int64) % bins
    key = (idx[:, 0] * bins[1] + idx[:, 1]) * bins[2] + idx[:, 2]
    return np.argsort(key, kind="stable").astype(np.int32)


def sorted_neighbors(positions: np.ndarray, cell: np.ndarray, cutoff: float, *, sort: bool):
    """Host neighbour list with ``cutoff`` (Å), in spatial order for large systems when ``sort``.

    Returns ``(neighbors, perm)``: with ``sort`` and above ``costs().sort_above`` atoms (:mod:`jaxlr.performance`),
    ``perm`` is the (N,) permutation of :func:`spatial_order` and the list refers to the
    permuted atoms; otherwise ``perm`` is None and the list refers to the atoms as given.
    The front doors sort for PME, where the mesh scatter/gather profits from it.
    """
    if sort and positions.shape[0] > costs().sort_above:
        perm = spatial_order(positions, cell)
        return neighbor_list(positions[perm], cutoff, cell), jnp.asarray(perm)
    return neighbor_list(positions, cutoff, cell), None
