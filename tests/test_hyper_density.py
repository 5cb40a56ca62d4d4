"""The density-model hyperparameter loss (jaxlr.hyper.density_loss): hypergradients of every family
agree with central finite differences; the model reduces to Qeq with one s function and to a
closed form for a lone atom; fragment constraints hold; rotations change nothing; fitting the
linear terms and hardness lowers the loss; bad input is refused before compilation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlr.data import Structure, data_path, read_structures, reference_basis_widths
from jaxlr.equilibration import GaussianBasis
from jaxlr.hyper import (
    density_data,
    density_errors,
    density_loss,
    density_predictions,
    optimize,
    qeq_data,
    qeq_loss,
)
from jaxlr.units import KE

# one compiled loss-and-gradient per data layout and target, shared by every test
VALUE_AND_GRAD = jax.jit(jax.value_and_grad(density_loss))
LOSS = jax.jit(density_loss)
ERRORS = jax.jit(density_errors)
PREDICT = jax.jit(density_predictions)


def _neutral_waters(structure):
    """Every H with its nearest O, each molecule a neutral fragment; the reference basis widths and
    the density-fit charges (s sums of the reference coefficients) added, as load_water_clusters does."""
    z, r = np.asarray(structure.numbers), np.asarray(structure.positions)
    o, h = np.flatnonzero(z == 8), np.flatnonzero(z == 1)
    labels = np.empty(len(z), int)
    labels[o] = np.arange(len(o))
    labels[h] = np.argmin(np.linalg.norm(r[h, None] - r[None, o], axis=-1), axis=1)
    assert np.all(np.bincount(labels) == 3)
    sigma_s, sigma_p = reference_basis_widths(structure)
    charges = np.asarray(structure.targets["coefficients"])[:, :sigma_s.shape[1]].sum(axis=1)
    return structure.replace(fragments=labels, fragment_charges=np.zeros(len(o)),
                             info={**structure.info, "basis_widths": np.concatenate([sigma_s, sigma_p], axis=1)},
                             targets={**structure.targets, "charges": charges})


@pytest.fixture(scope="module")
def clusters():
    """Four small bundled PBE water clusters (1, 2, 2 and 3 molecules), each molecule neutral."""
    structures = read_structures(data_path("water_clusters.extxyz.gz"), index="::37")
    picked = [_neutral_waters(structures[k]) for k in (0, 2, 3, 5)]
    assert [int(s.info["n_waters"]) for s in picked] == [1, 2, 2, 3]
    return picked


def _hyper(data):
    """A point away from the defaults, so that every family has a gradient (x ≠ 0)."""
    h = data.default_hyper()
    h["s_widths"] = h["s_widths"] * 1.1
    h["p_widths"] = h["p_widths"] * 0.9
    h["shell_hardness"] = h["shell_hardness"] * np.array([[1.0, 0.7, 1.3, 0.9, 1.1, 0.8]])
    h["linear"] = np.array([[0.5, -0.3, 0.2, 0.0], [1.0, 0.3, -0.4, -0.2]])
    return {k: jnp.asarray(v) for k, v in h.items()}


def _central(f, h, key, index, rel=1e-5):
    def shifted(step):
        v = np.array(h[key], dtype=np.float64)
        v[index] += step
        return float(f({**h, key: jnp.asarray(v)}))
    eps = rel * max(abs(float(np.asarray(h[key])[index])), 1.0)
    return (shifted(eps) - shifted(-eps)) / (2 * eps)


# used shells: H (species 0) has s 0-2 and p 0; O (species 1) s 0-3 and p 0-1
POINTS = {"s_widths": [(0, 1), (1, 0), (1, 3)], "p_widths": [(0, 0), (1, 1)],
          "shell_hardness": [(0, 0), (0, 4), (1, 2), (1, 5)], "linear": [(0, 2), (1, 0)]}


@pytest.mark.parametrize("target", ["coefficients", "dipole", "charges"])
def test_density_hypergradient_matches_finite_differences(clusters, target):
    """Every differentiable family (s and p widths, shell hardness, s linear terms) against central
    differences of the same loss, float64, ≤ 1e-5 relative; padding shells get exactly zero."""
    data = density_data(clusters, target=target, batch_size=4)
    h = _hyper(data)
    _, grad = VALUE_AND_GRAD(h, data)
    for key, points in POINTS.items():
        for index in points:
            g = float(np.asarray(grad[key])[index])
            fd = _central(lambda p: VALUE_AND_GRAD(p, data)[0], h, key, index)
            assert abs(g - fd) <= 1e-5 * abs(fd), (target, key, index, g, fd)
    # H has three s functions and one p function: its fourth s shell and second p shell are padding
    assert float(grad["s_widths"][0, 3]) == 0.0 and float(grad["linear"][0, 3]) == 0.0
    assert float(grad["p_widths"][0, 1]) == 0.0 and float(grad["shell_hardness"][0, 5]) == 0.0
    # a common shift of every s linear term is absorbed by the molecules' chemical potentials
    used = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    lin = np.asarray(grad["linear"])
    assert abs(lin[used].sum()) <= 1e-9 * np.abs(lin).max()


def test_each_water_stays_neutral_and_errors_agree_with_numpy(clusters):
    """Fragment constraints: every molecule's s charges sum to 0 (1e-10); the dipole and charge errors
    of density_errors equal numpy's RMS of the predicted charges and dipoles."""
    data = density_data(clusters, target="dipole", batch_size=4)
    h = _hyper(data)
    out = PREDICT(h, data)[0]
    q, dip = np.asarray(out["charges"]), []
    for b, s in enumerate(clusters):
        n = s.n_atoms
        per_molecule = np.bincount(s.fragments, weights=q[b, :n])
        assert np.abs(per_molecule).max() <= 1e-10
        x = np.asarray(out["coefficients"][b, :n])
        assert np.allclose(x[:, :4].sum(axis=1), q[b, :n], atol=1e-14)
        mu = x[:, 4:].reshape(n, 2, 3).sum(axis=1)
        dip.append(q[b, :n] @ s.positions + mu.sum(axis=0))
        assert np.allclose(dip[-1], np.asarray(out["total_dipole"][b]), atol=1e-12)
    errors = ERRORS(h, data)
    ref_dip = np.array([s.targets["dipole"] for s in clusters])
    ref_q = np.concatenate([s.targets["charges"] for s in clusters])
    pred_q = np.concatenate([q[b, :s.n_atoms] for b, s in enumerate(clusters)])
    assert abs(float(errors["dipole"]) - np.sqrt(np.mean((np.array(dip) - ref_dip) ** 2))) <= 1e-12
    assert abs(float(errors["charges"]) - np.sqrt(np.mean((pred_q - ref_q) ** 2))) <= 1e-12


