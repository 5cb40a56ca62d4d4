"""The one input batch and the one output type shared by every jaxlr model.

A batch holds B padded structures of N atom slots each (a pytree; the leading axis is the
structure).  Host code (:func:`jaxlr.train.data.make_batches`) builds it from a dataset;
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

__all__ = ['ModelOutput']


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ModelOutput:
    """What a model predicts for an :class:`AtomsBatch` (a pytree; None = not predicted).

    Attributes:
      energy: (B,) total energy in eV.
      forces: (B, N, 3) −∂E/∂R in eV/Å (zero on padding atoms).
      stress: (B, 3, 3) (1/V) ∂E/∂ε in eV/Å³ (ASE convention), periodic batches only.
      charges: (B, N) partial charges (e).  dipole: (B, 3) Σ q_i R_i (+ Σ μ_i) in e·Å
        (open boundary; for periodic cells it depends on the unit-cell choice).
      coefficients: (B, N, K) density coefficients (density model).
      atom_energies: (B, N) per-atom short-range energies (eV), when the model has them.
    """

    energy: jax.Array
    forces: jax.Array | None = None
    stress: jax.Array | None = None
    charges: jax.Array | None = None
    dipole: jax.Array | None = None
    coefficients: jax.Array | None = None
    atom_energies: jax.Array | None = None
