"""Front doors of density coefficients (eager): :func:`density_qeq` and :func:`polarizability`.

Equations, basis and solvers: :mod:`jaxlr.equilibration` (``density_solve``).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._ewald import half_space_kvectors
from ..equilibration._density import (
    METHODS,
    SOLVERS,
    DensityParams,
    DensityResult,
    GaussianBasis,
    check_finite,
    check_local,
    check_shape,
    density_solve,
    fragment_totals,
    per_atom_widths,
    validated_widths,
)
from ..performance import costs
from ..system._checks import check_accuracy, check_cell, check_positions, concrete_value
from ..system._deprecation import renamed_keyword
from ..system._neighbors import Neighbors, neighbor_list
from ..tuning._density import tune_density

__all__ = ['density_qeq', 'polarizability']


@partial(jax.jit, static_argnames=("method", "mesh", "background", "solver", "tol", "maxiter"))
def _run(positions, sigma_s, sigma_p, linear, local, fragments, fragment_charges, active, field, cell, smearing,
         neighbors, kvectors, guess, *, method, mesh, background, solver, tol, maxiter):
    return density_solve(positions, sigma_s, sigma_p, linear, local, fragments=fragments,
                         fragment_charges=fragment_charges, active=active, field=field, cell=cell,
                         smearing=smearing, neighbors=neighbors, kvectors=kvectors, method=method, mesh=mesh,
                         background=background, solver=solver, tol=tol, maxiter=maxiter, guess=guess)


def density_qeq(positions, species, linear, local, *, basis: GaussianBasis, cell=None, field=None,
                total_charge=0.0, fragments=None, fragment_charges=None, widths=None, method: str = "auto",
                solver: str = "auto", accuracy: float = 1e-6, tol: float | None = None, maxiter: int = 500,
                background: bool = False, smearing: float | None = None, cutoff: float | None = None,
                k_cutoff: float | None = None, mesh=None, order: int | None = None,
                neighbors: Neighbors | None = None, guess=None, x0=None) -> DensityResult:
    """Density coefficients, charges, dipoles and energy by multipolar charge equilibration.

    Minimises ``E(c) = Σ_i [b_iᵀc_i + ½ c_iᵀH_ic_i] + ½cᵀCc − F·Σ_i(q_iR_i + μ_i)`` subject to
    the fragment charge totals (see the module docstring for the basis conventions).

    Args:
      positions: (N, 3) Å.
      species: (N,) integers (atomic numbers) covered by ``basis`` (concrete).
      linear: (N, n_basis) linear terms b_i: eV/e for s slots, V (eV/(e·Å)) for p slots.
      local: (N, n_basis, n_basis) symmetric positive definite local matrices H_i.
      basis: :class:`GaussianBasis` (static).
      cell: (3, 3) Å, rows are lattice vectors (periodic), or None (open boundary).
      field: (3,) uniform external field F in V/Å (open boundary only), or None.
      total_charge: net charge Q (e) of a single fragment.  With ``fragment_charges`` it is
        their sum (0, the default, means "not given"; a non-zero value must agree), as in
        :func:`jaxlr.qeq`.
      fragments: (N,) integer labels 0…F−1, every label used (concrete);
        ``fragment_charges``: (F,) totals Q_f (e), default all 0.
      widths: optional ``(s (n_species, n_s), p (n_species, n_p))`` widths (Å) replacing the
        basis defaults; may be traced (∂/∂widths).
      method: "auto" (direct when open; Ewald up to 1500 coefficients, PME beyond),
        "direct", "ewald" or "pme".
      solver: "auto" (dense, PCG for PME), "dense" or "pcg".
      accuracy: target relative accuracy of the periodic Coulomb operator; also the PCG
        tolerance unless ``tol`` is given.
      maxiter: PCG iteration cap.  background: allow a net charge in a periodic cell.
      smearing, cutoff, k_cutoff, mesh, order, neighbors: override the periodic parameters
        (Å, Å, 1/Å, (K1, K2, K3) or a :class:`jaxlr.MeshSpec`, spline order, a full
        :class:`jaxlr.Neighbors` list with cutoff ≥ ``cutoff``).
      guess: (N, n_basis) warm start for PCG (e.g. the previous MD step's coefficients).
      x0: deprecated spelling of ``guess``.

    Returns:
      :class:`DensityResult` (coefficients, charges, dipoles, total_dipole, energy,
      chemical_potential, solver status).  Works under ``jax.grad``/``jax.jit`` with traced
      positions (open boundary), linear, local, widths, field and fragment charges.

    Raises:
      ValueError: bad shapes, NaN/inf, unknown species, non-positive widths, a local
        matrix that is not symmetric positive definite, inconsistent fragment labels or
        totals, a field with a periodic cell, a net periodic charge without ``background``.
      ValueError: also when the solver did not converge (eager calls, as :func:`jaxlr.qeq`;
        under jit read ``.converged`` and ``.residual``).

    Example:
      >>> import numpy as np
      >>> from jaxlr import GaussianBasis, density_qeq
      >>> basis = GaussianBasis(species=(1, 8), s_widths=((0.5,), (0.4, 0.8)), p_widths=((0.6,), (0.5,)))
      >>> R = np.array([[0.0, 0.0, 0.0], [0.0, 0.76, 0.59], [0.0, -0.76, 0.59]])
      >>> Z = np.array([8, 1, 1]); nb = basis.n_basis
      >>> b = np.zeros((3, nb)); b[0, :2] = 3.0; b[1:, 0] = -3.0
      >>> H = np.tile(np.eye(nb) * 10.0, (3, 1, 1))
      >>> res = density_qeq(R, Z, b, H, basis=basis)
      >>> bool(res.charges[0] < 0), round(float(res.charges.sum()), 10) + 0.0
      (True, 0.0)
    """
    guess = renamed_keyword("x0", "guess", x0, guess, default=None, where="density_qeq")
    if not isinstance(basis, GaussianBasis):
        raise ValueError("basis must be a jaxlr.GaussianBasis.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}.")
    accuracy = check_accuracy(accuracy)
    pos_np = concrete_value(positions)
    positions = check_positions(positions)
    n = positions.shape[0]
    species_np = concrete_value(species)
    if species_np is None:
        raise ValueError("species must be concrete integers (they fix the basis layout).")
    if species_np.shape != (n,):
        raise ValueError(f"species must have shape ({n},) to match positions, got {species_np.shape}.")
    index = basis.index(species_np)
    nb = basis.n_basis
    check_shape("linear", linear, (n, nb))
    check_shape("local", local, (n, nb, nb))
    check_finite("linear", linear)
    local_np = check_finite("local", local)
    slot_mask = basis.slot_mask()[index]
    if local_np is not None:
        check_local(np.asarray(local_np, dtype=np.float64), slot_mask)
    if field is not None:
        check_shape("field", field, (3,))
        check_finite("field", field)
        if cell is not None:
            raise ValueError("a uniform external field is supported for an open boundary only: with a "
                             "periodic cell Σ q_i R_i depends on the images chosen. Pass cell=None.")
    labels, totals = fragment_totals(fragments, fragment_charges, total_charge, n)

    dtype = jnp.result_type(positions.dtype, jnp.asarray(linear).dtype, jnp.asarray(local).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.zeros(()).dtype
    s_w, p_w = validated_widths(basis, widths, dtype)
    positions = positions.astype(dtype)
    linear = jnp.asarray(linear, dtype)
    local = jnp.asarray(local, dtype)
    totals = jnp.asarray(totals, dtype)
    sigma_s, sigma_p, active = per_atom_widths(index, s_w, p_w, basis)
    field = None if field is None else jnp.asarray(field, dtype)
    tol = accuracy if tol is None else float(tol)

    if cell is None:
        if method in ("ewald", "pme"):
            raise ValueError(f"method={method!r} needs a periodic cell; use method='direct' (or 'auto').")
        use_solver = "dense" if solver == "auto" else solver
        params = DensityParams(method="direct", solver=use_solver, tol=tol, maxiter=int(maxiter))
        kvectors = None
        cell_j = None
    else:
        if method == "direct":
            raise ValueError("method='direct' is the open boundary; for a periodic cell use 'ewald' or 'pme'.")
        cell_np = concrete_value(cell)
        cell_j = check_cell(cell).astype(dtype)
        if cell_np is None:
            raise ValueError("density_qeq needs a concrete cell (k-vectors and mesh are chosen on the host); "
                             "use jaxlr.density_solve for derivatives with respect to the cell.")
        q_tot = concrete_value(totals)
        if q_tot is not None and not background and abs(float(np.sum(q_tot))) > 1e-10:
            raise ValueError(f"the cell carries a net charge of {float(np.sum(q_tot)):.6g} e: pass "
                             "background=True for a uniform neutralising background.")
        s_np, p_np = concrete_value(s_w), concrete_value(p_w)
        if s_np is None or p_np is None:
            if smearing is None or cutoff is None:
                raise ValueError("with traced widths in a periodic cell pass smearing= and cutoff= explicitly.")
            sigma_max = 0.0
        else:
            s_mask, p_mask = basis.shell_masks()
            sigma_max = float(max(np.max(s_np[s_mask]), np.max(p_np[p_mask], initial=0.0)))
        tuned = tune_density(cell_np, n, n * nb, sigma_max, method=method, accuracy=accuracy,
                             smearing=smearing, cutoff=cutoff, k_cutoff=k_cutoff, mesh=mesh, order=order)
        use_solver = ("pcg" if tuned.method == "pme" else "dense") if solver == "auto" else solver
        if tuned.method == "pme" and use_solver == "dense":
            raise ValueError("method='pme' is matrix-free: use solver='pcg' (or 'auto').")
        params = dataclasses.replace(tuned, solver=use_solver, background=bool(background), tol=tol,
                                     maxiter=int(maxiter))
        if neighbors is None:
            if pos_np is None:
                raise ValueError("density_qeq was called with traced positions in a periodic cell: pass "
                                 "neighbors= (a jaxlr.neighbor_list with cutoff ≥ cutoff=) and cutoff=.")
            neighbors = neighbor_list(pos_np, params.cutoff, cell_np)
        kvectors = None
        if params.method == "ewald":
            kvectors = jnp.asarray(half_space_kvectors(cell_np, params.k_cutoff), dtype)
    if params.solver == "dense" and n * nb > costs().dense_limit:
        raise ValueError(f"solver='dense' factorises an (N·n_basis)² matrix and is limited to {costs().dense_limit} "
                         f"unknowns (got {n * nb}); use solver='pcg' (periodic) or a smaller system.")
    if guess is not None:
        check_shape("guess", guess, (n, nb))
        check_finite("guess", guess)
    smear = None if params.smearing is None else jnp.asarray(params.smearing, dtype)
    result = _run(positions, sigma_s, sigma_p, linear, local, jnp.asarray(labels), totals, jnp.asarray(active),
                  field, cell_j, smear, neighbors, kvectors, None if guess is None else jnp.asarray(guess, dtype),
                  method=params.method, mesh=params.mesh, background=params.background, solver=params.solver,
                  tol=params.tol, maxiter=params.maxiter)
    result = dataclasses.replace(result, params=params)
    ok = concrete_value(result.converged)
    if ok is not None and not bool(ok):
        res = concrete_value(result.residual)
        raise ValueError(f"the density solve did not converge (relative residual {float(res):.3g} after "
                           f"{int(concrete_value(result.iterations))} iterations, solver={params.solver!r}); "
                           "raise maxiter, loosen tol, or check that the local matrices are well conditioned.")
    return result


def polarizability(positions, species, linear, local, *, basis: GaussianBasis, field=None, **kwargs):
    """Polarisability tensor α_αβ = ∂μ_α/∂F_β = −∂²E*/∂F_α∂F_β (e·Å²/V), open boundary.

    Forward-mode differentiation of :func:`density_qeq`'s total dipole with respect to the
    uniform field at ``field`` (default 0): three implicit tangent solves, exact up to the
    solver accuracy.  Symmetric, and positive definite for a molecule with SPD local
    matrices.  ``kwargs`` go to :func:`density_qeq`.

    Example:
      >>> import numpy as np
      >>> from jaxlr.equilibration import GaussianBasis
      >>> basis = GaussianBasis(species=(1,), s_widths=((0.5,),), p_widths=((0.6,),))
      >>> R = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.74]])
      >>> H = np.tile(np.eye(4) * 8.0, (2, 1, 1))
      >>> alpha = polarizability(R, np.array([1, 1]), np.zeros((2, 4)), H, basis=basis)
      >>> bool(alpha[2, 2] > alpha[0, 0] > 0)    # a diatomic is most polarisable along its axis
      True
    """
    f0 = jnp.zeros(3, jnp.result_type(jnp.asarray(positions).dtype, jnp.float32)) if field is None else field

    def dipole(f):
        return density_qeq(positions, species, linear, local, basis=basis, field=f, **kwargs).total_dipole

    return jax.jacfwd(dipole)(jnp.asarray(f0))
