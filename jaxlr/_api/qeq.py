"""The charge-equilibration front door :func:`qeq` (eager): validate, plan, solve, differentiate.

Equations, solvers and derivative rules: :mod:`jaxlr.equilibration` (``qeq_solve``).  A warm
start (``guess=``, e.g. the previous MD step's charges) cuts PCG iterations.
"""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._energy import coulomb_terms
from ..electrostatics._ewald import half_space_kvectors
from ..electrostatics._params import CoulombParams
from ..equilibration._precondition import mesh_correction, preconditioner_mesh
from ..equilibration._qeq import SOLVERS, QeqParams, qeq_solve
from ..equilibration._solvers import SolverInfo, SolverStatus
from ..performance import costs as perf_costs
from ..system._checks import check_accuracy, check_cell, check_per_atom, check_positions, concrete_value
from ..system._deprecation import renamed_keyword
from ..system._order import sorted_neighbors
from ..tuning._coulomb import standin_charges, tune_coulomb
from ..tuning._plan import CoulombPlan, check_plan, choose_solver, plan_qeq

__all__ = ['QeqResult', 'qeq']


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QeqResult(SolverStatus):
    """Output of :func:`qeq` (a pytree).

    Attributes:
      charges: (N,) e, the equilibrated charges.
      energy: () eV, E* = Σ χq + ½ Σ J q² + E_coul at the equilibrated charges.
      chemical_potential: (F,) V, λ_f = ∂E*/∂Q_f (one per fragment).
      potentials: (N,) V, electrostatic potentials ∂E_coul/∂q_i at the equilibrated charges.
      forces: (N, 3) eV/Å, −dE*/dR (= Hellmann–Feynman forces at fixed charges).
      stress: (3, 3) eV/Å³ (periodic) or None.
      info: :class:`jaxlr.SolverInfo` — converged () bool, iterations () int (0 for
        dense), residual () relative residual; also readable as ``.converged``,
        ``.iterations`` and ``.residual``.
      params: the :class:`QeqParams` used (static).
    """

    charges: jax.Array
    energy: jax.Array
    chemical_potential: jax.Array
    potentials: jax.Array
    forces: jax.Array
    stress: jax.Array | None
    info: SolverInfo
    params: QeqParams = dataclasses.field(metadata=dict(static=True))


@partial(jax.jit, static_argnames=("method", "mesh", "background", "solver", "tol", "maxiter", "want_stress",
                                   "mesh_precondition"))
def _equilibrate(positions, chi, hard, sigma, cell, smearing, neighbors, kvectors, fragments, fragment_charges,
                 guess, perm=None, *, method, mesh, background, solver, tol, maxiter, want_stress,
                 mesh_precondition):
    """Jitted solve + energy, potentials, forces, stress; ``perm`` optionally permutes the
    atoms into a cache-friendly spatial perm first (``neighbors`` then refer to it)."""
    if perm is not None:
        positions, chi, hard, sigma = (x[perm] for x in (positions, chi, hard, sigma))
        fragments = None if fragments is None else fragments[perm]
        guess = None if guess is None else guess[perm]
        inverse = jnp.zeros_like(perm).at[perm].set(jnp.arange(perm.shape[0], dtype=perm.dtype))
    correction = None
    if mesh_precondition is not None:
        correction = mesh_correction(positions, hard, sigma, cell, mesh_precondition)
    q, lam, info = qeq_solve(positions, chi, hard, sigma, cell=cell, smearing=smearing, neighbors=neighbors,
                             kvectors=kvectors, method=method, mesh=mesh, background=background,
                             fragments=fragments, fragment_charges=fragment_charges, solver=solver, tol=tol,
                             maxiter=maxiter, guess=guess, preconditioner=correction)
    e_coul, phi, forces, stress = coulomb_terms(
        positions, q, cell=cell, stress=want_stress, sigma=sigma, smearing=smearing, neighbors=neighbors,
        kvectors=kvectors, method=method, mesh=mesh, background=background)
    energy = jnp.sum(chi * q + 0.5 * hard * q**2) + e_coul
    if perm is not None:
        q, phi, forces = q[inverse], phi[inverse], forces[inverse]
    return q, lam, info, energy, phi, forces, stress


