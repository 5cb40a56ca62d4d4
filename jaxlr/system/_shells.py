"""Merz–Kollman sampling shells around a molecule (host, numpy).

Points on spheres of radius ``scale × r_vdW`` around every atom, for scales 1.4, 1.6, 1.8
and 2.0, about ``density`` points per Å² (a Fibonacci lattice on each sphere), keeping only
the points outside every atom's sphere of the same scale — the surfaces on which
electrostatic-potential-derived charges are fitted (Singh & Kollman, J. Comput. Chem. 5,
129 (1984); Besler, Merz & Kollman, J. Comput. Chem. 11, 431 (1990)).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MK_RADII", "merz_kollman_points"]

#: Merz–Kollman van der Waals radii (Å) by atomic number (Singh & Kollman 1984).
MK_RADII = {1: 1.2, 6: 1.5, 7: 1.5, 8: 1.4}


def _fibonacci_sphere(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(np.maximum(1.0 - z * z, 0.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def merz_kollman_points(positions, numbers, *, scales=(1.4, 1.6, 1.8, 2.0), density: float = 1.0,
                        radii: dict | None = None) -> np.ndarray:
    """Points on the Merz–Kollman shells of a molecule (Å).

    Args:
      positions: (N, 3) Å.  numbers: (N,) atomic numbers.
      scales: multiples of the van der Waals radius, one shell each (> 0).
      density: points per Å² on each sphere (> 0).
      radii: ``{atomic number: radius in Å}`` overriding :data:`MK_RADII`.

    Returns:
      (M, 3) points, each at least ``scale × r_vdW`` from every atom (for its own scale).

    Raises:
      ValueError: for an element without a radius, or non-positive scales or density.

    Example:
      >>> import numpy as np
      >>> water = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])
      >>> pts = merz_kollman_points(water, [8, 1, 1])
      >>> pts.shape[1], 150 < len(pts) < 400
      (3, True)
      >>> d = np.linalg.norm(pts[:, None] - water[None], axis=-1)
      >>> bool(d.min() > 1.4 * 1.2 - 1e-9)
      True
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    numbers = np.asarray(numbers).reshape(-1)
    if len(numbers) != len(positions):
        raise ValueError(f"numbers has {len(numbers)} entries for {len(positions)} positions.")
    table = dict(MK_RADII, **(radii or {}))
    missing = sorted({int(z) for z in numbers} - set(table))
    if missing:
        raise ValueError(f"no van der Waals radius for atomic numbers {missing}; pass radii={{Z: Å}}.")
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0) and np.isfinite(density) and density > 0):
        raise ValueError(f"scales and density must be positive, got {scales.tolist()} and {density}.")
    r_vdw = np.array([table[int(z)] for z in numbers])
    out = []
    for scale in scales:
        radius = scale * r_vdw
        for centre, r in zip(positions, radius):
            sphere = centre + r * _fibonacci_sphere(max(int(round(4 * math.pi * r * r * density)), 1))
            dist = np.linalg.norm(sphere[:, None, :] - positions[None, :, :], axis=-1)
            out.append(sphere[np.all(dist >= radius[None, :] * (1 - 1e-12), axis=1)])
    return np.concatenate(out, axis=0) if out else np.zeros((0, 3))
