"""Tests of the water-cluster data generator (jaxlr/data/generate/water_clusters.py) and of
the shard machinery that all the generators share (jaxlr/data/generate/_shards.py).

The PySCF/tblite tests skip when those packages are absent.  The smoke reference
(tests/data/water_smoke.extxyz) was written by
``python -m jaxlr.data.generate.water_clusters all --set smoke --seed 0 --dest tests/data/water_smoke.extxyz``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_frames, smoke_generation

from jaxlr.data.generate import _shards as shards
from jaxlr.data.generate import water_clusters as wc

REFERENCE = "water_smoke.extxyz"


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


def _toy_label(label_dir, calls, frame):
    """A stand-in label task: drops the structure named ``*-bad``, stores an energy otherwise."""
    sid = frame.info["structure_id"]
    calls.append(sid)
    labels = None if sid.endswith("bad") else {"energy": float(len(frame))}
    shards.store_labels(label_dir, sid, labels, "failed", n_atoms=len(frame))
    return sid


def test_shards_resume_drop_and_refuse_missing_labels(tmp_path, capsys):
    """The label stage skips what is stored or dropped, the assembly refuses frames neither
    labelled nor dropped (or leaves them out with ``partial``), and nothing is half-written."""
    import functools

    import ase

    d = shards.label_dir(tmp_path, "toy")
    frames = [ase.Atoms("H" * (k + 1), positions=np.zeros((k + 1, 3))) for k in range(4)]
    for k, f in enumerate(frames):
        f.info["structure_id"] = f"toy-{k}" + ("-bad" if k == 2 else "")
    calls = []
    task = functools.partial(_toy_label, d, calls)
    shards.label_stage(frames[:3], d, "toy", task, order_seed=[0, 1, 999])
    assert sorted(calls) == ["toy-0", "toy-1", "toy-2-bad"]
    assert "toy: 3 structures, 0 already labelled or dropped" in capsys.readouterr().err
    shards.label_stage(frames[:3], d, "toy", task, order_seed=[0, 1, 999])            # resumes: no work
    assert len(calls) == 3 and "3 already labelled or dropped" in capsys.readouterr().err
    assert sorted(p.name for p in d.iterdir()) == ["dropped.jsonl", "toy-0.npz", "toy-1.npz", "toy-2-bad.dropped.json"]
    pairs = shards.labelled(frames[:3], d, "toy")
    assert [(f.info["structure_id"], float(z["energy"])) for f, z in pairs] == [("toy-0", 1.0), ("toy-1", 2.0)]
    with pytest.raises(RuntimeError, match="1 structures of toy are not labelled yet"):
        shards.labelled(frames, d, "toy")
    assert len(shards.labelled(frames, d, "toy", partial=True)) == 2
    with pytest.raises(ValueError, match="one number per item"):
        shards.Progress("x", total=3, done=1, costs=[1.0])


def test_progress_time_left_follows_the_costs(monkeypatch, capsys):
    """Time left = measured seconds per unit cost × the cost still to do (a fake clock)."""
    clock = iter([0.0, 2.0, 7.0])
    monkeypatch.setattr(shards.time, "perf_counter", lambda: next(clock))
    bar = shards.Progress("label toy", total=3, done=0, costs=[1.0, 4.0, 4.0])
    bar.update(note="a")                         # 2 s for cost 1: 8 more cost units = 16 s
    bar.update(note="b")                         # 7 s for cost 5: 4 more = 5.6 s
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("label toy 1/3 (33 %), 2.0 s each, 0.3 min left a")
    assert lines[1].endswith("label toy 2/3 (67 %), 3.5 s each, 0.1 min left b")


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
    frames = reference_frames(REFERENCE)
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
    err, pairs = smoke_generation(wc.main, tmp_path, capsys, REFERENCE)
    assert "3 already sampled" in err and "3 already labelled or dropped" in err
    for f, r, same in pairs:
        if not same:         # MD on another BLAS: label the reference geometry itself
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
    for r in reference_frames(REFERENCE):
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
    frame = reference_frames(REFERENCE)[2]                                         # a rattled dimer
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
