"""Static choices of a Coulomb evaluation (:class:`CoulombParams`), shared by the tuner and the front doors.
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
      mesh: :class:`jaxlr.MeshSpec` for PME, else None.
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
