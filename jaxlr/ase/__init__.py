"""ASE integration: :class:`Calculator`, jaxlr as an ``ase`` calculator (loaded lazily: ``jaxlr.ase``).

One calculator class, built three ways:

* :meth:`Calculator.coulomb` — fixed point or Gaussian charges (:func:`jaxlr.coulomb`);
* :meth:`Calculator.qeq` — charge equilibration (:func:`jaxlr.qeq`), per-atom arrays or
  per-element dicts of χ, J and σ;
* :meth:`Calculator.from_potential` / :meth:`Calculator.load` — a trained
  :class:`jaxlr.models.Potential` (a checkpoint folder or a run folder of ``jaxlr fit``).

It computes energy, free energy (the same), forces, stress (periodic cells), charges and
dipole in one call and keeps its plan and compiled function while the atoms move (MD,
geometry and cell optimisation).  Units are ASE's: Å, eV, e; stress in eV/Å³ in Voigt
order (xx, yy, zz, yz, xz, xy), (1/V) ∂E/∂ε.  ``atoms.pbc`` all True means a periodic
cell, all False an open boundary; mixed periodicity raises ``ValueError``.

Example:
  >>> from ase import Atoms
  >>> from jaxlr.ase import Calculator
  >>> atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]])
  >>> atoms.calc = Calculator.coulomb({"Na": 1.0, "Cl": -1.0})
  >>> round(float(atoms.get_potential_energy()), 4)          # −KE / 2.5 Å
  -5.7599
"""

from ._calculator import Calculator

__all__ = ["Calculator"]
