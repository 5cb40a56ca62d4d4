"""Front-door parameter reuse (jaxlr.reuse): a moving system keeps its compiled function,
the kept parameters still meet the accuracy, and a system they no longer fit is tuned
afresh."""

import numpy as np
import pytest

import jaxlr
from jaxlr.tuning import _plan as reuse
from jaxlr import tuning
from jaxlr._api.coulomb import evaluate_coulomb


def _disordered_rocksalt(k=4, a=5.64, disorder=0.4, seed=0):
    """(8k³, 3) positions of a rock-salt crystal displaced by Gaussian noise, ±1 charges."""
    frac = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
                     [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
    grid = np.stack(np.meshgrid(*[np.arange(k)] * 3, indexing="ij"), -1).reshape(-1, 3)
    pos = ((grid[:, None, :] + frac[None]) * a).reshape(-1, 3)
    pos = pos + np.random.default_rng(seed).normal(0.0, disorder, pos.shape)
    q = np.tile([1.0] * 4 + [-1.0] * 4, len(grid))
    return pos, q, np.eye(3) * a * k


def test_moving_system_keeps_its_compiled_function():
    jaxlr.clear_tuning_cache()
    pos, q, cell = _disordered_rocksalt()
    rng = np.random.default_rng(1)
    first = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4)
    compiled = evaluate_coulomb._cache_size()
    for _ in range(12):
        pos = pos + rng.normal(0.0, 0.05, pos.shape)   # 12 MD-like steps, 0.17 Å in all
        res = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4)
        assert (res.params.mesh, res.params.cutoff, res.params.smearing) == (
            first.params.mesh, first.params.cutoff, first.params.smearing)
        assert res.params.estimated_error <= 1e-4
    assert evaluate_coulomb._cache_size() == compiled
    # the kept parameters meet the accuracy for the moved atoms (converged Ewald reference)
    ref = jaxlr.coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-10)
    f0 = tuning.force_scale(pos, q, cell)
    err = np.sqrt(np.mean(np.sum((np.asarray(res.forces) - np.asarray(ref.forces)) ** 2, axis=1)))
    assert err / f0 <= 3e-4


def test_parameters_that_no_longer_fit_are_tuned_afresh():
    jaxlr.clear_tuning_cache()
    pos, q, cell = _disordered_rocksalt()
    kw = dict(method="pme", accuracy=1e-4, want_stress=False)
    first = jaxlr.coulomb(pos, q, cell=cell, **kw).params

    def estimate(scale):   # the tuner's error estimate of the first parameters, scaled system
        return tuning.tune_coulomb(pos * scale, q, cell * scale, method="pme", accuracy=1e-4, n_atoms=len(q),
                                   smearing=first.smearing, cutoff=first.cutoff, mesh=first.mesh,
                                   order=first.mesh.order, estimate=True).estimated_error

    # 70 % of the volume: the first parameters still meet 1e-4 (and are not over-accurate
    # by more than 2×), so they are kept
    small = 0.7 ** (1 / 3)
    assert 0.5 * first.estimated_error <= estimate(small) <= 1e-4
    squeezed = jaxlr.coulomb(pos * small, q, cell=cell * small, **kw).params
    assert (squeezed.mesh, squeezed.cutoff, squeezed.smearing) == (first.mesh, first.cutoff, first.smearing)
    assert squeezed.estimated_error == pytest.approx(estimate(small), rel=1e-12)
    # 150 % of the volume: the first mesh is too coarse, so the system is tuned afresh
    large = 1.5 ** (1 / 3)
    assert estimate(large) > 1e-4
    expanded = jaxlr.coulomb(pos * large, q, cell=cell * large, **kw).params
    fresh = tuning.tune_coulomb(pos * large, q, cell * large, method="pme", accuracy=1e-4, n_atoms=len(q))
    assert (expanded.mesh, expanded.cutoff, expanded.smearing) == (fresh.mesh, fresh.cutoff, fresh.smearing)
    assert expanded.estimated_error <= 1e-4
    # clear_tuning_cache forgets everything
    jaxlr.clear_tuning_cache()
    assert reuse._PARAMS == {} and reuse._CAPACITY == {}


def test_explicit_parameters_bypass_the_memory():
    jaxlr.clear_tuning_cache()
    pos, q, cell = _disordered_rocksalt(k=3)
    res = jaxlr.coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-5, smearing=1.5, want_stress=False)
    assert res.params.smearing == 1.5 and reuse._PARAMS == {}


def test_stable_capacity():
    reuse.clear_tuning_cache()
    pos, q, cell = _disordered_rocksalt(k=3)
    nl = jaxlr.neighbor_list(pos, 6.0, cell)
    key = ("test", 6.0)
    assert reuse.stable_capacity(key, nl) is nl
    wider = jaxlr.system._neighbors.with_capacity(nl, nl.capacity + 8)
    # a list that fits the remembered capacity is padded or cut to it
    assert reuse.stable_capacity(key, wider).capacity == nl.capacity
    # one that does not fit is kept as it is, and its capacity remembered
    longer = jaxlr.neighbor_list(pos, 7.0, cell)
    assert reuse.stable_capacity(key, longer) is longer
    assert reuse._CAPACITY[key] == longer.capacity
    # a remembered capacity far above what a fresh list takes is dropped too
    shorter = jaxlr.neighbor_list(pos, 4.0, cell)
    assert reuse.stable_capacity(key, shorter) is shorter
    reuse.clear_tuning_cache()


def test_qeq_front_door_keeps_its_parameters():
    jaxlr.clear_tuning_cache()
    pos, _, cell = _disordered_rocksalt(k=2)
    n = len(pos)
    chi, hard, sig = np.where(np.arange(n) % 2, 2.0, -2.0), np.full(n, 8.0), np.full(n, 1.0)
    rng = np.random.default_rng(3)
    first = jaxlr.qeq(pos, chi, hard, sig, cell=cell, method="pcg", coulomb_method="pme", accuracy=1e-5)
    for _ in range(4):
        pos = pos + rng.normal(0.0, 0.05, pos.shape)
        res = jaxlr.qeq(pos, chi, hard, sig, cell=cell, method="pcg", coulomb_method="pme", accuracy=1e-5)
        assert res.params.coulomb.mesh == first.params.coulomb.mesh
        assert res.params.coulomb.cutoff == first.params.coulomb.cutoff


def test_estimate_needs_concrete_inputs():
    with pytest.raises(ValueError, match="estimate=True needs concrete"):
        tuning.tune_coulomb(None, None, np.eye(3) * 10.0, method="pme", smearing=1.0, cutoff=5.0,
                            mesh=(16, 16, 16), estimate=True)
