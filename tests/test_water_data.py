"""The bundled water-cluster data and the density-coefficient loss in the Coulomb metric.

Data checks are physics, not the code against itself: the fitted densities carry the
cluster's zero charge and reproduce the PBE dipole stored beside them (the generator's
constraint), forces are roughly balanced (isolated clusters), energies per water sit near
the PBE/def2-SVP monomer.  The loss is checked against a direct evaluation of the Coulomb
metric on each unpadded structure, and its falling back to the raw mean square.
"""

import jax

jax.config.update("jax_enable_x64", True)

import dataclasses

import numpy as np
import pytest

import jaxlr.data as data
from jaxlr.electrostatics import coulomb_metric
from jaxlr.models import build_potential
from jaxlr.train import loss_fn

TARGETS = ("energy", "forces", "dipole", "coefficients")


@pytest.fixture(scope="module")
def clusters():
    return data.load_water_clusters()


def test_sizes_provenance_and_targets(clusters):
    sizes = np.array([s.info["n_waters"] for s in clusters])
    assert len(clusters) >= 500 and set(sizes) <= set(range(1, 9)) and {1, 2, 3, 4, 5, 6}.issubset(set(sizes))
    # most weight on 2–6 waters
    assert np.mean((sizes >= 2) & (sizes <= 6)) > 0.6
    s = clusters[0]
    assert (s.info["level"], s.info["basis"], s.info["auxbasis"], int(s.info["grid_level"])) == \
        ("PBE", "def2-svp", "def2-universal-jkfit", 3)
    assert float(s.info["conv_tol"]) == 1e-9
    assert set(TARGETS) <= set(clusters.available_targets())
    for s in clusters:
        assert s.n_atoms == 3 * int(s.info["n_waters"]) and s.total_charge == 0.0 and not s.periodic
        assert sorted(set(s.numbers.tolist())) == [1, 8]


def test_coefficients_carry_charge_and_pbe_dipole(clusters):
    for s in clusters[::7]:
        sigma_s, _ = data.reference_basis_widths(s)
        n_s = sigma_s.shape[1]
        c = s.targets["coefficients"]
        q = c[:, :n_s].sum(axis=1)
        mu = (q[:, None] * s.positions).sum(axis=0) + c[:, n_s:].reshape(s.n_atoms, -1, 3).sum(axis=(0, 1))
        assert abs(q.sum()) < 1e-6
        np.testing.assert_allclose(mu, s.targets["dipole"], atol=1e-6)
        # H has 3 s and 1 p function: its padding slots are exactly zero
        h = s.numbers == 1
        assert np.all(c[h, 3] == 0.0) and np.all(c[h, 7:] == 0.0)
        # oxygen's narrowest s function holds the nucleus (+8) minus its core electrons
        assert np.all((c[s.numbers == 8, 0] > 5.0) & (c[s.numbers == 8, 0] < 8.0))
        # the fit-quality flag: the fitted potential is within a few mHa/e of PBE's on the shells
        assert 0.0 < float(s.info["esp_rmse"]) < 5.0


def test_energies_forces_and_charges_are_physical(clusters):
    monomers = [s for s in clusters if s.info["n_waters"] == 1 and not s.info["rattled"]]
    e1 = np.mean([float(s.targets["energy"]) for s in monomers])
    assert -2076.0 < e1 < -2075.0          # PBE/def2-SVP water ≈ −76.27 Ha
    binding = {True: [], False: []}
    for s in clusters:
        n = int(s.info["n_waters"])
        binding[bool(s.info["rattled"])].append((float(s.targets["energy"]) - n * e1) / n)
        assert np.linalg.norm(s.targets["forces"].sum(axis=0)) < 1e-3 * s.n_atoms ** 0.5 + 1e-3
    # thermal clusters: bound by up to ~0.5 eV per water (hydrogen bonds), never far above
    # the monomer; the ~10 % rattled by 0.05 Å sit higher (strained bonds), as they should
    assert -0.6 < min(binding[False]) and max(binding[False]) < 0.3
    assert 0.05 < np.mean([s.info["rattled"] for s in clusters]) < 0.2
    assert np.mean(binding[True]) > np.mean(binding[False]) + 0.1
    hirsh = data.load_water_clusters(charges="hirshfeld", n_waters=2)
    dens = data.load_water_clusters(charges="density", n_waters=2)
    for a, b in zip(hirsh, dens):
        qa, qb = a.targets["charges"], b.targets["charges"]
        assert abs(qa.sum()) < 1e-3 and abs(qb.sum()) < 1e-6
        assert np.all(qa[a.numbers == 8] < 0) and np.all(qb[b.numbers == 8] < 0)
        # Hirshfeld charges are the smaller ones (a well-known property)
        assert np.mean(np.abs(qa)) < np.mean(np.abs(qb))


