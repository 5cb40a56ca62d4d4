"""Hypergradients (jaxlr.hyper): validation losses differentiated through features, ridge and Qeq solves
agree with central finite differences of the same loss; the optimiser improves a loss; bad
hyperparameters are refused before compilation."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlr
from jaxlr.data import Dataset, Structure
from jaxlr.hyper import (
    SCALE_FLOOR,
    grid_search,
    kfold_cv_error,
    kfold_indices,
    optimize,
    qeq_data,
    qeq_loss,
    ridge_cv_loss,
    ridge_data,
    ridge_fit,
    run_study,
)


def _molecules(n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        m = 3 + k % 2
        pos = rng.normal(0, 0.9, (m, 3))
        numbers = [8] + [1] * (m - 1)
        q = rng.normal(0, 0.3, m)
        q -= q.mean()
        dip = q @ pos
        energy = float(np.sum(rng.normal(size=m)) + np.sum(1.0 / (1.0 + np.linalg.norm(pos[:, None] - pos[None], axis=-1))))
        out.append(Structure(positions=pos, numbers=numbers, targets={"energy": energy, "charges": q, "dipole": dip}))
    return Dataset(out)


def _central(f, h, key, index=None, rel=1e-5):
    def shifted(step):
        g = dict(h)
        v = np.array(h[key], dtype=np.float64)
        if index is None:
            v = v + step
        else:
            v[index] += step
        g[key] = jnp.asarray(v)
        return float(f(g))
    base = np.asarray(h[key], np.float64) if index is None else np.asarray(h[key], np.float64)[index]
    eps = rel * max(abs(float(base)), 1.0)
    return (shifted(eps) - shifted(-eps)) / (2 * eps)


@pytest.fixture(scope="module")
def lode_data():
    return ridge_data(_molecules(), kind="lode", cutoff=3.0, max_radial=2, max_angular=1, folds=3)


LODE_HYPER = dict(lode_sigma=0.9, density_sigma=0.5, radial_scale=1.1, cutoff_width=0.7, log_lambda=-4.0)
# one compiled loss and gradient for every test (a jit object per test would recompile each time)
RIDGE_LOSS = jax.jit(ridge_cv_loss)
RIDGE_GRAD = jax.jit(jax.grad(ridge_cv_loss))
# the Qeq finite-difference tests take the loss from this one too: one compilation per data layout
QEQ_VALUE_AND_GRAD = jax.jit(jax.value_and_grad(qeq_loss))


@pytest.mark.parametrize("key", sorted(LODE_HYPER))
def test_ridge_cv_hypergradient_matches_finite_differences(lode_data, key):
    h = {k: jnp.asarray(v) for k, v in LODE_HYPER.items()}
    f = RIDGE_LOSS
    grad = RIDGE_GRAD(h, lode_data)[key]
    fd = _central(lambda g: f(g, lode_data), h, key)
    assert abs(float(grad) - fd) <= 1e-5 * max(abs(fd), 1e-3 * float(f(h, lode_data))), (float(grad), fd)


def test_per_function_radial_widths_are_differentiable_and_equal_factors_are_the_scalar(lode_data):
    """radial_scale as a (max_radial,) array sets each GTO width on its own: each component's
    hypergradient matches central differences, and equal factors give the scalar's loss."""
    h = {k: jnp.asarray(v) for k, v in LODE_HYPER.items()}
    same = dict(h, radial_scale=jnp.full(2, LODE_HYPER["radial_scale"]))
    assert abs(float(RIDGE_LOSS(same, lode_data)) - float(RIDGE_LOSS(h, lode_data))) <= 1e-12
    # the two components pull in different directions from a common value: they are separate knobs
    hv = dict(h, radial_scale=jnp.asarray([0.9, 1.3]))
    grad = RIDGE_GRAD(hv, lode_data)["radial_scale"]
    assert grad.shape == (2,)
    for index in range(2):
        fd = _central(lambda g: RIDGE_LOSS(g, lode_data), hv, "radial_scale", index=index)
        assert abs(float(grad[index]) - fd) <= 1e-5 * max(abs(fd), 1e-3 * float(RIDGE_LOSS(hv, lode_data))), (index, fd)
    with pytest.raises(ValueError, match=r"one factor per radial function \(max_radial = 2\), got shape \(3,\)"):
        ridge_cv_loss(dict(LODE_HYPER, radial_scale=np.ones(3)), lode_data)


