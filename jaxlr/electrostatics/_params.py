"""The Coulomb front door: energies, potentials, forces and stress of point or Gaussian charges.

Two layers:

* :func:`coulomb_energy` — the pure, jittable functional core.  Given static choices
  (method, mesh, k-vectors, background) and traced arrays (positions, charges, cell,
  widths σ, smearing s), it returns the total electrostatic energy.  Everything else
  (potentials, forces, stress, hyperparameter gradients, second derivatives) follows by
  ``jax.grad``; :func:`coulomb_terms` packages the usual derivatives.
* :func:`coulomb` — the eager front door: validates inputs, tunes parameters from a
  requested accuracy, builds the neighbour list on the host, and calls the jitted core.

Energy conventions (DESIGN.md): ``E = ½ Σ_i Σ_j' q_i q_j KE K(r_ij)`` over all pairs
(and periodic images) plus, for Gaussian charges, each Gaussian's self-energy
``KE q_i²/(2√π σ_i)``.  Periodic sums are Ewald sums with tin-foil boundary conditions.
A net charge in a periodic cell needs ``background=True`` (uniform neutralising
background, i.e. the k = 0 term omitted).  Potentials are the physical ones,
``φ_i = ∂E/∂q_i`` (so ``E = ½ Σ q_i φ_i`` for point charges) — peers that report
``E = Σ q_i φ_i`` carry a factor ½ in theirs.  Stress is ``(1/V) ∂E/∂ε`` (ASE sign).
"""

from __future__ import annotations
import dataclasses
from ._pme import MeshSpec

__all__ = ['METHODS', 'CoulombParams']


METHODS = ("auto", "direct", "ewald", "pme")


@dataclasses.dataclass(frozen=True)
class CoulombParams:
    """Static choices of a Coulomb evaluation (hashable).

    Attributes:
      method: "direct", "ewald" or "pme".
      smearing: Ewald smearing s in Å (None for direct).
      cutoff: real-space cutoff in Å (None for direct: all pairs).
      mesh: :class:`jaxlr.pme.MeshSpec` for PME, else None.
      k_cutoff: reciprocal cutoff in 1/Å for Ewald, else None.
      background: uniform neutralising background for charged periodic cells.
      estimated_error: predicted relative RMS force error (None when not tuned).
    """

    method: str
    smearing: float | None = None
    cutoff: float | None = None
    mesh: MeshSpec | None = None
    k_cutoff: float | None = None
    background: bool = False
    estimated_error: float | None = None
