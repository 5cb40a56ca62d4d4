"""Polarisabilities of the Qeq and density models (jaxlr.models.polarizability).

References independent of the forward-mode path: central differences of the model's own
dipole under ±F (the field passed through ``AtomsBatch.field``); the closed-form linear
response of Qeq, α = Rᵀ[A⁻¹ − A⁻¹11ᵀA⁻¹/(1ᵀA⁻¹1)]R with A = C + diag J written here in
numpy; and the solver-level front door :func:`jaxlr.polarizability` fed with the local
matrices the density model builds.  Physics: symmetric, positive (definite where the model
can polarise), rotating the molecule rotates α, a planar molecule of point-like charges
cannot polarise normal to its plane.
"""

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses

import numpy as np
import pytest
from scipy.special import erf

import jaxlr
from jaxlr.data import Structure, make_batches
from jaxlr.equilibration import GaussianBasis
from jaxlr.models import build_potential, polarizability, polarizability_volume
from jaxlr.units import KE

WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])
#: a rotation (fixed) and a second, hydrogen-bonded water for a non-planar dimer
ROT = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))[0]
DIMER = np.concatenate([WATER, WATER @ ROT.T + np.array([0.3, 0.2, 2.9])])
LOCAL = dict(cutoff=3.0, max_radial=2, max_angular=1)


