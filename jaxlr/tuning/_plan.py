"""Explicit plans: tuned Coulomb parameters and a neighbour capacity that a moving system keeps.

The front doors :func:`jaxlr.coulomb` and :func:`jaxlr.qeq` tune their static choices
(smearing, cutoff, mesh, spline order or k-cutoff) for the atoms they are given, and size
the neighbour list from the largest neighbour count.  Called without a plan they are
stateless: every call tunes afresh, so a moving system (MD through the front door, a
geometry optimisation, a scan) recompiles whenever a static choice flips — on a random
4,000-atom system moved by 0.03 Å per call, 11 of 30 calls recompiled (about 3 s each
against 0.2 s for a call).

A :class:`CoulombPlan` holds those choices in the caller's hands (jax-md's
allocate/update idiom)::

    plan = jaxlr.tuning.plan_coulomb(R, q, cell=cell, accuracy=1e-5)   # host, tunes once
    for step in range(n_steps):
        plan, kept = plan.update(R, q, cell=cell)                       # host, cheap
        res = jaxlr.coulomb(R, q, cell=cell, plan=plan)                 # compiled once

:meth:`CoulombPlan.update` keeps the parameters while the tuner's error estimate for the
new atoms lies in [½ × the estimate they were tuned with, accuracy] (a much easier system
is tuned afresh rather than over-served) and keeps the capacity while the largest
neighbour count fits and the capacity is at most :data:`CAPACITY_SLACK` × a fresh list's;
otherwise it returns a freshly tuned plan.  Either way the requested accuracy holds by the
tuner's estimate.  Nothing is remembered anywhere else: two plans never share state.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..electrostatics._params import CoulombParams
from ..performance import costs as perf_costs
from ..system._checks import check_accuracy, check_cell, check_per_atom, check_positions, concrete_value
from ..system._neighbors import Neighbors, neighbor_list, with_capacity
from ._coulomb import standin_charges, tune_coulomb

__all__ = ["CAPACITY_SLACK", "CoulombPlan", "check_plan", "choose_solver", "plan_coulomb", "plan_qeq"]

#: a plan's capacity is kept while it is at most this factor above a fresh list's
CAPACITY_SLACK = 1.3


@dataclasses.dataclass(frozen=True)
class CoulombPlan:
    """Static choices of the Coulomb part of a front-door call, for one kind of system (host).

    Build one with :func:`plan_coulomb` (or :func:`plan_qeq`), move it along with
    :meth:`update`, pass it as ``plan=`` to :func:`jaxlr.coulomb` / :func:`jaxlr.qeq`.

    Attributes:
      params: the tuned :class:`jaxlr.CoulombParams` (method, smearing, cutoff, mesh or
        k-cutoff); ``params.estimated_error`` is the tuner's estimate for the atoms the plan
        was last updated with.
      capacity: neighbour slots per atom of the real-space list (None for an open boundary).
      accuracy: the requested relative RMS force error.
      tuned_error: the tuner's estimate when the parameters were chosen.
      n_atoms: atom count N the plan is for.
      dtype: "float32" or "float64".
      method: the requested method ("auto", "direct", "ewald" or "pme").
      background: uniform neutralising background.
      standin: tuned with ±1 stand-in charges (Qeq, whose charges are unknown beforehand)
        instead of the given charges.
      pair_cost: a seconds-per-neighbour-slot override of the tuner's cost model (PCG
        reuses cached pair kernels), or None.
    """

    params: CoulombParams
    capacity: int | None
    accuracy: float
    tuned_error: float | None
    n_atoms: int
    dtype: str
    method: str = "auto"
    background: bool = False
    standin: bool = False
    pair_cost: float | None = None

    def _tune_kwargs(self) -> dict:
        return dict(method=self.method, background=self.background, n_atoms=self.n_atoms, dtype=self.dtype,
                    costs=None if self.pair_cost is None else {"pair": self.pair_cost})

    def _charges(self, charges):
        return standin_charges(self.n_atoms) if self.standin else charges

    def fits(self, nbrs: Neighbors) -> bool:
        """Whether the host list ``nbrs``'s largest neighbour count fits :attr:`capacity`."""
        return self.capacity is not None and _needed(nbrs) <= self.capacity

    def neighbors(self, positions, cell, nbrs: Neighbors | None = None) -> Neighbors:
        """A host neighbour list for ``positions`` padded to :attr:`capacity` (host).

        Args:
          positions: (N, 3) Å, concrete.  cell: (3, 3) Å.
          nbrs: an already built full list with cutoff ``params.cutoff`` (e.g. in spatial
            order), or None to build one.

        Raises:
          ValueError: the largest neighbour count exceeds the capacity — call
            :meth:`update` first (it re-plans when the capacity no longer fits).
        """
        if nbrs is None:
            nbrs = neighbor_list(np.asarray(positions, np.float64), self.params.cutoff, np.asarray(cell))
        needed = _needed(nbrs)
        if self.capacity is None or needed > self.capacity:
            raise ValueError(f"the plan's neighbour capacity ({self.capacity}) is too small for these positions "
                             f"({needed} neighbours within {self.params.cutoff:.4g} Å); call "
                             "plan, kept = plan.update(positions, charges, cell=cell) first.")
        return nbrs if nbrs.capacity == self.capacity else with_capacity(nbrs, self.capacity)

    def update(self, positions, charges=None, *, cell=None, sigma=None) -> tuple[CoulombPlan, bool]:
        """The plan for moved atoms: this one while it still fits, else a fresh one (host).

        Args:
          positions: (N, 3) Å.  charges: (N,) e (ignored by Qeq plans, which tune with
            stand-in charges).  cell: (3, 3) Å, rows are lattice vectors.  sigma: (N,)
            Gaussian widths (Å) or None.

        Returns:
          ``(plan, kept)``: ``kept`` is True when the parameters and the capacity were kept
          (same static choices, so the compiled function is reused); ``plan`` then carries
          the error estimate for the new atoms.  When only the capacity no longer fits,
          ``plan`` keeps the parameters with a fresh capacity; when the parameters no longer
          fit, it is tuned afresh, at the same accuracy and with the same requests.

        Raises:
          ValueError: a different atom count, or bad inputs (as :func:`plan_coulomb`).

        Example:
          >>> import numpy as np
          >>> from jaxlr.tuning import plan_coulomb
          >>> rng = np.random.default_rng(0)
          >>> R, q, cell = rng.uniform(0, 12, (64, 3)), np.tile([1.0, -1.0], 32), np.eye(3) * 12
          >>> plan = plan_coulomb(R, q, cell=cell, method="pme", accuracy=1e-4)
          >>> moved, kept = plan.update(R + 0.01, q, cell=cell)
          >>> kept, moved.params.mesh == plan.params.mesh
          (True, True)
        """
        pos, q, cell_np, sig = _host_inputs(positions, charges, cell, sigma, standin=self.standin)
        if pos.shape[0] != self.n_atoms:
            raise ValueError(f"the plan is for {self.n_atoms} atoms, got {pos.shape[0]}; build a new one "
                             "with plan_coulomb.")
        if cell_np is None:
            return self, True
        last = self.params
        again = tune_coulomb(pos, self._charges(q), cell_np, sig, accuracy=self.accuracy, smearing=last.smearing,
                             cutoff=last.cutoff, mesh=last.mesh, order=None if last.mesh is None else last.mesh.order,
                             k_cutoff=last.k_cutoff, estimate=True, **self._tune_kwargs())
        same = (again.method, again.mesh, again.k_cutoff) == (last.method, last.mesh, last.k_cutoff)
        fits_error = same and 0.5 * self.tuned_error <= again.estimated_error <= self.accuracy * 1.0001
        if fits_error:
            params = dataclasses.replace(last, estimated_error=again.estimated_error)
            nbrs = neighbor_list(pos, last.cutoff, cell_np)
            if _needed(nbrs) <= self.capacity <= CAPACITY_SLACK * nbrs.capacity:
                return dataclasses.replace(self, params=params), True
            # the parameters still fit, the list does not: keep them with a fresh capacity
            return dataclasses.replace(self, params=params, capacity=nbrs.capacity), False
        return _plan(pos, q, cell_np, sig, accuracy=self.accuracy, method=self.method,
                     background=self.background, dtype=self.dtype, standin=self.standin,
                     pair_cost=self.pair_cost), False