def test_local_width_hypergradient_matches_finite_differences():
    data = ridge_data(_molecules(), kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=3)
    h = dict(local_sigma=jnp.asarray(0.4), radial_scale=jnp.asarray(1.0), cutoff_width=jnp.asarray(0.5),
             log_lambda=jnp.asarray(-3.0))
    f = RIDGE_LOSS
    grad = RIDGE_GRAD(h, data)["local_sigma"]
    fd = _central(lambda g: f(g, data), h, "local_sigma")
    assert abs(float(grad) - fd) <= 1e-5 * abs(fd)


@pytest.mark.parametrize("key, index", [("hardness", 0), ("hardness", 1), ("sigma", 0), ("sigma", 1),
                                        ("electronegativity", 1)])
@pytest.mark.parametrize("target", ["charges", "fragment_charges"])   # dipoles: on the water clusters below
def test_qeq_hypergradient_matches_finite_differences(key, index, target):
    mols = _molecules(6)
    if target == "fragment_charges":     # pairs of molecules as ±1 fragments of one structure
        mols = [Structure(positions=np.vstack([a.positions, b.positions + [0.0, 0.0, 3.5]]),
                          numbers=list(a.numbers) + list(b.numbers),
                          fragments=[0] * a.n_atoms + [1] * b.n_atoms, fragment_charges=[1.0, -1.0])
                for a, b in zip(list(mols)[::2], list(mols)[1::2])]
    data = qeq_data(mols, target=target)
    h = {"hardness": jnp.array([9.0, 12.0]), "sigma": jnp.array([0.6, 0.8]),
         "electronegativity": jnp.array([0.0, 3.0])}
    grad = np.asarray(QEQ_VALUE_AND_GRAD(h, data)[1][key])[index]
    fd = _central(lambda g: QEQ_VALUE_AND_GRAD(g, data)[0], h, key, index)
    assert abs(grad - fd) <= 1e-5 * max(abs(fd), 1e-6), (grad, fd)


def _water_molecules(stride=71):
    """Every ``stride``-th bundled water cluster (eight clusters of 1–8 molecules for 71, read without
    parsing the rest of the file), each molecule a neutral fragment (every H with its nearest O)."""
    from jaxlr.data import data_path, read_structures

    out = []
    for s in read_structures(data_path("water_clusters.extxyz.gz"), index=f"::{stride}"):
        z, r = np.asarray(s.numbers), np.asarray(s.positions)
        o, h = np.flatnonzero(z == 8), np.flatnonzero(z == 1)
        labels = np.empty(len(z), int)
        labels[o] = np.arange(len(o))
        labels[h] = np.argmin(np.linalg.norm(r[h, None] - r[None, o], axis=-1), axis=1)
        assert np.all(np.bincount(labels) == 3)
        out.append(s.replace(fragments=labels, fragment_charges=np.zeros(len(o))))
    return out


