"""jaxlr.ase.Calculator: agreement with the front doors and models, finite differences
(forces and Voigt stress), MD energy conservation without recompiling, optimisers, bad input.

Small systems (≤ 8 atoms) and tiny models; float64 (conftest).
"""

import importlib

import jax
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.lj import LennardJones
from ase.calculators.mixing import SumCalculator
from ase.filters import UnitCellFilter
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

jax.config.update("jax_enable_x64", True)

import jaxlr
from jaxlr.ase import Calculator
from jaxlr.data import species_indices
from jaxlr.models import build_potential
from jaxlr.testing import single_structure_batch, toy_batch

#: the jitted Coulomb core behind jaxlr.coulomb (its cache size counts compilations)
EVALUATE_COULOMB = importlib.import_module("jaxlr._api.coulomb").evaluate_coulomb

ROCKSALT = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
                     [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
PM1 = np.array([1.0] * 4 + [-1.0] * 4)
VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]      # ASE: xx, yy, zz, yz, xz, xy


def triclinic_nacl(seed=1):
    cell = 5.64 * np.array([[1.0, 0, 0], [0.15, 0.95, 0], [-0.1, 0.2, 1.05]])
    pos = ROCKSALT @ cell + np.random.default_rng(seed).normal(0, 0.1, (8, 3))
    return Atoms("Na4Cl4", positions=pos, cell=cell, pbc=True)


def rocksalt(a, seed=0, scatter=0.05):
    atoms = Atoms("Na4Cl4", scaled_positions=ROCKSALT, cell=np.eye(3) * a, pbc=True)
    atoms.positions += np.random.default_rng(seed).normal(0, scatter, (8, 3))
    return atoms


def with_repulsion(calc, sigma=2.6, rc=4.5):
    """jaxlr plus a smooth Lennard-Jones term, so that opposite charges do not collapse."""
    return SumCalculator([calc, LennardJones(sigma=sigma, epsilon=0.05, rc=rc, smooth=True)])


@pytest.mark.parametrize("method", ["auto", "pme"])
def test_coulomb_matches_front_door_and_finite_differences(method):
    atoms = triclinic_nacl()
    before = atoms.copy()
    calc = Calculator.coulomb(PM1, accuracy=1e-8, method=method)
    atoms.calc = calc
    ref = jaxlr.coulomb(atoms.positions, PM1, cell=atoms.cell.array, accuracy=1e-8, method=method)
    assert atoms.get_potential_energy() == pytest.approx(float(ref.energy), abs=1e-12)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-12)
    stress = atoms.get_stress()
    np.testing.assert_allclose(stress, [ref.stress[i, j] for i, j in VOIGT], atol=1e-12)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), ref.stress, atol=1e-12)
    np.testing.assert_array_equal(atoms.get_charges(), PM1)
    np.testing.assert_allclose(atoms.get_dipole_moment(), PM1 @ atoms.positions, atol=1e-12)
    # the user's Atoms are untouched (ASE's protocol only attaches the calculator)
    assert atoms == before and set(atoms.arrays) == set(before.arrays)
    # forces and stress are derivatives of the energy (ASE's finite differences, Voigt order)
    np.testing.assert_allclose(calculate_numerical_forces(atoms, eps=1e-4), atoms.get_forces(), atol=1e-7)
    np.testing.assert_allclose(calculate_numerical_stress(atoms, eps=1e-5), stress, atol=1e-9)
    assert calc.n_plans == 1                       # strained and moved copies reused the plan


def test_open_boundary_gaussian_charges_and_no_stress():
    pos = np.array([[0.0, 0, 0], [1.2, 0, 0], [0, 1.1, 0.2]])
    q, sig = np.array([-0.8, 0.4, 0.4]), np.array([0.6, 0.5, 0.5])
    atoms = Atoms("OH2", positions=pos)
    atoms.calc = Calculator.coulomb({"O": -0.8, 8: -0.8, "H": 0.4}, sigma={"O": 0.6, "H": 0.5})
    ref = jaxlr.coulomb(pos, q, sigma=sig)
    assert atoms.get_potential_energy() == pytest.approx(float(ref.energy), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-12)
    np.testing.assert_allclose(atoms.get_dipole_moment(), q @ pos, atol=1e-12)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_velocity_verlet_conserves_energy_without_recompiling():
    """NVE, 8 Gaussian ±1 charges + LJ in a periodic cell, 40 steps of 2 fs at ~300 K.

    Measured: max |E(t) − E(0)| = 2.6e-5 eV over the run (E_kin ~ 0.1 eV), one plan, at
    most one compilation of the Coulomb core."""
    atoms = rocksalt(5.64)
    rng = np.random.default_rng(1)
    masses = atoms.get_masses()[:, None]
    atoms.set_velocities(rng.normal(size=(8, 3)) * np.sqrt(units.kB * 300.0 / masses))
    coul = Calculator.coulomb({"Na": 1.0, "Cl": -1.0}, sigma=0.8, accuracy=1e-6)
    atoms.calc = with_repulsion(coul)
    compiled = EVALUATE_COULOMB._cache_size()
    energies = []
    dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs, logfile=None)
    dyn.attach(lambda: energies.append(atoms.get_potential_energy() + atoms.get_kinetic_energy()), interval=1)
    dyn.run(40)
    drift = np.max(np.abs(np.array(energies) - energies[0]))
    assert drift < 2e-4, drift
    assert coul.n_calls == 41
    assert coul.n_plans == 1
    assert EVALUATE_COULOMB._cache_size() - compiled <= coul.n_plans