def _check_fragments(fragments, fragment_charges, total_charge, n, dtype):
    """Validate fragment labels and totals (host); returns (labels or None, totals (F,))."""
    total_np = np.asarray(concrete_value(total_charge) if concrete_value(total_charge) is not None else np.nan)
    if total_np.ndim != 0 or not np.issubdtype(total_np.dtype, np.number) or np.iscomplexobj(total_np):
        hint = (" — per-fragment totals go in fragment_charges= (with fragments= labelling the atoms)"
                if total_np.ndim == 1 else "")
        raise ValueError(f"total_charge must be one real number (e), got {total_charge!r}{hint}.")
    total = float(total_np)
    if not np.isfinite(total):
        raise ValueError(f"total_charge must be finite, got {total_charge!r}.")
    if fragments is None:
        if fragment_charges is not None:
            raise ValueError("fragment_charges needs fragments= (one integer label per atom).")
        return None, np.array([total])
    labels = np.asarray(fragments)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"fragments must be ({n},) integer labels 0 … F−1, got shape {labels.shape} "
                         f"and dtype {labels.dtype}.")
    if labels.min() < 0:
        raise ValueError("fragment labels must be ≥ 0 (pad structures with jaxlr.data.pad_batch-style masks "
                         "through the functional layer instead).")
    n_frag = int(labels.max()) + 1
    missing = sorted(set(range(n_frag)) - set(labels.tolist()))
    if missing:
        raise ValueError(f"fragment labels must run over 0 … F−1 without gaps; labels {missing} have no atoms.")
    if fragment_charges is None:
        if total != 0.0:
            raise ValueError("with fragments=… and a non-zero total_charge, pass fragment_charges= "
                             "(one total per fragment).")
        totals = np.zeros(n_frag)
    else:
        totals = np.asarray(fragment_charges, dtype=np.float64).reshape(-1)
        if totals.shape != (n_frag,):
            raise ValueError(f"fragment_charges must hold one total per fragment label ({n_frag}), "
                             f"got {totals.shape[0]}.")
        if not np.all(np.isfinite(totals)):
            raise ValueError("fragment_charges contains NaN or inf.")
        if total != 0.0 and abs(totals.sum() - total) > 1e-9 * max(1.0, abs(total)):
            raise ValueError(f"fragment_charges sum to {totals.sum():.6g} but total_charge={total:.6g}.")
    return jnp.asarray(labels, jnp.int32), totals


