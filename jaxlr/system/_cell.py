"""Cell geometry on the host (numpy): volume, perpendicular widths, a reduced basis, FFT-friendly mesh sizes.
"""

from __future__ import annotations

import numpy as np

__all__ = ['cell_volume', 'perpendicular_widths', 'reduced_basis', 'fft_friendly']


def cell_volume(cell: np.ndarray) -> float:
    """``|det(cell)|`` in Å³ (host, numpy)."""
    return float(abs(np.linalg.det(np.asarray(cell, dtype=np.float64))))


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell, (3,) in Å (host, numpy).

    Width d is ``V / |a_e × a_f|``, the spacing of the lattice planes spanned by the
    other two vectors; it fixes how many images a cutoff reaches and the mesh
    spacing along that axis.
    """
    c = np.asarray(cell, dtype=np.float64)
    vol = cell_volume(c)
    return np.array([vol / np.linalg.norm(np.cross(c[(d + 1) % 3], c[(d + 2) % 3])) for d in range(3)])


def reduced_basis(cell: np.ndarray) -> np.ndarray:
    """Integer unimodular T such that ``T @ cell`` spans the same lattice with short, near-orthogonal vectors.

    Pairwise (Lagrange–Gauss) reduction repeated to a fixed point (host, numpy).  PME
    builds its mesh along the reduced vectors: a highly skewed cell and its reduced
    equivalent describe the same periodic system, but only the latter has mesh aliases
    far from the origin, which the mesh-error estimate assumes.
    """
    b = np.asarray(cell, dtype=np.float64).copy()
    t = np.eye(3, dtype=np.int64)
    for _ in range(100):
        changed = False
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                mu = round(float(b[i] @ b[j]) / float(b[j] @ b[j]))
                if mu != 0 and np.linalg.norm(b[i] - mu * b[j]) < np.linalg.norm(b[i]) * (1 - 1e-12):
                    b[i] -= mu * b[j]
                    t[i] -= mu * t[j]
                    changed = True
        if not changed:
            break
    if np.linalg.det(t) < 0:
        t[2] *= -1
    return t


def fft_friendly(n: int) -> int:
    """Smallest integer ≥ n whose prime factors are all in {2, 3, 5, 7}."""
    m = max(1, int(n))
    while True:
        k = m
        for f in (2, 3, 5, 7):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1
