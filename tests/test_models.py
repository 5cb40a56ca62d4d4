"""Models: shapes, padding invariance, invariances, forces = −∇E, stress, constraints,
config round trip, closed-form ridge.  Tiny models; float64."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from jaxlr.data import AtomsBatch
from jaxlr.models import Potential, build_potential
from jaxlr.models._ridge import fit_ridge
from jaxlr.testing import toy_batch

SPECIES = (1, 8)
LOCAL = dict(cutoff=3.0, max_radial=3, max_angular=2)
SMALL = dict(local=LOCAL, hidden=(8,))
HYPER = {
    "local": SMALL,
    "lode": dict(SMALL, lode=dict(cutoff=2.5, max_radial=2, max_angular=1)),
    "latent": dict(SMALL, charge_hidden=(4,)),
    "qeq": dict(SMALL, chi_hidden=(4,)),
    "density": dict(SMALL, coef_hidden=(4,)),
}
CHARGED = ("latent", "qeq", "density")


_POTS = {}


def make(name, periodic=False, pad=2, total_charge=0.0, **kw):
    # one Potential object per (model, boundary): its jitted apply is cached on it
    if (name, periodic) not in _POTS:
        _POTS[(name, periodic)] = build_potential(name, species=SPECIES, **HYPER[name])
    pot = _POTS[(name, periodic)]
    batch = toy_batch(SPECIES, cutoff=pot.cutoff, periodic=periodic, pad=pad, total_charge=total_charge, **kw)
    if periodic and pot.module.coulomb.mesh is None if hasattr(pot.module, "coulomb") else periodic and (
            not hasattr(pot.module, "lode") or pot.module.lode.mesh is None):
        pot = _POTS[(name, periodic)] = pot.adapted_to(list(np.asarray(batch.cell)))
    return pot, batch


_VARS = {}


def variables_for(name, pot, batch):
    key = (name, batch.cell is not None)
    if key not in _VARS:
        _VARS[key] = pot.init(jax.random.PRNGKey(1), batch, offsets=np.array([-0.5, -2.0]), energy_scale=0.3)
    return _VARS[key]


# the lode, density and latent cases (~15 s each) run with -m slow; local and qeq by default
@pytest.mark.parametrize("name", [n if n in ("local", "qeq") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in HYPER])
def test_padding_invariance_and_shapes(name):
    """Padding atoms contribute nothing wherever they sit; shapes and constraints hold."""
    q = 1.0 if name in CHARGED else 0.0
    pot, b1 = make(name, pad=3, total_charge=q)
    v = variables_for(name, pot, b1)
    mask = np.asarray(b1.atom_mask)
    pos = np.asarray(b1.positions).copy()
    pos[~mask] = np.random.default_rng(0).normal(size=(int((~mask).sum()), 3)) * 2.0
    b2 = dataclasses.replace(b1, positions=jnp.asarray(pos))
    o1, o2 = pot.predict(v, b1), pot.predict(v, b2)
    n = b1.n_atoms
    assert o1.energy.shape == (2,) and o1.forces.shape == (2, n, 3) and o1.stress is None
    np.testing.assert_allclose(o1.energy, o2.energy, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(o1.forces, o2.forces, atol=1e-9)
    assert np.all(np.asarray(o1.forces)[~mask] == 0.0)
    if name in CHARGED:
        assert o1.charges.shape == (2, n) and o1.dipole.shape == (2, 3)
        np.testing.assert_allclose(np.asarray(o1.charges).sum(axis=1), q, atol=1e-9)
        assert np.all(np.asarray(o1.charges)[~mask] == 0.0)
        np.testing.assert_allclose(o1.charges, o2.charges, atol=1e-9)
    if name == "density":
        assert o1.coefficients.shape == (2, n, 2 + 3)


def test_padding_slots_do_not_matter():
    """The same structures padded to a different atom count give the same predictions."""
    pot, b1 = make("local", pad=3)
    v = variables_for("local", pot, b1)
    _, b2 = make("local", pad=6)
    o1, o2 = pot.predict(v, b1), pot.predict(v, b2)
    np.testing.assert_allclose(o1.energy, o2.energy, rtol=1e-10)
    np.testing.assert_allclose(o1.forces, o2.forces[:, :b1.n_atoms], atol=1e-10)


@pytest.mark.parametrize("name", [pytest.param("lode", marks=pytest.mark.slow), "qeq", "density"])
def test_invariances(name):
    from jaxlr.testing import single_structure_batch
    q = 1.0 if name in CHARGED else 0.0
    pot, batch = make(name, total_charge=q)
    v = variables_for(name, pot, batch)
    pos = np.asarray(batch.positions)[0]
    n = int(np.asarray(batch.atom_mask)[0].sum())
    spec = np.asarray(batch.species)[0][:n]
    base = single_structure_batch(pos[:n], spec, cutoff=pot.cutoff, n_pad=pos.shape[0], total_charge=q)
    rng = np.random.default_rng(3)
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    perm = rng.permutation(n)
    moved = single_structure_batch(pos[perm][:n] @ rot.T + np.array([1.0, -2.0, 0.5]), spec[perm],
                                   cutoff=pot.cutoff, n_pad=pos.shape[0], total_charge=q)
    o1, o2 = pot.predict(v, base), pot.predict(v, moved)
    np.testing.assert_allclose(o1.energy, o2.energy, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(o1.forces)[0, perm] @ rot.T, np.asarray(o2.forces)[0, :n], atol=1e-8)
    if o1.charges is not None:
        np.testing.assert_allclose(np.asarray(o1.charges)[0, perm], np.asarray(o2.charges)[0, :n], atol=1e-9)


@pytest.mark.parametrize("name", ["qeq", pytest.param("density", marks=pytest.mark.slow)])
def test_forces_are_minus_gradient(name):
    pot, batch = make(name, total_charge=1.0)
    v = variables_for(name, pot, batch)
    out = pot.predict(v, batch)
    h = 1e-5
    pos = np.asarray(batch.positions)
    for (i, d) in [(0, 0), (2, 1), (3, 2)]:
        e = []
        for sgn in (1, -1):
            p = pos.copy()
            p[0, i, d] += sgn * h
            e.append(float(pot.predict(v, dataclasses.replace(batch, positions=jnp.asarray(p)),
                                       forces=False).energy[0]))
        np.testing.assert_allclose(-(e[0] - e[1]) / (2 * h), out.forces[0, i, d], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["local", pytest.param("latent", marks=pytest.mark.slow)])
def test_periodic_stress_by_finite_strain(name):
    pot, batch = make(name, periodic=True)
    v = variables_for(name, pot, batch)
    out = pot.predict(v, batch)
    assert out.stress.shape == (2, 3, 3)
    h = 1e-5
    vol = abs(np.linalg.det(np.asarray(batch.cell)[0]))
    for a, b in [(0, 0), (0, 1), (2, 1)]:
        e = []
        for sgn in (1, -1):
            eps = np.eye(3)
            eps[a, b] += sgn * h
            moved = dataclasses.replace(batch, positions=batch.positions @ eps, cell=batch.cell @ eps)
            e.append(float(pot.predict(v, moved, forces=False).energy[0]))
        np.testing.assert_allclose((e[0] - e[1]) / (2 * h) / vol, out.stress[0, a, b], rtol=1e-5, atol=1e-8)


def test_qeq_charge_state_transfer():
    """Same geometry, different total charge → different charges (a local model cannot)."""
    pot, b0 = make("qeq", total_charge=0.0)
    _, b1 = make("qeq", total_charge=1.0)
    v = variables_for("qeq", pot, b0)
    q0, q1 = np.asarray(pot.predict(v, b0).charges), np.asarray(pot.predict(v, b1).charges)
    np.testing.assert_allclose(q0.sum(1), 0.0, atol=1e-10)
    np.testing.assert_allclose(q1.sum(1), 1.0, atol=1e-10)
    assert np.max(np.abs(q1 - q0)) > 0.05


def test_config_round_trip():
    pot, batch = make("local")
    v = variables_for("local", pot, batch)
    import json
    again = Potential.from_config(json.loads(json.dumps(pot.config())))
    assert again.config() == pot.config()
    np.testing.assert_array_equal(pot.predict(v, batch).energy, again.predict(v, batch).energy)


def test_build_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_potential("mace", species=SPECIES)
    with pytest.raises(ValueError, match="no hyperparameter"):
        build_potential("local", species=SPECIES, widht=3)


def test_ridge_recovers_a_linear_model():
    """Energies made by a random linear LODE model are recovered by the closed-form fit."""
    pot = build_potential("lode", species=SPECIES, lode=dict(cutoff=2.5, max_radial=2, max_angular=1),
                          hidden=(), use_local=False)
    batches = [toy_batch(SPECIES, cutoff=pot.cutoff, n_structures=50, seed=s, n_atoms=5) for s in range(3)]
    v = pot.init(jax.random.PRNGKey(0), batches[0], offsets=np.array([-1.0, -3.0]), energy_scale=0.5)
    truth = jax.tree_util.tree_map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(5), x.shape),
                                   v["params"])
    vt = {"params": truth, "stats": v["stats"]}
    from jaxlr.data._batch import Targets
    data = [(b, Targets(energy=pot.predict(vt, b, forces=False).energy)) for b in batches]
    fitted = fit_ridge(pot, v, data, regularizer=1e-14)
    for b, t in data:
        np.testing.assert_allclose(pot.predict(fitted, b, forces=False).energy, t.energy, rtol=1e-7)
    with pytest.raises(ValueError, match="linear model"):
        fit_ridge(make("local")[0], v, data)


def test_density_model_responds_to_field():
    pot, batch = make("density")
    v = variables_for("density", pot, batch)
    field = jnp.asarray([[0.0, 0.0, 0.05]] * 2)
    # a zero field rather than none: the same compiled function serves both calls
    o0 = pot.predict(v, dataclasses.replace(batch, field=0.0 * field))
    o1 = pot.predict(v, dataclasses.replace(batch, field=field))
    # the dipole moves along the field; charges stay neutral
    assert np.all(np.asarray(o1.dipole - o0.dipole)[:, 2] > 0)
    np.testing.assert_allclose(np.asarray(o1.charges).sum(1), 0.0, atol=1e-10)


def test_atoms_batch_is_a_pytree():
    _, batch = make("local")
    leaves = jax.tree_util.tree_leaves(batch)
    assert all(hasattr(x, "shape") for x in leaves)
    assert isinstance(jax.tree_util.tree_map(lambda x: x, batch), AtomsBatch)