def water(positions=WATER):
    return Structure(positions=positions, numbers=[8, 1, 1] * (len(positions) // 3))


def _setup(name, **kw):
    pot = build_potential(name, species=(1, 8), local=LOCAL, hidden=(4,), **kw)
    [(batch, _)] = make_batches([water(), water(DIMER)], pot.species, cutoff=pot.cutoff, batch_size=2)
    return pot, pot.init(jax.random.PRNGKey(0), batch)


@pytest.fixture(scope="module")
def qeq():
    return _setup("qeq", chi_hidden=(4,), sigma=0.8, hardness=8.0)


@pytest.fixture(scope="module")
def density():
    return _setup("density", coef_hidden=(4,), learn_widths=False)


def _batch(pot, positions, field=None):
    [(batch, _)] = make_batches([water(positions)], pot.species, cutoff=pot.cutoff, batch_size=1)
    return batch if field is None else dataclasses.replace(batch, field=np.asarray(field)[None, :])


def _finite_difference_alpha(pot, variables, positions, h=1e-3):
    """Central differences of the model's dipole under fields ±h e_b (V/Å), through apply only."""
    alpha = np.zeros((3, 3))
    for b in range(3):
        e = np.zeros(3)
        e[b] = h
        mu = [np.asarray(pot.predict(variables, _batch(pot, positions, sign * e), forces=False).dipole[0])
              for sign in (1.0, -1.0)]
        alpha[:, b] = (mu[0] - mu[1]) / (2 * h)
    return alpha


@pytest.mark.parametrize("model", ["qeq", "density"])
def test_forward_mode_equals_central_differences_of_the_dipole(model, request):
    pot, variables = request.getfixturevalue(model)
    alpha = np.asarray(polarizability(pot, variables, water(DIMER)))
    # the response is linear in F, so central differences are exact up to round-off
    np.testing.assert_allclose(alpha, _finite_difference_alpha(pot, variables, DIMER), atol=1e-9)
    # symmetric, and positive definite: the energy −½ FᵀαF is lowered by any field
    np.testing.assert_allclose(alpha, alpha.T, atol=1e-12)
    assert np.linalg.eigvalsh(alpha).min() > 1e-3


def test_qeq_matches_closed_form_linear_response_and_the_solver_front_door(qeq):
    pot, variables = qeq
    params = variables["params"]
    hard = np.asarray(jax.nn.softplus(params["hardness"]))       # per species channel (H, O)
    sig = np.asarray(jax.nn.softplus(params["sigma"]))
    z = np.array([8, 1, 1, 8, 1, 1])
    ch = np.where(z == 1, 0, 1)
    J, s = hard[ch], sig[ch]
    d = np.linalg.norm(DIMER[:, None] - DIMER[None], axis=-1)
    gamma = np.sqrt(s[:, None] ** 2 + s[None] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        coulomb = KE * erf(d / (np.sqrt(2) * gamma)) / d
    coulomb[np.diag_indices(6)] = J + KE / (np.sqrt(np.pi) * s)     # hardness + Gaussian self-energy
    ainv = np.linalg.inv(coulomb)
    one = np.ones(6)
    proj = ainv - np.outer(ainv @ one, one @ ainv) / (one @ ainv @ one)
    expected = DIMER.T @ proj @ DIMER                                 # e·Å²/V
    alpha = np.asarray(polarizability(pot, variables, water(DIMER)))
    np.testing.assert_allclose(alpha, expected, rtol=1e-9, atol=1e-12)
    assert np.linalg.eigvalsh(alpha).min() > 1e-3                     # non-planar: positive definite
    # the same physics through the solver-level front door: one s function per atom, H = J
    basis = GaussianBasis(species=(1, 8), s_widths=((sig[0],), (sig[1],)))
    front = jaxlr.polarizability(DIMER, z, np.zeros((6, 1)), J[:, None, None], basis=basis)
    np.testing.assert_allclose(alpha, np.asarray(front), rtol=1e-9, atol=1e-12)
    # a planar molecule of atom-centred charges cannot polarise normal to its plane (x)
    mono = np.asarray(polarizability(pot, variables, water()))
    assert np.all(mono[0] == 0.0) and np.all(mono[:, 0] == 0.0)
    assert np.linalg.eigvalsh(mono[1:, 1:]).min() > 1e-3 and mono[1, 1] > mono[2, 2]    # longest along H···H


def test_qeq_model_field_energy_is_hellmann_feynman(qeq):
    """With the field in the Qeq energy (χ_i → χ_i − F·R_i), −∂E/∂F is the model's dipole."""
    pot, variables = qeq
    field = np.array([0.02, -0.01, 0.03])

    batch = _batch(pot, DIMER)

    def energy(f):
        return pot.apply(variables, dataclasses.replace(batch, field=f[None, :]), forces=False).energy[0]

    grad = np.asarray(jax.jit(jax.grad(energy))(field))
    dipole = np.asarray(pot.predict(variables, _batch(pot, DIMER, field), forces=False).dipole[0])
    np.testing.assert_allclose(-grad, dipole, atol=1e-10)
    # and the field moves the charges: μ(F) − μ(0) = α F (linear response)
    mu0 = np.asarray(pot.predict(variables, _batch(pot, DIMER), forces=False).dipole[0])
    alpha = np.asarray(polarizability(pot, variables, water(DIMER)))
    np.testing.assert_allclose(dipole - mu0, alpha @ field, atol=1e-10)


def test_density_model_matches_the_solver_front_door(density):
    """The model's α equals :func:`jaxlr.polarizability` for the local matrices the model builds.

    The local matrices are rebuilt from the captured output of the coefficient network as
    the model documents them (block diagonal: an SPD s block, an SPD p-shell block ⊗ I₃);
    α does not depend on the linear terms (a linear response), so they are passed as zeros.
    """
    pot, variables = density
    batch = _batch(pot, DIMER)
    s = jax.tree_util.tree_map(lambda x: x[0], batch)
    _, state = jax.jit(lambda v, s: pot.module.apply(v, s, capture_intermediates=lambda mdl, _: mdl.name == "coef_net",
                                                     mutable=["intermediates"]))(variables, s)
    out = np.asarray(state["intermediates"]["coef_net"]["__call__"][0])[:6]
    n_s, n_p = pot.module.counts()
    nb = n_s + 3 * n_p
    ts, tp = n_s * (n_s + 1) // 2, n_p * (n_p + 1) // 2
    species = np.asarray(s.species)[:6]
    params = variables["params"]

    def spd(name, m, entries):
        lower = np.zeros((6, m, m))
        lower[:, *np.tril_indices(m)] = entries
        base = np.asarray(params[name])[species]
        return base @ np.swapaxes(base, 1, 2) + lower @ np.swapaxes(lower, 1, 2) + 1e-3 * np.eye(m)

    local = np.zeros((6, nb, nb))
    local[:, :n_s, :n_s] = spd("local_base_s", n_s, out[:, -(ts + tp):out.shape[1] - tp])
    local[:, n_s:, n_s:] = np.einsum("nab,cd->nacbd", spd("local_base_p", n_p, out[:, out.shape[1] - tp:]),
                                     np.eye(3)).reshape(6, 3 * n_p, 3 * n_p)
    ws, wp, _, _ = pot.module.basis_table()
    basis = GaussianBasis(species=(1, 8), s_widths=tuple(map(tuple, ws)), p_widths=tuple(map(tuple, wp)))
    z = np.array([8, 1, 1, 8, 1, 1])
    front = np.asarray(jaxlr.polarizability(DIMER, z, np.zeros((6, nb)), local, basis=basis))
    alpha = np.asarray(polarizability(pot, variables, water(DIMER)))
    np.testing.assert_allclose(alpha, front, rtol=1e-8, atol=1e-12)
    # a density with atomic dipoles polarises in every direction, also for a planar molecule
    assert np.linalg.eigvalsh(np.asarray(polarizability(pot, variables, water()))).min() > 1e-3


def test_rotating_the_molecule_rotates_alpha(qeq, density):
    for pot, variables in (qeq, density):
        a0 = np.asarray(polarizability(pot, variables, water(DIMER)))
        a1 = np.asarray(polarizability(pot, variables, water(DIMER @ ROT.T)))
        np.testing.assert_allclose(a1, ROT @ a0 @ ROT.T, atol=1e-10)


def test_lists_batches_and_fields(qeq):
    pot, variables = qeq
    one = np.asarray(polarizability(pot, variables, water()))
    both = np.asarray(polarizability(pot, variables, [water(), water(DIMER)], batch_size=2))
    assert both.shape == (2, 3, 3)
    np.testing.assert_allclose(both[0], one, atol=1e-12)
    np.testing.assert_allclose(both[1], polarizability(pot, variables, water(DIMER)), atol=1e-12)
    # a padded batch: α per structure, zero for padding structures; linear response: any field
    [(batch, _)] = make_batches([water(DIMER)], pot.species, cutoff=pot.cutoff, batch_size=2)
    a = np.asarray(polarizability(pot, variables, batch, field=np.array([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]])))
    np.testing.assert_allclose(a[0], both[1], atol=1e-10)
    assert np.all(a[1] == 0.0)
    np.testing.assert_allclose(polarizability(pot, variables, water(), field=[0.0, 0.5, 0.0]), one, atol=1e-10)


def test_refusals(qeq):
    pot, variables = qeq
    latent = build_potential("latent", species=(1, 8), local=LOCAL, hidden=(4,), charge_hidden=(4,))
    with pytest.raises(ValueError, match="latent-charge model's charges are a function of the geometry only"):
        polarizability(latent, {}, water())
    with pytest.raises(ValueError, match="predicts no charges"):
        polarizability(build_potential("local", species=(1, 8), local=LOCAL), {}, water())
    boxed = Structure(positions=WATER + 2.0, numbers=[8, 1, 1], cell=np.eye(3) * 8.0)
    with pytest.raises(ValueError, match="open boundaries only"):
        polarizability(pot, variables, boxed)
    with pytest.raises(ValueError, match=r"field must have shape \(3,\)"):
        polarizability(pot, variables, water(), field=[1.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        polarizability(pot, variables, water(), field=[np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match="expected a Structure"):
        polarizability(pot, variables, "water.xyz")
    with pytest.raises(ValueError, match="expected a jaxlr.models.Potential"):
        polarizability(object(), variables, water())
    # the input is not mutated
    s = water()
    before = s.positions.copy()
    polarizability(pot, variables, s)
    np.testing.assert_array_equal(s.positions, before)


def test_polarizability_volume_units():
    # one atomic unit of polarisability, e²a₀²/E_h, is a₀²/E_h in e·Å²/V and one bohr³
    au = 0.529177210903 ** 2 / 27.211386245988
    assert float(polarizability_volume(au, "bohr3")) == pytest.approx(1.0, rel=1e-12)
    # Å³ through jaxlr's Coulomb constant (ASE's Hartree·Bohr, 8.8e-9 off CODATA 2018)
    assert float(polarizability_volume(au, "angstrom3")) == pytest.approx(0.529177210903 ** 3, rel=2e-8)
    np.testing.assert_allclose(polarizability_volume(np.eye(3) * au, "bohr3"), np.eye(3), rtol=1e-12)
    with pytest.raises(ValueError, match="unit must be"):
        polarizability_volume(1.0, "cm3")
