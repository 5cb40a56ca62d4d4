"""Invariances and evaluation-strategy equivalences of the Coulomb energy: translation,
rotation, permutation, supercells, equivalent cell vectors, padding, jit = eager,
vmap = loop, no recompilation, the front door inside jit, spatially sorted evaluation and
the blocked real-space sum.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import pad_system, random_rotation, random_system, rms
from coulomb_helpers import coulomb_module, deriv_system, invariance_system, max_rel, pad_kvectors, terms_fn
from crystals import SKEW

import jaxlr
from jaxlr import performance
from jaxlr.system._order import spatial_order
from jaxlr.tuning._coulomb import force_scale


def replicate(positions, charges, cell, reps, sigma=None):
    """Diagonal supercell: positions tiled over the image cells, cell rows scaled by reps."""
    shifts = np.array([[i, j, k] for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])])
    big_pos = np.concatenate([positions + s @ cell for s in shifts])
    big_q = np.tile(charges, len(shifts))
    big_sig = None if sigma is None else np.tile(sigma, len(shifts))
    return big_pos, big_q, np.diag(reps) @ cell, big_sig


def _front(pos, q, cell, method, accuracy, **kw):
    return jaxlr.coulomb(pos, q, cell=cell, method=method, accuracy=accuracy, **kw)


# ======================================================================================
# 1. invariances
# ======================================================================================
def test_translation_invariance():
    """Ewald: any translation (1e-10).  PME: a translation by a mesh vector is exact (the
    spread charges move by whole mesh cells); an arbitrary one changes forces by less than
    twice the tuned error (2 × 3 accuracy F₀)."""
    pos, q, cell = invariance_system()
    f0 = force_scale(pos, q, cell)
    shift = np.array([0.37, -1.21, 2.05])
    a = _front(pos, q, cell, "ewald", 1e-10)
    b = _front(pos + shift, q, cell, "ewald", 1e-10)
    assert abs(float(a.energy - b.energy)) <= 1e-10 * abs(float(a.energy))
    assert rms(a.forces - b.forces) <= 1e-10 * f0
    assert max_rel(b.stress, a.stress) <= 1e-9

    acc = 1e-6
    a = _front(pos, q, cell, "pme", acc)
    spec = a.params.mesh
    mesh_cell = np.asarray(spec.basis) @ cell
    mesh_vector = mesh_cell[0] / spec.shape[0] * 3 - mesh_cell[2] / spec.shape[2]
    b = _front(pos + mesh_vector, q, cell, "pme", acc, smearing=a.params.smearing, cutoff=a.params.cutoff,
               mesh=spec)
    assert b.params.mesh == spec
    assert abs(float(a.energy - b.energy)) <= 1e-11 * abs(float(a.energy))
    assert rms(a.forces - b.forces) <= 1e-11 * f0
    c = _front(pos + shift, q, cell, "pme", acc)
    assert rms(a.forces - c.forces) <= 2 * 3 * acc * f0
    assert abs(float(a.energy - c.energy)) <= 1e-5 * abs(float(a.energy))


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_rotation_invariance(method):
    """Rotating positions and cell: energy and potentials unchanged, forces and stress rotate.

    Exact for both methods (PME works in fractional coordinates and a rotation-invariant
    metric), so 1e-10.
    """
    pos, q, cell = invariance_system()
    rot = random_rotation(3)
    acc = 1e-10 if method == "ewald" else 1e-5
    a = _front(pos, q, cell, method, acc)
    b = _front(pos @ rot.T, q, cell @ rot.T, method, acc)
    f0 = force_scale(pos, q, cell)
    assert abs(float(a.energy - b.energy)) <= 1e-10 * abs(float(a.energy))
    assert max_rel(b.potentials, a.potentials) <= 1e-10
    assert rms(np.asarray(a.forces) @ rot.T - b.forces) <= 1e-10 * f0
    np.testing.assert_allclose(b.stress, rot @ np.asarray(a.stress) @ rot.T, rtol=0,
                               atol=1e-10 * float(np.max(np.abs(a.stress))))


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_permutation_invariance(method):
    pos, q, cell = invariance_system()
    perm = np.random.default_rng(4).permutation(len(q))
    acc = 1e-10 if method == "ewald" else 1e-5
    a = _front(pos, q, cell, method, acc)
    b = _front(pos[perm], q[perm], cell, method, acc)
    assert abs(float(a.energy - b.energy)) <= 1e-12 * abs(float(a.energy))
    np.testing.assert_allclose(b.forces, np.asarray(a.forces)[perm], rtol=0,
                               atol=1e-12 * float(np.max(np.abs(a.forces))))
    np.testing.assert_allclose(b.potentials, np.asarray(a.potentials)[perm], rtol=0,
                               atol=1e-12 * float(np.max(np.abs(a.potentials))))


@pytest.mark.parametrize("reps", [(2, 1, 1), (2, 2, 2)], ids=["211", "222"])
def test_supercell_ewald(reps):
    """Energy scales with the number of cells, forces and potentials replicate, stress is intensive."""
    pos, q, cell, _ = random_system(62, 12, triclinic=True)
    big = replicate(pos, q, cell, reps)
    a = jaxlr.coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-11)
    b = jaxlr.coulomb(big[0], big[1], cell=big[2], method="ewald", accuracy=1e-11)
    m = int(np.prod(reps))
    f0 = force_scale(pos, q, cell)
    assert abs(float(b.energy) - m * float(a.energy)) <= 1e-9 * m * abs(float(a.energy))
    assert rms(np.asarray(b.forces) - np.tile(np.asarray(a.forces), (m, 1))) <= 1e-9 * f0
    assert max_rel(b.potentials, np.tile(np.asarray(a.potentials), m)) <= 1e-9
    assert max_rel(b.stress, a.stress) <= 1e-8


def test_supercell_pme_exact():
    """PME with the mesh doubled along the doubled axis (same smearing, cutoff and order)
    is *exactly* the same discretisation: energy ×2 and replicated forces to round-off."""
    pos, q, cell, _ = random_system(63, 16, triclinic=True)
    spec = jaxlr.MeshSpec((9, 10, 12), order=6)
    spec2 = jaxlr.MeshSpec((18, 10, 12), order=6)
    big = replicate(pos, q, cell, (2, 1, 1))
    s, rc = 1.3, 6.0
    one = terms_fn("pme", spec)(jnp.asarray(pos), jnp.asarray(q), jnp.asarray(cell), None, s,
                                jaxlr.neighbor_list(pos, rc, cell), None)
    two = terms_fn("pme", spec2)(jnp.asarray(big[0]), jnp.asarray(big[1]), jnp.asarray(big[2]), None, s,
                                 jaxlr.neighbor_list(big[0], rc, big[2]), None)
    f0 = force_scale(pos, q, cell)
    assert abs(float(two[0]) - 2 * float(one[0])) <= 1e-12 * abs(float(one[0]))
    assert rms(np.asarray(two[2]) - np.tile(np.asarray(one[2]), (2, 1))) <= 1e-12 * f0
    np.testing.assert_allclose(two[3], one[3], rtol=0, atol=1e-11 * float(np.max(np.abs(one[3]))))


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_equivalent_cell_vectors(method):
    """Cell rows replaced by a unimodular integer combination (same lattice), positions
    wrapped into the new cell: same physics.  Ewald 1e-10; PME each within its accuracy."""
    pos, q, cell = invariance_system()
    new_cell = SKEW @ cell
    frac = pos @ np.linalg.inv(new_cell)
    new_pos = (frac - np.floor(frac)) @ new_cell
    acc = 1e-10 if method == "ewald" else 1e-6
    a = _front(pos, q, cell, method, acc)
    b = _front(new_pos, q, new_cell, method, acc)
    f0 = force_scale(pos, q, cell)
    if method == "ewald":
        assert abs(float(a.energy - b.energy)) <= 1e-10 * abs(float(a.energy))
        assert rms(a.forces - b.forces) <= 1e-9 * f0
        assert max_rel(b.stress, a.stress) <= 1e-8
    else:
        assert abs(float(a.energy - b.energy)) <= 1e-5 * abs(float(a.energy))
        assert rms(a.forces - b.forces) <= 2 * 3 * acc * f0


# ======================================================================================
# 2. padding, jit = eager, vmap = loop, no recompilation
# ======================================================================================
@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_padding_invariance(method):
    """Zero-charge padding atoms masked out of the neighbour list change nothing: energy,
    real-atom forces, potentials and stress to round-off; padded forces exactly 0."""
    pos, q, cell, sig = random_system(64, 24, triclinic=True, gaussian=True)
    s, rc = 1.4, 7.0
    spec = jaxlr.MeshSpec((12, 12, 12), order=6) if method == "pme" else None
    kvec = jnp.asarray(jaxlr.electrostatics.half_space_kvectors(cell, 3.5)) if method == "ewald" else None
    f = terms_fn(method, spec)
    ref_terms = f(jnp.asarray(pos), jnp.asarray(q), jnp.asarray(cell), jnp.asarray(sig), s,
                  jaxlr.neighbor_list(pos, rc, cell), kvec)
    ppos, pq, psig, mask = pad_system(pos, q, 32, sig, cell=cell)
    nbrs = jaxlr.neighbor_list(ppos, rc, cell, atom_mask=mask)
    assert not bool(np.any(np.asarray(nbrs.mask)[~mask]))
    pad_terms = f(jnp.asarray(ppos), jnp.asarray(pq), jnp.asarray(cell), jnp.asarray(psig), s, nbrs, kvec)
    e0 = float(ref_terms[0])
    assert abs(float(pad_terms[0]) - e0) <= 1e-12 * abs(e0)
    for k, rows in ((1, slice(0, 24)), (2, slice(0, 24)), (3, slice(None))):
        np.testing.assert_allclose(pad_terms[k][rows], ref_terms[k], rtol=0,
                                   atol=1e-12 * float(np.max(np.abs(ref_terms[k]))))
    assert np.all(np.asarray(pad_terms[2])[24:] == 0.0)


@pytest.mark.parametrize("method", ["direct", pytest.param("ewald", marks=pytest.mark.slow),
                                    pytest.param("pme", marks=pytest.mark.slow)])
def test_jit_equals_eager(method):
    """coulomb_terms evaluated op by op (no jit) equals the jitted evaluation (1e-12)."""
    d = deriv_system(method)
    args = (d["pos"], d["q"], d["cell"], d["sigma"], d["smearing"], d["nbrs"], d["kvec"])
    jitted = terms_fn(method, d["mesh"])(*args)
    with jax.disable_jit():
        eager = jaxlr.coulomb_terms(d["pos"], d["q"], cell=d["cell"], sigma=d["sigma"],
                                    smearing=d["smearing"], neighbors=d["nbrs"], kvectors=d["kvec"],
                                    method=method, mesh=d["mesh"])
    for x, y in zip(jitted, eager):
        if x is None:
            assert y is None
            continue
        np.testing.assert_allclose(y, x, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(x))))


@pytest.mark.parametrize("method", [pytest.param("ewald", marks=pytest.mark.slow), "pme"])
def test_vmap_equals_loop(method):
    """vmap over two padded structures (N = 20 and 28 padded to 32, different cells and
    smearings, one MeshSpec, one neighbour capacity) equals a loop of single evaluations
    (to 1e-12); padding itself is checked against unpadded systems in test_padding_invariance."""
    systems = [random_system(65, 20, triclinic=True, gaussian=True),
               random_system(66, 28, triclinic=True, gaussian=True, density=0.08)]
    smear, rc, kc, n_pad = (1.3, 1.5), 6.5, 3.5, 32
    spec = jaxlr.MeshSpec((12, 12, 12), order=6) if method == "pme" else None
    f = terms_fn(method, spec)
    kv_list = [jaxlr.electrostatics.half_space_kvectors(c, kc) for _, _, c, _ in systems]
    n_chunks = max(k.shape[0] for k in kv_list)
    padded = []
    for (pos, q, cell, sig), s in zip(systems, smear):
        ppos, pq, psig, mask = pad_system(pos, q, n_pad, sig, cell=cell)
        padded.append((ppos, pq, cell, psig, s, mask))
    capacity = max(jaxlr.neighbor_list(p[0], rc, p[2], atom_mask=p[5]).capacity for p in padded)
    singles, columns = [], []
    for (ppos, pq, cell, psig, s, mask), kv in zip(padded, kv_list):
        nbrs = jaxlr.neighbor_list(ppos, rc, cell, atom_mask=mask, capacity=capacity)
        kv = pad_kvectors(kv, n_chunks) if method == "ewald" else None
        args = (jnp.asarray(ppos), jnp.asarray(pq), jnp.asarray(cell), jnp.asarray(psig), jnp.asarray(s), nbrs, kv)
        singles.append(f(*args))
        columns.append(args)
    batched = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *columns)
    out = jax.vmap(f)(*batched)
    for k, (single, (pos, q, _, _)) in enumerate(zip(singles, systems)):
        n = len(q)
        assert abs(float(out[0][k]) - float(single[0])) <= 1e-12 * abs(float(single[0]))
        for i in (1, 2, 3):
            np.testing.assert_allclose(out[i][k], single[i], rtol=0, atol=1e-12 * float(np.max(np.abs(single[i]))))
        assert np.all(np.asarray(out[2][k][n:]) == 0.0)


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_no_recompilation(method, caplog):
    """A second coulomb() call with the same shapes (slightly moved atoms) reuses the compiled code."""
    pos, q, cell, _ = random_system(67, 20, triclinic=True)
    a = jaxlr.coulomb(pos, q, cell=cell, method=method, accuracy=1e-5)
    size = coulomb_module.evaluate_coulomb._cache_size()
    moved = pos + np.random.default_rng(0).normal(scale=1e-4, size=pos.shape)
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            b = jaxlr.coulomb(moved, q, cell=cell, method=method, accuracy=1e-5)
    finally:
        jax.config.update("jax_log_compiles", False)
    assert b.params.mesh == a.params.mesh
    assert coulomb_module.evaluate_coulomb._cache_size() == size
    assert not [r for r in caplog.records if "Compiling" in r.getMessage() and "evaluate_coulomb" in r.getMessage()]
    assert float(b.energy) != float(a.energy)  # it really ran on the new positions


# regression of a library bug found while writing these tests (fixed)
def test_front_door_inside_jit_with_explicit_parameters():
    pos, q, cell, _ = random_system(92, 12, triclinic=True)
    eager = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=1e-5)
    p = eager.params
    nbrs = jaxlr.neighbor_list(pos, p.cutoff, cell)

    @jax.jit
    def energy(r):
        return jaxlr.coulomb(r, q, cell=cell, method="pme", smearing=p.smearing, cutoff=p.cutoff,
                             mesh=p.mesh, neighbors=nbrs).energy
    assert abs(float(energy(jnp.asarray(pos))) - float(eager.energy)) <= 1e-12 * abs(float(eager.energy))


# ======================================================================================
# 3. spatially sorted evaluation and the blocked real-space sum
# ======================================================================================
def test_spatially_sorted_evaluation_matches(monkeypatch):
    """Large systems are evaluated in a spatially sorted order (cache locality); the results,
    returned in the caller's order, equal those of the unsorted evaluation to round-off."""
    pos, q, cell, sig = random_system(61, 150, triclinic=True, gaussian=True)
    plain = jaxlr.coulomb(pos, q, cell=cell, sigma=sig, method="pme", accuracy=1e-5)
    monkeypatch.setitem(performance.TABLES, "cpu", dataclasses.replace(performance.CPU, sort_above=10))
    order = spatial_order(pos, cell)
    assert sorted(order.tolist()) == list(range(150)) and order.tolist() != list(range(150))
    mixed = jaxlr.coulomb(pos, q, cell=cell, sigma=sig, method="pme", accuracy=1e-5)
    assert abs(float(mixed.energy - plain.energy)) <= 1e-11 * abs(float(plain.energy))
    np.testing.assert_allclose(mixed.forces, plain.forces, rtol=0, atol=1e-10 * float(np.abs(plain.forces).max()))
    np.testing.assert_allclose(mixed.potentials, plain.potentials, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(mixed.stress, plain.stress, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("gaussian", [False, True], ids=["point", "gaussian"])
def test_blocked_real_space_equals_single_pass(monkeypatch, gaussian):
    """Large neighbour lists are summed block by block (each block's rows gathered, the last
    block shifted back to end at row N with its already-summed rows masked).  With blocks of
    7 rows over 40 atoms (the last block overlaps the previous one by 2 rows) every output —
    energy, potentials, forces, stress, ∂E/∂σ and ∂E/∂s, and the energy and potentials
    alone, which have their own single-pass limit — equals the single-pass sum."""
    realspace = importlib.import_module("jaxlr.electrostatics._realspace")
    pos, q, cell, sig = random_system(83, 40, triclinic=True, gaussian=gaussian)
    nbrs = jaxlr.neighbor_list(pos, 5.0, cell)
    r, qq, c = jnp.asarray(pos), jnp.asarray(q), jnp.asarray(cell)
    sg = None if sig is None else jnp.asarray(sig)

    def outputs():
        def e(r, q, c, sg, s):
            return realspace.real_space_energy(r, q, sg, c, s, nbrs)
        argnums = (0, 1, 2, 3, 4) if gaussian else (0, 1, 2, 4)
        s = jnp.asarray(1.3)
        return (jax.jit(jax.value_and_grad(e, argnums=argnums))(r, qq, c, sg, s),
                jax.jit(e)(r, qq, c, sg, s), jax.jit(jax.grad(e, argnums=1))(r, qq, c, sg, s))

    single = outputs()
    capacity = nbrs.idx.shape[1]
    monkeypatch.setitem(performance.TABLES, "cpu", dataclasses.replace(
        performance.CPU, block_slots=7 * capacity, single_pass_bytes=0, single_pass_bytes_energy=0))
    blocked = outputs()
    for a, b in zip(jax.tree_util.tree_leaves(blocked), jax.tree_util.tree_leaves(single)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(np.max(np.abs(b))))