def test_size_transfer_set():
    big = data.load_water_transfer(charges="density")
    sizes = [int(s.info["n_waters"]) for s in big]
    assert sizes.count(12) >= 10 and sizes.count(16) >= 10
    for s in big:
        assert s.info["set"] == "transfer" and s.info["level"] == "PBE" and s.info["basis"] == "def2-svp"
        assert abs(float(s.targets["charges"].sum())) < 1e-6 and 0.0 < float(s.info["esp_rmse"]) < 5.0


def test_loader_refusals_and_basis():
    with pytest.raises(ValueError, match="charges must be one of"):
        data.load_water_clusters(charges="mulliken")
    with pytest.raises(ValueError, match="n_waters"):
        data.load_water_clusters(n_waters=40)
    s = data.load_water_clusters(n_waters=1)[0]
    assert data.reference_basis(s) == {1: ((0.25, 0.45, 0.7), (0.35,)), 8: ((0.05, 0.25, 0.45, 0.7), (0.25, 0.5))}
    assert s.info["basis_widths"].shape == (3, 6)
    bare = dataclasses.replace(s, info={})
    with pytest.raises(ValueError, match="widths"):
        data.reference_basis(bare)


@pytest.fixture(scope="module")
def density_case():
    ds = data.load_water_clusters(n_waters=(1, 2, 3))[:6]
    basis = [(z, *w) for z, w in data.reference_basis(ds[0]).items()]
    pot = build_potential("density", species=(1, 8), basis=basis, learn_widths=False,
                          local=dict(cutoff=3.5, max_radial=2, max_angular=1), hidden=(8,), coef_hidden=(8,))
    loader = data.BatchLoader(ds, species=pot.species, cutoff=pot.cutoff, batch_size=3, targets=TARGETS)
    atoms, targets = next(iter(loader.epoch(seed=None)))
    variables = pot.init(jax.random.PRNGKey(0), atoms)
    return ds, pot, atoms, targets, variables


def test_density_model_in_the_reference_basis(density_case):
    ds, pot, atoms, targets, variables = density_case
    out = pot.predict(variables, atoms)
    assert out.coefficients.shape == targets.coefficients.shape
    np.testing.assert_allclose(out.basis_widths, targets.coefficient_widths * atoms.atom_mask[..., None]
                               + (~atoms.atom_mask[..., None]) * out.basis_widths)
    h = (atoms.species == 0) & atoms.atom_mask              # species (1, 8): channel 0 is H
    assert np.all(np.asarray(out.coefficients)[np.asarray(h)][:, [3, 7, 8, 9]] == 0.0)
    q = np.asarray(out.charges)
    assert np.all(np.abs(q.sum(axis=1)) < 1e-8)
    with pytest.raises(ValueError, match="no functions for atomic numbers"):
        build_potential("density", species=(1, 6, 8), basis=[(1, (0.3,), ()), (8, (0.3,), ())]).init(
            jax.random.PRNGKey(0), atoms)


def test_coefficient_loss_is_the_coulomb_metric(density_case):
    ds, pot, atoms, targets, variables = density_case
    out = pot.predict(variables, atoms)
    _, parts = loss_fn(out, targets, atoms, {"coefficients": 1.0})
    # direct: the metric of each real structure, unpadded, over all real atoms
    total, n_atoms = 0.0, 0
    for b in range(atoms.n_structures):
        if not bool(atoms.structure_mask[b]):
            continue
        n = int(atoms.atom_mask[b].sum())
        w, wr = np.asarray(out.basis_widths[b, :n]), np.asarray(targets.coefficient_widths[b, :n])
        total += float(coulomb_metric(atoms.positions[b, :n], out.coefficients[b, :n], w[:, :4], w[:, 4:],
                                      targets.coefficients[b, :n], wr[:, :4], wr[:, 4:]))
        n_atoms += n
    assert float(parts["coefficients"]) == pytest.approx(total / n_atoms, rel=1e-10)
    # the reference against itself costs nothing; without widths it is the raw mean square
    same = dataclasses.replace(out, coefficients=targets.coefficients, basis_widths=targets.coefficient_widths)
    assert float(loss_fn(same, targets, atoms, {"coefficients": 1.0})[1]["coefficients"]) < 1e-10
    raw = loss_fn(dataclasses.replace(out, basis_widths=None), targets, atoms, {"coefficients": 1.0})[1]
    m = np.asarray(atoms.atom_mask)
    err = np.asarray(out.coefficients - targets.coefficients)[m]
    assert float(raw["coefficients"]) == pytest.approx(np.mean(err ** 2), rel=1e-10)