def test_qeq_dipole_hypergradient_on_water_clusters_matches_finite_differences():
    """The water-cluster Qeq study's loss (PBE dipoles, each molecule neutral, per-species J, σ, χ):
    every component of the hypergradient equals a central difference; a common shift of χ changes
    no charge (each molecule's charge is fixed), so the two χ components are equal and opposite."""
    clusters = _water_molecules()
    sizes = [int(s.info["n_waters"]) for s in clusters]
    assert min(sizes) == 1 and max(sizes) == 8
    data = qeq_data(clusters, target="dipole", species=(1, 8), batch_size=8)
    h = {"hardness": jnp.array([8.0, 5.0]), "sigma": jnp.array([0.8, 0.6]), "electronegativity": jnp.array([4.3, 8.9])}
    _, grad = QEQ_VALUE_AND_GRAD(h, data)
    for key in ("hardness", "sigma", "electronegativity"):
        for index in (0, 1):
            g = float(np.asarray(grad[key])[index])
            fd = _central(lambda p: QEQ_VALUE_AND_GRAD(p, data)[0], h, key, index)
            assert abs(g - fd) <= 1e-5 * abs(fd), (key, index, g, fd)
    chi = np.asarray(grad["electronegativity"])
    assert abs(chi[0] + chi[1]) <= 1e-9 * abs(chi[0])


def test_ewald_smearing_gradient_is_zero():
    """The Ewald energy does not depend on the smearing: its hypergradient vanishes to rounding."""
    rng = np.random.default_rng(3)
    cell = np.eye(3) * 9.0 + rng.normal(0, 0.3, (3, 3))
    R = rng.uniform(0, 1, (16, 3)) @ cell
    q = np.tile([1.0, -1.0], 8)
    nbrs = jaxlr.neighbor_list(R, 8.0, cell)
    kv = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, 7.0))   # e^{−k²s²/2} < 1e-15

    def energy(s):
        return jaxlr.coulomb_energy(jnp.asarray(R), jnp.asarray(q), cell=jnp.asarray(cell), smearing=s,
                                    neighbors=nbrs, kvectors=kv, method="ewald")

    g = float(jax.grad(energy)(1.2))
    e = float(energy(1.2))
    assert abs(g) <= 1e-8 * abs(e)


def test_ridge_matches_numpy_and_is_exact_without_regulariser():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 4))
    y = A @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.7
    theta, mean, scale, off = ridge_fit(jnp.asarray(A), jnp.asarray(y), jnp.log(1e-14))
    np.testing.assert_allclose(((A - mean) / scale) @ theta + off, y, atol=1e-8)
    # against numpy's closed form at a finite λ
    lam = 0.3
    var = ((A - A.mean(0)) ** 2).mean(0)
    X = (A - A.mean(0)) / np.sqrt(var + SCALE_FLOOR * var.mean())
    G = X.T @ X
    ref = np.linalg.solve(G + lam * np.trace(G) / 4 * np.eye(4), X.T @ (y - y.mean()))
    theta, *_ = ridge_fit(jnp.asarray(A), jnp.asarray(y), jnp.log(lam))
    np.testing.assert_allclose(theta, ref, rtol=1e-10)
    assert float(kfold_cv_error(jnp.asarray(A), jnp.asarray(y), jnp.log(1e-12), kfold_indices(30, 5))) < 1e-6


def test_ridge_is_stable_for_collinear_features():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20, 1))
    A = np.hstack([a, a, a * (1 + 1e-15), np.ones((20, 1))])     # rank 1 after centring
    y = 2 * a[:, 0]
    g = jax.grad(lambda ll: kfold_cv_error(jnp.asarray(A), jnp.asarray(y), ll, kfold_indices(20, 4)))(-20.0)
    assert np.isfinite(float(g))


def test_optimizer_lowers_the_cv_error(lode_data):
    start = dict(LODE_HYPER, lode_sigma=2.0, log_lambda=-1.0)
    t = optimize(ridge_cv_loss, start, lode_data, steps=15, learning_rate=0.1, progress=False)
    assert t.best_loss < t.loss[0]
    assert t.evaluations == len(t.loss) and t.best["lode_sigma"] > 0
    g = grid_search(ridge_cv_loss, {"lode_sigma": [0.6, 1.2]}, lode_data,
                    fixed={k: v for k, v in LODE_HYPER.items() if k != "lode_sigma"}, progress=False)
    assert g.evaluations == 2 and g.best["lode_sigma"] in (0.6, 1.2)