def _needed(nbrs: Neighbors) -> int:
    return int(np.asarray(nbrs.mask).sum(axis=1).max()) if nbrs.idx.shape[0] else 0


def _host_inputs(positions, charges, cell, sigma, *, standin: bool):
    pos = concrete_value(positions)
    cell_np = None if cell is None else concrete_value(cell)
    sig = None if sigma is None else concrete_value(sigma)
    q = None if charges is None else concrete_value(charges)
    if pos is None or (cell is not None and cell_np is None) or (sigma is not None and sig is None) or (
            not standin and q is None):
        raise ValueError("plans are made on the host: pass concrete positions, charges, cell and sigma "
                         "(numpy arrays or eager jax arrays), not traced values.")
    pos = np.asarray(check_positions(pos), np.float64)
    n = pos.shape[0]
    if not standin:
        q = np.asarray(check_per_atom("charges", q, n), np.float64)
    if sig is not None:
        sig = np.asarray(check_per_atom("sigma", sig, n, positive=True), np.float64)
    if cell_np is not None:
        cell_np = np.asarray(check_cell(cell_np), np.float64)
    return pos, q, cell_np, sig


def _plan(pos, q, cell_np, sig, *, accuracy, method, background, dtype, standin, pair_cost) -> CoulombPlan:
    n = pos.shape[0]
    if cell_np is None:
        return CoulombPlan(params=CoulombParams(method="direct"), capacity=None, accuracy=accuracy,
                           tuned_error=None, n_atoms=n, dtype=dtype, method=method, background=background,
                           standin=standin, pair_cost=pair_cost)
    charges = standin_charges(n) if standin else q
    params = tune_coulomb(pos, charges, cell_np, sig, accuracy=accuracy, method=method, background=background,
                          n_atoms=n, dtype=dtype, costs=None if pair_cost is None else {"pair": pair_cost})
    capacity = neighbor_list(pos, params.cutoff, cell_np).capacity
    return CoulombPlan(params=params, capacity=capacity, accuracy=accuracy, tuned_error=params.estimated_error,
                       n_atoms=n, dtype=dtype, method=method, background=background, standin=standin,
                       pair_cost=pair_cost)


