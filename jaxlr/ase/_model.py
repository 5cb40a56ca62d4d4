"""The trained-model engine behind :meth:`jaxlr.ase.Calculator.from_potential` (imports flax via jaxlr.models).

One structure becomes a one-structure :class:`jaxlr.data.AtomsBatch` (B = 1, no padding
atoms) with the model's neighbour cutoff; the potential is adapted to the cell
(:meth:`jaxlr.models.Potential.adapted_to`: PME meshes for LODE and Coulomb, planned for
the cell scaled by 1 ± :data:`CELL_FAMILY`) and evaluated with ``predict`` (its jitted
``apply``, shared with the user's own ``potential.predict`` calls when adapting changes
nothing, e.g. for open boundaries or models without meshes).  Between calls the engine
keeps the neighbour capacity (with ~10 % slack, grown when a count no longer fits) and
the adapted potential while the cell's strain relative to the planned cell stays within
:data:`CELL_WINDOW` (re-adapted beyond; the same compiled function when the new meshes
are the same), so MD, geometry and cell optimisation compile once per kind of system.
"""

from __future__ import annotations

import inspect
import json

import jax
import jax.numpy as jnp
import numpy as np

from ..data import AtomsBatch, species_indices
from ..models import Potential
from ..system import neighbor_list, with_capacity
from ._engines import checked_total_charge, dipole_moment

__all__ = ["CELL_FAMILY", "CELL_WINDOW", "ModelEngine", "floating_dtype"]


def floating_dtype(variables):
    """The floating dtype of a model's variables (jax's default float when there is none).

    Example:
      >>> import numpy as np
      >>> floating_dtype({"params": {"w": np.zeros(2, np.float32)}}).name
      'float32'
    """
    kinds = [np.dtype(x.dtype) for x in jax.tree_util.tree_leaves(variables)
             if np.issubdtype(np.dtype(x.dtype), np.floating)]
    return max(kinds, key=lambda d: d.itemsize) if kinds else jnp.zeros(()).dtype


#: the adapted meshes are kept while every entry of the strain of the cell relative to the
#: cell they were planned for stays below this (cell optimisation, NPT)
CELL_WINDOW = 0.02
#: meshes are planned for the cell scaled by 1 ± this (covers the window's widths)
CELL_FAMILY = 0.06


def _capacity(needed: int) -> int:
    return int(8 * np.ceil(max(1.0, 1.1 * needed) / 8))