def test_bad_hyperparameters_are_refused_before_compilation(lode_data):
    with pytest.raises(ValueError, match="lode_sigma must be > 0"):
        ridge_cv_loss(dict(LODE_HYPER, lode_sigma=-0.5), lode_data)
    with pytest.raises(ValueError, match=r"cutoff_width must lie in \(0, cutoff = 3.0\]"):
        ridge_cv_loss(dict(LODE_HYPER, cutoff_width=3.5), lode_data)
    with pytest.raises(ValueError, match="hyper lacks"):
        ridge_cv_loss({"lode_sigma": 1.0}, lode_data)
    with pytest.raises(ValueError, match="unknown hyperparameters"):
        ridge_cv_loss(dict(LODE_HYPER, sigma_l=1.0), lode_data)
    with pytest.raises(ValueError, match="folds=40 is larger than the number of data rows"):
        ridge_data(_molecules(), kind="lode", folds=40)
    with pytest.raises(ValueError, match="hardness must be ≥ 0"):
        qeq_loss({"hardness": np.array([-1.0, 1.0]), "sigma": np.ones(2)}, qeq_data(_molecules(2)))
    with pytest.raises(ValueError, match="one value per species"):
        qeq_loss({"hardness": np.ones(3), "sigma": np.ones(2)}, qeq_data(_molecules(2)))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        optimize(ridge_cv_loss, LODE_HYPER, lode_data, steps=0)


def test_tune_hyper_command_writes_trajectory_and_plot(tmp_path):
    import ase.io
    from ase import Atoms

    from jaxlr.cli import main

    frames = []
    for s in _molecules(9):
        a = Atoms(numbers=s.numbers, positions=s.positions)
        a.info["energy"] = float(s.targets["energy"])
        frames.append(a)
    xyz = tmp_path / "mols.xyz"
    ase.io.write(xyz, frames, format="extxyz")
    cfg = tmp_path / "study.toml"
    cfg.write_text(f'[data]\nsource = "{xyz}"\nfolds = 3\n[features]\nkind = "local"\ncutoff = 3.0\nmax_radial = 2\n'
                   f'max_angular = 1\n[hyper]\nlocal_sigma = 0.6\nradial_scale = [1.0, 1.2]\n[search]\nsteps = 3\nfixed = ["cutoff_width"]\n'
                   f'[output]\ndir = "{tmp_path / "out"}"\n')
    assert main(["tune-hyper", str(cfg)]) == 0
    result = json.loads((tmp_path / "out" / "trajectory.json").read_text())
    assert len(result["loss"]) == 4 and result["best"]["cutoff_width"] == 0.5
    assert len(result["best"]["radial_scale"]) == 2 and (tmp_path / "out" / "trajectory.png").exists()
    assert (tmp_path / "out" / "trajectory.png").stat().st_size > 0
    cfg.write_text('[data]\nsource = "charged_dimers"\n[serch]\nsteps = 3\n')
    assert main(["tune-hyper", str(cfg)]) == 2          # unknown table, reported before compiling
    with pytest.raises(ValueError, match=r"did you mean \[search\]"):
        run_study({"data": {"source": "charged_dimers"}, "serch": {}})
    with pytest.raises(ValueError, match="unknown key 'lode_sigm'.*did you mean 'lode_sigma'"):
        run_study({"data": {"source": "charged_dimers"}, "hyper": {"lode_sigm": 1.0}})


