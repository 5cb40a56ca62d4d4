"""``jaxlr.ase.Calculator``: jaxlr electrostatics, charge equilibration and trained models as an ASE calculator.

See :class:`Calculator`.  The engines that do the work (and keep plans and compiled
functions between calls) live in :mod:`jaxlr.ase._engines` and :mod:`jaxlr.ase._model`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator as AseCalculator
from ase.calculators.calculator import all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from ._engines import CoulombEngine, QeqEngine, check_structure

__all__ = ["Calculator"]


def structure_arrays(atoms):
    """(positions (N, 3) Å, atomic numbers (N,), cell (3, 3) Å or None) of an ``ase.Atoms`` (copies).

    ``atoms.pbc`` all True gives the cell (rows are lattice vectors), all False an open
    boundary (any cell is ignored).

    Raises:
      ValueError: mixed periodicity, NaN/inf positions, a degenerate periodic cell.

    Example:
      >>> from ase import Atoms
      >>> R, Z, cell = structure_arrays(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]))
      >>> Z.tolist(), cell is None
      ([1, 1], True)
    """
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any() and not pbc.all():
        raise ValueError(f"atoms.pbc = {pbc.tolist()}: jaxlr handles a fully periodic cell (pbc all True) or an "
                         "open boundary (pbc all False), not slabs or wires; set atoms.pbc = True with a 3D "
                         "cell, or atoms.pbc = False.")
    positions = np.array(atoms.positions, dtype=np.float64)
    cell = np.array(atoms.cell.array, dtype=np.float64) if pbc.all() else None
    check_structure(positions, cell)
    return positions, np.array(atoms.numbers, dtype=np.int64), cell


class Calculator(AseCalculator):
    """An ASE calculator for jaxlr: fixed charges, charge equilibration or a trained model.

    Build it with one of the constructors — :meth:`coulomb`, :meth:`qeq`,
    :meth:`from_potential` or :meth:`load` — and attach it (``atoms.calc = calc``).  One
    call computes every property at once:

    - ``energy`` and ``free_energy`` (the same; eV);
    - ``forces`` (N, 3) eV/Å, −∂E/∂R (Qeq: −dE*/dR at the equilibrated charges);
    - ``stress`` (6,) eV/Å³ in Voigt order (xx, yy, zz, yz, xz, xy), ASE's sign
      convention σ = (1/V) ∂E/∂ε (positive under tension, negative when the cell wants
      to shrink) — periodic cells only (open boundaries raise ASE's
      ``PropertyNotImplementedError``);
    - ``charges`` (N,) e: the fixed, equilibrated or predicted charges (models without
      charges, "local" and "lode", do not provide them);
    - ``dipole`` (3,) e·Å: Σ_i q_i R_i at the positions as given, plus the atomic dipoles
      of density models.  In a periodic cell it depends on the unit-cell choice (which
      image of each atom is used); it is well defined for an open boundary and a
      neutral system.

    ``atoms.pbc`` all True makes the system periodic with ``atoms.cell`` (rows are the
    lattice vectors), all False an open boundary; mixed periodicity raises ``ValueError``.
    The calculator reads the Atoms (ASE keeps a copy in ``calc.atoms``) and never changes them.

    A moving system keeps its compiled function: the calculator carries a
    :class:`jaxlr.tuning.CoulombPlan` (moved with ``plan.update``; re-planned when the
    update says so) or, for models, the adapted potential and the neighbour capacity.
    ``calc.n_plans`` counts how often these static choices were made (each may compile
    once), ``calc.n_calls`` the evaluations, ``calc.plan`` is the current plan (or adapted
    potential).

    Attributes:
      engine: the object doing the work (kept between calls).

    Example:
      >>> import numpy as np
      >>> from ase import Atoms
      >>> from jaxlr.ase import Calculator
      >>> atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]])
      >>> atoms.calc = Calculator.coulomb([1.0, -1.0])
      >>> f = atoms.get_forces()
      >>> round(float(f[0, 0]), 4), atoms.get_dipole_moment().round(6).tolist()   # KE / 2.5², −2.5 e·Å
      (2.3039, [-2.5, 0.0, 0.0])
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "charges", "dipole"]
    name = "jaxlr"

    def __init__(self, engine, **kwargs):
        """Wrap an engine (use the constructors :meth:`coulomb`, :meth:`qeq`, :meth:`from_potential`, :meth:`load`).

        Args:
          engine: a jaxlr engine (callable ``(positions, numbers, cell) → dict``).
          **kwargs: passed to ``ase.calculators.calculator.Calculator`` (``label``,
            ``directory``, ``atoms``).

        Example:
          >>> from jaxlr.ase._engines import CoulombEngine
          >>> Calculator(CoulombEngine([1.0, -1.0], None, 1e-6, "auto", False)).n_calls
          0
        """
        if not callable(engine):
            raise ValueError("Calculator(engine) needs a jaxlr engine; build calculators with Calculator.coulomb, "
                             "Calculator.qeq, Calculator.from_potential or Calculator.load.")
        self.engine = engine
        super().__init__(**kwargs)

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def coulomb(cls, charges, sigma=None, accuracy: float = 1e-6, method: str = "auto", *,
                background: bool = False, **kwargs) -> "Calculator":
        """Fixed point or Gaussian charges: the Coulomb energy of :func:`jaxlr.coulomb`.

        Args:
          charges: (N,) charges in e, in the Atoms' order, or a dict by element
            (``{"Na": 1.0, "Cl": -1.0}``; symbols or atomic numbers as keys).
          sigma: Gaussian widths σ > 0 in Å (ρ ∝ exp(−r²/2σ²); the energy includes the
            self-energy KE q²/(2√π σ)) per atom, per element (dict) or one number; None
            for point charges.
          accuracy: target relative RMS force error of the periodic sum, in (0, 1).
          method: "auto", "ewald" or "pme" for periodic cells ("direct" or "auto" for an
            open boundary, which always uses the direct sum).
          background: allow a net charge in a periodic cell (uniform neutralising
            background); otherwise a charged cell raises ``ValueError``.
          **kwargs: passed to the ASE calculator (``label``, ``directory``).

        Returns:
          a :class:`Calculator`.

        Raises:
          ValueError: NaN/inf or non-positive widths, an unknown method or accuracy
            (now); charges or widths that do not fit the Atoms (at the calculation).

        Example:
          >>> import numpy as np
          >>> from ase import Atoms
          >>> from jaxlr.ase import Calculator
          >>> a = 5.64
          >>> frac = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
          ...                  [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
          >>> atoms = Atoms("Na4Cl4", scaled_positions=frac, cell=np.eye(3) * a, pbc=True)
          >>> atoms.calc = Calculator.coulomb({"Na": 1.0, "Cl": -1.0}, accuracy=1e-8)
          >>> round(-float(atoms.get_potential_energy()) / 4 / 14.399645 * a / 2, 5)   # Madelung
          1.74756
        """
        return cls(CoulombEngine(charges, sigma, accuracy, method, background), **kwargs)

    @classmethod
    def qeq(cls, electronegativity, hardness, sigma, accuracy: float = 1e-6, solver: str = "auto",
            total_charge: float = 0.0, *, method: str = "auto", **kwargs) -> "Calculator":
        """Charge equilibration (:func:`jaxlr.qeq`): Gaussian charges minimising Σ χq + ½ Σ J q² + E_coul.

        The charges are solved at every call under Σ q = ``total_charge``, warm-started
        from the previous call's charges (PCG).

        Args:
          electronegativity: χ in V (eV/e), per atom, a dict by element or one number.
          hardness: J ≥ 0 in V/e, per atom, a dict by element or one number.
          sigma: Gaussian widths σ > 0 in Å, per atom, a dict by element or one number.
          accuracy: relative RMS force error of the electrostatics in (0, 1); also the
            PCG tolerance.
          solver: "auto" (dense up to a few thousand atoms, else PCG), "dense" or "pcg".
          total_charge: Σ q in e.  A charged periodic cell gets a uniform neutralising
            background.
          method: the electrostatics of periodic cells, "auto", "ewald" or "pme".
          **kwargs: passed to the ASE calculator.

        Returns:
          a :class:`Calculator`; ``charges`` are the equilibrated charges and ``energy``
          the equilibrated E* (eV).

        Raises:
          ValueError: NaN/inf, J < 0, σ ≤ 0, unknown symbols, solver or method (now);
            elements missing from a dict or arrays of the wrong length (at the calculation).

        Example:
          >>> from ase import Atoms
          >>> from jaxlr.ase import Calculator
          >>> atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
          >>> atoms.calc = Calculator.qeq({"O": 8.5, "H": 4.5}, {"O": 12.0, "H": 14.0}, {"O": 0.7, "H": 0.5})
          >>> q = atoms.get_charges()
          >>> bool(abs(q.sum()) < 1e-6), bool(q[0] < 0)
          (True, True)
        """
        return cls(QeqEngine(electronegativity, hardness, sigma, accuracy, solver, method, total_charge), **kwargs)

    @classmethod
    def from_potential(cls, potential, variables, *, total_charge: float = 0.0, lode_accuracy: float = 1e-4,
                       **kwargs) -> "Calculator":
        """A trained :class:`jaxlr.models.Potential` with its variables.

        Energy, forces and stress are the model's (``potential.apply`` on a
        one-structure batch: forces −∂E/∂R, stress (1/V) ∂E/∂ε); charge models also
        give charges and the dipole.  Periodic meshes (LODE, Coulomb) are planned for the
        Atoms' cell scaled by ±6 % (``potential.adapted_to``) and kept while the cell's
        strain relative to it stays within 2 % (re-planned beyond: cell optimisation,
        NPT), so the energy is one smooth function of positions and cell in between.

        Args:
          potential: a :class:`jaxlr.models.Potential` (``build_potential``, training,
            ``jaxlr.train.load``).
          variables: its ``{"params": ..., "stats": ...}``.
          total_charge: the structure's total charge in e (charge models: one fragment).
          lode_accuracy: relative accuracy of periodic LODE features.
          **kwargs: passed to the ASE calculator.

        Returns:
          a :class:`Calculator`.

        Raises:
          ValueError: not a Potential, variables without params/stats (now); elements the
            model does not know (at the calculation).

        Example:
          >>> import jax, numpy as np
          >>> from ase import Atoms
          >>> from jaxlr.ase import Calculator
          >>> from jaxlr.models import build_potential
          >>> from jaxlr.testing import toy_batch
          >>> pot = build_potential("local", species=(1, 8), hidden=(),
          ...                       local=dict(cutoff=3.0, max_radial=2, max_angular=1))
          >>> variables = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
          >>> atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
          >>> atoms.calc = Calculator.from_potential(pot, variables)
          >>> atoms.get_forces().shape
          (3, 3)
        """
        from ._model import ModelEngine

        return cls(ModelEngine(potential, variables, total_charge, lode_accuracy), **kwargs)

    @classmethod
    def load(cls, run_dir, *, total_charge: float = 0.0, lode_accuracy: float = 1e-4, **kwargs) -> "Calculator":
        """A trained model from a checkpoint (:func:`jaxlr.train.load`).

        Args:
          run_dir: a checkpoint folder (``config.json`` + ``variables.msgpack``) or the run
            folder of ``jaxlr fit`` / :func:`jaxlr.train.fit` (its ``checkpoint/`` is read).
          total_charge, lode_accuracy: as :meth:`from_potential`.
          kwargs: further keywords of :meth:`from_potential`.

        Returns:
          a :class:`Calculator`.

        Raises:
          ValueError: not a checkpoint or run folder; float64 variables with x64 off.

        Example:
          >>> import tempfile, jax
          >>> from jaxlr.ase import Calculator
          >>> from jaxlr.models import build_potential
          >>> from jaxlr.testing import toy_batch
          >>> from jaxlr.train import save
          >>> pot = build_potential("local", species=(1,), hidden=(),
          ...                       local=dict(cutoff=3.0, max_radial=2, max_angular=1))
          >>> variables = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
          >>> folder = tempfile.mkdtemp()
          >>> _ = save(folder + "/checkpoint", pot, variables)
          >>> Calculator.load(folder).engine.potential.species
          (1,)
        """
        from ..train import load

        path = Path(run_dir)
        if (path / "checkpoint").is_dir() and not (path / "config.json").is_file():
            path = path / "checkpoint"
        potential, variables = load(path)
        return cls.from_potential(potential, variables, total_charge=total_charge, lode_accuracy=lode_accuracy,
                                  **kwargs)

    # ---- state --------------------------------------------------------------------------
    @property
    def plan(self):
        """The current :class:`jaxlr.tuning.CoulombPlan` (models: the adapted Potential), or None."""
        return self.engine.plan

    @property
    def n_plans(self) -> int:
        """How often static choices (plan, neighbour capacity, adapted meshes) were made; each may compile once."""
        return self.engine.n_plans

    @property
    def n_calls(self) -> int:
        """Number of evaluations so far."""
        return self.engine.n_calls

    # ---- ASE protocol -------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Compute every property for ``atoms`` into ``self.results`` (ASE's calculator protocol).

        Args:
          atoms: the ``ase.Atoms`` (default: the last ones).  properties,
            system_changes: ASE's; every property is computed whatever is asked.

        Raises:
          ValueError: mixed periodicity, NaN positions, a degenerate cell, charges or
            parameters that do not fit the Atoms, elements unknown to a model.

        Example:
          >>> from ase import Atoms
          >>> calc = Calculator.coulomb([1.0, -1.0])
          >>> calc.calculate(Atoms("NaCl", positions=[[0, 0, 0], [2.0, 0, 0]]))
          >>> sorted(calc.results)
          ['charges', 'dipole', 'energy', 'forces', 'free_energy']
        """
        super().calculate(atoms, properties, system_changes)
        positions, numbers, cell = structure_arrays(self.atoms)
        out = self.engine(positions, numbers, cell)
        results = {"energy": out["energy"], "free_energy": out["energy"], "forces": out["forces"]}
        if out.get("stress") is not None:
            results["stress"] = full_3x3_to_voigt_6_stress(out["stress"])
        if out.get("charges") is not None:
            results["charges"] = out["charges"]
            results["dipole"] = out["dipole"]
        self.results = results
