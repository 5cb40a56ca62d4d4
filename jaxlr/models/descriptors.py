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

from ..features.invariants import power_spectrum
from ..features.lode import LodeParams, lode_features, tune_lode
from ..features.radial import gto_widths
from ..features.spherical import spherical_expansion_terms
from ..pme import MeshSpec
from .electrostatics import mesh_spacing, periodic_cells, shape_for_spacing

__all__ = ["LocalSpec", "LodeSpec", "local_invariants", "multiscale_invariants", "far_padding", "plan_lode",
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


def far_padding(positions, atom_mask):
    """Move padding atoms far apart (open boundary), so no pair of atoms coincides.

    Padding atoms carry nothing, but coincident points make 1/r and its derivatives
    0/0; distinct far points keep every kernel finite.  Gradients to the original
    padding positions are zero.
    """
    n = positions.shape[0]
    far = 1.0e4 * jnp.stack([1.0 + jnp.arange(n, dtype=positions.dtype),
                             jnp.zeros(n, positions.dtype), jnp.zeros(n, positions.dtype)], axis=1)
    return jnp.where(atom_mask[:, None], positions, far)


def local_invariants(s, spec: LocalSpec, n_species: int):
    """(N, D) local invariants of one structure (zero rows for padding atoms).

    D = S·n + (S·n)(S·n + 1)/2·(L + 1) with S species, n = max_radial, L = max_angular.
    """
    c = spherical_expansion_terms(s.positions, s.species, s.neighbors, cell=s.cell, n_species=n_species,
                                  cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                                  sigma=spec.sigma)
    n = c.shape[0]
    k = n_species * spec.max_radial
    p = power_spectrum(c).reshape(n, k, k, spec.max_angular + 1)
    iu = np.triu_indices(k)
    nu2 = p[:, iu[0], iu[1], :].reshape(n, -1)
    return jnp.concatenate([c[..., 0].reshape(n, k), nu2], axis=1)


def lode_params(spec: LodeSpec, n_species: int, periodic: bool) -> LodeParams:
    """The static :class:`jaxlr.LodeParams` of a :class:`LodeSpec`."""
    base = dict(cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                n_species=n_species)
    if not periodic:
        return LodeParams("direct", **base)
    if spec.mesh is None:
        raise ValueError("periodic LODE needs a mesh: call Potential.adapted_to(cells) first.")
    mesh = MeshSpec(tuple(int(k) for k in spec.mesh), int(spec.order))
    return LodeParams("pme", mesh=mesh, n_points=spec.n_points, n_table=spec.n_table, **base)


def plan_lode(spec: LodeSpec, n_species: int, cells, accuracy: float = 1e-4) -> LodeSpec:
    """Fix the PME mesh of ``spec`` for a family of cells (host).

    The mesh (along the cell vectors as given) is the finest that any cell needs for
    ``accuracy``; the k-space tables are sized for the cell whose mesh reaches the
    largest |k|.  Open boundaries (``cells`` all None) return ``spec`` unchanged.
    """
    cells = periodic_cells(cells)
    if cells is None:
        return spec
    kw = dict(cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular, n_species=n_species,
              method="pme")
    shapes = []
    for c in cells:
        p = tune_lode(c, spec.sigma, accuracy=accuracy, order=spec.order, **kw)
        shapes.append(p.mesh.shape if p.mesh.basis == ((1, 0, 0), (0, 1, 0), (0, 0, 1)) else
                      shape_for_spacing(c, mesh_spacing(c, p.mesh)))
    shape = tuple(int(max(s[d] for s in shapes)) for d in range(3))
    best = None
    for c in cells:
        p = tune_lode(c, spec.sigma, mesh=shape, order=spec.order, **kw)
        if best is None or p.n_table > best.n_table or p.n_points > best.n_points:
            best = p
    return dataclasses.replace(spec, mesh=shape, n_points=int(best.n_points), n_table=int(best.n_table))


def multiscale_invariants(s, spec: LodeSpec, n_species: int):
    """(N, D) multi-scale features of one structure: [ν = 1 LODE, ρ ⊗ V] (zero for padding).

    D = S·n + (S·n)²·(L + 1).
    """
    periodic = s.cell is not None
    params = lode_params(spec, n_species, periodic)
    widths = jnp.asarray(gto_widths(spec.cutoff, spec.max_radial), s.positions.dtype)
    v = lode_features(s.positions, s.species, sigma=spec.sigma, widths=widths, params=params, cell=s.cell)
    rho = spherical_expansion_terms(s.positions, s.species, s.neighbors, cell=s.cell, n_species=n_species,
                                    cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                                    sigma=spec.density_sigma, center_atom_weight=1.0)
    n = v.shape[0]
    k = n_species * spec.max_radial
    ms = power_spectrum(rho, v).reshape(n, -1)
    out = jnp.concatenate([v[..., 0].reshape(n, k), ms], axis=1)
    return jnp.where((s.species >= 0)[:, None], out, 0.0)
