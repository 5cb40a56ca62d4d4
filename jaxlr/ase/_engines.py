"""The physics engines behind :class:`jaxlr.ase.Calculator`: fixed charges and charge equilibration.

An engine maps one structure (positions, atomic numbers, cell or None; numpy, Å) to a dict
of numpy results (``energy`` eV, ``forces`` eV/Å, ``stress`` (3, 3) eV/Å³ or None,
``charges`` e, ``dipole`` e·Å) and keeps, between calls, what a moving system reuses: the
:class:`jaxlr.tuning.CoulombPlan` (moved with ``plan.update``, re-planned when it says
so) and, for Qeq, the previous charges as the solver's warm start.  The front doors
compile one function per plan, so the engines count the plans they made (``n_plans``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from ase.data import atomic_numbers, chemical_symbols

from .._api import coulomb, qeq
from ..tuning import plan_coulomb, plan_qeq

__all__ = ["CoulombEngine", "QeqEngine", "PerAtom", "check_structure", "checked_total_charge", "dipole_moment"]


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 <= z < len(chemical_symbols) else f"Z={z}"


class PerAtom:
    """A per-atom quantity given as one value per atom, a per-element dict, or (if allowed) a scalar.

    Args:
      name: the argument's name (for error messages).
      value: (N,) array-like in the Atoms' order, a dict ``{element: value}`` whose keys
        are chemical symbols ("Na") or atomic numbers (11), or a number when
        ``scalar=True`` (the same value for every atom).
      positive: values must be > 0.  nonnegative: values must be ≥ 0.
      scalar: accept one number for all atoms.

    Raises:
      ValueError: NaN/inf, a non-positive (negative) value where forbidden, an unknown
        element symbol, a value that is not a number or a 1-D array.

    Example:
      >>> PerAtom("charges", {"Na": 1.0, "Cl": -1}).values([11, 17, 11]).tolist()
      [1.0, -1.0, 1.0]
    """

    def __init__(self, name: str, value, *, positive: bool = False, nonnegative: bool = False,
                 scalar: bool = False):
        self.name = name
        self.table = None
        self.array = None
        if isinstance(value, Mapping):
            table = {}
            for key, v in value.items():
                table[self._number(key)] = self._number_value(key, v)
            if not table:
                raise ValueError(f"{name}: the dict is empty; give one value per element, e.g. {{'Na': 1.0}}.")
            vals = np.array(list(table.values()))
            self._check_values(vals, positive, nonnegative, where=" (dict values)")
            self.table = table
            return
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be numbers (one per atom) or a dict by element, got {value!r}.") from None
        if arr.ndim == 0 and scalar:
            self._check_values(arr.reshape(1), positive, nonnegative)
            self.array = arr
            return
        if arr.ndim != 1:
            what = "one value per atom (1-D)" + (", one number for all," if scalar else "")
            raise ValueError(f"{name} must be {what} or a dict by element; got shape {arr.shape}.")
        self._check_values(arr, positive, nonnegative)
        self.array = arr

    def _number(self, key) -> int:
        if isinstance(key, str):
            if key not in atomic_numbers:
                raise ValueError(f"{self.name}: {key!r} is not a chemical symbol; use symbols such as 'Na' "
                                 "or atomic numbers as dict keys.")
            return atomic_numbers[key]
        try:
            z = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: dict key {key!r} is neither a chemical symbol nor an atomic "
                             "number.") from None
        if not 0 < z < len(chemical_symbols) or z != key:
            raise ValueError(f"{self.name}: dict key {key!r} is not an atomic number (1–{len(chemical_symbols) - 1}).")
        return z

    def _number_value(self, key, v) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}[{key!r}] must be a number, got {v!r}.") from None

    def _check_values(self, vals, positive, nonnegative, where=""):
        if not np.all(np.isfinite(vals)):
            bad = np.nonzero(~np.isfinite(vals))[0][:5].tolist()
            raise ValueError(f"{self.name}{where} contains NaN or inf (entries {bad}); give finite numbers.")
        if positive and np.any(vals <= 0):
            raise ValueError(f"{self.name}{where} must be > 0 (smallest {vals.min():g}).")
        if nonnegative and np.any(vals < 0):
            raise ValueError(f"{self.name}{where} must be ≥ 0 (smallest {vals.min():g}).")

    def values(self, numbers) -> np.ndarray:
        """(N,) float64 values for atoms with atomic numbers ``numbers`` (ValueError when they do not fit)."""
        numbers = np.asarray(numbers)
        n = numbers.shape[0]
        if self.table is not None:
            missing = sorted(set(numbers.tolist()) - set(self.table))
            if missing:
                have = ", ".join(_symbol(z) for z in sorted(self.table))
                raise ValueError(f"{self.name} has no value for element(s) {', '.join(_symbol(z) for z in missing)} "
                                 f"(the dict covers {have}); add them to the dict.")
            return np.array([self.table[int(z)] for z in numbers], dtype=np.float64)
        if self.array.ndim == 0:
            return np.full(n, float(self.array))
        if self.array.shape[0] != n:
            raise ValueError(f"{self.name} holds {self.array.shape[0]} values but the Atoms have {n} atoms; "
                             "give one value per atom (in the Atoms' order) or a dict by element.")
        return self.array.copy()


def check_structure(positions, cell) -> None:
    """Refuse NaN/inf positions and a degenerate periodic cell with a ValueError that says what to change.

    Example:
      >>> check_structure(np.zeros((1, 3)), np.eye(3) * 5.0)
    """
    ok = np.all(np.isfinite(positions), axis=1)
    if not np.all(ok):
        bad = np.nonzero(~ok)[0][:5].tolist()
        raise ValueError(f"the positions of atoms {bad} are NaN or infinite; set finite positions (Å).")
    if cell is not None:
        lengths = np.linalg.norm(cell, axis=1)
        if not np.all(np.isfinite(cell)) or np.any(lengths == 0) or not (
                abs(np.linalg.det(cell)) > 1e-6 * np.prod(lengths)):
            raise ValueError(f"atoms.pbc is all True but the cell {np.round(cell, 4).tolist()} is not a proper 3D "
                             "cell; set one with atoms.set_cell(...) or use atoms.pbc = False for an open boundary.")


def dipole_moment(charges, positions) -> np.ndarray:
    """Σ_i q_i R_i (e·Å) of charges at the positions as given (not wrapped into the cell).

    Example:
      >>> dipole_moment(np.array([1.0, -1.0]), np.array([[0.0, 0, 0], [0, 0, 2.0]])).tolist()
      [0.0, 0.0, -2.0]
    """
    return np.asarray(charges, np.float64) @ np.asarray(positions, np.float64)


class _PlannedEngine:
    """Shared plan bookkeeping: one plan per (atom count, periodicity), moved with ``update``."""

    def __init__(self):
        self.plan = None
        self.n_plans = 0
        self.n_calls = 0
        self._key = None

    def _planned(self, key, make, move):
        """The plan for this call: a fresh one for a new kind of system, else the moved one."""
        if self.plan is None or key != self._key:
            self.plan, self._key = make(), key
            self.n_plans += 1
            return True
        self.plan, kept = move(self.plan)
        if not kept:
            self.n_plans += 1
        return False


class CoulombEngine(_PlannedEngine):
    """Fixed point or Gaussian charges through :func:`jaxlr.coulomb` with a kept plan.

    Args:
      charges: (N,) e or a dict by element.  sigma: (N,) Å, a dict, one number or None
        (point charges).  accuracy: relative RMS force error.  method: "auto", "direct",
        "ewald" or "pme" (periodic cells; open boundaries always use the direct sum).
      background: allow a net charge in a periodic cell (uniform neutralising background).

    Example:
      >>> eng = CoulombEngine([1.0, -1.0], None, 1e-6, "auto", False)
      >>> out = eng(np.array([[0.0, 0, 0], [2.0, 0, 0]]), np.array([11, 17]), None)
      >>> round(float(out["energy"]), 3), out["stress"] is None
      (-7.2, True)
    """

    def __init__(self, charges, sigma, accuracy, method, background):
        super().__init__()
        if method not in ("auto", "direct", "ewald", "pme"):
            raise ValueError(f"method must be 'auto', 'direct', 'ewald' or 'pme', got {method!r}.")
        self.charges = PerAtom("charges", charges)
        self.sigma = None if sigma is None else PerAtom("sigma", sigma, positive=True, scalar=True)
        self.accuracy = float(accuracy)
        if not 0.0 < self.accuracy < 1.0:
            raise ValueError(f"accuracy must lie in (0, 1) (a relative force error), got {accuracy!r}.")
        self.method = method
        self.background = bool(background)

    def __call__(self, positions, numbers, cell) -> dict:
        q = self.charges.values(numbers)
        sig = None if self.sigma is None else self.sigma.values(numbers)
        method = "auto" if cell is None else self.method
        if cell is None and self.method in ("ewald", "pme"):
            raise ValueError(f"method={self.method!r} needs a periodic cell (atoms.pbc all True); the Atoms have "
                             "an open boundary: set a cell and pbc=True or build the calculator with method='auto'.")
        self.n_calls += 1
        self._planned(
            (len(q), cell is None),
            lambda: plan_coulomb(positions, q, cell=cell, sigma=sig, method=method, accuracy=self.accuracy,
                                 background=self.background),
            lambda plan: plan.update(positions, q, cell=cell, sigma=sig))
        res = coulomb(positions, q, cell=cell, sigma=sig, method=method, accuracy=self.accuracy,
                      background=self.background, plan=self.plan, stress=True)
        return dict(energy=float(res.energy), forces=np.asarray(res.forces, np.float64),
                    stress=None if res.stress is None else np.asarray(res.stress, np.float64),
                    charges=q, dipole=dipole_moment(q, positions))


class QeqEngine(_PlannedEngine):
    """Charge equilibration through :func:`jaxlr.qeq` with a kept plan and warm-started solves.

    Args:
      electronegativity: χ (V) per atom or dict by element.  hardness: J ≥ 0 (V/e), same.
      sigma: Gaussian widths σ > 0 (Å), per atom, dict or one number.
      accuracy: relative RMS force error of the electrostatics (also the PCG tolerance).
      solver: "auto", "dense" or "pcg".  method: the electrostatics, "auto", "ewald" or "pme".
      total_charge: Σ q (e); a charged periodic cell gets a uniform neutralising background.

    Example:
      >>> eng = QeqEngine([0.0, 2.0], 5.0, 1.0, 1e-6, "auto", "auto", 0.0)
      >>> out = eng(np.array([[0.0, 0, 0], [3.0, 0, 0]]), np.array([1, 1]), None)
      >>> [round(float(x), 4) for x in out["charges"]]
      [0.1178, -0.1178]
    """

    def __init__(self, electronegativity, hardness, sigma, accuracy, solver, method, total_charge):
        super().__init__()
        if solver not in ("auto", "dense", "pcg"):
            raise ValueError(f"solver must be 'auto', 'dense' or 'pcg', got {solver!r}.")
        if method not in ("auto", "ewald", "pme"):
            raise ValueError(f"method (the electrostatics of periodic cells) must be 'auto', 'ewald' or 'pme', "
                             f"got {method!r}.")
        self.chi = PerAtom("electronegativity", electronegativity, scalar=True)
        self.hardness = PerAtom("hardness", hardness, nonnegative=True, scalar=True)
        self.sigma = PerAtom("sigma", sigma, positive=True, scalar=True)
        self.accuracy = float(accuracy)
        if not 0.0 < self.accuracy < 1.0:
            raise ValueError(f"accuracy must lie in (0, 1) (a relative force error), got {accuracy!r}.")
        self.solver = solver
        self.method = method
        self.total_charge = checked_total_charge(total_charge)
        self.guess = None

    def __call__(self, positions, numbers, cell) -> dict:
        chi = self.chi.values(numbers)
        hard = self.hardness.values(numbers)
        sig = self.sigma.values(numbers)
        n = len(chi)
        method = "auto" if cell is None else self.method
        background = cell is not None and self.total_charge != 0.0
        self.n_calls += 1
        fresh = self._planned(
            (n, cell is None),
            lambda: plan_qeq(positions, sig, cell=cell, method=method, solver=self.solver, accuracy=self.accuracy,
                             background=background),
            lambda plan: plan.update(positions, None, cell=cell, sigma=sig))
        if fresh or self.guess is None:
            # always pass a guess, so that the first and later calls share one compiled solve
            self.guess = np.full(n, self.total_charge / n)
        res = qeq(positions, chi, hard, sig, cell=cell, total_charge=self.total_charge, method=method,
                  solver=self.solver, accuracy=self.accuracy, background=background, guess=self.guess,
                  plan=self.plan, stress=True)
        q = np.asarray(res.charges, np.float64)
        self.guess = q
        return dict(energy=float(res.energy), forces=np.asarray(res.forces, np.float64),
                    stress=None if res.stress is None else np.asarray(res.stress, np.float64),
                    charges=q, dipole=dipole_moment(q, positions))


def checked_total_charge(value) -> float:
    """``value`` as a finite float (e); ``ValueError`` otherwise.

    Example:
      >>> checked_total_charge("1")
      1.0
    """
    try:
        total = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"total_charge must be one number (e), got {value!r}.") from None
    if not np.isfinite(total):
        raise ValueError(f"total_charge must be finite, got {value!r}.")
    return total