def test_bfgs_relaxes_open_qeq_cluster():
    atoms = Atoms("Na2Cl2", positions=[[0, 0, 0], [3.4, 3.1, 0.6], [2.6, -0.3, 0.2], [0.2, 2.7, -0.4]])
    qeq_calc = Calculator.qeq({"Na": 3.0, "Cl": 8.0}, {"Na": 6.0, "Cl": 10.0}, 1.0)
    atoms.calc = with_repulsion(qeq_calc, sigma=2.4, rc=6.0)
    e0 = atoms.get_potential_energy()
    opt = BFGS(atoms, logfile=None)
    assert opt.run(fmax=0.05, steps=100)
    assert atoms.get_potential_energy() < e0 - 0.01
    assert abs(qeq_calc.results["charges"].sum()) < 1e-10
    assert qeq_calc.n_plans == 1


def test_cell_relaxation_lowers_the_energy():
    atoms = rocksalt(6.0)
    coul = Calculator.coulomb({"Na": 1.0, "Cl": -1.0}, sigma=0.8)
    atoms.calc = with_repulsion(coul)
    e0, v0 = atoms.get_potential_energy(), atoms.get_volume()
    opt = BFGS(UnitCellFilter(atoms), logfile=None)
    opt.run(fmax=0.05, steps=8)
    assert atoms.get_potential_energy() < e0 - 1.0
    assert atoms.get_volume() < 0.9 * v0                # the cell shrinks under the Coulomb tension
    assert coul.n_plans <= coul.n_calls


@pytest.mark.parametrize("periodic", [False, True])
def test_qeq_charges_match_front_door(periodic):
    chi, hard, sig = {"Na": 3.0, "Cl": 8.0}, {"Na": 6.0, "Cl": 10.0}, {"Na": 1.0, "Cl": 1.2}
    if periodic:
        atoms, total = rocksalt(5.64), 0.0
        kw = dict(cell=atoms.cell.array)
    else:
        atoms = Atoms("Na2Cl", positions=[[0, 0, 0], [2.8, 0.3, 0], [1.4, 2.2, 0.1]])
        total, kw = 1.0, {}
    z = atoms.numbers
    arrays = [np.where(z == 11, d["Na"], d["Cl"]) for d in (chi, hard, sig)]
    calc = Calculator.qeq(chi, hard, sig, total_charge=total)
    atoms.calc = calc
    ref = jaxlr.qeq(atoms.positions, *arrays, total_charge=total, **kw)
    q = atoms.get_charges()
    assert q.sum() == pytest.approx(total, abs=1e-10)
    np.testing.assert_allclose(q, ref.charges, atol=1e-10)
    assert atoms.get_potential_energy() == pytest.approx(float(ref.energy), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), ref.forces, atol=1e-10)
    np.testing.assert_allclose(atoms.get_dipole_moment(), q @ atoms.positions, atol=1e-10)
    # per-atom arrays give the same, and a moved system keeps the plan (warm-started solve)
    atoms.calc = calc2 = Calculator.qeq(*arrays, total_charge=total)
    assert atoms.get_potential_energy() == pytest.approx(float(ref.energy), abs=1e-10)
    atoms.positions[0] += [0.05, -0.02, 0.01]
    atoms.get_forces()
    assert calc2.n_calls == 2 and calc2.n_plans == 1


MODEL_LOCAL = dict(cutoff=3.0, max_radial=2, max_angular=1)


def test_charge_model_matches_potential_predict():
    """An open-boundary Qeq model: energy, forces, charges and dipole of potential.predict
    (whose compiled function the calculator shares: one compilation for both)."""
    pot = build_potential("qeq", species=(1, 8), local=MODEL_LOCAL, hidden=(4,), chi_hidden=(4,))
    variables = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
    atoms = Atoms("OH2OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0],
                                       [3, 3, 3], [3.9, 3.2, 3.0], [2.7, 3.9, 3.1]])
    atoms.calc = calc = Calculator.from_potential(pot, variables)
    batch = single_structure_batch(atoms.positions, species_indices(atoms.numbers, pot.species), cutoff=pot.cutoff)
    out = pot.predict(variables, batch)
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_potential_energy() == pytest.approx(float(out.energy[0]), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), out.forces[0], atol=1e-10)
    np.testing.assert_allclose(atoms.get_charges(), out.charges[0], atol=1e-10)
    np.testing.assert_allclose(atoms.get_dipole_moment(), out.dipole[0], atol=1e-10)
    assert atoms.get_charges().sum() == pytest.approx(0.0, abs=1e-10)
    assert calc.plan is pot and calc.n_plans == 1