class ModelEngine:
    """A :class:`jaxlr.models.Potential` with its variables, evaluated on one structure at a time.

    Args:
      potential: the :class:`jaxlr.models.Potential`.  variables: its ``{"params", "stats"}``.
      total_charge: Σ q (e) for the charge models (one fragment: the whole structure).
      lode_accuracy: accuracy of the LODE features on a periodic mesh (``adapted_to``).

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.models import build_potential
      >>> pot = build_potential("local", species=(1,), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
      ...                       hidden=())
      >>> R = np.array([[0.0, 0, 0], [0.9, 0, 0], [0, 1.1, 0]])
      >>> eng = ModelEngine(pot, None, 0.0)
      >>> eng.variables = pot.init(jax.random.PRNGKey(0), eng.batch(R, np.array([1, 1, 1]), None, pot))
      >>> out = eng(R, np.array([1, 1, 1]), None)
      >>> out["forces"].shape, "charges" in out
      ((3, 3), False)
    """

    def __init__(self, potential, variables, total_charge, lode_accuracy: float = 1e-4):
        if not isinstance(potential, Potential):
            raise ValueError(f"potential must be a jaxlr.models.Potential (jaxlr.models.build_potential or "
                             f"jaxlr.train.load), got {type(potential).__name__}.")
        if variables is not None and not (hasattr(variables, "keys") and {"params", "stats"} <= set(variables)):
            raise ValueError("variables must be the potential's {'params': ..., 'stats': ...} (from "
                             "potential.init, training or jaxlr.train.load).")
        self.total_charge = checked_total_charge(total_charge)
        self.potential = potential
        self.variables = variables
        self.lode_accuracy = float(lode_accuracy)
        self.n_plans = 0
        self.n_calls = 0
        self.capacity = None
        self._key = None
        self._cell = None           # the cell the current adaptation was planned for (or None)
        self._adapted = None        # (config key, adapted Potential)
        self._own_key = json.dumps(potential.config(), sort_keys=True)

    @property
    def plan(self):
        """The adapted :class:`jaxlr.models.Potential` in use (None before the first call)."""
        return None if self._adapted is None else self._adapted[1]

    def _potential_for(self, cell) -> Potential:
        """The potential adapted to ``cell``: kept while the cell stays within :data:`CELL_WINDOW` of its reference."""
        if self._adapted is not None and self._fits(cell):
            return self._adapted[1]
        kw = dict(lode_accuracy=self.lode_accuracy)
        if "variables" in inspect.signature(self.potential.adapted_to).parameters:
            kw["variables"] = self.variables     # plan the Coulomb sum for the learned Gaussian widths
        if cell is None:
            adapted = self.potential.adapted_to([None], **kw)
        else:
            cell = np.asarray(cell, np.float64)
            adapted = self.potential.adapted_to([cell * (1.0 + s) for s in (-CELL_FAMILY, 0.0, CELL_FAMILY)], **kw)
        key = json.dumps(adapted.config(), sort_keys=True)
        if key == self._own_key:
            adapted = self.potential     # unchanged: share potential.predict's compiled function
        self._cell = None if cell is None else cell.copy()
        if self._adapted is None or key != self._adapted[0]:
            self._adapted = (key, adapted)
            self.n_plans += 1
        return self._adapted[1]

    def _fits(self, cell) -> bool:
        if (cell is None) != (self._cell is None):
            return False
        if cell is None:
            return True
        strain = np.linalg.solve(self._cell, np.asarray(cell, np.float64)) - np.eye(3)
        return float(np.max(np.abs(strain))) <= CELL_WINDOW

    def species(self, numbers) -> np.ndarray:
        """(N,) channel indices of atomic numbers in the model's species (ValueError for unknown elements)."""
        try:
            return species_indices(numbers, self.potential.species)
        except ValueError as err:
            raise ValueError(f"this model cannot evaluate these Atoms: {err}") from None

    def batch(self, positions, numbers, cell, potential=None) -> AtomsBatch:
        """The one-structure :class:`jaxlr.data.AtomsBatch` of a structure (host; keeps the capacity)."""
        potential = self.potential if potential is None else potential
        channels = self.species(numbers)
        n = len(channels)
        dtype = jnp.zeros(()).dtype if self.variables is None else floating_dtype(self.variables)
        nl = neighbor_list(np.asarray(positions, np.float64), potential.cutoff, cell)
        needed = int(np.asarray(nl.mask).sum(axis=1).max(initial=0))
        key = (n, cell is None)
        if self.capacity is None or key != self._key or needed > self.capacity:
            if self.capacity is not None:
                self.n_plans += 1
            self.capacity, self._key = _capacity(needed), key
        nl = with_capacity(nl, self.capacity)
        nbrs = jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], nl)
        q = self.total_charge
        return AtomsBatch(positions=jnp.asarray(positions, dtype)[None], species=jnp.asarray(channels)[None],
                          atom_mask=jnp.ones((1, n), bool), structure_mask=jnp.ones(1, bool),
                          total_charge=jnp.full(1, q, dtype), fragments=jnp.zeros((1, n), jnp.int32),
                          fragment_charges=jnp.full((1, 1), q, dtype), neighbors=nbrs,
                          cell=None if cell is None else jnp.asarray(cell, dtype)[None])

    def __call__(self, positions, numbers, cell) -> dict:
        self.species(numbers)                      # unknown elements fail before any planning
        potential = self._potential_for(cell)
        batch = self.batch(positions, numbers, cell, potential)
        self.n_calls += 1
        out = potential.predict(self.variables, batch)
        energy = float(out.energy[0])
        if not np.isfinite(energy):
            raise ValueError("the model returned a non-finite energy for these Atoms (atoms too close, or far "
                             "outside the training data?); check the structure.")
        result = dict(energy=energy, forces=np.asarray(out.forces[0], np.float64),
                      stress=None if out.stress is None else np.asarray(out.stress[0], np.float64))
        if out.charges is not None:
            q = np.asarray(out.charges[0], np.float64)
            result["charges"] = q
            result["dipole"] = (np.asarray(out.dipole[0], np.float64) if out.dipole is not None
                                else dipole_moment(q, positions))
        return result
