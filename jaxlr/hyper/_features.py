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
(``radial_scale`` a scalar, or a (max_radial,) array that sets each function's width) and
the shifted-cosine cutoff switch of width ``cutoff_width``.  Cutoffs, basis sizes and
species are static (they fix array shapes and neighbour capacities).

Two evaluations of the same numbers:

* :func:`structure_features` on a padded batch (B structures × N atoms): every structure
  computes all N² LODE pair functions, padding included;
* :func:`flat_features` on :class:`FlatStructures` (:func:`flatten_structures`, host):
  the data set as one list of real atoms and one list of the ordered pairs (i ≠ j) of
  each structure, so only real pairs are evaluated (74 360 pairs instead of 451 584 for
  the bundled dimers and monomers), in fixed-size chunks under one ``lax.map`` (one copy
  of the pair code in the compiled program, whatever the number of structures), with
  ``jax.checkpoint`` per chunk so that the reverse pass keeps one chunk's quadrature
  tables at a time.  :class:`jaxlr.hyper.RidgeData` uses this one.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..data._padding import far_padding
from ..features._harmonics import real_spherical_harmonics
from ..features._invariants import power_spectrum
from ..features._lode import LodeParams, lode_features
from ..features._lode_direct import pair_radial_functions
from ..features._lode_kspace import radial_evaluator, self_projection
from ..features._lode_ksum import l_of_lm
from ..features._radial import gto_widths
from ..features._spherical import spherical_expansion_terms
from ..system._neighbors import Neighbors, neighbor_list

__all__ = ["FEATURE_KINDS", "FeatureSpec", "FlatStructures", "flat_features", "flatten_structures",
           "structure_features"]

#: feature families of :func:`structure_features`
FEATURE_KINDS = ("lode", "local")
#: structures evaluated together (vmapped) inside the loop over a batch
MAP_CHUNK = 8
#: LODE pairs evaluated together in :func:`flat_features`: a chunk's erfc quadrature table
#: is PAIR_CHUNK × 2048 values (4 MB in float64 at 256).  Value and gradient of the dimer
#: features on the loaded 2-core VM: 8–16 s at 256, 21 s at 1024, 25 s at 4096.
PAIR_CHUNK = 256


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
      hyper: mapping with traced scalars ``radial_scale`` (or a (max_radial,) array, one
        factor per radial function), ``cutoff_width`` and ``lode_sigma``, ``density_sigma``
        (kind "lode") or ``local_sigma`` (kind "local"), all in Å except the dimensionless
        ``radial_scale``.
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlatStructures:
    """M open-boundary structures as one list of A atoms and their pairs (a pytree; :func:`flatten_structures`).

    Attributes:
      positions: (A, 3) Å, the atoms of structure 0, then of structure 1, …
      species: (A,) int32 species channel of each atom.
      structure: (A,) int32 index of each atom's structure.
      slot: (A,) int32 index of each atom inside its structure (0 … n_m − 1).
      neighbors: :class:`jaxlr.Neighbors` (A, capacity) of the local features, flat atom
        indices, pairs inside one structure within the cutoff only.
      pairs: (n_chunks, chunk, 2) int32 flat atom indices (i, j) of every ordered pair
        i ≠ j of one structure, in chunks, the last padded with (0, 0).
      pair_mask: (n_chunks, chunk) bool, False for the padding pairs.
      n_structures: M (static).  max_atoms: the largest n_m (static).
    """

    positions: jax.Array
    species: jax.Array
    structure: jax.Array
    slot: jax.Array
    neighbors: Neighbors
    pairs: jax.Array
    pair_mask: jax.Array
    n_structures: int = dataclasses.field(metadata=dict(static=True))
    max_atoms: int = dataclasses.field(metadata=dict(static=True))


def flatten_structures(structures, species, *, cutoff: float, dtype=None, chunk: int = PAIR_CHUNK) -> FlatStructures:
    """Flatten open-boundary structures for :func:`flat_features` (host, numpy).

    Args:
      structures: sequence of :class:`jaxlr.data.Structure` (open boundary).
      species: atomic numbers of the channels; every atom's number must be among them.
      cutoff: neighbour radius of the local features (Å).
      dtype: float dtype of the positions (default: JAX's default float).
      chunk: pairs per chunk (the pair list is padded to a multiple of it).

    Returns:
      :class:`FlatStructures`.

    Raises:
      ValueError: a periodic structure, an atom whose species is not a channel, no
        structures, a non-positive chunk.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Structure
      >>> s = Structure(positions=np.array([[0.0, 0, 0], [0, 0, 1.0]]), numbers=[1, 8])
      >>> f = flatten_structures([s, s], (1, 8), cutoff=3.0, chunk=4)
      >>> f.positions.shape, f.pairs.shape, int(f.pair_mask.sum())
      ((4, 3), (1, 4, 2), 4)
    """
    structures = list(structures)
    if not structures:
        raise ValueError("flatten_structures needs at least one structure.")
    if isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}.")
    if any(s.periodic for s in structures):
        raise ValueError("flatten_structures is for open-boundary structures (LODE 'direct').")
    channel = {int(z): k for k, z in enumerate(species)}
    pos, spc, owner, slot, pairs, nb_idx, nb_mask = [], [], [], [], [], [], []
    offset = 0
    for m, s in enumerate(structures):
        numbers = [int(z) for z in s.numbers]
        if any(z not in channel for z in numbers):
            raise ValueError(f"structure {m} has atomic numbers {sorted(set(numbers) - set(channel))} that are not "
                             f"among the species channels {tuple(species)}.")
        r = np.asarray(s.positions, np.float64)
        n = r.shape[0]
        pos.append(r)
        spc.append([channel[z] for z in numbers])
        owner.append(np.full(n, m))
        slot.append(np.arange(n))
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        pairs.append(np.stack([i, j], axis=1) + offset)
        nl = neighbor_list(r, float(cutoff))
        nb_idx.append(np.asarray(nl.idx) + offset)
        nb_mask.append(np.asarray(nl.mask))
        offset += n
    capacity = max(1, max(a.shape[1] for a in nb_idx))
    own = np.arange(offset)[:, None]
    idx = np.concatenate([np.pad(a, ((0, 0), (0, capacity - a.shape[1]))) for a in nb_idx])
    mask = np.concatenate([np.pad(a, ((0, 0), (0, capacity - a.shape[1]))) for a in nb_mask])
    idx = np.where(mask, idx, own)                          # padded slots point at the atom itself
    pairs = np.concatenate(pairs)
    n_chunks = max(1, -(-pairs.shape[0] // int(chunk)))
    pair_mask = np.arange(n_chunks * int(chunk)) < pairs.shape[0]
    pairs = np.concatenate([pairs, np.zeros((n_chunks * int(chunk) - pairs.shape[0], 2), int)])
    dt = jnp.result_type(float) if dtype is None else dtype
    return FlatStructures(positions=jnp.asarray(np.concatenate(pos), dt), species=jnp.asarray(np.concatenate(spc), jnp.int32),
                          structure=jnp.asarray(np.concatenate(owner), jnp.int32),
                          slot=jnp.asarray(np.concatenate(slot), jnp.int32),
                          neighbors=Neighbors(idx=jnp.asarray(idx, jnp.int32), mask=jnp.asarray(mask, bool)),
                          pairs=jnp.asarray(pairs.reshape(n_chunks, int(chunk), 2), jnp.int32),
                          pair_mask=jnp.asarray(pair_mask.reshape(n_chunks, int(chunk))),
                          n_structures=len(structures), max_atoms=max(len(p) for p in pos))


def _pair_lode(positions, flat: FlatStructures, sigma, widths, spec: FeatureSpec):
    """(A, S, n_max, (L+1)²) open-boundary LODE ⟨a n l m|V_i⟩ of the flat atoms, real pairs only.

    The same sum as :func:`jaxlr.features.lode_features` (method "direct", own Gaussian
    included): Σ_{j≠i, j∈a} Φ_nl(r_ij) Y_lm(r̂_ij) plus the own-Gaussian projection on l = 0.
    """
    dtype = positions.dtype
    L = spec.max_angular
    lidx = l_of_lm(L)
    n_atoms = positions.shape[0]
    sigma = jnp.asarray(sigma, dtype)
    radial = radial_evaluator(widths, spec.cutoff)
    phi0 = jnp.zeros((spec.max_radial, L + 1), dtype).at[:, 0].set(
        self_projection(sigma, widths, cutoff=spec.cutoff) * np.sqrt(4.0 * np.pi))
    stand_in = jnp.asarray([0.0, 0.0, 1.0], dtype)
    own = phi0[:, lidx] * real_spherical_harmonics(stand_in, L)                 # (n, LM)

    # rematerialised in the backward pass: one chunk's quadrature tables alive at a time
    @jax.checkpoint
    def chunk(args):
        ij, use = args
        rij = jnp.where(use[:, None], positions[ij[:, 1]] - positions[ij[:, 0]], stand_in)
        d2 = jnp.sum(rij * rij, axis=-1)
        apart = d2 > 0
        d = jnp.sqrt(jnp.where(apart, d2, 1.0))
        phi = pair_radial_functions(d, sigma, widths, cutoff=spec.cutoff, max_angular=L, radial=radial)
        phi = jnp.where(apart[:, None, None], phi, phi0)                        # coincident: own-Gaussian limit
        y = real_spherical_harmonics(rij, L)                                     # (C, LM)
        return jnp.where(use[:, None, None], phi[..., lidx] * y[:, None, :], 0.0)  # (C, n, LM)

    contrib = jax.lax.map(chunk, (flat.pairs, flat.pair_mask))                  # (n_chunks, C, n, LM)
    contrib = contrib.reshape((-1,) + contrib.shape[2:])
    pairs = flat.pairs.reshape(-1, 2)
    target = pairs[:, 0] * spec.n_species + flat.species[pairs[:, 1]]
    v = jnp.zeros((n_atoms * spec.n_species,) + contrib.shape[1:], dtype).at[target].add(contrib)
    v = v.reshape(n_atoms, spec.n_species, spec.max_radial, (L + 1) ** 2)
    onehot = (flat.species[:, None] == jnp.arange(spec.n_species)).astype(dtype)
    return v + onehot[:, :, None, None] * own


def _flat_atom_features(positions, flat: FlatStructures, hyper, spec: FeatureSpec):
    dtype = positions.dtype
    widths = jnp.asarray(hyper["radial_scale"], dtype) * jnp.asarray(gto_widths(spec.cutoff, spec.max_radial), dtype)
    common = dict(n_species=spec.n_species, cutoff=spec.cutoff, max_radial=spec.max_radial,
                  max_angular=spec.max_angular, widths=widths, cutoff_width=hyper["cutoff_width"])
    n, k = positions.shape[0], spec.n_species * spec.max_radial
    if spec.kind == "lode":
        v = _pair_lode(positions, flat, hyper["lode_sigma"], widths, spec)
        rho = spherical_expansion_terms(positions, flat.species, flat.neighbors, sigma=hyper["density_sigma"],
                                        center_atom_weight=1.0, **common)
        return jnp.concatenate([v[..., 0].reshape(n, k), power_spectrum(rho, v).reshape(n, -1)], axis=1)
    c = spherical_expansion_terms(positions, flat.species, flat.neighbors, sigma=hyper["local_sigma"],
                                  center_atom_weight=0.0, **common)
    p = power_spectrum(c).reshape(n, k, k, spec.max_angular + 1)
    iu = np.triu_indices(k)
    return jnp.concatenate([c[..., 0].reshape(n, k), p[:, iu[0], iu[1], :].reshape(n, -1)], axis=1)


def flat_features(flat: FlatStructures, hyper, spec: FeatureSpec, positions=None):
    """(M, S·D) per-structure, per-species sums of atom features — :func:`structure_features` of flat data.

    Args:
      flat: :class:`FlatStructures` (:func:`flatten_structures`; its neighbour cutoff ≥
        ``spec.cutoff``).
      hyper: as :func:`structure_features` (traced scalars).
      spec: :class:`FeatureSpec` (static).
      positions: optional (A, 3) positions replacing ``flat.positions`` (to differentiate
        with respect to them, e.g. for force rows).

    Returns:
      (M, n_species · D) array, structure m in row m (the order given to
      :func:`flatten_structures`); the same numbers as :func:`structure_features` up to
      rounding.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Structure
      >>> s = Structure(positions=np.array([[0.0, 0, 0], [0.0, 0, 1.1]]), numbers=[1, 1])
      >>> spec = FeatureSpec("lode", cutoff=3.0, max_radial=2, max_angular=0, n_species=1)
      >>> h = dict(radial_scale=1.0, cutoff_width=0.5, lode_sigma=1.0, density_sigma=0.5)
      >>> flat_features(flatten_structures([s], (1,), cutoff=3.0, chunk=8), h, spec).shape
      (1, 6)
    """
    positions = flat.positions if positions is None else positions
    feats = _flat_atom_features(positions, flat, hyper, spec)                         # (A, D)
    onehot = (flat.species[:, None] == jnp.arange(spec.n_species)).astype(feats.dtype)   # (A, S)
    sums = jax.ops.segment_sum(onehot[:, :, None] * feats[:, None, :], flat.structure,
                               num_segments=flat.n_structures)
    return sums.reshape(flat.n_structures, -1)
