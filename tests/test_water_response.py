"""The PBE/def2-SVPD water response set: its generator and its loader.

Generator checks are physics and independent numerics: the finite-field polarisability
of the water monomer equals the analytic coupled-perturbed Kohn–Sham one and is unchanged
when the field is halved, and the basis-set under-polarisation of def2-SVP is what the
module says.  The bundled data are checked against physics (sizes, energies near the
PBE monomer, α symmetric, positive, ~10 bohr³ per water; potentials on the Merz–Kollman
shells that tend to those of the stored dipoles far away).

The PySCF / tblite tests skip when those packages are absent.  The smoke reference
``tests/data/water_response_smoke.extxyz.gz`` was written by
``python -m jaxlr.data.generate.water_response all --set smoke --seed 0 --dest tests/data/water_response_smoke.extxyz.gz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import KE, reference_frames, smoke_generation

from jaxlr.data.generate import water_clusters as wc
from jaxlr.data.generate import water_response as wr

SMOKE = "water_response_smoke.extxyz.gz"
HARTREE_EV = 27.211386245988
BOHR = 0.529177210903


# --------------------------------------------------------------------------------------
# no quantum chemistry needed
# --------------------------------------------------------------------------------------
def test_plan_and_units():
    trajs = wc.plan("response")
    sizes = [t.n_waters for t in trajs for _ in range(t.n_snapshots)]
    assert sorted(sizes) == sorted(list(range(1, 7)) * 5)
    # one snapshot per trajectory, temperatures cycled within each size
    assert all(t.n_snapshots == 1 for t in trajs)
    assert {t.temperature for t in trajs if t.n_waters == 3} == {200.0, 300.0, 450.0}
    assert wr.label_dir(Path("out"), "response") == Path("out/labels/response")
    with pytest.raises(ValueError, match="unknown set"):
        wr.label_dir(Path("out"), "water_clusters")
    # 1 a.u. of polarisability (a₀²/E_h in e·Å²/V) is 1 bohr³, and k_e·α is the volume in Å³
    assert wr.ALPHA_AU_TO_SI == pytest.approx(BOHR ** 2 / HARTREE_EV, rel=1e-15)
    assert wr.alpha_iso_bohr3(np.eye(3) * wr.ALPHA_AU_TO_SI) == pytest.approx(1.0, rel=1e-12)
    assert KE * wr.ALPHA_AU_TO_SI == pytest.approx(BOHR ** 3, rel=1e-8)
    # F = 0.001 a.u. in V/Å
    assert wr.FIELD_AU * wr.FIELD_AU_V_PER_A == pytest.approx(0.0514220674763, rel=1e-9)


# --------------------------------------------------------------------------------------
# the bundled set
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def response():
    import jaxlr.data as data

    try:
        data.data_path("water_response.extxyz.gz")
    except FileNotFoundError:
        pytest.skip("the response set is being generated (jaxlr/data/files/water_response.extxyz.gz absent)")
    return data.load_water_response()


def test_sizes_provenance_and_values(response):
    sizes = [int(s.info["n_waters"]) for s in response]
    assert sorted(sizes) == sorted(list(range(1, 7)) * 5)
    s = response[0]
    assert (s.info["level"], s.info["basis"], s.info["auxbasis"], int(s.info["grid_level"])) == \
        ("PBE", "def2-svpd", "def2-universal-jkfit", 3)
    assert float(s.info["conv_tol"]) == 1e-9 and float(s.info["field_au"]) == 1e-3
    assert response.available_targets() == ("energy", "dipole")
    monomers = [float(s.targets["energy"]) for s in response if s.info["n_waters"] == 1 and not s.info["rattled"]]
    e1 = np.mean(monomers)
    assert -2076.2 < e1 < -2075.9                    # PBE/def2-SVPD water ≈ −76.295 Ha
    for s in response:
        n = int(s.info["n_waters"])
        assert s.n_atoms == 3 * n and s.total_charge == 0.0 and not s.periodic
        # hydrogen-bonded clusters: bound by up to ~0.3 eV per water; a rattled one sits higher
        binding = (float(s.targets["energy"]) - n * e1) / n
        assert -0.35 < binding < (0.8 if s.info["rattled"] else 0.1), (s.info["structure_id"], binding)
        alpha = s.info["polarizability"]
        np.testing.assert_allclose(alpha, alpha.T, atol=2e-4 * np.trace(alpha) / 3)
        eig = np.linalg.eigvalsh(0.5 * (alpha + alpha.T))
        assert eig.min() > 0.0
        # ~10 bohr³ per water (the monomer: 10.1 at equilibrium), a little more in clusters
        iso = float(s.info["alpha_iso_bohr3"])
        assert iso == pytest.approx(np.trace(alpha) / 3 * HARTREE_EV / BOHR ** 2, rel=1e-12)
        assert 9.0 * n < iso < 12.5 * n
        # the analytic check ran for n ≤ 2 (and the first hexamer; NaN otherwise): within 1e-4
        deviation = float(s.info["alpha_analytic_deviation"])
        assert deviation < 1e-4 if n <= 2 else (np.isnan(deviation) or deviation < 1e-4)
        assert s.info["esp_points"].shape == (s.info["esp"].shape[0], 3) and s.info["esp"].shape[0] > 100
        assert not s.info["esp"].flags.writeable
    mono = [s for s in response if s.info["n_waters"] == 1 and not s.info["rattled"]]
    # PBE dipole of water ≈ 1.8 D = 0.38 e·Å (thermal geometries spread it a little)
    assert all(0.33 < np.linalg.norm(s.targets["dipole"]) < 0.45 for s in mono)


def test_potential_on_the_shells_is_the_far_field_of_the_dipole(response):
    """On the outer points of a neutral monomer the potential is mostly the dipole's."""
    for s in response:
        if s.info["n_waters"] != 1:
            continue
        pts, esp = s.info["esp_points"], s.info["esp"]
        centre = s.numbers @ s.positions / s.numbers.sum()    # expansion point: the centre of nuclear charge
        d = pts - centre
        r = np.linalg.norm(d, axis=1)
        mu = np.asarray(s.targets["dipole"])                  # neutral: origin-independent
        dip = KE * (d @ mu) / r ** 3                          # V
        outer = r > np.quantile(r, 0.75)
        # at 2.4–2.8 Å the quadrupole still adds ~20 %: the dipole term dominates, not alone
        corr = np.corrcoef(esp[outer], dip[outer])[0, 1]
        assert corr > 0.9, corr
        ratio = np.linalg.norm(esp[outer]) / np.linalg.norm(dip[outer])
        assert 0.9 < ratio < 1.4, ratio
        # all points outside 1.4 × the vdW radius of every atom
        radii = np.where(s.numbers == 8, 1.4, 1.2)
        dist = np.linalg.norm(pts[:, None] - s.positions[None], axis=-1)
        assert np.all(dist >= 1.4 * radii[None] - 1e-5)


