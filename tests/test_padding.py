"""The one padding routine: pad_batch (functional layer) and BatchLoader (models) build the same
AtomsBatch, and a vmapped Coulomb evaluation over a padded batch equals the loop over structures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_system

import jaxlr
from jaxlr.data import BatchLoader, Dataset, Structure, pad_atoms, pad_batch


def test_vmap_over_padded_batch_equals_loop():
    systems = [random_system(s, n, triclinic=bool(s % 2), gaussian=True) for s, n in ((1, 12), (2, 20), (3, 16))]
    batch = pad_batch([dict(positions=p, charges=q, cell=c, sigma=g) for p, q, c, g in systems], cutoff=4.0)
    assert batch.positions.shape == (3, 20, 3) and batch.charges.shape == (3, 20)
    spec = jaxlr.MeshSpec((16, 16, 16), 6)

    def terms(r, q, c, g, nb):
        return jaxlr.coulomb_terms(r, q, cell=c, sigma=g, smearing=1.0, neighbors=nb, method="pme", mesh=spec)[:3]

    e, phi, f = jax.jit(jax.vmap(terms))(batch.positions, batch.charges, batch.cell, batch.sigma, batch.neighbors)
    for k, (p, q, c, g) in enumerate(systems):
        nb = jaxlr.neighbor_list(p, 4.0, c)
        e1, phi1, f1 = terms(jnp.asarray(p), jnp.asarray(q), jnp.asarray(c), jnp.asarray(g), nb)
        m = len(q)
        np.testing.assert_allclose(e[k], e1, rtol=1e-12)
        np.testing.assert_allclose(f[k, :m], f1, atol=1e-11)
        np.testing.assert_allclose(phi[k, :m], phi1, atol=1e-11)
        assert np.all(np.asarray(f[k, m:]) == 0.0)      # padding atoms feel nothing


def test_pad_batch_and_batch_loader_pad_alike():
    rng = np.random.default_rng(0)
    structures = [Structure(positions=rng.uniform(0, 3, (n, 3)), numbers=[1] * n, targets={"energy": 0.0})
                  for n in (3, 5)]
    loader = BatchLoader(Dataset(structures), (1,), cutoff=2.5, batch_size=2, max_shapes=1)
    [(atoms, _)] = list(loader.epoch())
    padded = pad_batch([dict(positions=s.positions, charges=np.zeros(s.n_atoms)) for s in structures],
                       cutoff=2.5, n_atoms=atoms.n_atoms, capacity=atoms.neighbors.idx.shape[2])
    for name in ("positions", "species", "atom_mask", "fragments"):
        np.testing.assert_array_equal(getattr(padded, name), getattr(atoms, name), err_msg=name)
    np.testing.assert_array_equal(padded.neighbors.mask.sum(-1), atoms.neighbors.mask.sum(-1))


def test_padding_errors():
    with pytest.raises(ValueError, match="does not fit"):
        pad_atoms([np.ones(5)], 4)
    with pytest.raises(ValueError, match="at least one structure"):
        pad_batch([])
    with pytest.raises(ValueError, match="periodic, or none"):
        pad_batch([dict(positions=np.zeros((1, 3)), charges=np.zeros(1), cell=np.eye(3) * 5),
                   dict(positions=np.zeros((1, 3)), charges=np.zeros(1))])
