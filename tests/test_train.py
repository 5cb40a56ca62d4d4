"""Training layer: loss, metrics, fit loop, checkpoints, plots, TOML runs (jaxlr.train).

Everything uses one tiny local model (cutoff 3 Å, 3 radial × L = 2, one hidden layer of
8) on small synthetic H/O clusters whose energy is per-species offsets plus a smooth
pair term, so that compilation dominates and the whole module stays well under a minute.
"""

import dataclasses
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxlr.data import Targets
from jaxlr.models import ModelOutput, build_potential
from jaxlr.models._potential import Potential
from jaxlr.testing import toy_batch
from jaxlr.train import _checkpoint as checkpoint, _config as config, _loop as loop
from jaxlr.data import BatchLoader, Dataset, Structure
from jaxlr.train._loss import Metrics, check_weights, loss_fn

HYPER = dict(local=dict(cutoff=3.0, max_radial=3, max_angular=2), hidden=[8])
OFFSETS = {1: -0.5, 8: -2.0, 9: -3.0}


def pair_cluster(rng, n, numbers=(1, 8)):
    """A random cluster (atoms ≥ 1 Å apart in a 4 Å box) with E = Σ e_Z + Σ_{i<j} e^{−r_ij}
    (eV, Å) and its exact forces."""
    while True:
        pos = rng.random((n, 3)) * 4.0
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        if d.min() > 1.0:
            break
    z = rng.choice(numbers, n)
    energy = sum(OFFSETS[int(a)] for a in z) + 0.5 * np.sum(np.exp(-d))
    forces = np.sum((np.exp(-d) / d)[..., None] * (pos[:, None] - pos[None]), axis=1)
    return pos, z, energy, forces