def test_local_model_periodic_stress_and_checkpoint(tmp_path):
    pot = build_potential("local", species=(1, 8), local=MODEL_LOCAL, hidden=(4,))
    variables = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff, periodic=True))
    cell = np.array([[7.0, 0, 0], [0.5, 6.5, 0], [0.3, -0.4, 6.8]])
    crystal = Atoms("OH2OH2", positions=[[1, 1, 1], [1.96, 1, 1], [0.76, 1.93, 1],
                                         [4, 4, 4], [4.9, 4.2, 4.0], [3.7, 4.9, 4.1]], cell=cell, pbc=True)
    crystal.calc = calc = Calculator.from_potential(pot, variables)
    batch = single_structure_batch(crystal.positions, species_indices(crystal.numbers, pot.species),
                                   cutoff=pot.cutoff, cell=cell)
    out = pot.predict(variables, batch)
    assert crystal.get_potential_energy() == pytest.approx(float(out.energy[0]), abs=1e-10)
    np.testing.assert_allclose(crystal.get_forces(), out.forces[0], atol=1e-10)
    np.testing.assert_allclose(crystal.get_stress(voigt=False), out.stress[0], atol=1e-10)
    np.testing.assert_allclose(calculate_numerical_stress(crystal, eps=1e-5), crystal.get_stress(), atol=1e-8)
    with pytest.raises(PropertyNotImplementedError):
        crystal.get_charges()                     # a local model predicts no charges
    assert calc.n_plans == 1 and calc.n_calls > 12       # 12 strained cells, one plan
    # the same model through a checkpoint of a run folder
    jaxlr.train.save(tmp_path / "checkpoint", pot, variables)
    crystal.calc = Calculator.load(tmp_path)
    assert crystal.get_potential_energy() == pytest.approx(float(out.energy[0]), abs=1e-10)


def test_bad_inputs_raise_value_errors():
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]])
    with pytest.raises(ValueError, match="holds 3 values but the Atoms have 2"):
        atoms.calc = Calculator.coulomb([1.0, -1.0, 0.0])
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="no value for element.*Cl"):
        atoms.calc = Calculator.coulomb({"Na": 1.0})
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="NaN"):
        Calculator.coulomb([1.0, np.nan])
    with pytest.raises(ValueError, match="not a chemical symbol"):
        Calculator.coulomb({"Xx": 1.0})
    with pytest.raises(ValueError, match="sigma"):
        Calculator.coulomb([1.0, -1.0], sigma=-0.5)
    with pytest.raises(ValueError, match="hardness"):
        Calculator.qeq(1.0, {"Na": -1.0, "Cl": 2.0}, 1.0)
    with pytest.raises(ValueError, match="solver"):
        Calculator.qeq(1.0, 1.0, 1.0, solver="lu")
    bad = atoms.copy()
    bad.positions[1, 2] = np.nan
    bad.calc = Calculator.coulomb([1.0, -1.0])
    with pytest.raises(ValueError, match="NaN"):
        bad.get_potential_energy()
    slab = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]], cell=np.eye(3) * 5, pbc=[True, True, False])
    slab.calc = Calculator.coulomb([1.0, -1.0])
    with pytest.raises(ValueError, match="pbc"):
        slab.get_potential_energy()
    flat = Atoms("NaCl", positions=[[0, 0, 0], [2.5, 0, 0]], cell=[5.0, 5.0, 0.0], pbc=True)
    flat.calc = Calculator.coulomb([1.0, -1.0])
    with pytest.raises(ValueError, match="not a proper 3D cell"):
        flat.get_potential_energy()
    atoms.calc = Calculator.coulomb([1.0, -1.0], method="pme")
    with pytest.raises(ValueError, match="needs a periodic cell"):
        atoms.get_potential_energy()
    pot = build_potential("local", species=(1, 8), local=MODEL_LOCAL, hidden=())
    atoms.calc = Calculator.from_potential(pot, {"params": {}, "stats": {}})
    with pytest.raises(ValueError, match="11 \\(Na\\), 17 \\(Cl\\)"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="jaxlr.models.Potential"):
        Calculator.from_potential("model.msgpack", {"params": {}, "stats": {}})
    with pytest.raises(ValueError, match="checkpoint"):
        Calculator.load("/nonexistent/run")