def test_dual_ridge_for_more_features_than_rows_equals_the_primal():
    """With D > K the K × K dual system is solved; it gives the primal's weights and gradients."""
    rng = np.random.default_rng(4)
    A = jnp.asarray(rng.normal(size=(12, 40)))
    y = jnp.asarray(rng.normal(size=12))
    w = jnp.asarray((np.arange(12) % 4 != 0).astype(float))         # three rows left out
    theta, mean, scale, off = ridge_fit(A, y, jnp.log(0.05), weights=w)
    X = np.asarray((A - mean) / scale)
    lam = 0.05 * np.sum(np.asarray(w) @ X**2) / 40
    ref = np.linalg.solve(X.T @ (np.asarray(w)[:, None] * X) + lam * np.eye(40), X.T @ (np.asarray(w) * (y - off)))
    np.testing.assert_allclose(theta, ref, rtol=1e-9, atol=1e-12)
    g = jax.grad(lambda a: jnp.sum(ridge_fit(a, y, jnp.log(0.05), weights=w)[0] ** 2))(A)
    eps = 1e-6
    e = np.zeros((12, 40))
    e[3, 7] = eps
    fd = (float(jnp.sum(ridge_fit(A + e, y, jnp.log(0.05), weights=w)[0] ** 2))
          - float(jnp.sum(ridge_fit(A - e, y, jnp.log(0.05), weights=w)[0] ** 2))) / (2 * eps)
    assert abs(float(g[3, 7]) - fd) <= 1e-6 * max(abs(fd), 1e-8)


def test_flat_features_equal_the_padded_batch_features():
    """The flat (real pairs only) evaluation used by RidgeData equals the padded-batch one, which goes
    through jaxlr.features.lode_features (LODE 'direct') structure by structure."""
    from jaxlr.data import BatchLoader
    from jaxlr.hyper import FeatureSpec, flat_features, flatten_structures, structure_features

    mols = list(_molecules(7))
    species = (1, 8)
    loader = BatchLoader(Dataset(mols), species, cutoff=3.0, batch_size=8, max_shapes=1)
    atoms, _, idx = next(iter(loader.epoch(None, with_indices=True)))
    idx = np.asarray(idx)
    flat = flatten_structures(mols, species, cutoff=3.0, chunk=16)       # several chunks, the last padded
    assert flat.pairs.shape[0] > 1 and not bool(flat.pair_mask[-1, -1])
    for kind, extra in (("lode", dict(lode_sigma=0.8, density_sigma=0.45)), ("local", dict(local_sigma=0.4))):
        spec = FeatureSpec(kind, 3.0, 3, 2, len(species))
        h = dict(radial_scale=1.1, cutoff_width=0.6, **extra)
        ref = np.asarray(structure_features(atoms, h, spec))[idx >= 0]
        new = np.asarray(flat_features(flat, h, spec))[idx[idx >= 0]]
        np.testing.assert_allclose(new, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())


@pytest.fixture(scope="module")
def force_set():
    return _force_molecules()


def _force_molecules():
    """Twelve small molecules whose energies and forces come from a known linear model of the
    (local, cheap) features, computed through the padded-batch path with jax.grad."""
    from jaxlr.data import BatchLoader
    from jaxlr.hyper import FeatureSpec, structure_features

    mols = list(_molecules(12, seed=5))
    species = (1, 8)
    spec = FeatureSpec("local", 3.0, 2, 1, 2)
    h = dict(local_sigma=0.5, radial_scale=1.0, cutoff_width=0.5)
    theta = np.random.default_rng(2).normal(size=spec.n_features * 2)
    loader = BatchLoader(Dataset(mols), species, cutoff=3.0, batch_size=8, max_shapes=1)
    atoms, _, idx = next(iter(loader.epoch(None, with_indices=True)))

    def energies(positions):
        return structure_features(dataclasses.replace(atoms, positions=positions), h, spec) @ theta

    e = np.asarray(energies(atoms.positions))
    f = -np.asarray(jax.jacrev(lambda r: jnp.sum(energies(r)))(atoms.positions))
    out = []
    for row, k in enumerate(np.asarray(idx)):
        if k >= 0:
            n = mols[k].n_atoms
            out.append((k, Structure(positions=mols[k].positions, numbers=mols[k].numbers,
                                     targets={"energy": float(e[row]) + 3.0, "forces": f[row, :n]})))
    return [s for _, s in sorted(out, key=lambda t: t[0])], h


