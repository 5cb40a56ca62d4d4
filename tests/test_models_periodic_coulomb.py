"""Periodic electrostatics of the charge models with learned Gaussian widths (issue 21, item 2).

The plan (``Potential.adapted_to``) tunes the Ewald split for Gaussian charges up to a
width bound σ_max and switches the real-space kernel off smoothly at its cutoff, so

* the energy does not depend on the neighbour-list skin (lists built with
  ``pot.cutoff``, ``+0.5`` and ``+1.2`` Å), measured relative to the electrostatic part
  |E − Σ atom_energies| of the model energy;
* the latent model's Coulomb energy equals a converged Ewald sum of its charges/widths
  to the requested accuracy;
* the energy is smooth where a pair crosses the cutoff (finite difference = −force);
* NVE molecular dynamics conserves energy;
* a width grown past the plan's bound is flagged (``width_check``) and ``predict`` raises.

System: a jittered rock-salt box of 32 atoms (2 × 2 × 1 conventional cells, 11.28 ×
11.28 × 5.64 Å), widths 1 Å (latent, Qeq) or 0.8 / 1.1 Å s and 1.0 Å p (density).
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlr
from jaxlr.data import AtomsBatch
from jaxlr.models import build_potential
from jaxlr.models._electrostatics import smooth_switch
from jaxlr.system import neighbor_list, with_capacity

jax.config.update("jax_enable_x64", True)

SPECIES = (11, 17)
A = 5.64
LOCAL = dict(cutoff=3.0, max_radial=2, max_angular=1)
HYPER = {
    "latent": dict(local=LOCAL, hidden=(4,), charge_hidden=(4,), sigma=1.0),
    "qeq": dict(local=LOCAL, hidden=(4,), chi_hidden=(4,), sigma=1.0),
    "density": dict(local=LOCAL, hidden=(4,), coef_hidden=(4,), s_widths=(0.8, 1.1), p_width=1.0),
}
SKINS = (0.0, 0.5, 1.2)
MASSES = {0: 22.98977, 1: 35.453}             # amu (Na, Cl)
TIME_UNIT_FS = 10.180505710774743             # √(amu Å² / eV) in fs


def rock_salt(jitter=0.12, seed=0):
    base = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5]])
    pos, spc = [], []
    for i in range(2):
        for j in range(2):
            for b in base:
                pos.append((b + [i, j, 0]) * A)
                spc.append(0)
                pos.append((b + [i + .5, j, 0]) * A)
                spc.append(1)
    pos = np.array(pos) + np.random.default_rng(seed).normal(size=(len(pos), 3)) * jitter
    return pos, np.array(spc, np.int32), np.diag([2 * A, 2 * A, A])


POS, SPC, CELL = rock_salt()


def make_batch(pos, cutoff, capacity=None):
    nl = neighbor_list(np.asarray(pos, np.float64), cutoff, CELL)
    if capacity is not None:
        nl = with_capacity(nl, capacity)
    n = len(SPC)
    return AtomsBatch(positions=jnp.asarray(pos)[None], species=jnp.asarray(SPC)[None],
                      atom_mask=jnp.ones((1, n), bool), structure_mask=jnp.ones(1, bool),
                      total_charge=jnp.zeros(1), fragments=jnp.zeros((1, n), jnp.int32),
                      fragment_charges=jnp.zeros((1, 1)),
                      neighbors=jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], nl),
                      cell=jnp.asarray(CELL)[None])


def skin_batches(pot, pos=POS):
    """Batches with lists of cutoff pot.cutoff + skin, all at one capacity (one compilation)."""
    cap = neighbor_list(pos, pot.cutoff + max(SKINS), CELL).capacity
    return [make_batch(pos, pot.cutoff + skin, cap) for skin in SKINS]


_CACHE = {}


def model(name):
    """A planned potential and variables whose charges are ionic-ish (±0.5–1 e)."""
    if name not in _CACHE:
        pot = build_potential(name, species=SPECIES, **HYPER[name]).adapted_to([CELL])
        v = pot.init(jax.random.PRNGKey(0), make_batch(POS, pot.cutoff))
        params = jax.tree_util.tree_map(lambda x: x, v["params"])
        net = {"latent": "charge_net", "qeq": "chi_net", "density": "coef_net"}[name]
        last = max(k for k in params[net] if k.startswith("b"))
        bias = np.zeros(params[net][last].shape)
        bias[:, 0] = {"latent": (0.8, -0.8), "qeq": (-3.0, 3.0), "density": (-1.0, 1.0)}[name]
        params[net][last] = jnp.asarray(bias)
        params[net]["w" + last[1:]] = 0.1 * params[net]["w" + last[1:]]
        _CACHE[name] = (pot, {"params": params, "stats": v["stats"]})
    return _CACHE[name]


def test_plan_sets_cutoff_from_width_bound_and_keeps_open_boundary():
    pot = build_potential("latent", species=SPECIES, **HYPER["latent"])
    planned = pot.adapted_to([CELL])
    spec = planned.module.coulomb
    assert spec.sigma_max == pytest.approx(1.2)                  # WIDTH_MARGIN × initial 1 Å
    gamma = math.sqrt(2.0) * spec.sigma_max
    r_on = spec.cutoff - spec.switch_width
    # the Gaussian and the Ewald real-space tails at the start of the switch are below the accuracy
    assert math.erfc(r_on / (math.sqrt(2.0) * gamma)) < 1e-4 and math.erfc(r_on / (math.sqrt(2) * spec.smearing)) < 1e-4
    assert planned.cutoff == spec.cutoff > pot.cutoff
    # a declared bound is kept; a wider one asks for a longer cutoff
    wide = build_potential("latent", species=SPECIES, coulomb=dict(sigma_max=1.6), **HYPER["latent"])
    assert wide.adapted_to([CELL]).cutoff > planned.cutoff
    # open boundary: nothing planned, the neighbour cutoff stays the descriptors'
    open_pot = pot.adapted_to([None])
    assert open_pot.module.coulomb == pot.module.coulomb and open_pot.cutoff == pot.cutoff == LOCAL["cutoff"]


@pytest.mark.parametrize("name", ["latent", "qeq", pytest.param("density", marks=pytest.mark.slow)])
def test_energy_independent_of_skin(name):
    """Energies with neighbour lists of cutoff pot.cutoff + 0 / 0.5 / 1.2 Å agree to 1e-10
    of the electrostatic energy; the latent model's Coulomb energy equals a converged Ewald
    sum of its charges and widths to 1e-5 (relative)."""
    pot, v = model(name)
    apply = jax.jit(lambda v, b: pot.apply(v, b, forces=False))
    outs = [apply(v, b) for b in skin_batches(pot)]
    energies = np.array([float(o.energy[0]) for o in outs])
    e_el = float(outs[0].energy[0] - outs[0].atom_energies[0].sum())
    assert abs(e_el) > 0.1
    np.testing.assert_array_less(np.abs(energies - energies[0]) / abs(e_el), 1e-10)
    q = np.asarray(outs[0].charges[0])
    assert np.all(np.abs(q) > 0.05)
    if name == "latent":
        ref = jaxlr.coulomb(POS, q, cell=CELL, sigma=np.ones(len(q)), method="ewald", accuracy=1e-10)
        assert abs(e_el - float(ref.energy)) <= 1e-5 * abs(float(ref.energy))


def _pair_near_cutoff(pot):
    """(atom j, unit vector u, step t0) such that moving atom j by t0·u puts a pair of atom 0
    and an image of j exactly at the Coulomb cutoff (and changes no other pair by > |t0|)."""
    nl = neighbor_list(POS, pot.cutoff + 1.0, CELL)
    idx, mask, shifts = (np.asarray(x) for x in (nl.idx, nl.mask, nl.shifts))
    d = POS[idx[0]] - POS[0] + shifts[0] @ CELL
    r = np.linalg.norm(d, axis=1)
    gap = np.where(mask[0] & (idx[0] != 0), np.abs(r - pot.module.coulomb.cutoff), np.inf)
    k = int(np.argmin(gap))
    return int(idx[0, k]), d[k] / r[k], pot.module.coulomb.cutoff - r[k]


@pytest.mark.parametrize("name", ["latent", "qeq", pytest.param("density", marks=pytest.mark.slow)])
def test_energy_smooth_across_the_cutoff(name):
    """Move one atom so that a pair crosses r_c: central finite differences of the energy
    (step 1e-4 Å) equal −force along the path to 1e-6 eV/Å, and the energy is continuous."""
    pot, v = model(name)
    j, u, t0 = _pair_near_cutoff(pot)
    assert abs(t0) < 0.5
    cap = neighbor_list(POS, pot.cutoff + 1.2, CELL).capacity
    base = make_batch(POS, pot.cutoff + 1.2, cap)      # one list (skin 1.2 Å) along the whole path

    def at(t):
        pos = POS.copy()
        pos[j] += t * u
        return dataclasses.replace(base, positions=jnp.asarray(pos)[None])

    apply = jax.jit(lambda v, b: pot.apply(v, b, stress=False))
    h = 1e-4
    for t in (t0 - 0.3 * h, t0, t0 + 0.7 * h, t0 + 0.02):
        fd = (float(apply(v, at(t + h)).energy[0]) - float(apply(v, at(t - h)).energy[0])) / (2 * h)
        force = float(np.asarray(apply(v, at(t)).forces[0, j]) @ u)
        assert abs(fd + force) < 1e-6, (t - t0, fd, -force)
    # no jump: across r_c the energy changes by −F·Δ (Δ = 2e-7 Å) and nothing more
    e_in, e_out = (float(apply(v, at(t0 + s)).energy[0]) for s in (-1e-7, 1e-7))
    force = float(np.asarray(apply(v, at(t0)).forces[0, j]) @ u)
    assert abs(e_out - e_in + 2e-7 * force) < 1e-12


def test_switch_is_c2():
    r = jnp.linspace(1.5, 3.5, 401)
    s = smooth_switch(r, 2.0, 1.0)
    ds = jax.vmap(jax.grad(lambda x: smooth_switch(x, 2.0, 1.0)))(r)
    d2s = jax.vmap(jax.grad(jax.grad(lambda x: smooth_switch(x, 2.0, 1.0))))(r)
    assert float(s[0]) == 1.0 and float(s[-1]) == 0.0 and np.all(np.diff(np.asarray(s)) <= 0)
    for edge in (2.0, 3.0):
        k = int(np.argmin(np.abs(np.asarray(r) - edge)))
        assert abs(float(ds[k])) < 1e-12 and abs(float(d2s[k - 1])) < 0.5 and abs(float(d2s[k + 1])) < 0.5


def _repulsion(positions, nbrs, cell):
    """ε (b/r)^12 between all pairs, switched off between 4 and 5 Å (keeps ions apart)."""
    d = positions[nbrs.idx] - positions[:, None, :] + nbrs.shifts.astype(positions.dtype) @ cell
    r2 = jnp.sum(d * d, axis=-1)
    live = nbrs.mask & (r2 < 25.0)
    r = jnp.sqrt(jnp.where(live, r2, 1.0))
    return 0.5 * jnp.sum(jnp.where(live, (2.3 / r) ** 12 * smooth_switch(r, 4.0, 1.0), 0.0))


LATTICE = rock_salt(jitter=0.0)[0]


def nve_drift(n_steps, temperature=100.0, dt_fs=0.5, skin=0.5, rebuild=10, start=LATTICE, model_name="latent"):
    """Velocity Verlet of a charge model (+ repulsion) from ``start`` with Maxwell–Boltzmann
    velocities, the neighbour list (cutoff ``pot.cutoff + skin``) rebuilt on the host every
    ``rebuild`` steps, as MD codes do.

    Returns (drift in eV/atom/ps: slope of a linear fit of the total energy, RMS
    fluctuation of the total energy in eV/atom, largest displacement in Å, number of
    pairs that crossed the Coulomb cutoff).
    """
    pot, v = model(model_name)
    cap = neighbor_list(start, pot.cutoff + skin + 0.5, CELL).capacity
    cell = jnp.asarray(CELL)
    mass = jnp.asarray([MASSES[int(s)] for s in SPC])[:, None]
    dt = dt_fs / TIME_UNIT_FS
    r_c = pot.module.coulomb.cutoff

    def energy_forces(pos, batch):
        out = pot.apply(v, dataclasses.replace(batch, positions=pos[None]), stress=False)
        nbrs = jax.tree_util.tree_map(lambda x: x[0], batch.neighbors)
        e_rep, g_rep = jax.value_and_grad(_repulsion)(pos, nbrs, cell)
        return out.energy[0] + e_rep, out.forces[0] - g_rep

    def step(batch, carry, _):
        pos, vel, f = carry
        vel = vel + 0.5 * dt * f / mass
        pos = pos + dt * vel
        e, f = energy_forces(pos, batch)
        vel = vel + 0.5 * dt * f / mass
        return (pos, vel, f), e + 0.5 * jnp.sum(mass * vel * vel)

    @jax.jit
    def chunk(carry, batch):
        return jax.lax.scan(functools.partial(step, batch), carry, None, length=rebuild)

    def inside(p, batch):
        nbrs = jax.tree_util.tree_map(lambda x: x[0], batch.neighbors)
        d = p[nbrs.idx] - p[:, None, :] + nbrs.shifts.astype(p.dtype) @ cell
        return np.asarray(nbrs.mask & (jnp.sum(d * d, axis=-1) < r_c**2))

    kt = temperature * 8.617333262e-5
    vel = np.random.default_rng(1).normal(size=start.shape) * np.sqrt(kt / np.asarray(mass))
    vel -= (np.asarray(mass) * vel).sum(axis=0) / np.asarray(mass).sum()
    pos = jnp.asarray(start)
    batch = make_batch(start, pot.cutoff + skin, cap)
    carry = (pos, jnp.asarray(vel), jax.jit(energy_forces)(pos, batch)[1])
    energies, crossed = [], 0
    for _ in range(n_steps // rebuild):
        batch = make_batch(np.asarray(carry[0]), pot.cutoff + skin, cap)
        before = carry[0]
        carry, e = chunk(carry, batch)
        energies.append(np.asarray(e))
        crossed += int(np.sum(inside(before, batch) != inside(carry[0], batch))) // 2
    etot = np.concatenate(energies) / len(SPC)
    t_ps = np.arange(1, len(etot) + 1) * dt_fs * 1e-3
    slope = np.polyfit(t_ps, etot, 1)[0]
    moved = float(np.max(np.linalg.norm(np.asarray(carry[0]) - start, axis=1)))
    return slope, float(np.std(etot)), moved, crossed


def test_nve_energy_conservation_short():
    """100 steps of 0.5 fs at 100 K (float64): drift ≤ 1e-5 eV/atom/ps, fluctuation ≤ 1e-6 eV/atom."""
    drift, fluct, moved, crossed = nve_drift(100)
    assert crossed > 0                                  # pairs did cross the Coulomb cutoff
    assert abs(drift) < 1e-5 and fluct < 1e-6, (drift, fluct)


@pytest.mark.slow
def test_nve_energy_conservation():
    """500 steps of 0.5 fs at 100 K: total-energy drift ≤ 1e-6 eV/atom/ps."""
    drift, fluct, moved, crossed = nve_drift(500)
    assert crossed > 0
    assert abs(drift) <= 1e-6 and fluct < 1e-6, (drift, fluct)


def test_width_beyond_plan_is_flagged_and_replanned():
    pot, v = model("latent")
    ok, widest = jax.jit(pot.width_check)(v)
    assert bool(ok) and float(widest) == pytest.approx(1.0)
    params = dict(v["params"])
    params["sigma"] = jnp.full_like(params["sigma"], math.log(math.expm1(1.5)))   # σ = 1.5 Å > σ_max = 1.2 Å
    grown = {"params": params, "stats": v["stats"]}
    ok, widest = jax.jit(pot.width_check)(grown)
    assert not bool(ok) and float(widest) == pytest.approx(1.5)
    batch = make_batch(POS, pot.cutoff)
    with pytest.raises(ValueError, match="sigma_max"):
        pot.predict(grown, batch, forces=False)
    replanned = pot.adapted_to([CELL], variables=grown)
    assert replanned.module.coulomb.sigma_max == pytest.approx(1.8) and replanned.cutoff > pot.cutoff
    assert bool(replanned.width_check(grown)[0])
    # open boundary and short-range models never trip
    local = build_potential("local", species=SPECIES, local=LOCAL, hidden=(4,))
    assert local.gaussian_widths({"params": {}}).size == 0
