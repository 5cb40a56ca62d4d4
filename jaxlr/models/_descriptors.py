"""Descriptors of one structure for the models: local invariants and multi-scale LODE.

Functions of one (unbatched) :class:`jaxlr.models.AtomsBatch` entry; models ``vmap`` them.

- :func:`local_invariants`: ν = 1 (the l = 0 density coefficients) and the ν = 2 power
  spectrum of the species-resolved neighbour density within ``cutoff`` (each unordered
  channel pair once).
- :func:`multiscale_invariants`: ν = 1 LODE (l = 0 potential coefficients) and the
  multi-scale invariants ρ ⊗ V of Grisafi, Nigam & Ceriotti (2021), with the density ρ
  including the central atom, so that ρ ⊗ V contains the potential felt by each species.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..electrostatics._pme import MeshSpec
from ..features._invariants import power_spectrum
from ..features._lode import LodeParams, lode_features
from ..features._lode_table import direct_table_size
from ..features._radial import gto_widths
from ..features._spherical import spherical_expansion_terms
from ..system._cell import fft_friendly, perpendicular_widths
from ..tuning._lode import tune_lode
from ._electrostatics import periodic_cells

__all__ = ["LocalSpec", "LodeSpec", "local_invariants", "multiscale_invariants", "plan_lode",
           "lode_params"]


@dataclasses.dataclass(frozen=True)
class LocalSpec:
    """Hyperparameters of the local density expansion (static, JSON-friendly).

    Attributes: cutoff r_c (Å), max_radial, max_angular, sigma (Gaussian width, Å).
    """

    cutoff: float = 5.0
    max_radial: int = 6
    max_angular: int = 4
    sigma: float = 0.5


@dataclasses.dataclass(frozen=True)
class LodeSpec:
    """Hyperparameters of the LODE potential features (static, JSON-friendly).

    Attributes:
      cutoff: projection radius r_c (Å).  max_radial, max_angular: basis sizes.
      sigma: σ_L of the species densities (Å).  density_sigma: width of the local
        density ρ of ρ ⊗ V (Å).
      mesh, order, n_points, n_table: PME mesh (K1, K2, K3), spline order and k-space table
        sizes for periodic batches (set by :func:`plan_lode`); None for open boundaries.
    """

    cutoff: float = 3.0
    max_radial: int = 4
    max_angular: int = 2
    sigma: float = 1.0
    density_sigma: float = 0.5
    mesh: tuple | None = None
    order: int = 8
    n_points: int | None = None
    n_table: int | None = None


def local_invariants(s, spec: LocalSpec, n_species: int):
    """(N, D) local invariants of one structure (zero rows for padding atoms).

    D = S·n + (S·n)(S·n + 1)/2·(L + 1) with S species, n = max_radial, L = max_angular.
    """
    # centre left out, as before the library default became 1 (trained models stay unchanged)
    c = spherical_expansion_terms(s.positions, s.species, s.neighbors, cell=s.cell, n_species=n_species,
                                  cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                                  sigma=spec.sigma, center_atom_weight=0.0)
    n = c.shape[0]
    k = n_species * spec.max_radial
    p = power_spectrum(c).reshape(n, k, k, spec.max_angular + 1)
    iu = np.triu_indices(k)
    nu2 = p[:, iu[0], iu[1], :].reshape(n, -1)
    return jnp.concatenate([c[..., 0].reshape(n, k), nu2], axis=1)


def local_vectors(s, spec: LocalSpec, n_species: int):
    """(N, S·n, 3) equivariant vectors of one structure: the l = 1 part of the neighbour
    density's spherical expansion, in Cartesian order (x, y, z) (zero for padding atoms).

    They turn with the structure (``V(R·Q^T) = V(R)·Q^T``) and let invariant networks build
    vector-valued outputs — the density model's p-function terms — as ``Σ_k w_k(f) V_k``.
    """
    c = spherical_expansion_terms(s.positions, s.species, s.neighbors, cell=s.cell, n_species=n_species,
                                  cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=1,
                                  sigma=spec.sigma, center_atom_weight=0.0)
    n = c.shape[0]
    v = c.reshape(n, n_species * spec.max_radial, 4)[..., jnp.array([3, 1, 2])]   # l = 1 is ∝ (y, z, x)
    return jnp.where((s.species >= 0)[:, None, None], v, 0.0)


def lode_params(spec: LodeSpec, n_species: int, periodic: bool) -> LodeParams:
    """The static :class:`jaxlr.LodeParams` of a :class:`LodeSpec`."""
    base = dict(cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                n_species=n_species)
    if not periodic:
        # the pair functions interpolated from a table (~1e-10 relative) instead of a 2-D
        # quadrature per pair: tens of times cheaper for clusters
        n_table = direct_table_size(spec.sigma, gto_widths(spec.cutoff, spec.max_radial), spec.cutoff)
        return LodeParams("direct", n_table=n_table, **base)
    if spec.mesh is None:
        raise ValueError("periodic LODE needs a mesh: call Potential.adapted_to(cells) first.")
    mesh = MeshSpec(tuple(int(k) for k in spec.mesh), int(spec.order))
    return LodeParams("pme", mesh=mesh, n_points=spec.n_points, n_table=spec.n_table, **base)


def plan_lode(spec: LodeSpec, n_species: int, cells, accuracy: float = 1e-4) -> LodeSpec:
    """Fix the PME mesh of ``spec`` for a family of cells (host).

    The mesh (along the cell vectors as given) has, along every axis, the finest plane
    spacing that any cell needs for ``accuracy``; the k-space tables are sized for the cell whose mesh reaches the
    largest |k|.  Open boundaries (``cells`` all None) return ``spec`` unchanged.

    Tuning one cell takes tens of milliseconds, so a large family (e.g. 2,000 boxes of
    different sizes) is planned on at most :data:`PLAN_CELLS` representatives
    (:func:`representative_cells`): the widest and the narrowest along each axis, the
    largest and smallest volume, and cells spread evenly over the volumes in between.
    The widest cells need the most mesh points at a given spacing, the narrowest reach
    the largest |k| on the common mesh; the spread catches the tuner's rounding, which
    is not monotonic in the cell size.
    """
    cells = periodic_cells(cells)
    if cells is None:
        return spec
    widest = np.max([perpendicular_widths(c) for c in cells], axis=0)
    cells = representative_cells(cells)
    kw = dict(cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular, n_species=n_species,
              method="pme")
    spacing = np.inf
    for c in cells:
        p = tune_lode(c, spec.sigma, accuracy=accuracy, order=spec.order, **kw)
        planes = perpendicular_widths(np.asarray(p.mesh.basis, dtype=np.float64) @ c) / np.asarray(p.mesh.shape)
        spacing = min(spacing, float(np.min(planes)))
    # the finest plane spacing any cell needs, along every axis of the widest extents
    shape = tuple(fft_friendly(int(np.ceil(w / spacing - 1e-9))) for w in widest)
    best = None
    for c in cells:
        p = tune_lode(c, spec.sigma, mesh=shape, order=spec.order, **kw)
        if best is None or p.n_table > best.n_table or p.n_points > best.n_points:
            best = p
    return dataclasses.replace(spec, mesh=shape, n_points=int(best.n_points), n_table=int(best.n_table))


#: most cells :func:`plan_lode` tunes for one family
PLAN_CELLS = 24


def representative_cells(cells: list, limit: int = PLAN_CELLS) -> list:
    """Up to ``limit`` distinct cells of a family: the widest/narrowest per axis, the
    largest/smallest volume, and cells evenly spaced in volume order (host).

    Args:
      cells: list of (3, 3) arrays in Å (rows are lattice vectors).  limit: at most this
        many cells are returned (≥ 8 keeps all the extremes).

    Returns:
      list of distinct (3, 3) cells, a subset of ``cells``.

    Example:
      >>> import numpy as np
      >>> cells = [np.eye(3) * a for a in (10.0, 12.0, 14.0, 12.0)]
      >>> [float(c[0, 0]) for c in representative_cells(cells)]
      [14.0, 10.0, 12.0]
    """
    widths = np.array([perpendicular_widths(c) for c in cells])
    volumes = np.array([abs(np.linalg.det(c)) for c in cells])
    picks = [int(np.argmax(volumes)), int(np.argmin(volumes))]
    for d in range(3):
        picks += [int(np.argmax(widths[:, d])), int(np.argmin(widths[:, d]))]
    by_volume = np.argsort(volumes, kind="stable")
    picks += [int(by_volume[k]) for k in np.linspace(0, len(cells) - 1, max(limit - len(picks), 0)).round().astype(int)]
    unique = {}
    for i in picks:
        unique.setdefault(np.round(cells[i], 10).tobytes(), cells[i])
    return list(unique.values())[:limit]


def multiscale_invariants(s, spec: LodeSpec, n_species: int):
    """(N, D) multi-scale features of one structure: [ν = 1 LODE, ρ ⊗ V] (zero for padding).

    D = S·n + (S·n)²·(L + 1).
    """
    periodic = s.cell is not None
    params = lode_params(spec, n_species, periodic)
    # a host (numpy) array: under jit a jnp conversion would be traced, and the open-boundary
    # pair-function table would then be rebuilt in every call instead of once
    widths = np.asarray(gto_widths(spec.cutoff, spec.max_radial), s.positions.dtype)
    v = lode_features(s.positions, s.species, sigma=spec.sigma, widths=widths, params=params, cell=s.cell)
    rho = spherical_expansion_terms(s.positions, s.species, s.neighbors, cell=s.cell, n_species=n_species,
                                    cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                                    sigma=spec.density_sigma, center_atom_weight=1.0)
    n = v.shape[0]
    k = n_species * spec.max_radial
    ms = power_spectrum(rho, v).reshape(n, -1)
    out = jnp.concatenate([v[..., 0].reshape(n, k), ms], axis=1)
    return jnp.where((s.species >= 0)[:, None], out, 0.0)