def test_force_rows_are_minus_the_position_derivative_of_the_features(force_set):
    mols, h = force_set
    data = ridge_data(mols, kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=3, force_weight=0.3)
    from jaxlr.hyper import flat_features

    G = np.asarray(data.force_design(h))
    atoms, axes = np.asarray(data.force_atoms), np.asarray(data.force_axis)
    assert G.shape[0] == 3 * sum(m.n_atoms for m in mols) == len(data.force_fold_ids)
    structure = np.asarray(data.flat.structure)
    for row in (0, 7, G.shape[0] - 1):                  # central differences of the features
        a, x = atoms[row], axes[row]
        eps = 1e-5
        shifted = [np.asarray(flat_features(data.flat, h, data.spec, positions=data.flat.positions.at[a, x].add(s)))
                   for s in (eps, -eps)]
        fd = -(shifted[0] - shifted[1])[structure[a]] / (2 * eps)
        np.testing.assert_allclose(G[row], fd, atol=1e-7 * max(np.abs(fd).max(), 1.0))


def test_forces_from_the_features_own_linear_model_are_learnt(force_set):
    """Energies and forces made by a linear model of the features (forces = −∂E/∂R, computed
    through the padded-batch path): the joint fit reproduces both to rounding, the opposite sign
    convention cannot, and force rows make the held-out energies five times better."""
    mols, h = force_set
    data = ridge_data(mols, kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=3, force_weight=0.3)
    A, G = data.design(h), data.force_design(h)
    for sign, ok in ((1.0, True), (-1.0, False)):
        theta, mean, scale, off = ridge_fit(A, data.y, -30.0, derivative_rows=G,
                                            derivative_targets=sign * data.force_targets)
        worst = max(float(jnp.abs((A - mean) / scale @ theta + off - data.y).max()),
                    float(jnp.abs(G / scale @ theta - sign * data.force_targets).max()))
        assert (worst < 1e-6) == ok, (sign, worst)
    hh = dict(h, log_lambda=jnp.asarray(-10.0))
    err = jax.jit(jaxlr.hyper.ridge_cv_errors)(hh, data)
    assert abs(float(err["loss"]) ** 2 - float(err["energy"]) ** 2 - 0.09 * float(err["forces"]) ** 2) < 1e-12
    # 12 structures (8 per fit) do not pin down the weights from energies alone
    plain = ridge_data(mols, kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=3)
    assert float(err["energy"]) < 0.2 * float(RIDGE_LOSS(hh, plain))


def test_ridge_cv_hypergradient_with_forces_matches_finite_differences():
    mols = list(_molecules(4, seed=7))
    rng = np.random.default_rng(8)
    mols = [Structure(positions=m.positions, numbers=m.numbers,
                      targets={"energy": m.targets["energy"], "forces": rng.normal(size=(m.n_atoms, 3))})
            for m in mols]
    data = ridge_data(mols, kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=2, force_weight=0.5)
    h = dict(local_sigma=jnp.asarray(0.45), radial_scale=jnp.asarray(1.1), cutoff_width=jnp.asarray(0.6),
             log_lambda=jnp.asarray(-2.0))
    grad = RIDGE_GRAD(h, data)
    for key in ("local_sigma", "log_lambda"):
        fd = _central(lambda g: RIDGE_LOSS(g, data), h, key)
        assert abs(float(grad[key]) - fd) <= 1e-5 * abs(fd), (key, float(grad[key]), fd)