def _dtype_name(dtype, positions) -> str:
    if dtype is not None:
        name = np.dtype(dtype).name
    else:
        name = getattr(positions, "dtype", np.dtype(np.float64)).name
        if name not in ("float32", "float64"):
            name = "float64"
    if name not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64, got {name}.")
    return name


def plan_coulomb(positions, charges, *, cell=None, sigma=None, method: str = "auto", accuracy: float = 1e-6,
                 background: bool = False, dtype=None) -> CoulombPlan:
    """Tune the Coulomb parameters and size the neighbour list for a system (host).

    Args:
      positions: (N, 3) Å.  charges: (N,) e.  cell: (3, 3) Å, rows are lattice vectors,
        or None (open boundary: nothing to tune).  sigma: (N,) Gaussian widths (Å) or None.
      method: "auto", "direct", "ewald" or "pme".
      accuracy: target relative RMS force error in (0, 1) (as :func:`jaxlr.coulomb`).
      background: uniform neutralising background for a charged cell.
      dtype: "float32" or "float64" of the evaluation (default: the positions' dtype,
        float64 for numpy input); the tuner's cost model depends on it.

    Returns:
      :class:`CoulombPlan`.

    Raises:
      ValueError: traced inputs, bad shapes or values, an unknown method.

    Example:
      >>> import numpy as np, jaxlr
      >>> from jaxlr.tuning import plan_coulomb
      >>> rng = np.random.default_rng(0)
      >>> R, q, cell = rng.uniform(0, 12, (64, 3)), np.tile([1.0, -1.0], 32), np.eye(3) * 12
      >>> plan = plan_coulomb(R, q, cell=cell, method="pme", accuracy=1e-4)
      >>> res = jaxlr.coulomb(R, q, cell=cell, plan=plan)
      >>> res.params.mesh == plan.params.mesh
      True
    """
    if method not in ("auto", "direct", "ewald", "pme"):
        raise ValueError(f"method must be 'auto', 'direct', 'ewald' or 'pme', got {method!r}.")
    accuracy = check_accuracy(accuracy, " (a relative force error)")
    pos, q, cell_np, sig = _host_inputs(positions, charges, cell, sigma, standin=False)
    return _plan(pos, q, cell_np, sig, accuracy=accuracy, method=method, background=bool(background),
                 dtype=_dtype_name(dtype, positions), standin=False, pair_cost=None)


