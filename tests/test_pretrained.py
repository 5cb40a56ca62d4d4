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
