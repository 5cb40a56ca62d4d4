"""The one output type of every jaxlr model (:class:`ModelOutput`).
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
      basis_widths: (B, N, n_s + n_p) widths (Å) of each atom's s then p functions, the
        basis of ``coefficients`` (density model).
      atom_energies: (B, N) per-atom short-range energies (eV), when the model has them.
    """

    energy: jax.Array
    forces: jax.Array | None = None
    stress: jax.Array | None = None
    charges: jax.Array | None = None
    dipole: jax.Array | None = None
    coefficients: jax.Array | None = None
    atom_energies: jax.Array | None = None
    basis_widths: jax.Array | None = None