def test_one_s_function_per_atom_is_qeq():
    """With one s function per species and no p functions the density model is Qeq: J = hardness,
    σ = the s width, χ = the linear term (an independent solver, jaxlr.hyper.qeq_loss)."""
    rng = np.random.default_rng(1)
    mols = []
    for k in range(3):
        pos = np.vstack([rng.normal(0, 0.8, (3, 3)), rng.normal(0, 0.8, (3, 3)) + [3.0, 0.0, 0.0]])
        q = rng.normal(0, 0.3, 6)
        q[:3] -= q[:3].mean()
        q[3:] -= q[3:].mean()
        mols.append(Structure(positions=pos, numbers=[8, 1, 1, 8, 1, 1], fragments=[0, 0, 0, 1, 1, 1],
                              fragment_charges=[0.0, 0.0], targets={"charges": q, "dipole": q @ pos}))
    basis = GaussianBasis(species=(1, 8), s_widths=((0.6,), (0.5,)))
    chi, hard, sigma = np.array([4.5, 8.7]), np.array([9.0, 12.0]), np.array([0.7, 0.55])
    h = {"s_widths": sigma[:, None], "p_widths": np.zeros((2, 0)), "shell_hardness": hard[:, None],
         "linear": chi[:, None]}
    for target in ("charges", "dipole"):
        dens = LOSS(h, density_data(mols, target=target, basis=basis, batch_size=4))
        qeq = jax.jit(qeq_loss)({"hardness": hard, "sigma": sigma, "electronegativity": chi},
                       qeq_data(mols, target=target, batch_size=4))
        assert abs(float(dens) - float(qeq)) <= 1e-12 * float(qeq), target


def test_lone_atom_density_error_has_its_closed_form():
    """One atom, two s functions in the model and three in the reference, total charge 0: the
    charge t moved between the model's shells and the Coulomb-metric error of the density have
    closed forms, from (g_a | g_b) = KE √(2/π) / √(σ_a² + σ_b²) for unit s Gaussians on one centre."""
    ref_w, ref_c = np.array([0.3, 0.6, 1.0]), np.array([0.4, 0.1, -0.5])
    atom = Structure(positions=np.zeros((1, 3)), numbers=[10],
                     targets={"coefficients": ref_c[None, :]}, info={"basis_widths": ref_w[None, :]})
    model_w, b, hard = np.array([0.4, 0.8]), np.array([0.7, -0.2]), np.array([3.0, 5.0])
    data = density_data([atom], target="coefficients", basis=GaussianBasis(species=(10,), s_widths=((0.5, 0.9),)),
                        promolecule=None, batch_size=1)
    h = {"s_widths": model_w[None], "p_widths": np.zeros((1, 0)), "shell_hardness": hard[None], "linear": b[None]}

    def coulomb(wa, wb):
        return KE * np.sqrt(2 / np.pi) / np.sqrt(wa[:, None] ** 2 + wb[None, :] ** 2)

    c_mm = coulomb(model_w, model_w)
    t = -(b[0] - b[1]) / (hard.sum() + c_mm[0, 0] + c_mm[1, 1] - 2 * c_mm[0, 1])    # x = (t, −t)
    x = np.array([t, -t])
    error = 0.5 * (x @ c_mm @ x - 2 * x @ coulomb(model_w, ref_w) @ ref_c + ref_c @ coulomb(ref_w, ref_w) @ ref_c)
    out = PREDICT(h, data)[0]
    assert np.allclose(np.asarray(out["coefficients"])[0, 0], x, rtol=1e-12, atol=0)
    assert abs(float(LOSS(h, data)) - error) <= 1e-12 * error    # one atom: eV/atom = eV


