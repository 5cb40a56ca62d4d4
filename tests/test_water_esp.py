"""The exact PBE potential on the Merz–Kollman shells of the water test clusters
(:func:`jaxlr.data.load_water_esp`, made by :mod:`jaxlr.data.generate.water_esp`) and the
metrics that score models against it (:func:`jaxlr.train.esp_rmse_exact`,
:func:`jaxlr.train.density_esp_errors` with ``exact=``).

The stored potential is checked against references that need no PySCF: the potential of the
bundled reference density fit (evaluated by jaxlr's own Gaussian electrostatics) must be off
by exactly the fit error the data set stores, and far from a monomer the potential must
follow its PBE dipole.  A slow test (PySCF) recomputes two structures from scratch.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest

import jaxlr.data as data
from jaxlr.data.generate import water_esp
from jaxlr.models import build_potential
from jaxlr.system import merz_kollman_points
from jaxlr.testing import toy_batch
from jaxlr.train import density_esp_errors, esp_rmse_exact

BOHR = 0.529177210903            # Å
MK_RADII = {1: 1.2, 8: 1.4}      # Å


@pytest.fixture(scope="module")
def exact():
    return data.load_water_esp()


@pytest.fixture(scope="module")
def test_split():
    return data.water_cluster_splits(seed=0)[2]


def test_loader_holds_the_test_split(exact, test_split):
    assert sorted(exact) == sorted(s.info["structure_id"] for s in test_split)
    assert len(exact) == 50
    for s in test_split:
        points, esp = exact[s.info["structure_id"]]
        assert points.dtype == esp.dtype == np.float64
        assert points.ndim == 2 and points.shape[1] == 3 and esp.shape == points.shape[:1]
        assert len(esp) >= 300 * int(s.info["n_waters"]) ** 0.5         # ~1 point/Å² on four shells
        assert np.all(np.isfinite(esp))
        # Hartree/e: tens of mHa/e outside a neutral cluster (in V it would be ~27 times larger)
        assert 5e-3 < np.sqrt(np.mean(esp ** 2)) < 0.06 and np.abs(esp).max() < 0.2


def test_loader_returns_a_new_dict_of_read_only_arrays(exact):
    key = next(iter(exact))
    other = data.load_water_esp()
    other.pop(key)
    assert key in data.load_water_esp()
    points, esp = exact[key]
    with pytest.raises(ValueError):
        esp[0] = 0.0
    with pytest.raises(ValueError):
        points[0, 0] = 0.0


def test_points_are_the_merz_kollman_shells_outside_the_vdw_surface(exact, test_split):
    for s in test_split:
        points, _ = exact[s.info["structure_id"]]
        # jaxlr's own shells (independent code) give the very same points
        np.testing.assert_allclose(points, merz_kollman_points(s.positions, s.numbers), rtol=0, atol=1e-12)
        radii = np.array([MK_RADII[int(z)] for z in s.numbers])
        ratio = np.linalg.norm(points[:, None] - s.positions[None], axis=-1) / radii[None]
        assert ratio.min() > 1.4 - 1e-9 and ratio.min(axis=1).max() < 2.0 + 1e-9


def test_provenance():
    p = data.water_esp_provenance()
    assert (p["level"], p["basis"], p["auxbasis"], p["grid_level"], p["conv_tol"]) == \
        ("PBE", "def2-svp", "def2-universal-jkfit", 3, 1e-9)
    assert p["split"] == "test" and p["split_seed"] == 0 and p["dropped"] == []
    assert p["units"] == {"points": "A", "esp": "Hartree/e", "energy_hartree": "Hartree", "dipole": "e*A",
                          "esp_rmse_fit": "mHa/e", "esp_rmse_refit": "mHa/e", "coefficients_diff": "e or e*A"}
    info = data.load_water_clusters()[0].info
    assert p["pyscf_version"] == info["pyscf_version"]
    source = Path(data.data_path(p["source"])).read_bytes()
    assert p["source_sha256"] == hashlib.sha256(source).hexdigest()        # made from the bundled file
    p["level"] = "changed"
    assert data.water_esp_provenance()["level"] == "PBE"


def test_the_reference_fit_is_off_by_its_stored_error(exact, test_split):
    """The bundled esp_rmse was computed at labelling time against the potential of that SCF;
    jaxlr's Gaussian electrostatics of the bundled fit against the stored exact potential
    must give it again.  The bundled coefficients carry 8 decimals, which moves the RMSE by
    ~1e-7 mHa/e (measured: at most 3.9e-7, rms 2.0e-7)."""
    diffs = []
    for s in test_split:
        points, esp = exact[s.info["structure_id"]]
        rmse = esp_rmse_exact(s.positions, s.targets["coefficients"], s.info["basis_widths"], points, esp)
        diffs.append(rmse - float(s.info["esp_rmse"]))
    assert np.abs(diffs).max() < 1e-6
    assert np.sqrt(np.mean(np.square(diffs))) < 5e-7


def test_far_from_a_monomer_the_potential_follows_its_dipole(exact, test_split):
    """Neutral: V → μ·r/r³ (atomic units) far away.  On the outermost points (> 3 Å from the
    centroid) the exact potential of every monomer correlates with the dipole term, has its
    sign along the dipole axis, and the residual (quadrupole and beyond) is the smaller part."""
    monomers = [s for s in test_split if int(s.info["n_waters"]) == 1]
    assert len(monomers) >= 2
    for s in monomers:
        points, esp = exact[s.info["structure_id"]]
        r = (points - s.positions.mean(axis=0)) / BOHR
        dist = np.linalg.norm(r, axis=1)
        far = dist > 3.0 / BOHR
        assert far.sum() >= 20
        mu = np.asarray(s.targets["dipole"]) / BOHR                          # e·bohr
        v_dipole = (r @ mu) / dist ** 3
        assert np.corrcoef(esp[far], v_dipole[far])[0, 1] > 0.95
        axial = far & (np.abs(r @ mu) > 0.8 * dist * np.linalg.norm(mu))
        assert axial.sum() >= 5 and np.all(np.sign(esp[axial]) == np.sign(v_dipole[axial]))
        assert np.sqrt(np.mean((esp - v_dipole)[far] ** 2)) < 0.5 * np.sqrt(np.mean(esp[far] ** 2))


def test_esp_rmse_exact_is_zero_for_the_exact_coulomb_potential_and_checks_shapes():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(20, 3))
    pts *= (3.0 + rng.random((20, 1))) / np.linalg.norm(pts, axis=1, keepdims=True)
    q = np.array([[0.7], [-0.7]])
    pos = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, -0.5]])
    coulomb = sum(q[i, 0] * BOHR / np.linalg.norm(pts - pos[i], axis=1) for i in range(2))   # Hartree/e
    assert esp_rmse_exact(pos, q, np.full((2, 1), 0.1), pts, coulomb) < 1e-5
    # a 1.0 Å Gaussian is not a point charge 2.5–4 Å away: erf(r/(√2σ)) < 1 lowers |V|
    assert esp_rmse_exact(pos, q, np.full((2, 1), 1.0), pts, coulomb) > 0.01
    with pytest.raises(ValueError, match="points must be"):
        esp_rmse_exact(pos, q, np.full((2, 1), 0.1), pts[:, :2], coulomb)
    with pytest.raises(ValueError, match="points must be"):
        esp_rmse_exact(pos, q, np.full((2, 1), 0.1), pts, coulomb[:-1])


@pytest.fixture(scope="module")
def tiny_models():
    local = dict(cutoff=3.0, max_radial=2, max_angular=1)
    out = {}
    for name, kw in (("qeq", dict(hidden=(4,), chi_hidden=(4,), sigma=0.8)), ("local", dict(hidden=(4,)))):
        pot = build_potential(name, species=(1, 8), local=local, **kw)
        out[name] = (pot, pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff)))
    return out


def test_density_esp_errors_against_the_exact_potential(exact, test_split, tiny_models):
    pot, v = tiny_models["qeq"]
    ds = data.Dataset(list(test_split)[:4])
    errs = density_esp_errors(pot, v, ds, exact=exact, batch_size=4)
    assert sorted(errs) == ["fit_vs_exact", "model", "model_vs_exact", "reference_fit"]
    np.testing.assert_allclose(errs["fit_vs_exact"], errs["reference_fit"], rtol=0, atol=1e-5)
    assert np.all(np.isfinite(errs["model_vs_exact"])) and np.all(np.isfinite(errs["model"]))
    # the potential difference splits as (model − fit) + (fit − exact): triangle inequality
    assert np.all(errs["model_vs_exact"] <= errs["model"] + errs["fit_vs_exact"] + 1e-9)
    assert np.all(errs["model_vs_exact"] >= errs["model"] - errs["fit_vs_exact"] - 1e-9)
    # the model's own σ (0.8 Å) spreads its charges: a different potential on the shells
    own = density_esp_errors(pot, v, ds, exact=exact, batch_size=4, charge_widths="model")
    assert np.all(np.abs(own["model_vs_exact"] - errs["model_vs_exact"]) > 1e-3)
    # without exact: the old two keys only; structures outside exact: NaN
    assert sorted(density_esp_errors(pot, v, ds, batch_size=4)) == ["model", "reference_fit"]
    valid = data.water_cluster_splits(seed=0)[1]
    mixed = data.Dataset([ds[0], valid[0]])
    part = density_esp_errors(pot, v, mixed, exact=exact, batch_size=4)
    assert np.isfinite(part["model_vs_exact"][0]) and np.isnan(part["model_vs_exact"][1])
    assert np.isnan(part["fit_vs_exact"][1]) and np.all(np.isfinite(part["model"]))


def test_density_esp_errors_refuses_bad_input(exact, test_split, tiny_models):
    pot, v = tiny_models["qeq"]
    ds = data.Dataset(list(test_split)[:1])
    with pytest.raises(ValueError, match="neither density coefficients nor charges"):
        density_esp_errors(*tiny_models["local"], ds, exact=exact)
    for bad in ("wide", -0.1, float("nan")):
        with pytest.raises(ValueError, match="charge_widths"):
            density_esp_errors(pot, v, ds, exact=exact, charge_widths=bad)
    with pytest.raises(ValueError, match="covers none"):
        density_esp_errors(pot, v, data.Dataset(list(data.water_cluster_splits(seed=0)[1])[:1]), exact=exact)
    sid = ds[0].info["structure_id"]
    points, esp = exact[sid]
    with pytest.raises(ValueError, match="points must be"):
        density_esp_errors(pot, v, ds, exact={sid: (points, esp[:-1])})
    with pytest.raises(ValueError, match="must be a pair"):
        density_esp_errors(pot, v, ds, exact={sid: esp})


def test_generator_selection_without_pyscf(test_split):
    ids = [s.info["structure_id"] for s in water_esp.select("test", seed=0)]
    assert ids == [s.info["structure_id"] for s in test_split]
    assert len(water_esp.select("valid")) == 50
    picked = water_esp.select(ids=[ids[3], ids[0]])
    assert [s.info["structure_id"] for s in picked] == [ids[3], ids[0]]
    assert water_esp.symbols_of(picked[0])[:3] == ["O", "H", "H"]
    with pytest.raises(ValueError, match="unknown split"):
        water_esp.select("train")
    with pytest.raises(ValueError, match="unknown structure_id"):
        water_esp.select(ids=["water_clusters-n99-t0000-s00"])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pyscf") is None, reason="needs PySCF (the generator's venv)")
def test_recomputed_potential_matches_the_bundled_one(exact, test_split):
    """A monomer and a dimer of the test split recomputed from scratch (≈ 5 s)."""
    for n in (1, 2):
        s = next(s for s in test_split if int(s.info["n_waters"]) == n)
        res = water_esp.label_structure(water_esp.symbols_of(s), s.positions, s.targets["coefficients"])
        points, esp = exact[s.info["structure_id"]]
        np.testing.assert_array_equal(res["points"], points)
        np.testing.assert_allclose(res["esp"], esp, rtol=0, atol=1e-8)
        assert abs(res["energy_hartree"] - float(s.info["energy_hartree"])) <= 1e-7
        assert abs(res["esp_rmse_refit"] - float(s.info["esp_rmse"])) <= 1e-6
