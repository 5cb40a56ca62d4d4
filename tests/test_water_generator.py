"""Tests of the water-cluster data generator (jaxlr/data/generate/water_clusters.py).

The PySCF/tblite tests skip when those packages are absent.  The smoke reference
(tests/data/water_smoke.extxyz) was written by
``python -m jaxlr.data.generate.water_clusters all --set smoke --seed 0 --dest tests/data/water_smoke.extxyz``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data" / "water_smoke.extxyz"


def _generator():
    try:
        return importlib.import_module("jaxlr.data.generate.water_clusters")
    except ImportError:                                # package layout in flux: load the file
        path = ROOT / "jaxlr" / "data" / "generate" / "water_clusters.py"
        spec = importlib.util.spec_from_file_location("water_clusters", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


wc = _generator()


def _reference():
    ase_io = pytest.importorskip("ase.io")
    return ase_io.read(REFERENCE, ":")


def _scf(frame):
    mol = wc.build_mol(frame.get_chemical_symbols(), frame.get_positions())
    mf = wc.run_scf(mol)
    assert mf is not None
    dm = mf.make_rdm1()
    dip = np.asarray(mf.dip_moment(mol, dm, unit="AU", origin=(0.0, 0.0, 0.0), verbose=0))
    return mol, mf, dm, dip


# --------------------------------------------------------------------------------------
# no quantum chemistry needed
# --------------------------------------------------------------------------------------
def test_plans():
    sizes = [t.n_waters for t in wc.plan("water_clusters") for _ in range(t.n_snapshots)]
    assert len(sizes) >= 500 and set(sizes) == set(range(1, 9))
    assert sum(2 <= n <= 6 for n in sizes) > 0.7 * len(sizes)
    transfer = [t.n_waters for t in wc.plan("transfer") for _ in range(t.n_snapshots)]
    assert transfer.count(12) >= 10 and transfer.count(16) >= 10
    assert [t.n_waters for t in wc.plan("smoke")] == [1, 2, 2]
    with pytest.raises(ValueError, match="unknown set"):
        wc.plan("ice")


def test_element_outside_basis_raises():
    with pytest.raises(ValueError, match="outside the density-fit basis"):
        wc.check_elements(["O", "H", "H", "Na"])
    pytest.importorskip("pyscf")
    with pytest.raises(ValueError, match=r"\['C'\]"):
        wc.build_mol(["C", "O"], [[0.0, 0.0, 0.0], [0.0, 0.0, 1.13]])
    from pyscf import gto
    mol = gto.M(atom="N 0 0 0; N 0 0 1.1", basis="def2-svp", verbose=0)
    with pytest.raises(ValueError, match=r"\['N'\]"):
        wc.fit_density(mol, np.zeros((mol.nao, mol.nao)), np.zeros(3))


def test_missing_target_message(tmp_path):
    pytest.importorskip("ase")
    frames = _reference()
    path = tmp_path / "two.extxyz.gz"
    for f in frames:
        del f.arrays["hirshfeld_dipoles"]
    wc.write_extxyz(path, frames)
    _, values = wc.read_dataset(path, ("energy", "forces", "coefficients", "esp_rmse"))
    assert len(values["energy"]) == 3 and values["coefficients"][1].shape == (6, wc.N_BASIS)
    with pytest.raises(KeyError, match="no target 'hirshfeld_dipoles'"):
        wc.read_dataset(path, ("energy", "hirshfeld_dipoles"))


# --------------------------------------------------------------------------------------
# with PySCF (and tblite for the sampling stage)
# --------------------------------------------------------------------------------------
def test_smoke_generation_reproduces_reference(tmp_path, capsys):
    pytest.importorskip("pyscf")
    pytest.importorskip("tblite")
    ref = _reference()
    assert wc.main(["all", "--set", "smoke", "--out", str(tmp_path), "--seed", "0"]) == 0
    capsys.readouterr()
    assert wc.main(["all", "--set", "smoke", "--out", str(tmp_path), "--seed", "0"]) == 0    # resumes: no work
    err = capsys.readouterr().err
    assert "3 already sampled" in err and "3 already labelled or dropped" in err
    import ase.io
    new = ase.io.read(tmp_path / "smoke.extxyz.gz", ":")
    assert [f.info["structure_id"] for f in new] == [f.info["structure_id"] for f in ref]
    for f, r in zip(new, ref):
        dx = np.abs(f.get_positions() - r.get_positions()).max()
        assert dx < 1e-5, f"sampled geometry moved by {dx} Å"
        if dx > 1e-10:       # MD on another BLAS: label the reference geometry itself
            lab = wc.label_structure(r.get_chemical_symbols(), r.get_positions())
            e_ha, forces, dipole, coef = lab["energy_hartree"], lab["forces"], lab["dipole"], lab["coefficients"]
        else:
            e_ha, forces, dipole = f.info["energy_hartree"], f.get_forces(), f.calc.results["dipole"]
            coef = f.arrays["coefficients"]
        assert abs(e_ha - r.info["energy_hartree"]) < 1e-8
        assert abs(e_ha * wc.HARTREE_EV - r.get_potential_energy()) < 1e-6
        np.testing.assert_allclose(forces, r.get_forces(), atol=1e-4)
        np.testing.assert_allclose(dipole, r.calc.results["dipole"], atol=1e-5)
        np.testing.assert_allclose(coef, r.arrays["coefficients"], atol=1e-4)
    # sanity of the reference itself
    for r in ref:
        n = r.info["n_waters"]
        assert -76.4 * n < r.info["energy_hartree"] < -76.2 * n
        assert 1e-3 < r.info["esp_rmse"] < 3.0                                 # mHa/e
        q, mu = r.arrays["hirshfeld_charges"], r.arrays["hirshfeld_dipoles"]
        assert abs(q.sum()) < 1e-4
        np.testing.assert_allclose(q @ r.get_positions() + mu.sum(0), r.calc.results["dipole"], atol=1e-3)
        assert r.info["level"] == "PBE" and r.info["basis"] == "def2-svp" and r.info["charge"] == 0


def test_monomer_energy_and_dipole():
    pytest.importorskip("pyscf")
    lab = wc.label_structure(["O", "H", "H"], wc.WATER)
    assert abs(lab["energy_hartree"] - (-76.272)) < 0.01
    assert 0.35 < np.linalg.norm(lab["dipole"]) < 0.45                        # e·Å (≈1.9 D)
    # physical dipole points from O towards the hydrogens (at negative z)
    assert lab["dipole"][2] < 0
    np.testing.assert_allclose(lab["forces"].sum(axis=0), 0.0, atol=1e-3)


def test_fit_reproduces_dipole_and_electron_count():
    pytest.importorskip("pyscf")
    frame = _reference()[2]                                                    # a rattled dimer
    mol, mf, dm, dip_au = _scf(frame)
    coef, diag = wc.fit_density(mol, dm, dip_au)
    pos = frame.get_positions()
    q, mu, dipole = wc.coefficient_moments(frame.get_chemical_symbols(), pos, coef)
    np.testing.assert_allclose(dipole, dip_au * wc.BOHR, rtol=0, atol=1e-8)
    # charge: nuclei + fitted electrons = 0, electron part = −N_e exactly
    assert abs(q.sum()) < 1e-10
    assert abs((q - mol.atom_charges()).sum() + mol.nelectron) < 1e-10
    assert diag["constraint_residual"] < 1e-10
    # padding slots of H are zero
    is_h = np.array(frame.get_chemical_symbols()) == "H"
    assert np.all(coef[is_h, 3] == 0) and np.all(coef[is_h, 7:] == 0)
    # without the dipole constraint the dipole is off (the constraint does something)
    free, _ = wc.fit_density(mol, dm, dip_au, constrain_dipole=False)
    assert np.abs(wc.coefficient_moments(frame.get_chemical_symbols(), pos, free)[2] - dipole).max() > 1e-4


def test_basis_normalisation_and_potential():
    """n_k (charge / dipole of PySCF's normalised χ_k) by quadrature, and the analytic
    potential of the jaxlr functions against PySCF's Coulomb integrals."""
    pytest.importorskip("pyscf")
    from pyscf import df, dft, gto
    sym, pos = ["O", "H", "H"], wc.WATER
    mol = wc.build_mol(sym, pos)
    auxmol = df.addons.make_auxmol(mol, wc.aux_basis_dict())
    atom, slot, is_p, direction, norm = wc.aux_layout(auxmol)
    grids = dft.gen_grid.Grids(auxmol)
    grids.level = 5
    grids.build()
    ao = dft.numint.eval_ao(auxmol, grids.coords)
    centre = auxmol.atom_coords()[atom]
    rel = grids.coords[:, None, :] - centre[None]
    moment = np.where(is_p, (ao * np.take_along_axis(rel, np.maximum(direction, 0)[None, :, None], 2)[..., 0]
                             * grids.weights[:, None]).sum(0), (ao * grids.weights[:, None]).sum(0))
    np.testing.assert_allclose(moment, norm, rtol=1e-6)
    d = np.random.default_rng(0).normal(size=auxmol.nao)
    coef = np.zeros((3, wc.N_BASIS))
    coef[atom, slot] = np.where(is_p, norm * d * wc.BOHR, norm * d)
    pts = wc.mk_points(sym, pos)[::10]
    exact = d @ gto.mole.intor_cross("int2c2e", auxmol, gto.fakemol_for_charges(pts / wc.BOHR))
    np.testing.assert_allclose(wc.fitted_potential(sym, pos, coef, pts) * wc.BOHR, exact, atol=1e-9)