def make_dataset(n_structures, seed, sizes=(8, 3, 5, 4, 6, 7), numbers=(1, 8), targets=("energy", "forces")):
    """Clusters of ``sizes[k % len(sizes)]`` atoms (the same padded size 8 in every set)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_structures):
        n = sizes[k % len(sizes)]
        pos, z, e, f = pair_cluster(rng, n, numbers)
        tg = {"energy": e, "forces": f}
        out.append(Structure(positions=pos, numbers=z, targets={t: tg[t] for t in targets}))
    return Dataset(out)


def write_xyz(path, dataset, forces=True):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for s in dataset:
        atoms = Atoms(numbers=s.numbers, positions=s.positions, pbc=False)
        res = {"energy": float(s.targets["energy"])}
        if forces:
            res["forces"] = np.asarray(s.targets["forces"])
        atoms.calc = SinglePointCalculator(atoms, **res)
        frames.append(atoms)
    write(str(path), frames, format="extxyz")


def tiny_potential(species=(1, 8)):
    return build_potential("local", species=species, **HYPER)


@pytest.fixture(scope="module")
def trained():
    train = make_dataset(20, seed=1, sizes=(8, 3))     # two size buckets: N = 4 and N = 8
    valid = make_dataset(6, seed=2)
    t0 = time.perf_counter()
    result = loop.fit(tiny_potential(), train, valid, weights={"energy": 1.0, "forces": 1.0}, epochs=30,
                      batch_size=5, learning_rate=1e-2, schedule="cosine", warmup_epochs=1, seed=0,
                      progress=False, max_shapes=2)
    result.seconds = time.perf_counter() - t0
    return result, train, valid


# ------------------------------------------------------------------------------------
# loss and metrics
# ------------------------------------------------------------------------------------
def test_loss_values_ignore_padding():
    b = toy_batch((1, 8), cutoff=3.0, n_structures=2, n_atoms=4, pad=2)     # 4 and 3 real atoms, N = 6
    b = dataclasses.replace(b, structure_mask=jnp.array([True, False]))   # structure 1 is padding
    f_ref = jnp.zeros((2, 6, 3))
    f_pred = f_ref.at[0, 0, 0].set(2.0).at[0, 5, 1].set(100.0).at[1, 1, 2].set(100.0)  # padding entries
    out = ModelOutput(energy=jnp.array([2.0, 50.0]), forces=f_pred, charges=jnp.ones((2, 6)))
    ref = Targets(energy=jnp.array([0.0, 0.0]), forces=f_ref, charges=jnp.zeros((2, 6)))
    loss, parts = loss_fn(out, ref, b, {"energy": 1.0, "forces": 0.5, "charges": 0.0})
    # energy: ((2 − 0)/4 atoms)² = 0.25; forces: 2² over 4 real atoms × 3 components = 1/3
    assert set(parts) == {"energy", "forces"}
    np.testing.assert_allclose(float(parts["energy"]), 0.25, rtol=1e-12)
    np.testing.assert_allclose(float(parts["forces"]), 4.0 / 12.0, rtol=1e-12)
    np.testing.assert_allclose(float(loss), 0.25 + 0.5 / 3.0, rtol=1e-12)
    m = Metrics(["energy", "forces"])
    m.update(out, ref, b)
    r = m.result()
    assert r["energy"] == {"mae": 2.0, "rmse": 2.0, "count": 1}
    assert r["energy_per_atom"]["mae"] == 0.5
    np.testing.assert_allclose(r["forces"]["mae"], 2.0 / 12.0)
    np.testing.assert_allclose(m.loss({"energy": 1.0, "forces": 0.5}), float(loss), rtol=1e-12)


def test_loss_rejects_target_model_cannot_predict():
    pot = tiny_potential()
    with pytest.raises(ValueError, match="cannot predict"):
        check_weights({"energy": 1.0, "charges": 1.0}, predicts=pot.predicts)
    with pytest.raises(ValueError, match="unknown target"):
        check_weights({"energies": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        check_weights({"energy": -1.0})
    b = toy_batch((1, 8), cutoff=3.0)
    out = ModelOutput(energy=jnp.zeros(2))                       # no charges predicted
    with pytest.raises(ValueError, match="no 'charges'"):
        loss_fn(out, Targets(energy=jnp.zeros(2), charges=jnp.zeros((2, 8))), b, {"charges": 1.0})
    with pytest.raises(ValueError, match="no reference 'energy'"):
        loss_fn(out, Targets(), b, {"energy": 1.0})


def test_fit_rejects_bad_targets_before_compiling(monkeypatch):
    def no_init(*args, **kwargs):
        raise AssertionError("Potential.init must not be reached")

    monkeypatch.setattr(Potential, "init", no_init)
    train = make_dataset(4, seed=3)
    pot = tiny_potential()
    with pytest.raises(ValueError, match="cannot predict"):
        loop.fit(pot, train, None, weights={"energy": 1.0, "charges": 1.0}, epochs=1, progress=False)
    no_forces = make_dataset(4, seed=3, targets=("energy",))
    with pytest.raises(ValueError, match="lacks"):
        loop.fit(pot, no_forces, None, weights={"energy": 1.0, "forces": 1.0}, epochs=1, progress=False)
    fluorine = make_dataset(4, seed=3, numbers=(1, 9))
    with pytest.raises(ValueError, match=r"atomic number 9 \(F\)"):
        loop.fit(pot, train, fluorine, epochs=1, progress=False)
    with pytest.raises(ValueError, match="schedule"):
        loop.fit(pot, train, None, schedule="linear", epochs=1, progress=False)
    with pytest.raises(ValueError, match="float64 needs jax_enable_x64"):
        jax.config.update("jax_enable_x64", False)
        try:
            loop.fit(pot, train, None, dtype="float64", epochs=1, progress=False)
        finally:
            jax.config.update("jax_enable_x64", True)


# ------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------
def test_fit_reduces_loss(trained):
    result, train, valid = trained
    h = result.history
    assert len(h) == 30 and all(np.isfinite(r["train_loss"]) for r in h)
    # The offsets are fitted before training, so the first epoch's loss is what is left of
    # the pair term (energy per atom and forces, both O(0.1) eV); a network that learned the
    # pair interaction must bring the training loss below 10 % of it in 30 epochs (it
    # reaches ≈ 4 %); a model stuck at the offsets would stay near 100 %.
    assert h[-1]["train_loss"] < 0.1 * h[0]["train_loss"], (h[0]["train_loss"], h[-1]["train_loss"])
    best = min(r["valid_loss"] for r in h)
    assert best < h[0]["valid_loss"]
    assert h[result.best_epoch - 1]["valid_loss"] == best and h[result.best_epoch - 1]["best"]
    assert set(result.valid_metrics) == {"energy", "energy_per_atom", "forces"}
    np.testing.assert_allclose(result.valid_metrics["forces"]["mae"],
                               h[result.best_epoch - 1]["valid"]["forces"]["mae"], rtol=1e-10)
    assert result.seconds < 60


def test_train_step_compiled_once_per_shape(trained):
    result, train, valid = trained
    # 30 epochs × 4–5 batches, two padded sizes: one program per shape, never one per step
    assert len(result.train_shapes) == 2
    assert result.compilations["train_step"] == len(result.train_shapes)
    assert result.compilations["eval_step"] == 1


def test_early_stopping_keeps_best():
    train = make_dataset(6, seed=4)
    result = loop.fit(tiny_potential(), train, None, weights={"energy": 1.0}, epochs=50, batch_size=6,
                      learning_rate=3.0, schedule="constant", patience=2, progress=False)
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) < 50                              # far too large a rate: it stops early
    assert result.best_epoch == int(np.nanargmin(losses)) + 1
    assert len(losses) - result.best_epoch <= 2


def test_checkpoint_round_trip_is_bit_identical(trained, tmp_path):
    result, train, valid = trained
    path = checkpoint.save(tmp_path / "ckpt", result.potential, result.variables, extra={"note": "test"})
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["species"] == [1, 8] and cfg["dtype"] == "float64" and cfg["extra"] == {"note": "test"}
    pot2, vars2 = checkpoint.load(path)
    assert pot2.config() == result.potential.config()
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b)))
                                  and a.dtype == b.dtype, result.variables, vars2)
    assert all(jax.tree_util.tree_leaves(same))
    # the batch shape of the validation in fit (batch size 16): its program is reused
    atoms, _ = next(iter(BatchLoader(valid, (1, 8), cutoff=3.0, batch_size=16).epoch(None)))
    out1 = loop.eval_step(result.potential, True, False)(result.variables, atoms)
    out2 = jax.jit(pot2.apply)(vars2, atoms)
    assert np.array_equal(np.asarray(out1.energy), np.asarray(out2.energy))
    assert np.array_equal(np.asarray(out1.forces), np.asarray(out2.forces))
    with pytest.raises(ValueError, match="not a jaxlr checkpoint"):
        checkpoint.load(tmp_path)


# ------------------------------------------------------------------------------------
# TOML runs
# ------------------------------------------------------------------------------------
CONFIG = """
[data]
train = "data/train.xyz"
test = "data/test.xyz"
split = [0.8, 0.2]
test_filter = "n_atoms >= 4"

