"""Explicit plans (jaxlr.tuning.CoulombPlan): a moving system keeps its compiled function,
the kept parameters still meet the accuracy, a system they no longer fit is re-planned,
and a front door without a plan keeps no state."""

import numpy as np
import pytest

import jaxlr
from jaxlr import tuning
from jaxlr._api.coulomb import evaluate_coulomb
from jaxlr.system._neighbors import with_capacity


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
    pos, q, cell = _disordered_rocksalt()
    rng = np.random.default_rng(1)
    plan = tuning.plan_coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4)
    first = jaxlr.coulomb(pos, q, cell=cell, plan=plan)
    compiled = evaluate_coulomb._cache_size()
    for _ in range(12):
        pos = pos + rng.normal(0.0, 0.05, pos.shape)   # 12 MD-like steps, 0.17 Å in all
        plan, kept = plan.update(pos, q, cell=cell)
        assert kept
        res = jaxlr.coulomb(pos, q, cell=cell, plan=plan)
        assert (res.params.mesh, res.params.cutoff, res.params.smearing) == (
            first.params.mesh, first.params.cutoff, first.params.smearing)
        assert res.params.estimated_error <= 1e-4
    assert evaluate_coulomb._cache_size() == compiled
    # the kept parameters meet the accuracy for the moved atoms (converged Ewald reference)
    ref = jaxlr.coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-10)
    f0 = tuning.force_scale(pos, q, cell)
    err = np.sqrt(np.mean(np.sum((np.asarray(res.forces) - np.asarray(ref.forces)) ** 2, axis=1)))
    assert err / f0 <= 3e-4


def test_parameters_that_no_longer_fit_are_replanned():
    pos, q, cell = _disordered_rocksalt()
    plan = tuning.plan_coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4)
    first = plan.params

    def estimate(scale):   # the tuner's error estimate of the first parameters, scaled system
        return tuning.tune_coulomb(pos * scale, q, cell * scale, method="pme", accuracy=1e-4, n_atoms=len(q),
                                   smearing=first.smearing, cutoff=first.cutoff, mesh=first.mesh,
                                   order=first.mesh.order, estimate=True).estimated_error

    # 70 % of the volume: the first parameters still meet 1e-4 (and are not over-accurate
    # by more than 2×), so they are kept; the denser list may need a larger capacity
    small = 0.7 ** (1 / 3)
    assert 0.5 * first.estimated_error <= estimate(small) <= 1e-4
    squeezed, kept = plan.update(pos * small, q, cell=cell * small)
    assert (squeezed.params.mesh, squeezed.params.cutoff, squeezed.params.smearing) == (
        first.mesh, first.cutoff, first.smearing)
    assert squeezed.params.estimated_error == pytest.approx(estimate(small), rel=1e-12)
    needed = int(np.asarray(jaxlr.neighbor_list(pos * small, first.cutoff, cell * small).mask).sum(1).max())
    assert kept == (needed <= plan.capacity)
    assert squeezed.capacity >= needed
    # 150 % of the volume: the first mesh is too coarse, so the system is re-planned
    large = 1.5 ** (1 / 3)
    assert estimate(large) > 1e-4
    expanded, kept = plan.update(pos * large, q, cell=cell * large)
    assert not kept
    fresh = tuning.tune_coulomb(pos * large, q, cell * large, method="pme", accuracy=1e-4, n_atoms=len(q))
    assert (expanded.params.mesh, expanded.params.cutoff, expanded.params.smearing) == (
        fresh.mesh, fresh.cutoff, fresh.smearing)
    assert expanded.params.estimated_error <= 1e-4
    # the original plan is unchanged (plans are immutable values)
    assert plan.params == first


def test_front_door_without_a_plan_is_stateless():
    """Two calls on the same atoms give the same parameters whatever was called in between."""
    pos, q, cell = _disordered_rocksalt(k=3)
    a = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4, stress=False).params
    jaxlr.coulomb(pos * 1.3, q, cell=cell * 1.3, method="pme", accuracy=1e-4, stress=False)
    b = jaxlr.coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4, stress=False).params
    assert a == b
    assert not any(name.startswith("clear") for name in dir(jaxlr))


def test_plan_capacity_overflow_raises():
    pos, q, cell = _disordered_rocksalt(k=3)
    plan = tuning.plan_coulomb(pos, q, cell=cell, method="pme", accuracy=1e-4)
    squeezed = 0.6 ** (1 / 3)
    with pytest.raises(ValueError, match="capacity .* too small.*plan.update"):
        jaxlr.coulomb(pos * squeezed, q, cell=cell * squeezed, plan=plan)
    nl = jaxlr.neighbor_list(pos, plan.params.cutoff, cell)
    assert plan.neighbors(pos, cell).capacity == plan.capacity
    assert plan.fits(nl) and not plan.fits(with_capacity(jaxlr.neighbor_list(pos * squeezed,
                                                                            plan.params.cutoff,
                                                                            cell * squeezed), 10_000))


def test_plan_bad_input():
    pos, q, cell = _disordered_rocksalt(k=2)
    plan = tuning.plan_coulomb(pos, q, cell=cell, method="ewald", accuracy=1e-4)
    with pytest.raises(ValueError, match="plan is for 64 atoms"):
        jaxlr.coulomb(pos[:8], q[:8], cell=cell, plan=plan)
    with pytest.raises(ValueError, match="either plan= or explicit"):
        jaxlr.coulomb(pos, q, cell=cell, plan=plan, smearing=1.0)
    with pytest.raises(ValueError, match="CoulombPlan"):
        jaxlr.coulomb(pos, q, cell=cell, plan=plan.params)
    with pytest.raises(ValueError, match="method must be"):
        tuning.plan_coulomb(pos, q, cell=cell, method="p3m")
    with pytest.raises(ValueError, match="accuracy"):
        tuning.plan_coulomb(pos, q, cell=cell, accuracy=2.0)
    with pytest.raises(ValueError, match="plan is for 64 atoms"):
        plan.update(pos[:8], q[:8], cell=cell)


def test_qeq_front_door_keeps_its_plan():
    pos, _, cell = _disordered_rocksalt(k=2)
    n = len(pos)
    chi, hard, sig = np.where(np.arange(n) % 2, 2.0, -2.0), np.full(n, 8.0), np.full(n, 1.0)
    rng = np.random.default_rng(3)
    plan = tuning.plan_qeq(pos, sig, cell=cell, solver="pcg", method="pme", accuracy=1e-5)
    first = jaxlr.qeq(pos, chi, hard, sig, cell=cell, solver="pcg", plan=plan)
    assert plan.standin and plan.pair_cost is not None
    for _ in range(4):
        pos = pos + rng.normal(0.0, 0.05, pos.shape)
        plan, kept = plan.update(pos, cell=cell, sigma=sig)
        res = jaxlr.qeq(pos, chi, hard, sig, cell=cell, solver="pcg", plan=plan)
        assert kept and res.params.coulomb.mesh == first.params.coulomb.mesh
        assert res.params.coulomb.cutoff == first.params.coulomb.cutoff
    # the same charges as a call that tunes for itself, to the solver tolerance
    fresh = jaxlr.qeq(pos, chi, hard, sig, cell=cell, solver="pcg", method="pme", accuracy=1e-5)
    np.testing.assert_allclose(res.charges, fresh.charges, atol=1e-4)


def test_estimate_needs_concrete_inputs():
    with pytest.raises(ValueError, match="estimate=True needs concrete"):
        tuning.tune_coulomb(None, None, np.eye(3) * 10.0, method="pme", smearing=1.0, cutoff=5.0,
                            mesh=(16, 16, 16), estimate=True)
