"""The ZBL core-repulsion prior (``repulsion=True``) of the models.

* the pair energy against a plain-numpy evaluation of the published formula, the
  screening length 0.8854 a₀, φ(0) = 1 and the bare Coulomb limit of the nuclei;
* the covalent radii against ASE's table (Cordero et al. 2008);
* dimers and a one-atom periodic cell (its own images, the ½ of the full list) against numpy;
* the switch: energy and force vanish at and beyond r_s (to second order inside);
* forces = −∇E and stress = (1/V) ∂E/∂ε by central finite differences; padding invariance;
  no NaN gradients for masked pairs at r = 0;
* every model kind evaluates with the prior, adds exactly Σ repulsion_energies, and without it is
  bitwise the model as before (also a checkpoint whose configuration lacks the fields).
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.models import build_potential, repulsion_energies, repulsion_radii, zbl_pair_energy
from jaxlr.system import Neighbors, neighbor_list
from jaxlr.testing import single_structure_batch, toy_batch

jax.config.update("jax_enable_x64", True)

#: the formula as published (Ziegler, Biersack & Littmark 1985), typed here independently
C = np.array([0.18175, 0.50986, 0.28022, 0.02817])
D = np.array([3.19980, 0.94229, 0.40290, 0.20162])
KE = 14.399645          # eV·Å, e²/4πε₀ to 8 digits (jaxlr's full-precision value differs by 2.4e-8)
RTOL = 1e-7            # for comparisons through this truncated constant
BOHR = 0.529177210903   # Å, CODATA 2018


def zbl_numpy(r, zi, zj):
    a = 0.46850 / (zi ** 0.23 + zj ** 0.23)
    x = np.asarray(r, float)[..., None] / a
    return KE * zi * zj / np.asarray(r, float) * np.sum(C * np.exp(-D * x), axis=-1)


def envelope_numpy(t):
    t = np.asarray(t, float)
    return np.where(t < 1.0, 1.0 - 28.0 * t ** 6 + 48.0 * t ** 7 - 21.0 * t ** 8, 0.0)


SPECIES = (1, 8)
LOCAL = dict(cutoff=3.0, max_radial=2, max_angular=1)
SMALL = dict(local=LOCAL, hidden=(4,))
HYPER = {
    "local": SMALL,
    "lode": dict(SMALL, lode=dict(cutoff=2.5, max_radial=2, max_angular=1)),
    "latent": dict(SMALL, charge_hidden=(4,)),
    "qeq": dict(SMALL, chi_hidden=(4,)),
    "density": dict(SMALL, coef_hidden=(4,)),
}

# a water-like cluster squeezed to short contacts (O–H 0.46 … 0.8 Å, O–O 1.22 Å), so the
# prior is active in several pairs
CLUSTER = np.array([[0.0, 0.0, 0.0], [0.75, 0.0, 0.0], [0.0, 0.8, 0.0], [1.2, 0.1, 0.2],
                    [1.25, 0.55, 0.25], [3.5, 0.0, 0.0]])
CLUSTER_SPECIES = np.array([1, 0, 0, 1, 0, 0])     # channels: 0 = H, 1 = O


# --------------------------------------------------------------------------------------
# the formula
# --------------------------------------------------------------------------------------
def test_zbl_constants_and_limits():
    # φ(0) = Σ c_k = 1 (the coefficients are normalised to 5 digits)
    assert abs(C.sum() - 1.0) < 1e-5
    # the universal screening length 0.8854 a₀ (ZBL 1985) in Å
    assert abs(0.8854 * BOHR - 0.46850) < 1e-4
    for zi, zj in [(1, 1), (1, 8), (8, 8), (14, 79)]:
        # short range: E → k_e Z_i Z_j / r (bare nuclei), to first order in r/a
        r = 1e-6
        e = float(zbl_pair_energy(r, zi, zj))
        np.testing.assert_allclose(e * r / (KE * zi * zj), 1.0, rtol=1e-4)
        # against the numpy evaluation of the published formula, 0.05 … 5 Å
        rs = np.geomspace(0.05, 5.0, 25)
        np.testing.assert_allclose(zbl_pair_energy(jnp.asarray(rs), zi, zj), zbl_numpy(rs, zi, zj), rtol=RTOL)
    # screened: much weaker than the bare Coulomb repulsion at a bond length
    assert float(zbl_pair_energy(1.0, 8, 8)) < 0.03 * KE * 64


def test_dtype_follows_the_input():
    assert zbl_pair_energy(jnp.asarray([1.0], jnp.float32), 8, 1).dtype == jnp.float32
    pos = np.asarray(CLUSTER, np.float32)
    nl = neighbor_list(pos, 3.0)
    assert repulsion_energies(pos, CLUSTER_SPECIES, nl, SPECIES, cutoff=3.0).dtype == jnp.float32


def test_covalent_radii_against_ase():
    from ase.data import covalent_radii

    from jaxlr.models._repulsion import COVALENT_RADII

    np.testing.assert_allclose(COVALENT_RADII[1:], covalent_radii[1:len(COVALENT_RADII)], atol=1e-12)
    np.testing.assert_allclose(repulsion_radii((1, 8), cutoff=4.0),
                               [[0.62, 0.97], [0.97, 1.32]], atol=1e-12)
    np.testing.assert_allclose(repulsion_radii((8, 55), cutoff=4.0), [[1.32, 3.1], [3.1, 4.0]], atol=1e-12)
    np.testing.assert_allclose(repulsion_radii((1, 8), cutoff=4.0, radius=2.0), np.full((2, 2), 2.0))


def test_errors():
    with pytest.raises(ValueError, match="repulsion_cutoff must be in"):
        build_potential("local", species=SPECIES, local=LOCAL, repulsion=True, repulsion_cutoff=3.5)
    with pytest.raises(ValueError, match="repulsion=False"):
        build_potential("qeq", species=SPECIES, local=LOCAL, repulsion_cutoff=1.0)
    with pytest.raises(ValueError, match="no covalent radius"):
        build_potential("local", species=(1, 118), local=LOCAL, repulsion=True)
    build_potential("local", species=(1, 118), local=LOCAL, repulsion=True, repulsion_cutoff=2.0)


# --------------------------------------------------------------------------------------
# pairs through the neighbour list
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("radius", [None, 2.5])
def test_dimers_against_numpy(radius):
    for (ci, cj) in [(0, 0), (0, 1), (1, 1)]:
        zi, zj = SPECIES[ci], SPECIES[cj]
        r_s = repulsion_radii(SPECIES, 3.0, radius)[ci, cj]
        for r in (0.2, 0.5 * r_s, 0.9 * r_s, r_s, 1.1 * r_s):
            pos = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3 + r]])
            e = repulsion_energies(pos, np.array([ci, cj]), neighbor_list(pos, 3.0), SPECIES, cutoff=3.0,
                                   radius=radius)
            expected = float(zbl_numpy(r, zi, zj) * envelope_numpy(r / r_s))
            np.testing.assert_allclose(np.asarray(e), [expected / 2, expected / 2], rtol=RTOL, atol=1e-300)


def test_one_atom_cell_feels_its_images_once():
    """One O in a 2.3 Å cube: six images at 2.3 Å (the next at 3.25 Å, beyond 3 Å), each
    pair counted once: E = ½ · 6 · u E(2.3); the stress from finite strain of this energy."""
    length, radius = 2.3, 3.0
    cell = np.eye(3) * length

    def energy(strain):
        c = cell @ (np.eye(3) + strain)
        pos = np.zeros((1, 3))
        return float(repulsion_energies(pos, np.array([1]), neighbor_list(pos, 3.0, c), SPECIES,
                                        cutoff=3.0, radius=radius, cell=c)[0])

    e0 = energy(np.zeros((3, 3)))
    np.testing.assert_allclose(e0, 3.0 * zbl_numpy(length, 8, 8) * envelope_numpy(length / radius), rtol=RTOL)
    # σ_xx = (1/V) ∂E/∂ε_xx = f'(L) L / V with f the two x-images' energy (one pair, ½ · 2)
    f = lambda r: zbl_numpy(r, 8, 8) * envelope_numpy(r / radius)  # noqa: E731
    h = 1e-6
    dfdl = (f(length + h) - f(length - h)) / (2 * h)
    eps = np.zeros((3, 3))
    eps[0, 0] = 1e-5
    fd = (energy(eps) - energy(-eps)) / 2e-5
    np.testing.assert_allclose(fd, dfdl * length, rtol=1e-6)


def test_minimum_image_list_as_in_md():
    """An MD (jax-md) list has no shifts: the pair across the boundary is found by minimum image."""
    cell = np.eye(3) * 6.0
    pos = np.array([[0.2, 3.0, 3.0], [5.5, 3.1, 2.9]])           # 0.7 Å apart through the x face
    r = float(np.linalg.norm(pos[1] - pos[0] - cell[0]))
    host = repulsion_energies(pos, np.array([1, 0]), neighbor_list(pos, 3.0, cell), SPECIES, cutoff=3.0, cell=cell)
    md = Neighbors(idx=jnp.array([[1], [0]], jnp.int32), mask=jnp.ones((2, 1), bool))
    mic = repulsion_energies(pos, np.array([1, 0]), md, SPECIES, cutoff=3.0, cell=cell)
    np.testing.assert_allclose(mic, host, rtol=1e-13)
    np.testing.assert_allclose(float(mic.sum()), zbl_numpy(r, 8, 1) * envelope_numpy(r / 0.97), rtol=RTOL)


def test_switch_vanishes_smoothly():
    """E and dE/dr are exactly 0 at and beyond r_s; inside they vanish as δ³ and δ²."""
    r_s = 0.97     # O–H

    def pair(r):
        pos = jnp.stack([jnp.zeros(3), jnp.array([0.0, 0.0, 1.0]) * r])
        return jnp.sum(repulsion_energies(pos, np.array([0, 1]), nl, SPECIES, cutoff=3.0))

    nl = neighbor_list(np.array([[0.0, 0, 0], [0, 0, 1.0]]), 3.0)
    grad = jax.grad(pair)
    for r in (r_s, r_s + 1e-9, 1.5, 2.9):
        assert float(pair(r)) == 0.0 and float(grad(r)) == 0.0
    e1, e2 = float(pair(r_s - 1e-2)), float(pair(r_s - 1e-3))
    g1, g2 = float(grad(r_s - 1e-2)), float(grad(r_s - 1e-3))
    np.testing.assert_allclose(e1 / e2, 1e3, rtol=0.05)      # E ∝ δ³
    np.testing.assert_allclose(g1 / g2, 1e2, rtol=0.05)      # dE/dr ∝ δ²
    assert g1 < 0.0 < e1                                     # repulsive


def test_masked_pairs_at_zero_distance_give_no_nan():
    """Two atoms on top of each other, their slots masked, and a padding atom there too:
    zero energy and finite (zero) gradients (jax_debug_nans is on in conftest)."""
    pos = jnp.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.9]])
    species = np.array([1, 1, -1, 0])
    nbrs = Neighbors(idx=jnp.array([[1, 2, 3], [0, 2, 1], [0, 1, 2], [0, 3, 3]], jnp.int32),
                     mask=jnp.array([[False, True, False], [False, True, False], [True, True, False],
                                     [True, False, False]]))

    def total(p):
        return jnp.sum(repulsion_energies(p, species, nbrs, SPECIES, cutoff=3.0))

    e, g = jax.value_and_grad(total)(pos)
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(g)[1:3] == 0.0)
    # only O(0)–H(3) at 0.9 Å, and it appears once in row 3 (the slot of row 0 is masked): half a pair
    np.testing.assert_allclose(float(e), 0.5 * zbl_numpy(0.9, 8, 1) * envelope_numpy(0.9 / 0.97), rtol=RTOL)


# --------------------------------------------------------------------------------------
# in the models
# --------------------------------------------------------------------------------------
_CACHE = {}


def potential(name, **kw):
    key = (name, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = build_potential(name, species=SPECIES, **HYPER[name], **kw)
    return _CACHE[key]


def cluster_batch(pot, n_pad=None, positions=CLUSTER):
    return single_structure_batch(positions, CLUSTER_SPECIES, cutoff=pot.cutoff, n_pad=n_pad)


def test_local_model_forces_and_padding():
    pot = potential("local", repulsion=True)
    batch = cluster_batch(pot, n_pad=9)
    v = pot.init(jax.random.PRNGKey(0), batch, offsets=np.array([-0.5, -2.0]), energy_scale=0.3)
    out = pot.predict(v, batch)
    # padding: the unpadded structure gives the same energy and forces
    small = cluster_batch(pot)
    o2 = pot.predict(v, small)
    np.testing.assert_allclose(o2.energy, out.energy, rtol=1e-12)
    np.testing.assert_allclose(o2.forces[0], out.forces[0, :len(CLUSTER)], atol=1e-10)
    # forces = −∇E, central differences (float64, h = 1e-5 Å: error ~ h² E''' ≪ 1e-6 relative)
    h = 1e-5
    for i, d in [(0, 0), (1, 2), (2, 1), (4, 0)]:
        e = []
        for sgn in (1, -1):
            p = CLUSTER.copy()
            p[i, d] += sgn * h
            e.append(float(pot.predict(v, cluster_batch(pot, n_pad=9, positions=p), forces=False).energy[0]))
        np.testing.assert_allclose(-(e[0] - e[1]) / (2 * h), out.forces[0, i, d], rtol=1e-6, atol=1e-8)
    # the prior dominates at these contacts: the forces are those of ZBL plus a small network part
    nbrs = jax.tree_util.tree_map(lambda x: x[0], small.neighbors)
    zbl = repulsion_energies(jnp.asarray(CLUSTER), CLUSTER_SPECIES, nbrs, SPECIES, cutoff=3.0).sum()
    assert float(zbl) > 10.0


def test_periodic_stress_by_finite_strain():
    pot = potential("local", repulsion=True, repulsion_cutoff=3.0)
    batch = toy_batch(SPECIES, cutoff=pot.cutoff, periodic=True, box=4.5)
    v = pot.init(jax.random.PRNGKey(1), batch)
    out = pot.predict(v, batch)
    # the prior is active in this box (pairs at 1.2 … 3 Å)
    s0 = jax.tree_util.tree_map(lambda x: x[0], batch)
    prior = repulsion_energies(s0.positions, s0.species, s0.neighbors, SPECIES, cutoff=3.0, radius=3.0,
                               cell=s0.cell).sum()
    assert float(prior) > 0.1
    h = 1e-5
    vol = abs(np.linalg.det(np.asarray(batch.cell)[0]))
    for a, b in [(0, 0), (0, 1), (2, 1)]:
        e = []
        for sgn in (1, -1):
            eps = np.eye(3)
            eps[a, b] += sgn * h
            moved = dataclasses.replace(batch, positions=batch.positions @ eps, cell=batch.cell @ eps)
            e.append(float(pot.predict(v, moved, forces=False).energy[0]))
        np.testing.assert_allclose((e[0] - e[1]) / (2 * h) / vol, out.stress[0, a, b], rtol=1e-6, atol=1e-9)


# the lode and latent cases share the density/qeq code path of the prior; they run with -m slow
@pytest.mark.parametrize("name", [n if n in ("local", "qeq", "density") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in HYPER])
def test_every_model_adds_exactly_the_prior(name):
    """With the same variables, E(repulsion) − E(no repulsion) = Σ repulsion_energies, and the
    same for the per-atom energies; everything else (charges) is unchanged."""
    on, off = potential(name, repulsion=True), potential(name)
    batch = cluster_batch(on, n_pad=8)
    v = off.init(jax.random.PRNGKey(2), batch)
    o_on = on.predict(v, batch, forces=False)
    o_off = off.predict(v, batch, forces=False)
    s0 = jax.tree_util.tree_map(lambda x: x[0], batch)
    prior = repulsion_energies(s0.positions, s0.species, s0.neighbors, SPECIES, cutoff=3.0)
    np.testing.assert_allclose(o_on.energy - o_off.energy, [float(prior.sum())], rtol=1e-10)
    np.testing.assert_allclose(o_on.atom_energies[0] - o_off.atom_energies[0], prior, rtol=1e-10, atol=1e-12)
    if o_off.charges is not None:
        np.testing.assert_allclose(o_on.charges, o_off.charges, rtol=1e-12, atol=1e-14)


def test_off_is_bitwise_the_model_without_the_field(tmp_path):
    """``repulsion=False`` is the model as before, and a checkpoint whose stored configuration
    has no repulsion fields (written before they existed) loads as that model."""
    from jaxlr.train import load, save

    plain = potential("local")
    explicit = build_potential("local", species=SPECIES, **HYPER["local"], repulsion=False)
    batch = cluster_batch(plain, n_pad=8)
    v = plain.init(jax.random.PRNGKey(3), batch)
    a, b = plain.predict(v, batch), explicit.predict(v, batch)
    np.testing.assert_array_equal(a.energy, b.energy)
    np.testing.assert_array_equal(a.forces, b.forces)
    save(tmp_path / "old", plain, v)
    cfg_file = tmp_path / "old" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    assert cfg["potential"].pop("repulsion") is False and cfg["potential"].pop("repulsion_cutoff") is None
    cfg_file.write_text(json.dumps(cfg))
    pot2, v2 = load(tmp_path / "old")
    assert pot2.module.repulsion is False
    np.testing.assert_array_equal(pot2.predict(v2, batch).energy, a.energy)