[model]
name = "local"
hidden = [8]
[model.local]
cutoff = 3.0
max_radial = 3
max_angular = 2

[training]
epochs = 3
batch_size = 4
learning_rate = 0.01
schedule = "exponential"
weights = { energy = 1.0 }
progress = false
max_shapes = 1

[output]
run_dir = "out/run"
evaluate = ["valid", "test"]
"""


def test_run_fit_and_eval(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    write_xyz(tmp_path / "data" / "train.xyz", make_dataset(12, seed=5))
    write_xyz(tmp_path / "data" / "test.xyz", make_dataset(5, seed=6))
    cfg_path = tmp_path / "fit.toml"
    cfg_path.write_text(CONFIG)
    run = config.run_fit(cfg_path)
    assert run == tmp_path / "out" / "run"
    for name in ("checkpoint/config.json", "checkpoint/variables.msgpack", "history.json", "metrics.json",
                 "fit_config.json", "config.toml", "learning_curves.png", "parity_valid_energy.png",
                 "parity_valid_forces.png", "parity_test_energy_per_atom.png", "parity_test_forces.png"):
        assert (run / name).is_file(), name
    history = json.loads((run / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["metrics"]) == {"valid", "test"}
    assert metrics["n_structures"]["train"] + metrics["n_structures"]["valid"] == 12
    assert set(metrics["metrics"]["test"]) == {"energy", "energy_per_atom", "forces"}
    assert "forces" in capsys.readouterr().out                      # the summary table

    # evaluating the checkpoint on the test file reproduces the test metrics of the run
    # (the filter keeps structures with ≥ 4 atoms; drop the others for the comparison)
    from jaxlr.data import read_structures

    kept = [s for s in read_structures(tmp_path / "data" / "test.xyz") if s.n_atoms >= 4]
    write_xyz(tmp_path / "kept.xyz", kept)
    res = config.run_eval(run / "checkpoint", tmp_path / "kept.xyz", batch_size=8)
    for key in ("energy", "forces"):
        np.testing.assert_allclose(res[key]["mae"], metrics["metrics"]["test"][key]["mae"], rtol=1e-9)
    assert res["forces"]["count"] == metrics["metrics"]["test"]["forces"]["count"]

    # errors surface before anything is compiled
    write_xyz(tmp_path / "energy_only.xyz", make_dataset(3, seed=7), forces=False)
    with pytest.raises(ValueError, match="target 'forces' is missing"):
        config.run_eval(run, tmp_path / "energy_only.xyz", targets=["energy", "forces"])
    write_xyz(tmp_path / "fluorine.xyz", make_dataset(3, seed=7, numbers=(1, 9)))
    with pytest.raises(ValueError, match=r"atomic number 9 \(F\)"):
        config.run_eval(run, tmp_path / "fluorine.xyz")


def test_run_fit_checks_data_before_training(tmp_path, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("fit must not be reached")

    monkeypatch.setattr(loop, "fit", no_fit)
    write_xyz(tmp_path / "train.xyz", make_dataset(6, seed=8))
    write_xyz(tmp_path / "test.xyz", make_dataset(3, seed=9, numbers=(1, 9)))
    write_xyz(tmp_path / "energy_only.xyz", make_dataset(6, seed=8), forces=False)
    base = {"data": {"train": "train.xyz", "split": [0.5, 0.5]}, "model": {"name": "local", **HYPER}}
    cfg = json.loads(json.dumps(base))
    cfg["data"]["test"] = "test.xyz"
    with pytest.raises(ValueError, match=r"test set: .*atomic number 9 \(F\)"):
        config.run_fit(config.normalize_config(cfg, tmp_path))
    cfg = json.loads(json.dumps(base))
    cfg["data"]["train"] = "energy_only.xyz"
    cfg["training"] = {"weights": {"energy": 1.0, "forces": 1.0}}
    with pytest.raises(ValueError, match="lacks"):
        config.run_fit(config.normalize_config(cfg, tmp_path))


def test_load_config_validation(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[data]\ntrain = "a.xyz"\n[model]\nname = "local"\n[training]\nepochs = 2\n')
    cfg = config.load_config(p)
    assert cfg["data"]["train"] == str(tmp_path.resolve() / "a.xyz")
    assert cfg["data"]["split"] == [0.9, 0.1]
    assert cfg["output"]["run_dir"] == str(tmp_path.resolve() / "runs" / "c")
    bad = {
        '[data]\ntrain = "a.xyz"\n': "model",
        '[data]\ntrain = "a.xyz"\n[model]\nname = "local"\n[optim]\nlr = 1\n': "unknown table",
        '[data]\ntrain = "a.xyz"\n[model]\nname = "local"\n[training]\nlearning_rte = 1\n': "learning_rte",
        '[data]\ntrian = "a.xyz"\n[model]\nname = "local"\n': "trian",
        '[data]\ntrain = "a.xyz"\n[model]\nname = "mace"\n': "unknown model",
        '[data]\ntrain = "a.xyz"\ntest_filter = "distance ~ 3"\n[model]\nname = "local"\n': "filter",
        '[data]\ntrain = "a.xyz"\n[model]\nname = "local"\n[training]\nweights = {energy = -1}\n': "weight",
        '[data]\ntrain = "a.xyz"\n[model\n': "TOML",
    }
    for text, match in bad.items():
        p.write_text(text)
        with pytest.raises(ValueError, match=match):
            config.load_config(p)


def test_plots_without_history(tmp_path):
    from jaxlr.train._plots import write_plots

    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    files = write_plots(tmp_path, [{"epoch": 1, "train_loss": 1.0, "valid_loss": 2.0},
                                   {"epoch": 2, "train_loss": 0.5, "valid_loss": 1.5, "best": True}],
                        {"forces": (x + 0.1, x)})
    assert [f.name for f in files] == ["learning_curves.png", "parity_forces.png"]
    assert all(f.stat().st_size > 1000 for f in files)