def test_domain_errors_name_the_bad_value_before_anything_compiles(lode_data):
    bad = [(dict(density_sigma=0.0), "density_sigma must be > 0"), (dict(radial_scale=-1.0), "radial_scale must be > 0"),
           (dict(lode_sigma=float("nan")), "lode_sigma must be finite"), (dict(cutoff_width=0.0), "cutoff_width must lie"),
           (dict(log_lambda=np.zeros(2)), "log_lambda must be a scalar")]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            ridge_cv_loss(dict(LODE_HYPER, **change), lode_data)
    calls = []

    def loss(h, d):
        calls.append(1)
        return ridge_cv_loss(h, d)

    # optimize and grid_search check concrete values (with the data's cutoff) before they trace the loss
    with pytest.raises(ValueError, match=r"cutoff_width must lie in \(0, cutoff = 3.0\]"):
        optimize(loss, dict(LODE_HYPER, cutoff_width=4.0), lode_data, steps=2, progress=False)
    with pytest.raises(ValueError, match="lode_sigma must be > 0"):
        grid_search(loss, {"lode_sigma": [0.5, -0.5]}, lode_data, fixed={k: v for k, v in LODE_HYPER.items()
                                                                          if k != "lode_sigma"}, progress=False)
    assert not calls
    mols = _molecules()
    with pytest.raises(ValueError, match="folds must be an integer ≥ 2"):
        ridge_data(mols, kind="lode", folds=1)
    with pytest.raises(ValueError, match="folds=5 is larger than the number of data rows \\(3\\)"):
        ridge_data(mols, kind="lode", folds=5, cv_rows=np.arange(12) < 3)
    with pytest.raises(ValueError, match="force_weight must be None or a non-negative"):
        ridge_data(mols, kind="local", force_weight=-1.0)
    with pytest.raises(ValueError, match="no structure of the cross-validation rows has a 'forces' target"):
        ridge_data(mols, kind="local", force_weight=1.0)


def test_optimize_stops_when_a_step_leaves_the_domain():
    """Adam on log(cutoff_width) would push it past the cutoff: the run ends there, keeping the best point."""
    import functools

    from jaxlr.hyper import check_hyper

    with pytest.warns(UserWarning, match="stopped at step"):
        t = optimize(lambda h, d: -h["cutoff_width"], {"cutoff_width": 2.5}, None, steps=50, learning_rate=0.05,
                     progress=False, check=functools.partial(check_hyper, cutoff=3.0))
    assert 1 < len(t.loss) < 51 and max(h["cutoff_width"] for h in t.hyper) <= 3.0
    assert t.best["cutoff_width"] == t.hyper[-1]["cutoff_width"] and t.stopped == "domain"


def test_check_hyper_accepts_the_lists_of_a_trajectory_under_jit():
    """HyperTrajectory.best holds per-species values as lists: a jitted loss traces each element."""
    from jaxlr.hyper import check_hyper

    def f(h):
        check_hyper(h, keys=("sigma",), n_species=2)
        return h["sigma"][0] * h["sigma"][1]

    assert float(jax.jit(f)({"sigma": [2.0, 3.0]})) == 6.0
    with pytest.raises(ValueError, match="sigma must be > 0"):
        f({"sigma": [2.0, -3.0]})


def test_optimize_reports_why_it_stopped():
    """Early stopping on a validation loss that gets worse while the training loss improves."""
    train = lambda h, d: (jnp.log(h["sigma"]) - 1.0) ** 2       # minimum at σ = e
    valid = lambda h, d: (jnp.log(h["sigma"]) - 0.2) ** 2       # minimum at σ = e^0.2
    t = optimize(train, {"sigma": 1.0}, None, valid_fn=valid, steps=200, learning_rate=0.05, patience=5,
                 progress=False, check=lambda h: None)
    best = int(np.argmin(t.valid))
    assert t.stopped == "patience" and len(t.loss) == best + 6 < 201
    assert t.best["sigma"] == t.hyper[best]["sigma"] and abs(np.log(t.best["sigma"]) - 0.2) < 0.06
    assert optimize(train, {"sigma": 1.0}, None, steps=3, progress=False, check=lambda h: None).stopped == "steps"
    assert grid_search(train, {"sigma": [1.0, 2.0]}, None, progress=False, check=lambda h: None).stopped == "grid"