def qeq(positions, electronegativity, hardness, sigma, *, cell=None, total_charge: float = 0.0,
        fragments=None, fragment_charges=None, method: str = "auto", solver: str = "auto",
        accuracy: float = 1e-6, tol: float | None = None, background: bool = False, guess=None,
        maxiter: int = 1000, preconditioner: str = "auto", stress: bool = True,
        smearing: float | None = None, cutoff: float | None = None, mesh=None, k_cutoff: float | None = None,
        neighbors=None, plan: CoulombPlan | None = None, coulomb_method: str | None = None,
        want_stress: bool | None = None) -> QeqResult:
    """Charge equilibration: charges, energy, chemical potential, forces and stress.

    Minimises ``E(q) = Σ_i (χ_i q_i + ½ J_i q_i²) + E_coul(q; σ)`` (Gaussian charges)
    subject to ``Σ_{i∈f} q_i = Q_f`` per fragment — see :mod:`jaxlr.equilibration` for the
    equations, solvers and derivative rules.

    Args:
      positions: (N, 3) Å.
      electronegativity: (N,) χ_i in V (eV/e).
      hardness: (N,) J_i ≥ 0 in V/e.
      sigma: (N,) Gaussian charge widths σ_i > 0 in Å.
      cell: (3, 3) Å, rows are lattice vectors, or None (open boundary).
      total_charge: total charge Q (e) when there is one fragment.
      fragments: (N,) integer labels 0 … F−1 (e.g. one per molecule), with
        ``fragment_charges`` (F,) their totals (neutral fragments if omitted).
      method: the electrostatics — "auto", "direct", "ewald" or "pme" (the dense solver
        uses "direct" or "ewald").  (Before 0.2 ``method=`` named the solver: "dense" or
        "pcg" here still selects the solver, with a DeprecationWarning.)
      solver: "auto" (dense up to a few thousand atoms, else "pcg"), "dense" or "pcg".
      accuracy: relative RMS force accuracy of the electrostatics (as in
        :func:`jaxlr.coulomb`).
      tol: PCG tolerance on the relative residual (default: ``accuracy``).
      background: allow a net charge in a periodic cell (uniform neutralising background).
      guess: (N,) previous charges as a PCG warm start.
      maxiter: PCG iteration cap.  preconditioner: "auto", "jacobi" or "mesh" (PCG).
      stress: compute the stress (periodic only).
      smearing, cutoff, mesh, k_cutoff, neighbors: override the Coulomb parameters, as
        in :func:`jaxlr.coulomb`.
      plan: a :class:`jaxlr.tuning.CoulombPlan` from :func:`jaxlr.tuning.plan_qeq` (moved
        along with its ``update``): its parameters and list capacity are used, so a moving
        system keeps its compiled function.  Without a plan each call tunes afresh (the
        front door keeps no state).
      coulomb_method, want_stress: deprecated spellings of ``method`` and ``stress``.

    Returns:
      :class:`QeqResult` (charges, energy, chemical_potential, potentials, forces,
      stress, converged, residual, iterations, params).

    Raises:
      ValueError: bad shapes, NaN, σ ≤ 0, J < 0, inconsistent fragment totals, a net
        charge in a periodic cell without ``background=True``, or a solve that did not
        converge (eager calls only; under jit check ``.converged``).

    Example:
      >>> import numpy as np, jaxlr
      >>> R = np.array([[0.0, 0, 0], [3.0, 0, 0]])
      >>> res = jaxlr.qeq(R, np.array([0.0, 2.0]), np.array([5.0, 5.0]), np.ones(2))
      >>> [round(float(q), 4) for q in res.charges]
      [0.1178, -0.1178]
    """
    stress = renamed_keyword("want_stress", "stress", want_stress, stress, default=True, where="qeq")
    if method in ("dense", "pcg"):
        warnings.warn("qeq(method=...) now names the electrostatics; pass the solver as solver="
                      f"{method!r}.", DeprecationWarning, stacklevel=2)
        method, solver = "auto", method
    method = renamed_keyword("coulomb_method", "method", coulomb_method, method, default="auto", where="qeq")
    coulomb_method = method
    method = solver
    pos_np = concrete_value(positions)
    cell_np = None if cell is None else concrete_value(cell)
    sig_np = concrete_value(sigma)
    positions = check_positions(positions)
    n = positions.shape[0]
    chi = check_per_atom("electronegativity", electronegativity, n)
    hard = check_per_atom("hardness", hardness, n)
    sigma = check_per_atom("sigma", sigma, n, positive=True)
    hard_np = concrete_value(hardness)
    if hard_np is not None and np.any(hard_np < 0):
        raise ValueError("hardness must be ≥ 0: with J_i < 0 the Qeq matrix can be indefinite (no minimum).")
    if method not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {method!r}.")
    if preconditioner not in ("auto", "jacobi", "mesh"):
        raise ValueError(f"preconditioner must be 'auto', 'jacobi' or 'mesh', got {preconditioner!r}.")
    accuracy = check_accuracy(accuracy)
    tol = accuracy if tol is None else float(tol)
    if not 0.0 < tol < 1.0:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}.")
    if coulomb_method not in ("auto", "direct", "ewald", "pme"):
        raise ValueError(f"method (the electrostatics) must be 'auto', 'direct', 'ewald' or 'pme', "
                         f"got {coulomb_method!r}.")
    labels, totals = _check_fragments(fragments, fragment_charges, total_charge, n, positions.dtype)
    if cell is not None:
        cell = check_cell(cell)
        if abs(totals.sum()) > 1e-12 and not background:
            raise ValueError(f"the cell carries a net charge of {totals.sum():.6g} e: pass background=True "
                             "for a uniform neutralising background.")
        if coulomb_method == "direct":
            raise ValueError("method='direct' is the open-boundary sum; use 'ewald' or 'pme' with a cell.")
    elif coulomb_method in ("ewald", "pme"):
        raise ValueError(f"method={coulomb_method!r} needs a periodic cell.")
    if pos_np is None or (cell is not None and cell_np is None) or sig_np is None:
        raise ValueError("qeq() needs concrete positions, cell and sigma to choose its static parameters; "
                         "under jit or grad with respect to them use the functional layer "
                         "jaxlr.qeq_solve / jaxlr.qeq_energy (gradients w.r.t. χ and J work here).")
    dtype = jnp.result_type(positions.dtype, chi.dtype, hard.dtype, sigma.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.zeros(()).dtype
    positions, chi, hard, sigma = (x.astype(dtype) for x in (positions, chi, hard, sigma))

    solver = method
    if plan is not None:
        check_plan(plan, n, cell, (smearing, cutoff, mesh, k_cutoff), where="qeq")
        if solver == "auto":
            solver = "pcg" if plan.pair_cost is not None else "dense"
    if solver == "auto":
        solver = choose_solver(n, cell is not None, coulomb_method)
    perm = None
    if cell is None:
        coul = CoulombParams(method="direct")
        kvectors = None
    else:
        cell = cell.astype(dtype)
        if plan is None:
            if solver == "dense" and coulomb_method == "pme":
                raise ValueError("the dense solver builds the Coulomb matrix by Ewald sums; use "
                                 "method='ewald' (or 'auto') or solver='pcg' with PME.")
            if all(v is None for v in (smearing, cutoff, mesh, k_cutoff)):
                plan = plan_qeq(pos_np, sig_np, cell=cell_np, method=coulomb_method, solver=solver,
                                accuracy=accuracy, background=background, dtype=jnp.dtype(dtype).name)
                coul = plan.params
            else:
                cm = "ewald" if solver == "dense" else coulomb_method
                pair_costs = {"pair": perf_costs().pcg_pair_cost} if solver == "pcg" else None
                coul = tune_coulomb(pos_np, standin_charges(n), cell_np, sig_np, accuracy=accuracy, method=cm,
                                    background=background, n_atoms=n, dtype=jnp.dtype(dtype).name,
                                    costs=pair_costs, smearing=smearing, cutoff=cutoff, mesh=mesh,
                                    k_cutoff=k_cutoff)
        else:
            coul = plan.params
        if neighbors is None:
            neighbors, perm = sorted_neighbors(pos_np, cell_np, coul.cutoff, sort=coul.method == "pme")
            if plan is not None:
                neighbors = plan.neighbors(None, None, neighbors)
        kvectors = (jnp.asarray(half_space_kvectors(cell_np, coul.k_cutoff), dtype)
                    if coul.method == "ewald" else None)
    if solver == "dense" and n > perf_costs().dense_limit:
        raise ValueError(f"method='dense' factorises an N×N matrix and is limited to {perf_costs().dense_limit} atoms "
                         f"(got {n}); use solver='pcg'.")
    if solver == "dense" and coul.method not in ("direct", "ewald"):
        raise ValueError("the dense solver needs 'direct' or 'ewald' electrostatics.")
    precond = preconditioner
    if precond == "auto":
        precond = "mesh" if (solver == "pcg" and cell is not None) else "jacobi"
    if precond == "mesh" and (solver != "pcg" or cell is None):
        raise ValueError("the mesh preconditioner is for method='pcg' in a periodic cell.")
    mesh_pre = None
    if precond == "mesh":
        mesh_pre = preconditioner_mesh(cell_np)
    params = QeqParams(solver=solver, coulomb=coul, tol=tol, maxiter=int(maxiter), preconditioner=precond)

    if guess is not None:
        guess = check_per_atom("guess", guess, n).astype(dtype)
    smear = None if coul.smearing is None else jnp.asarray(coul.smearing, dtype)
    q, lam, info, energy, phi, forces, stress_out = _equilibrate(
        positions, chi, hard, sigma, cell, smear, neighbors, kvectors, labels, jnp.asarray(totals, dtype), guess,
        perm, method=coul.method, mesh=coul.mesh, background=background, solver=solver, tol=tol,
        maxiter=int(maxiter), want_stress=bool(stress and cell is not None), mesh_precondition=mesh_pre)
    result = QeqResult(charges=q, energy=energy, chemical_potential=lam, potentials=phi, forces=forces,
                       stress=stress_out, info=info, params=params)
    conv = concrete_value(info.converged)
    if conv is not None and not bool(conv):
        res = concrete_value(info.residual)
        if solver == "dense":
            raise ValueError("the dense Qeq factorisation failed: the system is not positive definite "
                             "(check hardness ≥ 0 and sigma > 0).")
        raise ValueError(f"Qeq PCG did not converge in {int(maxiter)} iterations (relative residual "
                         f"{float(res):.3g} > tol={tol:g}); raise maxiter or loosen tol.")
    return result
