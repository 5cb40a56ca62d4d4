"""The one input batch and the one output type shared by every jaxlr model.

A batch holds B padded structures of N atom slots each (a pytree; the leading axis is the
structure).  Host code (:func:`jaxlr.data.make_batches`) builds it from a dataset;
models read it inside ``jit`` and ``vmap`` over the leading axis.

Padding conventions (every model obeys them; tests check them):

- padding atoms have ``species = -1``, ``atom_mask = False``, ``fragments = -1``, position
  0; they appear in no neighbour list, get zero charge, zero energy and zero force;
- padding structures (to fill the last batch) have ``structure_mask = False`` and all their
  atoms masked; their outputs are finite and ignored by losses and metrics.
"""

from __future__ import annotations

import dataclasses

import jax

from ..system._neighbors import Neighbors

__all__ = ['TARGETS', 'AtomsBatch', 'Targets']


#: the names of trainable targets, in a fixed order
TARGETS = ("energy", "forces", "stress", "charges", "dipole", "coefficients")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AtomsBatch:
    """Padded structures: the input of every model (a pytree, leading axis B).

    Attributes:
      positions: (B, N, 3) Å.
      species: (B, N) int32 channel of each atom in the model's species list (sorted
        atomic numbers), −1 for padding atoms.
      atom_mask: (B, N) bool, False for padding atoms.
      structure_mask: (B,) bool, False for padding structures.
      total_charge: (B,) total charge of each structure (e).
      fragments: (B, N) int32 fragment label in [0, F) (e.g. molecule index), −1 for
        padding atoms; all 0 when a structure has no fragments.
      fragment_charges: (B, F) total charge of each fragment (e); fragment 0 carries
        ``total_charge`` when a structure has no fragments, the others 0 (empty fragments
        are allowed).
      neighbors: :class:`jaxlr.Neighbors` stacked to (B, N, M): full lists with the model's
        neighbour cutoff (host-built), periodic shifts when ``cell`` is given.
      cell: (B, 3, 3) Å, rows are lattice vectors, or None (open boundary for all).
      field: (B, 3) uniform external electric field (V/Å), or None (no field).
      charges: (B, N) fixed charges (e) for the functional layer (:func:`pad_batch`), or
        None (models predict their own).
      sigma: (B, N) Gaussian charge widths (Å; 1 on padding atoms), or None.

    ``neighbors`` may be None for batches built without a cutoff (:func:`pad_batch`).
    """

    positions: jax.Array
    species: jax.Array
    atom_mask: jax.Array
    structure_mask: jax.Array
    total_charge: jax.Array
    fragments: jax.Array
    fragment_charges: jax.Array
    neighbors: Neighbors | None
    cell: jax.Array | None = None
    field: jax.Array | None = None
    charges: jax.Array | None = None
    sigma: jax.Array | None = None

    @property
    def n_structures(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Targets:
    """Reference values aligned with an :class:`AtomsBatch` (a pytree; None = not present).

    Attributes:
      energy: (B,) eV.  forces: (B, N, 3) eV/Å.  stress: (B, 3, 3) eV/Å³ (ASE sign).
      charges: (B, N) e.  dipole: (B, 3) e·Å.  coefficients: (B, N, K) density
      coefficients in the model's Gaussian basis.  Padding entries are 0.
      coefficient_widths: (B, N, n_s + n_p) widths (Å) of the basis the reference
        coefficients are expanded in (s shells, then p shells; from each structure's
        ``info["basis_widths"]``), or None.  With them, and the model's own widths, the
        coefficient loss is the Coulomb metric of the density error (:mod:`jaxlr.train`).
    """

    energy: jax.Array | None = None
    forces: jax.Array | None = None
    stress: jax.Array | None = None
    charges: jax.Array | None = None
    dipole: jax.Array | None = None
    coefficients: jax.Array | None = None
    coefficient_widths: jax.Array | None = None
