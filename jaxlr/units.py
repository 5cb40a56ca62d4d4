"""Physical units and constants used throughout jaxlr.

jaxlr works in Å, eV and the elementary charge e. The Coulomb constant is
``KE = e² / (4π ε₀) = 14.399645351950548 eV·Å/e²`` (one Hartree·Bohr, to full
precision: ASE's ``units.Hartree * units.Bohr``; the truncated 14.399645 is off by 2.4e-8), so an energy is
``KE · q_i q_j / r`` for two point charges; potentials are in V (= eV/e), fields
in V/Å, forces in eV/Å and stress in eV/Å³.
"""

from __future__ import annotations

#: Coulomb constant e²/(4πε₀) in eV·Å/e² (Hartree × Bohr).
KE: float = 14.399645351950548

__all__ = ["KE"]