def test_coefficient_loss_gradient_is_finite(density_case):
    ds, pot, atoms, targets, variables = density_case

    def loss(v):
        return loss_fn(pot.apply(v, atoms, forces=False), targets, atoms, {"coefficients": 1.0, "dipole": 1.0})[0]

    g = jax.grad(loss)(variables)
    leaves = jax.tree_util.tree_leaves(g["params"])
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert sum(float(np.sum(np.abs(np.asarray(x)))) for x in leaves) > 0


def test_promolecule_offsets_the_density_and_keeps_the_physics(density_case):
    ds, pot, atoms, targets, variables = density_case
    pro = data.mean_coefficients(ds)
    pot_p = pot.__class__(pot.name, pot.module.clone(promolecule=pro))
    v = pot_p.init(jax.random.PRNGKey(0), atoms)
    out_p, out = pot_p.predict(v, atoms), pot.predict(variables, atoms)
    # the networks start near zero: the promolecule already holds the nuclei and core electrons
    lp = float(loss_fn(out_p, targets, atoms, {"coefficients": 1.0})[1]["coefficients"])
    l0 = float(loss_fn(out, targets, atoms, {"coefficients": 1.0})[1]["coefficients"])
    assert lp < 0.05 * l0, (lp, l0)
    assert np.all(np.abs(np.asarray(out_p.charges).sum(axis=1)) < 1e-8)     # neutral clusters stay neutral
    # Hellmann–Feynman: the dipole is −∂E/∂F, fixed density included
    field0 = np.zeros((atoms.n_structures, 3))

    def energy(f):
        b = dataclasses.replace(atoms, field=f)
        return pot_p.apply(v, b, forces=False).energy.sum()

    grad = np.asarray(jax.grad(energy)(field0))
    mask = np.asarray(atoms.structure_mask)
    np.testing.assert_allclose(-grad[mask], np.asarray(out_p.dipole)[mask], atol=1e-8)


def test_promolecule_is_spherical_and_the_model_rotation_invariant(density_case):
    """A lab-frame atomic dipole in the promolecule would turn with nothing: refused; the
    spherical one of mean_coefficients leaves energies invariant and coefficients covariant."""
    ds, pot, atoms, targets, variables = density_case
    pro = data.mean_coefficients(ds)
    assert all(not any(c[4:]) for _, c in pro)                  # p slots exactly 0
    tilted = tuple((z, tuple(c[:4]) + (0.01,) + tuple(c[5:])) for z, c in pro)
    with pytest.raises(ValueError, match="spherical"):
        pot.__class__(pot.name, pot.module.clone(promolecule=tilted)).init(jax.random.PRNGKey(0), atoms)
    pot_p = pot.__class__(pot.name, pot.module.clone(promolecule=pro))
    v = pot_p.init(jax.random.PRNGKey(1), atoms)
    rot, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(3, 3)))
    turned = dataclasses.replace(atoms, positions=atoms.positions @ rot.T)
    o1, o2 = pot_p.predict(v, atoms), pot_p.predict(v, turned)
    mask = np.asarray(atoms.structure_mask)
    np.testing.assert_allclose(np.asarray(o2.energy)[mask], np.asarray(o1.energy)[mask], rtol=1e-11)
    np.testing.assert_allclose(np.asarray(o2.dipole)[mask], np.asarray(o1.dipole)[mask] @ rot.T, atol=1e-9)
    p1 = np.asarray(o1.coefficients)[..., 4:7] @ rot.T          # first p triple turns with the atoms
    np.testing.assert_allclose(np.asarray(o2.coefficients)[..., 4:7], p1, atol=1e-9)


def test_esp_errors_of_a_density_model(density_case):
    from jaxlr.train import density_esp_errors, esp_rmse

    ds, pot, atoms, targets, variables = density_case
    errs = density_esp_errors(pot, variables, ds, batch_size=4)
    assert errs["model"].shape == (len(ds),) and np.all(np.isfinite(errs["model"]))
    np.testing.assert_allclose(errs["reference_fit"], [float(s.info["esp_rmse"]) for s in ds])
    s = ds[0]
    assert esp_rmse(s.positions, s.numbers, s.targets["coefficients"], s.info["basis_widths"],
                    s.targets["coefficients"], s.info["basis_widths"]) == 0.0
    # an untrained model's density is far from the reference (nuclei missing): errors of volts
    assert np.all(errs["model"] > 10.0)