def test_rotation_changes_no_error(clusters):
    """Rotation invariance without a network (p linear terms are zero): rotating the clusters, their
    reference dipoles and the p triples of their reference coefficients leaves every error unchanged."""
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("zyx", [0.7, -1.1, 0.4]).as_matrix()
    turned = []
    for s in clusters:
        c = np.array(s.targets["coefficients"], dtype=np.float64)
        c[:, 4:] = (c[:, 4:].reshape(-1, 2, 3) @ rot.T).reshape(-1, 6)
        turned.append(s.replace(positions=np.asarray(s.positions) @ rot.T,
                                targets={**s.targets, "coefficients": c, "dipole": rot @ s.targets["dipole"]}))
    data, data_rot = (density_data(x, target="coefficients", batch_size=4) for x in (clusters, turned))
    h = _hyper(data)
    e, e_rot = ERRORS(h, data), ERRORS(h, data_rot)
    for key in ("coefficients", "dipole", "charges"):
        assert abs(float(e[key]) - float(e_rot[key])) <= 1e-10 * float(e[key]), key


def test_fitting_linear_terms_and_hardness_lowers_the_coulomb_error(clusters):
    """At the reference basis's own widths, Adam on the linear terms and the log-hardness lowers the
    Coulomb-metric density error below the defaults (hardness 10, no linear term: x = 0)."""
    data = density_data(clusters, target="coefficients", batch_size=4)
    start = data.default_hyper()
    t = optimize(density_loss, start, data, steps=12, learning_rate=0.2, fixed=("s_widths", "p_widths"),
                 progress=False)
    assert t.loss[0] == pytest.approx(float(ERRORS(start, data)["coefficients"]), rel=1e-12)
    assert t.best_loss < 0.8 * t.loss[0], (t.loss[0], t.best_loss)
    assert t.best["s_widths"] == t.hyper[0]["s_widths"]     # held fixed


def test_bad_input_is_refused_before_compilation(clusters):
    data = density_data(clusters, target="dipole", batch_size=4)
    good = data.default_hyper()
    bad = [({"s_widths": -good["s_widths"]}, "s_widths must be > 0"),
           ({"shell_hardness": 0.0 * good["shell_hardness"]}, "shell_hardness must be > 0"),
           ({"p_widths": np.ones((2, 3))}, r"p_widths must have shape \(2, 2\)"),
           ({"linear": np.ones(2)}, r"linear must have shape \(2, 4\)"),
           ({"hardness": np.ones(2)}, "takes the hyperparameters"),
           ({"s_widths": np.full((2, 4), np.nan)}, "s_widths must be finite")]
    calls = []

    def loss(h, d):
        calls.append(1)
        return density_loss(h, d)

    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            density_loss({**good, **change}, data)
        with pytest.raises(ValueError, match=message):
            optimize(loss, {**good, **change}, data, steps=2, progress=False)
    with pytest.raises(ValueError, match="hyper lacks \\['shell_hardness'\\]"):
        density_loss({"linear": good["linear"]}, data)
    assert not calls
    with pytest.raises(ValueError, match="target must be one of"):
        density_data(clusters, target="energy")
    with pytest.raises(ValueError, match="needs a 'charges' target in every structure; 1 of 1 lack it"):
        density_data([Structure(positions=np.zeros((1, 3)), numbers=[1])], target="charges",
                     basis=GaussianBasis(species=(1,), s_widths=((0.5,),)))
    with pytest.raises(ValueError, match="build the GaussianBasis with species=\\(1, 8\\)"):
        density_data(clusters, basis=GaussianBasis(species=(8, 1), s_widths=((0.5,), (0.5,))))
    with pytest.raises(ValueError, match="carry no density-basis widths"):
        density_data([Structure(positions=np.zeros((1, 3)), numbers=[1], targets={"dipole": np.zeros(3)})],
                     target="dipole")
    charged = tuple((z, (0.1,) + (0.0,) * 9) for z in (1, 8))
    with pytest.raises(ValueError, match="promolecule must be neutral and spherical"):
        density_data(clusters, promolecule=charged)
