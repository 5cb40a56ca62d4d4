"""Per-structure feature sums with the physical hyperparameters traced (jittable).

The closed-form models of :mod:`jaxlr.models` (``hidden=()``) are linear in per-species
sums of atom features, so a data set becomes a design matrix A(h) whose entries are
differentiable functions of the hyperparameters h:

* ``"lode"``: the multi-scale features of Grisafi, Nigam & Ceriotti — ν = 1 LODE (the
  l = 0 projections of the species potentials, σ_L ``lode_sigma``) and the ρ ⊗ V
  invariants (local density of width ``density_sigma`` times the potential);
* ``"local"``: ν = 1 and ν = 2 (SOAP power spectrum) invariants of the local density of
  width ``local_sigma``.

Both use GTO radial functions of widths ``radial_scale × gto_widths(cutoff, max_radial)``
and the shifted-cosine cutoff switch of width ``cutoff_width``.  Cutoffs, basis sizes and
species are static (they fix array shapes and neighbour capacities).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..data._padding import far_padding
from ..features._invariants import power_spectrum
from ..features._lode import LodeParams, lode_features
from ..features._radial import gto_widths
from ..features._spherical import spherical_expansion_terms

__all__ = ["FEATURE_KINDS", "FeatureSpec", "structure_features"]

#: feature families of :func:`structure_features`
FEATURE_KINDS = ("lode", "local")
#: structures evaluated together (vmapped) inside the loop over a batch
MAP_CHUNK = 8


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Static choices of the features (hashable).

    Attributes:
      kind: "lode" (ν = 1 LODE ⊕ ρ ⊗ V) or "local" (ν = 1 ⊕ ν = 2 local invariants).
      cutoff: projection / neighbour radius r_c (Å).  max_radial, max_angular: basis sizes.
      n_species: number of species channels.
    """

    kind: str
    cutoff: float
    max_radial: int
    max_angular: int
    n_species: int

    @property
    def n_features(self) -> int:
        """Features per atom D."""
        k = self.n_species * self.max_radial
        if self.kind == "lode":
            return k + k * k * (self.max_angular + 1)
        return k + k * (k + 1) // 2 * (self.max_angular + 1)


def _atom_features(positions, species, neighbors, atom_mask, hyper, spec: FeatureSpec):
    dtype = positions.dtype
    widths = jnp.asarray(hyper["radial_scale"], dtype) * jnp.asarray(gto_widths(spec.cutoff, spec.max_radial), dtype)
    common = dict(n_species=spec.n_species, cutoff=spec.cutoff, max_radial=spec.max_radial,
                  max_angular=spec.max_angular, widths=widths, cutoff_width=hyper["cutoff_width"])
    k = spec.n_species * spec.max_radial
    n = positions.shape[0]
    if spec.kind == "lode":
        params = LodeParams("direct", cutoff=spec.cutoff, max_radial=spec.max_radial, max_angular=spec.max_angular,
                            n_species=spec.n_species)
        v = lode_features(positions, species, sigma=hyper["lode_sigma"], widths=widths, params=params)
        rho = spherical_expansion_terms(positions, species, neighbors, sigma=hyper["density_sigma"],
                                        center_atom_weight=1.0, **common)
        out = jnp.concatenate([v[..., 0].reshape(n, k), power_spectrum(rho, v).reshape(n, -1)], axis=1)
    else:
        c = spherical_expansion_terms(positions, species, neighbors, sigma=hyper["local_sigma"],
                                      center_atom_weight=0.0, **common)
        p = power_spectrum(c).reshape(n, k, k, spec.max_angular + 1)
        iu = np.triu_indices(k)
        out = jnp.concatenate([c[..., 0].reshape(n, k), p[:, iu[0], iu[1], :].reshape(n, -1)], axis=1)
    return jnp.where(atom_mask[:, None], out, 0.0)


def structure_features(batch, hyper, spec: FeatureSpec):
    """(B, S·D) per-structure, per-species sums of atom features of a padded open-boundary batch.

    Args:
      batch: :class:`jaxlr.data.AtomsBatch` (open boundary; neighbour lists with cutoff
        ≥ ``spec.cutoff``), padding atoms with species −1.
      hyper: mapping with traced scalars ``radial_scale``, ``cutoff_width`` and
        ``lode_sigma``, ``density_sigma`` (kind "lode") or ``local_sigma`` (kind "local"),
        all in Å except the dimensionless ``radial_scale``.
      spec: :class:`FeatureSpec` (static).

    Returns:
      (B, n_species · D) array: for each species channel the sum of its atoms' features.

    Example:
      >>> import numpy as np, jax.numpy as jnp
      >>> from jaxlr.data import pad_batch
      >>> b = pad_batch([dict(positions=np.array([[0.0, 0, 0], [0.0, 0, 1.1]]), charges=np.zeros(2))],
      ...               cutoff=3.0)
      >>> spec = FeatureSpec("lode", cutoff=3.0, max_radial=2, max_angular=0, n_species=1)
      >>> h = dict(radial_scale=1.0, cutoff_width=0.5, lode_sigma=1.0, density_sigma=0.5)
      >>> structure_features(b, h, spec).shape
      (1, 6)
    """
    if batch.cell is not None:
        raise ValueError("structure_features is for open-boundary structures (batch.cell must be None).")
    # a few structures at a time (vmapped in chunks of MAP_CHUNK), rematerialised in the
    # backward pass: reverse mode through the open-boundary LODE quadrature would otherwise
    # keep every structure's pair tables alive (46 GB for the 390 bundled dimers and monomers)
    @jax.checkpoint
    def one(args):
        r, z, nb, m = args
        return _atom_features(far_padding(r, m), z, nb, m, hyper, spec)

    feats = jax.lax.map(one, (batch.positions, batch.species, batch.neighbors, batch.atom_mask),
                        batch_size=min(MAP_CHUNK, batch.positions.shape[0]))                  # (B, N, D)
    onehot = (batch.species[..., None] == jnp.arange(spec.n_species)).astype(feats.dtype)  # (B, N, S)
    sums = jnp.einsum("bns,bnd->bsd", onehot, feats)
    return sums.reshape(sums.shape[0], -1)
