"""Shipped models by name: registry, loading and refusals (on a temporary folder)."""

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np
import pytest

from jaxlr.models import build_potential
from jaxlr.testing import toy_batch
from jaxlr.train import load_pretrained, pretrained_models, save
from jaxlr.train._pretrained import resolve_checkpoint


def test_names_metadata_and_identical_predictions(tmp_path):
    pot = build_potential("qeq", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
                          hidden=(4,), chi_hidden=(4,))
    batch = toy_batch(pot.species, cutoff=pot.cutoff)
    v = pot.init(jax.random.PRNGKey(0), batch)
    save(tmp_path / "toy-qeq", pot, v, extra={"level": "none", "metrics": {"dipole_eA": 0.1}})
    (tmp_path / "not-a-model").mkdir()
    assert pretrained_models(tmp_path) == {"toy-qeq": {"level": "none", "metrics": {"dipole_eA": 0.1}}}
    pot2, v2 = load_pretrained("toy-qeq", folder=tmp_path)
    np.testing.assert_array_equal(pot2.predict(v2, batch).energy, pot.predict(v, batch).energy)
    assert resolve_checkpoint(tmp_path / "toy-qeq") == tmp_path / "toy-qeq"
    with pytest.raises(ValueError, match="toy-qeq"):
        load_pretrained("water-density-v9", folder=tmp_path)


def test_shipped_models_load():
    for name in pretrained_models():
        pot, v = load_pretrained(name)
        assert pot.species and v["params"]


def test_eval_refuses_an_unknown_name_with_the_shipped_list(tmp_path):
    from jaxlr.train import run_eval

    data = tmp_path / "d.xyz"
    data.write_text("1\nProperties=species:S:1:pos:R:3 energy=0.0\nH 0 0 0\n")
    with pytest.raises(ValueError, match="neither a checkpoint folder nor a shipped model"):
        run_eval("no-such-model", data)


# --------------------------------------------------------------------------------------
# the shipped water models (trained by benchmarks/water_clusters.py --save)
# --------------------------------------------------------------------------------------
WATER = tuple(sorted(name for name in pretrained_models() if name.startswith("water-")))


def test_the_water_models_are_shipped():
    assert {"water-local", "water-qeq"} <= set(WATER), WATER


@pytest.fixture(scope="module")
def water_test_split():
    from jaxlr.data import water_cluster_splits

    return water_cluster_splits()[2]


@pytest.mark.parametrize("name", WATER)
def test_shipped_water_models_are_described(name):
    meta = pretrained_models()[name]
    level = meta["level_of_theory"]
    assert level["level"] == "PBE" and level["basis"] == "def2-svp" and level["auxbasis"] == "def2-universal-jkfit"
    assert meta["split_function"] == "jaxlr.data.water_cluster_splits(seed=0)"
    assert set(meta["elements"]) == {"H", "O"}
    assert meta["test_metrics"]["energy_meV_atom"] > 0 and meta["test_metrics"]["forces_meV_A"] > 0


@pytest.mark.parametrize("name", WATER)
def test_shipped_water_models_predict_pbe_clusters(name, water_test_split):
    """Eight held-out clusters: errors of the size the metadata states, and the symmetries."""
    from jaxlr.data import Dataset
    from jaxlr.train import evaluate

    pot, v = load_pretrained(name)
    meta = pretrained_models()[name]["test_metrics"]
    few = Dataset(list(water_test_split)[:8])
    targets = ("energy", "forces") + (("dipole",) if "dipole" in pot.predicts else ())
    m = evaluate(pot, v, few, targets=targets).result()
    # an 8-cluster sample of a 50-cluster test split: within a factor 3 of the stated RMSE
    assert 1e3 * m["energy_per_atom"]["rmse"] < 3 * meta["energy_meV_atom"] + 1.0
    assert 1e3 * m["forces"]["rmse"] < 3 * meta["forces_meV_A"]
    if "dipole" in m:
        assert m["dipole"]["rmse"] < 3 * meta["dipole_eA"] + 0.01
    # a rotated, translated cluster: same energy, rotated forces, zero net force
    from jaxlr.data import make_batches

    s = few[0]
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    moved = s.replace(positions=s.positions @ q.T + np.array([1.0, -2.0, 0.5]))
    (b1, _), = make_batches([s], pot.species, cutoff=pot.cutoff, batch_size=1)
    (b2, _), = make_batches([moved], pot.species, cutoff=pot.cutoff, batch_size=1)
    o1, o2 = pot.predict(v, b1), pot.predict(v, b2)
    n = s.n_atoms
    np.testing.assert_allclose(o2.energy[0], o1.energy[0], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(o2.forces[0, :n]), np.asarray(o1.forces[0, :n]) @ q.T, atol=1e-8)
    np.testing.assert_allclose(np.asarray(o1.forces[0, :n]).sum(0), 0.0, atol=1e-8)


def test_eval_command_takes_a_shipped_name(tmp_path, water_test_split, capsys):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from jaxlr.train import run_eval

    frames = []
    for s in list(water_test_split)[:2]:
        atoms = Atoms(numbers=s.numbers, positions=s.positions)
        atoms.calc = SinglePointCalculator(atoms, energy=float(s.targets["energy"]), forces=s.targets["forces"])
        frames.append(atoms)
    path = tmp_path / "two.extxyz"
    write(path, frames)
    out = run_eval("water-local", path, targets=("energy", "forces"))
    assert out["energy_per_atom"]["count"] == 2 and "forces" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", WATER)
def test_shipped_water_models_reproduce_their_test_metrics(name, water_test_split):
    from jaxlr.train import evaluate

    pot, v = load_pretrained(name)
    meta = pretrained_models()[name]["test_metrics"]
    targets = ("energy", "forces") + (("dipole",) if "dipole" in pot.predicts else ())
    m = evaluate(pot, v, water_test_split, targets=targets).result()
    np.testing.assert_allclose(1e3 * m["energy_per_atom"]["rmse"], meta["energy_meV_atom"], rtol=1e-6)
    np.testing.assert_allclose(1e3 * m["forces"]["rmse"], meta["forces_meV_A"], rtol=1e-6)
    if "dipole" in m:
        np.testing.assert_allclose(m["dipole"]["rmse"], meta["dipole_eA"], rtol=1e-6)
