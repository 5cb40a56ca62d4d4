"""The ensembles of :func:`jaxlr.md.run_md` on top of jax-md's integrators (internal).

Each ensemble is an :class:`Integrator` of pure, jittable functions over a *carry* — a
dict ``{"md": jax-md state}`` plus, for charge equilibration under a thermostat or
barostat, ``{"charges": (N,), "iterations": ()}`` — and a tuple of jax-md neighbour
lists (one per force-field term):

* ``nve`` — ``jax_md.simulate.nve`` (velocity Verlet); with Qeq, :func:`jaxlr.md.qeq_nve`,
  whose state carries the charges with the time-reversible extended-Lagrangian start.
* ``nvt-nh`` — ``simulate.nvt_nose_hoover`` (Nosé–Hoover chain, time constant τ_T).
* ``nvt-langevin`` — ``simulate.nvt_langevin`` (BAOAB, friction γ = 1/τ_T).
* ``npt`` — ``simulate.npt_nose_hoover`` (isotropic MTK barostat, chains on particles
  and box; time constants τ_T and τ_P; the box passes into the energy as ``box=``).

With Qeq under ``nvt-*``/``npt`` the previous step's charges are handed to the energy as
the PCG start (``guess=``) and the charges of the new positions are solved once more
after the step from the same start (jax-md's states have no slot for them), so those runs
cost about two solves per step; ``nve`` needs one.

Units: jax-md's with Å, eV and amu — time in Å·√(amu/eV) ≈ 10.18 fs, kT in eV, pressure
in eV/Å³.  Temperatures use 3N degrees of freedom (jax-md's ``count_dof``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ._qeq import qeq_nve

__all__ = ["ENSEMBLES", "Integrator", "make_integrator", "half_width"]

#: the ensembles of :func:`jaxlr.md.run_md`
ENSEMBLES = ("nve", "nvt-nh", "nvt-langevin", "npt")


class Integrator(NamedTuple):
    """Pure functions of one ensemble (all jittable except ``init``'s host checks).

    init(key, R, neighbors, momenta, box) → carry;  step(carry, neighbors) → carry;
    box(carry) → (3, 3) jax-md box;  observe(carry, neighbors) → dict of scalars;
    frame(carry, neighbors) → dict of per-atom arrays;  box_kwargs(carry) → ``{}`` or
    ``{"box": box}`` for the neighbour-list update.
    """

    init: Callable
    step: Callable
    box: Callable
    observe: Callable
    frame: Callable
    box_kwargs: Callable


def half_width(box):
    """Half the smallest perpendicular width of a jax-md (column) box (jittable), Å.

    Example:
      >>> import jax.numpy as jnp
      >>> float(half_width(jnp.diag(jnp.array([10.0, 12.0, 14.0]))))
      5.0
    """
    a = box.T
    vol = jnp.abs(jnp.linalg.det(a))
    areas = jnp.stack([jnp.linalg.norm(jnp.cross(a[1], a[2])), jnp.linalg.norm(jnp.cross(a[2], a[0])),
                       jnp.linalg.norm(jnp.cross(a[0], a[1]))])
    return 0.5 * jnp.min(vol / areas)


def make_integrator(ff, shift_fn, ensemble: str, *, dt: float, kT: float | None, pressure: float | None,
                    tau_t: float, tau_p: float, reference_box, masses, kB: float) -> Integrator:
    """The :class:`Integrator` of ``ensemble`` for the force field ``ff`` (host; see module docstring).

    ``dt``, ``tau_t``, ``tau_p`` in jax-md time units; ``kT`` in eV; ``pressure`` in eV/Å³;
    ``reference_box`` the (3, 3) jax-md box the force field was built for; ``masses`` (N,)
    amu; ``kB`` Boltzmann's constant in eV/K (for the temperature column).

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import molten_nacl
      >>> from jaxlr.md._forcefield import build_forcefield
      >>> atoms = molten_nacl(64)
      >>> box = atoms.cell.array.T
      >>> displacement, shift = space.periodic_general(jnp.asarray(box))
      >>> ff = build_forcefield("nacl", atoms.numbers, box, displacement, atoms.get_scaled_positions(),
      ...                       accuracy=1e-3, dr_threshold=0.5, capacity_multiplier=1.25,
      ...                       dtype=jnp.zeros(()).dtype.type)
      >>> integ = make_integrator(ff, shift, "nvt-langevin", dt=0.1, kT=0.1, pressure=None, tau_t=10.0,
      ...                         tau_p=100.0, reference_box=jnp.asarray(box), masses=jnp.asarray(atoms.get_masses()),
      ...                         kB=8.617e-5)
      >>> integ._fields
      ('init', 'step', 'box', 'observe', 'frame', 'box_kwargs')
    """
    from jax_md import quantity, simulate

    qeq = ff.qeq is not None
    npt = ensemble == "npt"
    ref_box = jnp.asarray(reference_box)
    mass = jnp.asarray(masses)
    n_atoms = mass.shape[0]

    def box_of(carry):
        return simulate.npt_box(carry["md"]) if npt else ref_box.astype(carry["md"].position.dtype)

    def box_kwargs(carry):
        return {"box": box_of(carry)} if npt else {}

    xl_nve = qeq and ensemble == "nve"

    def charges_of(carry):
        if xl_nve:
            return carry["md"].charges
        return carry["charges"] if qeq else None

    if xl_nve:
        def make(nbrs):
            rest = tuple(nbrs[1:])
            other = None
            if rest:
                def other(r, neighbor=None, **kw):
                    return ff.other_energy(r, rest, **kw)
            return qeq_nve(ff.qeq, shift_fn, dt, xl_order=5, other_energy_fn=other)

        def init(key, R, nbrs, momenta, box=None):
            init_fn, _ = make(nbrs)
            return {"md": init_fn(key, R, kT, mass, neighbor=nbrs[0], momenta=momenta)}

        def step(carry, nbrs):
            _, apply_fn = make(nbrs)
            return {"md": apply_fn(carry["md"], neighbor=nbrs[0])}
    else:
        energy = ff.energy
        if ensemble == "nve":
            init_fn, apply_fn = simulate.nve(energy, shift_fn, dt)
        elif ensemble == "nvt-nh":
            init_fn, apply_fn = simulate.nvt_nose_hoover(energy, shift_fn, dt, kT, tau=tau_t)
        elif ensemble == "nvt-langevin":
            init_fn, apply_fn = simulate.nvt_langevin(energy, shift_fn, dt, kT, gamma=1.0 / tau_t)
        elif npt:
            init_fn, apply_fn = simulate.npt_nose_hoover(energy, shift_fn, dt, pressure, kT,
                                                         barostat_kwargs={"tau": tau_p},
                                                         thermostat_kwargs={"tau": tau_t})
        else:
            raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {ENSEMBLES}.")

        def solve(R, nbrs, guess, box):
            sol = ff.qeq.solve(R, nbrs[0], guess=guess, box=box)
            return {"charges": sol.charges, "iterations": sol.info.iterations}

        def init(key, R, nbrs, momenta, box=None):
            kw = {"neighbor": nbrs}
            extra = {}
            if qeq:
                extra = solve(R, nbrs, None, None if box is None or not npt else box)
                kw["guess"] = extra["charges"]
            if ensemble == "nve":
                state = init_fn(key, R, kT if momenta is None else 1.0, mass=mass, momenta=momenta, **kw)
            elif npt:
                state = init_fn(key, R, box, mass=mass, momenta=momenta, **kw)
            else:
                state = init_fn(key, R, mass=mass, momenta=momenta, **kw)
            return {"md": state, **extra}

        def step(carry, nbrs):
            kw = {"neighbor": nbrs}
            if qeq:
                kw["guess"] = carry["charges"]
            new = {"md": apply_fn(carry["md"], **kw)}
            if qeq:
                new.update(solve(new["md"].position, nbrs, carry["charges"], box_of(new) if npt else None))
            return new

    def observe(carry, nbrs):
        st = carry["md"]
        box = box_of(carry)
        dtype = st.position.dtype
        kw = {"box": box} if npt else {}
        q = charges_of(carry)
        if qeq:
            kw["guess"] = q

        def U(eps):
            return ff.energy(st.position, nbrs, perturbation=1.0 + eps, **kw)

        pe, dU = jax.value_and_grad(U)(jnp.zeros((), dtype))
        ke = quantity.kinetic_energy(momentum=st.momentum, mass=st.mass)
        vol = jnp.abs(jnp.linalg.det(box))
        out = {"potential_eV": pe, "kinetic_eV": ke, "total_eV": pe + ke,
               "temperature_K": 2.0 * ke / (3 * n_atoms * kB),
               "pressure": (2.0 * ke - dU) / (3.0 * vol), "volume_A3": vol}
        if ensemble == "nvt-nh":
            out["conserved_eV"] = simulate.nvt_nose_hoover_invariant(lambda R, **k: pe, st, kT)
        elif npt:
            out["conserved_eV"] = simulate.npt_nose_hoover_invariant(lambda R, **k: pe, st, pressure, kT)
        else:
            out["conserved_eV"] = pe + ke       # Langevin: replaced by NaN on the host (no invariant)
        if qeq:
            out["pcg_iterations"] = carry["md"].iterations if xl_nve else carry["iterations"]
            out["total_charge_e"] = jnp.sum(q)
        return out

    def frame(carry, nbrs):
        st = carry["md"]
        box = box_of(carry)
        out = {"positions": st.position @ box.T, "momenta": st.momentum, "forces": st.force, "box": box}
        if qeq:
            out["charges"] = charges_of(carry)
        elif ff.fixed_charges is None and ff.has_charges:
            out["charges"] = ff.predicted_charges(st.position, nbrs, **({"box": box} if npt else {}))
        return out

    return Integrator(init, step, box_of, observe, frame, box_kwargs)
