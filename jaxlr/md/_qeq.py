"""Charge equilibration in jax-md: :func:`qeq_neighbor_list` and the charge-carrying :func:`qeq_nve`.

Every call of the energy function re-equilibrates the charges (PCG with a PME matvec and
the long-range mesh preconditioner of :mod:`jaxlr.equilibration`); forces follow from the
envelope theorem (no extra solve) and second derivatives from the implicit solve.

In MD the charges of the previous step are an excellent start for the next solve.
:func:`qeq_nve` makes them part of the simulation state and propagates the start
time-reversibly with Niklasson's extended Lagrangian (XL-BOMD: auxiliary charges n that
follow the equilibrated ones through a harmonic well, with a weak dissipation that damps
numerical noise):

    n(t+δt) = 2 n(t) − n(t−δt) + κ (q(t) − n(t)) + α Σ_k c_k n(t−kδt),

A.M.N. Niklasson, P. Steneteg, A. Odell, N. Bock, M. Challacombe, C.J. Tymczak, E.
Holmström, G. Zheng and V. Weber, J. Chem. Phys. 130, 214109 (2009), Table I.  The
solve at t+δt starts from n(t+δt).  A plain "previous charges" start breaks time
reversibility: the unconverged part of the solve then drifts the energy steadily, while
the time-reversible start keeps the drift down at loose solver tolerances.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics import CoulombParams, coulomb_energy
from ..equilibration import mesh_correction, preconditioner_mesh, qeq_energy, qeq_solve
from ..system import check_accuracy, is_concrete
from ..tuning import plan_qeq
from ._coulomb import standin_positions, tune_for_box
from ._space import Geometry, make_geometry, real_positions, validate_setup

__all__ = ["QeqEnergy", "QeqNVEState", "XL_COEFFICIENTS", "qeq_neighbor_list", "qeq_nve"]

#: Niklasson et al. (2009), Table I: order K → (κ, α, (c_0 … c_K)) of the dissipative
#: extended-Lagrangian propagation of the auxiliary charges
XL_COEFFICIENTS = {
    3: (1.69, 0.150, (-2.0, 3.0, 0.0, -1.0)),
    4: (1.75, 0.057, (-3.0, 6.0, -2.0, -2.0, 1.0)),
    5: (1.82, 0.018, (-6.0, 14.0, -8.0, -3.0, 4.0, -1.0)),
    6: (1.84, 0.0055, (-14.0, 36.0, -27.0, -2.0, 12.0, -6.0, 1.0)),
    7: (1.86, 0.0016, (-36.0, 99.0, -88.0, 11.0, 32.0, -25.0, 8.0, -1.0)),
}


def _per_atom(name, x, n, *, positive=False, nonneg=False):
    a = jnp.asarray(x)
    if a.ndim == 0:
        if n is None:
            raise ValueError(f"{name} is a scalar but the atom count is unknown; pass an (N,) array.")
        a = jnp.full((n,), a)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        raise ValueError(f"{name} must have shape ({n if n is not None else 'N'},), got {a.shape}.")
    v = np.asarray(a)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf.")
    if positive and np.any(v <= 0):
        raise ValueError(f"{name} must be > 0 (got min {v.min():g}).")
    if nonneg and np.any(v < 0):
        raise ValueError(f"{name} must be ≥ 0: with J_i < 0 the Qeq matrix can be indefinite (no minimum).")
    return a


class QeqEnergy:
    """The jittable energy function of :func:`qeq_neighbor_list` (a callable object).

    ``energy_fn(R, neighbor, *, guess=None, electronegativity=None, hardness=None,
    box=None, perturbation=None)`` → the equilibrated energy E* (eV).  Methods
    :meth:`solve` (charges and solver status) and :meth:`forces_and_solution` (what
    :func:`qeq_nve` calls each step).

    Attributes:
      params: the :class:`jaxlr.CoulombParams` (PME) in use.
      electronegativity, hardness, sigma: the defaults, (N,) in V, V/e and Å.
      total_charge: Σ q (e).
      tol, maxiter: PCG settings.
      preconditioner: "mesh" or "jacobi".
    """

    def __init__(self, geometry: Geometry, params: CoulombParams, chi, hard, sigma, total_charge, background,
                 tol, maxiter, preconditioner, pre_mesh):
        self._geometry = geometry
        self.params = params
        self.electronegativity = chi
        self.hardness = hard
        self.sigma = sigma
        self.total_charge = float(total_charge)
        self.background = bool(background)
        self.tol = float(tol)
        self.maxiter = int(maxiter)
        self.preconditioner = preconditioner
        self._pre_mesh = pre_mesh

    @property
    def fractional_coordinates(self) -> bool:
        return self._geometry.fractional

    def _setup(self, R, neighbor, electronegativity, hardness, box, perturbation, guess, precondition=True):
        geo = self._geometry
        R_real, cell = geo.real(R, box, perturbation)
        n = R_real.shape[0]
        dtype = R_real.dtype
        chi = self.electronegativity if electronegativity is None else jnp.asarray(electronegativity)
        hard = self.hardness if hardness is None else jnp.asarray(hardness)
        for name, x in (("electronegativity", chi), ("hardness", hard)):
            if x.shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {x.shape}.")
        if hardness is not None and is_concrete(hard) and np.any(np.asarray(hard) < 0):
            raise ValueError("hardness must be ≥ 0.")
        if guess is not None:
            guess = jnp.asarray(guess)
            if guess.shape != (n,):
                raise ValueError(f"guess must have shape ({n},), got {guess.shape}.")
            guess = guess.astype(dtype)
        nbrs = geo.neighbors(neighbor, R_real, cell)
        sig = self.sigma.astype(dtype)
        hard = hard.astype(dtype)
        corr = None
        if self._pre_mesh is not None and precondition:
            corr = mesh_correction(R_real, hard, sig, cell, self._pre_mesh)
        p = self.params
        kw = dict(cell=cell, smearing=jnp.asarray(p.smearing, dtype), neighbors=nbrs, method=p.method, mesh=p.mesh,
                  background=self.background, fragment_charges=jnp.full((1,), self.total_charge, dtype),
                  solver="pcg", tol=self.tol, maxiter=self.maxiter, guess=guess, preconditioner=corr)
        return R_real, chi.astype(dtype), hard, sig, kw

    def __call__(self, R, neighbor=None, *, guess=None, electronegativity=None, hardness=None, box=None,
                 perturbation=None, **kwargs):
        if kwargs:
            raise ValueError(f"unknown keyword argument(s) {sorted(kwargs)}; the Qeq energy takes neighbor=, "
                             "guess=, electronegativity=, hardness=, box= and perturbation=.")
        R_real, chi, hard, sig, kw = self._setup(R, neighbor, electronegativity, hardness, box, perturbation, guess)
        return qeq_energy(R_real, chi, hard, sig, **kw)

    def solve(self, R, neighbor=None, *, guess=None, electronegativity=None, hardness=None, box=None):
        """Equilibrated charges at ``R``: a :class:`jaxlr.equilibration.QeqSolution`
        ``(charges (N,) e, chemical_potential (1,) V, info)`` with ``info.iterations`` the
        PCG iterations and ``info.converged`` (jittable)."""
        R_real, chi, hard, sig, kw = self._setup(R, neighbor, electronegativity, hardness, box, None, guess)
        return qeq_solve(R_real, chi, hard, sig, **kw)

    def forces_and_solution(self, R, neighbor=None, *, guess=None, box=None):
        """``(energy (eV), forces (N, 3) eV/Å, QeqSolution)`` with one solve (jittable).

        The forces are the Hellmann–Feynman forces at the solved charges (envelope
        theorem), equal to ``-grad(energy_fn)`` when the solve has converged.
        """
        sol = self.solve(R, neighbor, guess=guess, box=box)
        q = jax.lax.stop_gradient(sol.charges)

        def energy(r):
            R_real, chi, hard, sig, kw = self._setup(r, neighbor, None, None, box, None, None, precondition=False)
            coul = coulomb_energy(R_real, q, cell=kw["cell"], sigma=sig, smearing=kw["smearing"],
                                  neighbors=kw["neighbors"], method=kw["method"], mesh=kw["mesh"],
                                  background=self.background)
            return jnp.sum(chi * q + 0.5 * hard * q**2) + coul

        e, g = jax.value_and_grad(energy)(R)
        return e, -g, sol


def qeq_neighbor_list(displacement_fn, box, *, electronegativity, hardness, sigma, total_charge: float = 0.0,
                      accuracy: float = 1e-5, tol: float = 1e-6, maxiter: int = 500, preconditioner: str = "mesh",
                      fractional_coordinates: bool = True, dr_threshold: float = 0.5,
                      capacity_multiplier: float = 1.25, format=None, positions_for_tuning=None,
                      background: bool = False, params: CoulombParams | None = None):
    """Charge-equilibrated (Qeq) energy in the jax-md idiom: ``neighbor_fn, energy_fn`` (host set-up).

    The energy is ``E* = min_q Σ_i (χ_i q_i + ½ J_i q_i²) + E_coul(q; σ)`` subject to
    ``Σ q_i = total_charge`` (Gaussian charges, periodic PME electrostatics), re-solved at
    every call by matrix-free PCG (one PME potential per iteration) with the long-range
    mesh preconditioner.  Forces ``-grad(energy_fn)`` are the Hellmann–Feynman forces at
    the equilibrated charges (no extra solve); second derivatives go through the implicit
    solve.  Box, coordinate, neighbour-list and overflow conventions are those of
    :func:`coulomb_neighbor_list`.

    Args:
      displacement_fn, box: as :func:`coulomb_neighbor_list` (jax-md box: columns are
        lattice vectors).
      electronegativity: (N,) χ in V.  hardness: (N,) J ≥ 0 in V/e.  sigma: (N,) Gaussian
        widths > 0 in Å (scalars are broadcast when N is known from another argument).
      total_charge: Σ q (e); a non-zero total needs ``background=True``.
      accuracy: relative RMS force accuracy of the PME electrostatics.
      tol: PCG relative residual (the charges' accuracy; forces are first order in it).
      maxiter: PCG iteration cap (static).  preconditioner: "mesh" (default) or "jacobi".
      fractional_coordinates, dr_threshold, capacity_multiplier, format,
      positions_for_tuning, params: as :func:`coulomb_neighbor_list`.

    Returns:
      ``(neighbor_fn, energy_fn)``, ``energy_fn`` a :class:`QeqEnergy`,
      ``energy_fn(R, neighbor, *, guess=None, electronegativity=None, hardness=None,
      box=None, perturbation=None)`` → E* (eV), jittable; ``guess`` (N,) warm-starts the
      solve.  ``energy_fn.solve(R, neighbor, guess=…)`` returns the charges and the PCG
      iterations; :func:`qeq_nve` carries the charges step to step.

    Raises:
      ValueError: as :func:`coulomb_neighbor_list`; σ ≤ 0, J < 0, shapes that disagree, a
        net charge without ``background``, an unknown preconditioner.

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import qeq_neighbor_list
      >>> R = jnp.asarray(np.random.default_rng(0).random((16, 3)))           # fractional
      >>> chi = jnp.asarray(np.tile([0.0, 4.0], 8))
      >>> displacement, shift = space.periodic_general(12.0)
      >>> neighbor_fn, energy_fn = qeq_neighbor_list(displacement, 12.0, electronegativity=chi, hardness=10.0,
      ...                                            sigma=1.0, accuracy=1e-3, positions_for_tuning=R)
      >>> nbrs = neighbor_fn.allocate(R)
      >>> q, mu, info = energy_fn.solve(R, nbrs)
      >>> abs(float(q.sum())) < 1e-5, bool(info.converged)
      (True, True)
    """
    from jax_md import partition

    if format is None:
        format = partition.Dense
    accuracy = check_accuracy(accuracy)
    if not 0.0 < float(tol) < 1.0:
        raise ValueError(f"tol (PCG relative residual) must lie in (0, 1), got {tol!r}.")
    if int(maxiter) < 1:
        raise ValueError(f"maxiter must be ≥ 1, got {maxiter!r}.")
    if preconditioner not in ("mesh", "jacobi"):
        raise ValueError(f"preconditioner must be 'mesh' or 'jacobi', got {preconditioner!r}.")
    if box is None:
        raise ValueError("qeq_neighbor_list is for periodic boxes; for an open boundary call jaxlr.qeq_energy "
                         "(method='direct') in your energy function.")
    b = validate_setup(displacement_fn, box, fractional_coordinates=fractional_coordinates,
                       dr_threshold=dr_threshold, capacity_multiplier=capacity_multiplier, format=format)
    total = float(total_charge)
    if not np.isfinite(total):
        raise ValueError(f"total_charge must be finite, got {total_charge!r}.")
    if total != 0.0 and not background:
        raise ValueError(f"total_charge={total:g} in a periodic cell needs background=True (uniform neutralising "
                         "background).")
    n = None
    for x in (electronegativity, hardness, sigma):
        if np.ndim(x) == 1:
            n = np.shape(x)[0] if n is None else n
    pos = None
    if positions_for_tuning is not None:
        pos = real_positions(positions_for_tuning, b, fractional_coordinates)
        if n is not None and pos.shape[0] != n:
            raise ValueError(f"positions_for_tuning holds {pos.shape[0]} atoms but the per-atom parameters {n}.")
        n = pos.shape[0]
    chi = _per_atom("electronegativity", electronegativity, n)
    hard = _per_atom("hardness", hardness, n, nonneg=True)
    sig = _per_atom("sigma", sigma, n, positive=True)
    n = chi.shape[0]
    if params is None:
        if pos is None:
            pos = standin_positions(n, b)
        sig_np = np.asarray(sig, dtype=np.float64)
        plan = plan_qeq(pos, sig_np, cell=b.T, method="pme", solver="pcg", accuracy=accuracy,
                        background=background, dtype=jnp.zeros(()).dtype.name)
        params = plan.params
        if params.cutoff + dr_threshold > 0.5 * float(np.min(_widths(b))):
            q_stand = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
            if n % 2:
                q_stand[-1] = 0.0
            params = tune_for_box(pos, q_stand, b, sig_np, method="pme", accuracy=accuracy, background=background,
                                  dr_threshold=float(dr_threshold), costs={"pair": plan.pair_cost})
    elif not isinstance(params, CoulombParams) or params.method != "pme" or params.mesh is None:
        raise ValueError("params must be a jaxlr.CoulombParams with method='pme', a smearing, cutoff and mesh.")
    geometry = make_geometry(displacement_fn, box, cutoff=params.cutoff, n_atoms=n,
                             fractional_coordinates=fractional_coordinates, dr_threshold=dr_threshold,
                             capacity_multiplier=capacity_multiplier, format=format, what="the real-space cutoff")
    pre_mesh = preconditioner_mesh(b.T) if preconditioner == "mesh" else None
    energy_fn = QeqEnergy(geometry, params, chi, hard, sig, total, background, tol, maxiter, preconditioner,
                          pre_mesh)
    return geometry.neighbor_fn, energy_fn


def _widths(box: np.ndarray) -> np.ndarray:
    from ..system import perpendicular_widths

    return perpendicular_widths(box.T)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QeqNVEState:
    """State of :func:`qeq_nve` (a pytree): jax-md's NVE state plus the charges.

    Attributes:
      position: (N, 3) positions (fractional or Å, as the space).  momentum: (N, 3).
      force: (N, 3) eV/Å.  mass: () or (N, 1).
      energy: () potential energy (eV) at ``position``: E* plus ``other_energy_fn``.
      charges: (N,) e, equilibrated at ``position``.
      aux: (K+1, N) auxiliary (extended-Lagrangian) charges n(t), n(t−δt), … — the
        previous charges only (K = 0) for ``xl_order=0``.
      iterations: () PCG iterations of the last solve.  converged: () bool.
    """

    position: jax.Array
    momentum: jax.Array
    force: jax.Array
    mass: jax.Array
    energy: jax.Array
    charges: jax.Array
    aux: jax.Array
    iterations: jax.Array
    converged: jax.Array

    @property
    def velocity(self) -> jax.Array:
        return self.momentum / self.mass

    def set(self, **kwargs) -> "QeqNVEState":
        """A copy with some fields replaced (jax-md's ``state.set``)."""
        return dataclasses.replace(self, **kwargs)


def qeq_nve(energy_fn: QeqEnergy, shift_fn, dt: float, *, xl_order: int = 5, other_energy_fn=None):
    """Velocity-Verlet NVE whose state carries the Qeq charges: ``init_fn, apply_fn`` (jax-md style).

    Each step solves the charges once, starting from the time-reversible
    extended-Lagrangian prediction n(t+δt) (Niklasson et al. 2009, see
    :mod:`jaxlr.md` / ``XL_COEFFICIENTS``), and integrates with the Hellmann–Feynman
    forces at the solved charges.  ``xl_order=0`` starts from the previous step's charges
    instead (simpler, not time-reversible: the energy drifts more at loose tolerances).

    Units: jax-md is unit-agnostic; with Å, eV and masses in amu the time unit is
    Å·√(amu/eV) ≈ 10.18 fs (so ``dt = 1 fs`` is ``dt ≈ 0.0982``) and kT is in eV.

    Args:
      energy_fn: a :class:`QeqEnergy` from :func:`qeq_neighbor_list`.
      shift_fn: the jax-md shift function of the same space.
      dt: time step (> 0).  xl_order: 0 or 3 … 7 (``XL_COEFFICIENTS``).
      other_energy_fn: optional jax-md energy function of the other terms (e.g. a
        short-range repulsion), called as ``other_energy_fn(R, neighbor=neighbor)``; its
        energy and forces are added to the Qeq ones.

    Returns:
      ``(init_fn, apply_fn)``: ``init_fn(key, R, kT, mass=1.0, *, neighbor, momenta=None)``
      → :class:`QeqNVEState` (cold solve, Maxwell–Boltzmann momenta at kT > 0 unless
      ``momenta`` are given); ``apply_fn(state, *, neighbor)`` → the next state; both
      jittable.  ``state.iterations`` is the PCG count of the step; total energy is
      ``state.energy + jax_md.quantity.kinetic_energy(momentum=state.momentum,
      mass=state.mass)``.

    Raises:
      ValueError: dt ≤ 0, an unknown ``xl_order``, kT ≤ 0 without momenta, an energy
        function that is not a :class:`QeqEnergy`.

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import qeq_neighbor_list, qeq_nve
      >>> R = jnp.asarray(np.random.default_rng(0).random((16, 3)))
      >>> chi = jnp.asarray(np.tile([0.0, 4.0], 8))
      >>> displacement, shift = space.periodic_general(12.0)
      >>> neighbor_fn, energy_fn = qeq_neighbor_list(displacement, 12.0, electronegativity=chi, hardness=10.0,
      ...                                            sigma=1.0, accuracy=1e-3, positions_for_tuning=R)
      >>> init_fn, apply_fn = qeq_nve(energy_fn, shift, dt=0.01)
      >>> nbrs = neighbor_fn.allocate(R)
      >>> state = init_fn(jax.random.PRNGKey(0), R, 0.025, mass=20.0, neighbor=nbrs)
      >>> state = apply_fn(state, neighbor=nbrs.update(state.position))
      >>> state.charges.shape, bool(state.converged)
      ((16,), True)
    """
    if not isinstance(energy_fn, QeqEnergy):
        raise ValueError("qeq_nve needs the energy function of jaxlr.md.qeq_neighbor_list (a QeqEnergy).")
    try:
        dt = float(dt)
    except (TypeError, ValueError):
        raise ValueError(f"dt must be a positive number, got {dt!r}.") from None
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"the time step dt must be > 0, got {dt!r}.")
    if xl_order != 0 and xl_order not in XL_COEFFICIENTS:
        raise ValueError(f"xl_order must be 0 (previous charges) or one of {sorted(XL_COEFFICIENTS)}, "
                         f"got {xl_order!r}.")
    n_hist = 1 if xl_order == 0 else xl_order + 1

    def forces(R, neighbor, guess, box):
        e, f, sol = energy_fn.forces_and_solution(R, neighbor, guess=guess, box=box)
        if other_energy_fn is not None:
            kw = {} if box is None else {"box": box}
            e2, g2 = jax.value_and_grad(lambda r: other_energy_fn(r, neighbor=neighbor, **kw))(R)
            e, f = e + e2, f - g2
        return e, f, sol

    def init_fn(key, R, kT=None, mass=1.0, *, neighbor=None, momenta=None):
        R = jnp.asarray(R)
        dtype = R.dtype
        if momenta is None:
            if kT is None or (is_concrete(kT) and not float(kT) > 0):
                raise ValueError(f"kT (the temperature in eV) must be > 0 to draw momenta, got {kT!r}; or pass "
                                 "momenta=.")
        m = jnp.asarray(mass, dtype)
        if m.ndim == 1:
            m = m[:, None]
        if is_concrete(m) and np.any(np.asarray(m) <= 0):
            raise ValueError("masses must be > 0.")
        e, f, sol = forces(R, neighbor, None, None)
        if momenta is None:
            p = jnp.sqrt(m * kT) * jax.random.normal(key, R.shape, dtype)
            p = p - jnp.mean(p, axis=0, keepdims=True)
        else:
            p = jnp.asarray(momenta, dtype)
        q = sol.charges
        return QeqNVEState(position=R, momentum=p, force=f, mass=m, energy=e, charges=q,
                           aux=jnp.broadcast_to(q, (n_hist,) + q.shape), iterations=sol.info.iterations,
                           converged=sol.info.converged)

    def apply_fn(state: QeqNVEState, *, neighbor=None, **kwargs):
        p = state.momentum + 0.5 * dt * state.force
        R = shift_fn(state.position, dt * p / state.mass, **kwargs)
        hist = state.aux
        if xl_order == 0:
            guess = state.charges
            new_hist = state.charges[None]
        else:
            kappa, alpha, c = XL_COEFFICIENTS[xl_order]
            c = jnp.asarray(c, hist.dtype)
            guess = (2.0 * hist[0] - hist[1] + kappa * (state.charges - hist[0])
                     + alpha * jnp.tensordot(c, hist, axes=1))
            new_hist = jnp.concatenate([guess[None], hist[:-1]], axis=0)
        e, f, sol = forces(R, neighbor, guess, kwargs.get("box"))
        p = p + 0.5 * dt * f
        return QeqNVEState(position=R, momentum=p, force=f, mass=state.mass, energy=e, charges=sol.charges,
                           aux=new_hist, iterations=sol.info.iterations, converged=sol.info.converged)

    return init_fn, apply_fn