def test_loader_filters_and_refusals(response, monkeypatch):
    import jaxlr.data as data
    import jaxlr.data._water_response as module

    dimers = data.load_water_response(n_waters=2)
    assert len(dimers) == 5 and all(s.n_atoms == 6 for s in dimers)
    assert len(data.load_water_response(n_waters=(1, 6))) == 10
    with pytest.raises(ValueError, match="n_waters"):
        data.load_water_response(n_waters=7)
    monkeypatch.setattr(module, "WATER_RESPONSE", "absent_response.extxyz.gz")
    with pytest.raises(FileNotFoundError, match="generate.water_response"):
        data.load_water_response()
    monkeypatch.undo()
    stripped = [s.replace(info={k: v for k, v in s.info.items() if k != "esp"}) for s in response]
    monkeypatch.setattr(module, "read_cached", lambda *args: stripped)
    with pytest.raises(ValueError, match="has no 'esp'"):
        data.load_water_response()


# --------------------------------------------------------------------------------------
# with PySCF (and tblite for the sampling stage)
# --------------------------------------------------------------------------------------
def test_monomer_finite_field_alpha_matches_analytic_response_and_half_field():
    """Default run (~10 core-s): the smoke monomer at the generator's settings."""
    pytest.importorskip("pyscf")
    ref = reference_frames(SMOKE)[0]
    mol = wr.build_mol(ref.get_chemical_symbols(), ref.get_positions())
    mf0 = wr.run_scf(mol)
    assert mf0 is not None
    assert abs(mf0.e_tot - ref.info["energy_hartree"]) < 1e-8
    alpha, cycles = wr.finite_field_polarizability(mf0)
    assert len(cycles) == 6
    iso = np.trace(alpha) / 3
    # against the analytic static response on the same grid and fitted integrals ...
    analytic = wr.analytic_polarizability(mf0)
    assert np.abs(alpha - analytic).max() < 1e-4 * iso
    # ... and against half the field (the O(F²) truncation error is ~3e-5 at F)
    half, _ = wr.finite_field_polarizability(mf0, wr.FIELD_AU / 2)
    assert np.abs(alpha - half).max() < 1e-4 * iso
    # the committed smoke label of the same structure
    np.testing.assert_allclose(alpha * wr.ALPHA_AU_TO_SI, ref.info["polarizability"], rtol=0, atol=1e-6 * iso)
    # diffuse functions matter: α_iso ≈ 10 bohr³ at def2-SVPD
    assert 9.5 < iso < 11.0


def test_basis_set_under_polarisation_stated_in_the_header():
    pytest.importorskip("pyscf")
    alphas = {}
    for basis in ("def2-svp", "def2-svpd"):
        mf = wr.run_scf(wr.build_mol(["O", "H", "H"], wc.WATER, basis=basis))
        alphas[basis] = np.trace(wr.analytic_polarizability(mf)) / 3
    # "α_iso = 5.29 bohr³ at PBE/def2-SVP … against 10.10 bohr³ at PBE/def2-SVPD … ~48 %"
    assert alphas["def2-svp"] == pytest.approx(5.29, abs=0.01)
    assert alphas["def2-svpd"] == pytest.approx(10.10, abs=0.01)
    assert 1 - alphas["def2-svp"] / alphas["def2-svpd"] == pytest.approx(0.48, abs=0.01)
    assert f"{alphas['def2-svp']:.2f} bohr³" in wr.__doc__ and f"{alphas['def2-svpd']:.2f} bohr³" in wr.__doc__


@pytest.mark.slow
def test_smoke_generation_reproduces_reference(tmp_path, capsys):
    pytest.importorskip("pyscf")
    pytest.importorskip("tblite")
    err, pairs = smoke_generation(wr.main, tmp_path, capsys, SMOKE)
    assert "2 already labelled or dropped" in err
    for f, r, same in pairs:
        if not same:         # MD on another BLAS: label the reference geometry itself
            lab = wr.label_structure(r.get_chemical_symbols(), r.get_positions(), analytic=False)
            e_ha, alpha, esp = lab["energy_hartree"], lab["polarizability"], lab["esp"]
        else:
            e_ha, alpha, esp = f.info["energy_hartree"], f.info["polarizability"], f.info["esp"]
        assert abs(e_ha - r.info["energy_hartree"]) < 1e-8
        np.testing.assert_allclose(alpha, r.info["polarizability"], atol=1e-6)
        np.testing.assert_allclose(esp, r.info["esp"], atol=1e-6)
        assert float(r.info["alpha_analytic_deviation"]) < 1e-4