def choose_solver(n_atoms: int, periodic: bool, method: str) -> str:
    """The equilibration solver ``solver="auto"`` picks: "dense" or "pcg" (host).

    Dense up to :attr:`jaxlr.performance.Costs.dense_max_open` atoms for an open boundary
    and :attr:`~jaxlr.performance.Costs.dense_max_periodic` in a cell (never with PME),
    PCG beyond.

    Example:
      >>> choose_solver(100, False, "auto"), choose_solver(100_000, True, "pme")
      ('dense', 'pcg')
    """
    limit = perf_costs().dense_max_periodic if periodic else perf_costs().dense_max_open
    return "dense" if n_atoms <= limit and method != "pme" else "pcg"


def plan_qeq(positions, sigma, *, cell=None, method: str = "auto", solver: str = "auto", accuracy: float = 1e-6,
             background: bool = False, dtype=None) -> CoulombPlan:
    """:func:`plan_coulomb` for :func:`jaxlr.qeq`: tuned with ±1 stand-in charges (host).

    The charges are the unknowns of the solve, so the parameters are tuned for ±1 stand-in
    charges (errors are relative); the dense solver needs Ewald electrostatics, and PCG,
    which caches the real-space pair kernels, shifts the optimum to shorter cutoffs.

    Args:
      positions: (N, 3) Å.  sigma: (N,) Gaussian charge widths σ_i > 0 (Å).
      cell: (3, 3) Å or None.  method: "auto", "direct", "ewald" or "pme".
      solver: "auto", "dense" or "pcg" (as :func:`jaxlr.qeq`; pass the same there).
      accuracy, background, dtype: as :func:`plan_coulomb`.

    Returns:
      :class:`CoulombPlan` with ``standin=True``.

    Example:
      >>> import numpy as np, jaxlr
      >>> from jaxlr.tuning import plan_qeq
      >>> rng = np.random.default_rng(0)
      >>> R, cell = rng.uniform(0, 12, (64, 3)), np.eye(3) * 12
      >>> plan = plan_qeq(R, np.ones(64), cell=cell, solver="pcg", method="pme", accuracy=1e-4)
      >>> plan.params.method
      'pme'
    """
    if method not in ("auto", "direct", "ewald", "pme"):
        raise ValueError(f"method must be 'auto', 'direct', 'ewald' or 'pme', got {method!r}.")
    if solver not in ("auto", "dense", "pcg"):
        raise ValueError(f"solver must be 'auto', 'dense' or 'pcg', got {solver!r}.")
    accuracy = check_accuracy(accuracy, " (a relative force error)")
    pos, _, cell_np, sig = _host_inputs(positions, None, cell, sigma, standin=True)
    if solver == "auto":
        solver = choose_solver(pos.shape[0], cell_np is not None, method)
    if solver == "dense" and cell_np is not None:
        if method == "pme":
            raise ValueError("the dense solver builds the Coulomb matrix by Ewald sums; use method='ewald' "
                             "(or 'auto') or solver='pcg' with PME.")
        method = "ewald"
    pair_cost = perf_costs().pcg_pair_cost if solver == "pcg" else None
    return _plan(pos, None, cell_np, sig, accuracy=accuracy, method=method, background=bool(background),
                 dtype=_dtype_name(dtype, positions), standin=True, pair_cost=pair_cost)


def check_plan(plan, n_atoms: int, cell, explicit=(), *, where: str = "") -> None:
    """Check that ``plan`` fits a front-door call (host); raise ValueError otherwise.

    Args:
      plan: the :class:`CoulombPlan` passed as ``plan=``.  n_atoms: N of the call.
      cell: the call's cell or None.  explicit: the explicitly given Coulomb parameters
        (smearing, cutoff, mesh, …), which a plan replaces.  where: the front door's name.

    Example:
      >>> import numpy as np
      >>> plan = plan_coulomb(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], np.array([1.0, -1.0]))
      >>> check_plan(plan, 2, None)
    """
    if not isinstance(plan, CoulombPlan):
        raise ValueError(f"{where}: plan= must be a jaxlr.tuning.CoulombPlan, got {type(plan).__name__}.")
    if plan.n_atoms != n_atoms:
        raise ValueError(f"{where}: the plan is for {plan.n_atoms} atoms, got {n_atoms}.")
    if (cell is None) != (plan.capacity is None):
        raise ValueError(f"{where}: the plan was made for {'an open boundary' if plan.capacity is None else 'a cell'}; "
                         "make a new one for this system.")
    if any(v is not None for v in explicit):
        raise ValueError(f"{where}: pass either plan= or explicit smearing/cutoff/mesh/order/k_cutoff, not both.")

