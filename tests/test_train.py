"""Training layer: loss, metrics, fit loop, checkpoints, plots, TOML runs (jaxlr.train).

Everything uses one tiny local model (cutoff 3 Å, 3 radial × L = 2, one hidden layer of
8) on small synthetic H/O clusters whose energy is per-species offsets plus a smooth
pair term, so that compilation dominates and the whole module stays well under a minute.
"""

import dataclasses
import json
import time
import tomllib

import jax
import jax.flatten_util

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxlr.data import BatchLoader, Dataset, Structure, Targets
from jaxlr.models import ModelOutput, build_potential
from jaxlr.models._potential import Potential
from jaxlr.testing import toy_batch
from jaxlr.train import _checkpoint as checkpoint
from jaxlr.train import _config as config
from jaxlr.train import _loop as loop
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


def write_xyz(path, dataset, forces=True, no_energy=()):
    """Extended XYZ of a dataset; the frames in ``no_energy`` are written without energy."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    for k, s in enumerate(dataset):
        atoms = Atoms(numbers=s.numbers, positions=s.positions, pbc=False)
        res = {} if k in no_energy else {"energy": float(s.targets["energy"])}
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


def test_fit_refuses_frames_missing_a_weighted_target(trained, tmp_path, monkeypatch):
    # frames 2 and 5 of the file have forces but no energy: reading works, evaluating the
    # targets every frame holds works, training on energies (default or explicit weights)
    # is refused with the frames named, before anything is compiled
    write_xyz(tmp_path / "partial.xyz", make_dataset(8, seed=12), no_energy=(2, 5))
    ds = Dataset.from_file(tmp_path / "partial.xyz")
    assert len(ds) == 8 and ds.available_targets() == ("forces",)
    result, _, _ = trained
    m = loop.evaluate(result.potential, result.variables, ds).result()
    assert set(m) == {"forces"} and m["forces"]["count"] == 3 * sum(s.n_atoms for s in ds)

    def no_init(*args, **kwargs):
        raise AssertionError("Potential.init must not be reached")

    monkeypatch.setattr(Potential, "init", no_init)
    pot = tiny_potential()
    missing = r"target 'energy' is missing in 2 of 8 structures \(structure indices 2, 5\)"
    for weights in (None, {"energy": 1.0, "forces": 1.0}, {"energy": 1.0}):
        with pytest.raises(ValueError, match=f"training set: {missing}.*loss weights") as err:
            loop.fit(pot, ds, None, weights=weights, epochs=1, progress=False)
        assert ("No weights were given" in str(err.value)) == (weights is None)
    with pytest.raises(ValueError, match="validation set: target 'energy' is missing in 2 of 8"):
        loop.fit(pot, make_dataset(4, seed=13), ds, epochs=1, progress=False)
    assert ds.available_targets(every=False) == ("energy", "forces")
    assert loop.training_weights({"forces": 1.0}, ds, pot.predicts) == {"forces": 1.0}
    with pytest.raises(AssertionError, match="Potential.init"):          # forces alone: accepted
        loop.fit(pot, ds, None, weights={"forces": 1.0}, epochs=1, progress=False)

    # jaxlr fit: the message names the frames of the file, whatever the split
    monkeypatch.setattr(loop, "fit", lambda *a, **k: pytest.fail("fit must not be reached"))
    cfg = {"data": {"train": "partial.xyz", "split": [0.5, 0.5]}, "model": {"name": "local", **HYPER},
           "output": {"run_dir": "out"}}
    with pytest.raises(ValueError, match=f"training data '.*partial.xyz': {missing}"):
        config.run_fit(config.normalize_config(cfg, tmp_path))
    cfg["training"] = {"weights": {"energy": 1.0}}
    with pytest.raises(ValueError, match=missing):
        config.run_fit(config.normalize_config(cfg, tmp_path))


def test_config_and_fit_name_bad_numbers(monkeypatch):
    base = {"data": {"train": "a.xyz"}, "model": {"name": "local"}}
    bad = {
        "learning_rate": ([-1e-3, 0, 0.0, float("nan"), float("inf"), "1e-3", True, [1e-3]], "number > 0"),
        "epochs": ([0, -3, 2.5, "10"], "positive integer"),
        "batch_size": ([0, 4.0], "positive integer"),
        "patience": ([0], "positive integer"),
        "max_shapes": ([0], "positive integer"),
        "init_structures": ([0], "positive integer"),
        "valid_batch_size": ([0], "positive integer"),
        "seed": ([-1, 1.5], "integer >= 0"),
        "warmup_epochs": ([-1, float("nan")], ">= 0"),
        "decay_rate": ([0, 1.5], r"\(0, 1\]"),
        "final_lr_fraction": ([-0.1, 2], r"\[0, 1\]"),
        "weight_decay": ([-1e-5], ">= 0"),
        "clip_norm": ([0, -1], "> 0"),
        "ema_decay": ([1.0, -0.1, float("nan")], r"\[0, 1\)"),
        "schedule": (["linear"], "cosine"),
        "optimizer": (["sgd"], "adamw"),
        "dtype": (["float16"], "float32"),
        "progress": (["yes"], "true or false"),
    }
    for key, (values, allowed) in bad.items():
        for value in values:
            cfg = {**base, "training": {key: value}}
            with pytest.raises(ValueError, match=rf"\[training\] {key}: must be .*{allowed}"):
                config.normalize_config(cfg, ".")
    ok = {"learning_rate": 1, "warmup_epochs": 0, "decay_rate": 1, "clip_norm": 0.5, "patience": 3, "seed": 0}
    assert config.normalize_config({**base, "training": ok}, ".")["training"] == ok
    # the TOML spelling of NaN, and fit itself (called from Python)
    with pytest.raises(ValueError, match=r"\[training\] learning_rate: .*got nan"):
        config.normalize_config(tomllib.loads("[data]\ntrain = 'a.xyz'\n[model]\nname = 'local'\n"
                                                     "[training]\nlearning_rate = nan\n"), ".")

    def no_init(*args, **kwargs):
        raise AssertionError("Potential.init must not be reached")

    monkeypatch.setattr(Potential, "init", no_init)
    train, pot = make_dataset(4, seed=3), tiny_potential()
    for kwargs, match in (({"learning_rate": "fast"}, "learning_rate must be a number"),
                          ({"learning_rate": -1.0}, "learning_rate must be a finite positive"),
                          ({"learning_rate": float("nan")}, "learning_rate must be a finite positive"),
                          ({"epochs": 2.5}, "epochs must be a positive integer"),
                          ({"batch_size": 0}, "batch_size must be a positive integer"),
                          ({"warmup_epochs": "1"}, "warmup_epochs must be a number"),
                          ({"clip_norm": float("nan")}, "clip_norm must be a finite"),
                          ({"ema_decay": 1.0}, r"ema_decay must lie in \[0, 1\)"),
                          ({"ema_decay": float("nan")}, r"ema_decay must lie in \[0, 1\)"),
                          ({"ema_decay": "0.99"}, "ema_decay must be a number")):
        with pytest.raises(ValueError, match=match):
            loop.fit(pot, train, None, progress=False, **kwargs)


def test_config_model_subtable_typos_name_the_key():
    text = '[data]\ntrain = "a.xyz"\n[model]\nname = "{name}"\n{extra}\n'
    cases = {
        ("local", "[model.local]\ncutof = 3.0"): r"\[model\.local\]: unknown key\(s\) 'cutof' \(did you mean "
                                                r"'cutoff'\?\); valid keys: \['cutoff', 'max_angular', 'max_radial', "
                                                r"'sigma'\]",
        ("qeq", "[model.coulomb]\naccuracy = 1e-4\nodrer = 6"): r"\[model\.coulomb\].*'odrer'.*'order'",
        ("lode", "[model.lode]\nmax_radial = 3\ndensity_sgima = 0.5"): r"\[model\.lode\].*'density_sgima'.*"
                                                                      r"'density_sigma'",
        ("local", "hiden = [8]"): r"\[model\].*'hiden' \(did you mean 'hidden'\?\)",
        ("local", "[model.lode]\ncutoff = 3.0"): r"\[model\.lode\] is no table of model 'local'",
        ("local", "local = 3.0"): r"\[model\] local: must be a table",
        ("local", "[model.hidden]\nwidth = 8"): r"\[model\.hidden\]: 'hidden' is a value, not a table",
    }
    for (name, extra), match in cases.items():
        with pytest.raises(ValueError, match=match):
            config.normalize_config(tomllib.loads(text.format(name=name, extra=extra)), ".")
    good = tomllib.loads(text.format(name="qeq", extra="[model.local]\ncutoff = 3.0\n[model.coulomb]\n"
                                                              "accuracy = 1e-4"))
    assert config.normalize_config(good, ".")["model"]["coulomb"] == {"accuracy": 1e-4}


def test_fit_help_shows_the_config_format(capsys, tmp_path):
    import textwrap

    from jaxlr.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert config.CONFIG_FORMAT.splitlines()[0] in out and "[model.local]" in out
    # every key of every table is listed (the format cannot drift from the code) ...
    keys = (config._DATA_KEYS | config._OUTPUT_KEYS | config._training_keys()
            | {"name", "species", "hidden", "cutoff", "max_radial", "max_angular", "sigma", "accuracy"})
    assert [k for k in sorted(keys) if k not in config.CONFIG_FORMAT] == []
    assert [k for k in config._TRAINING_NUMBERS if k not in config.CONFIG_FORMAT] == []
    # ... and its example is a valid configuration
    example = textwrap.dedent(config.CONFIG_FORMAT.split("Example (water.toml):\n")[1])
    cfg = config.normalize_config(tomllib.loads(example), tmp_path)
    assert cfg["model"]["local"] == {"cutoff": 4.0} and cfg["training"]["learning_rate"] == 1e-3
    assert "[model.local]" in (config.__doc__ or "[model.local]")


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
    assert np.isfinite(result.seconds) and result.seconds > 0     # measured, never bounded


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


def test_ema_is_the_average_of_the_parameter_trajectory():
    """fit(ema_decay=d) returns θ̄ with θ̄_0 = θ_0, θ̄_k = w_k θ̄_{k−1} + (1 − w_k) θ_k,
    w_k = min(d, (1 + k)/(10 + k)), where θ_k are the parameters of the same run without the
    average (one batch per epoch, so epoch k is step k; a constant, small learning rate keeps
    the training loss falling, so the last epoch is the one kept).  θ_0 comes from a run whose
    one step is 1e-300 in size, which leaves the parameters unchanged in float64."""
    train = make_dataset(6, seed=5, sizes=(8,))
    kw = dict(weights={"energy": 1.0, "forces": 1.0}, batch_size=6, schedule="constant", seed=0,
              progress=False, max_shapes=1)

    def params(**extra):
        res = loop.fit(tiny_potential(), train, None, **{**kw, **extra})
        assert res.best_epoch == len(res.history)
        return res.variables["params"]

    theta = [params(epochs=1, learning_rate=1e-300), params(epochs=1, learning_rate=3e-3),
             params(epochs=2, learning_rate=3e-3)]
    assert not np.allclose(jax.flatten_util.ravel_pytree(theta[2])[0], jax.flatten_util.ravel_pytree(theta[0])[0])
    d = 0.5
    w1, w2 = loop.ema_weight(d, 1), loop.ema_weight(d, 2)
    assert (w1, w2) == (2 / 11, 0.25)
    expected = jax.tree_util.tree_map(lambda t0, t1, t2: w2 * (w1 * t0 + (1 - w1) * t1) + (1 - w2) * t2, *theta)
    got = params(epochs=2, learning_rate=3e-3, ema_decay=d)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-14), got, expected)
    # d = 0: the average is the parameters themselves
    same = params(epochs=2, learning_rate=3e-3, ema_decay=0.0)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b), same, theta[2])
    # the dtype of every leaf is kept (the weight is a weakly typed scalar)
    assert {a.dtype for a in jax.tree_util.tree_leaves(got)} == {a.dtype for a in jax.tree_util.tree_leaves(theta[2])}


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
