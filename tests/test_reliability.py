"""Reliability fixes found by trying jaxlr as a new user would: the full-precision Coulomb
constant, the excluded jax release that miscompiles a vmapped mat-vec, and inputs that used
to give an opaque error or a silent wrong answer."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlr

ROOT = Path(__file__).resolve().parents[1]


def test_coulomb_constant_is_hartree_times_bohr():
    """KE = Hartree·Bohr in eV·Å from CODATA 2018 (ASE's units.Hartree * units.Bohr)."""
    from ase import units
    assert jaxlr.KE == pytest.approx(units.Hartree * units.Bohr, rel=1e-15)
    assert jaxlr.KE == 14.399645351950548


def test_nacl_madelung_constant_to_1e12():
    """Rock salt, 8-atom conventional cell: E = −M KE / r₀ per ion pair, M = 1.747564594633182."""
    a = 5.64
    frac = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
                     [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
    q = np.array([1.0] * 4 + [-1.0] * 4)
    res = jaxlr.coulomb(frac * a, q, cell=np.eye(3) * a, method="ewald", accuracy=1e-14, stress=False)
    from ase import units
    madelung = -float(res.energy) / 4 / (units.Hartree * units.Bohr) * (a / 2)   # independent KE
    assert madelung == pytest.approx(1.747564594633182, rel=1e-12, abs=0)


def _excluded_versions(name):
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(rf"{name}\b", d) and not d.startswith(f"{name}-"))
    return set(re.findall(r"!=\s*([\d.]+)", spec))


def test_miscompiling_jax_release_is_excluded():
    """jax-ml/jax#39103: 0.10.2 returns wrong sums on CPU; pyproject excludes it and it is not installed."""
    for name in ("jax", "jaxlib"):
        assert "0.10.2" in _excluded_versions(name)
        assert importlib.metadata.version(name) not in _excluded_versions(name)


@pytest.mark.parametrize("dtype, n", [(jnp.float64, 16_385), (jnp.float32, 32_769)])
def test_vmapped_matvec_then_reduction_jit_equals_eager(dtype, n):
    """The upstream reproducer's pattern (vmapped 3×3 mat-vec, then a reduction, jitted) just past
    the row counts where 0.10.2 broke: jit must equal eager and the exact value (n−1)²."""
    i = jnp.arange(n, dtype=dtype)
    x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
    matrix = jnp.eye(3, dtype=dtype)

    def f(x):
        return jax.vmap(lambda row: jnp.sum((matrix @ row) ** 2))(x)

    exact = float(n - 1) ** 2
    assert float(f(x)[-1]) == exact
    assert float(jax.jit(f)(x)[-1]) == exact


def test_qeq_total_charge_per_fragment_names_fragment_charges():
    R = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    with pytest.raises(ValueError, match="fragment_charges="):
        jaxlr.qeq(R, np.zeros(2), np.ones(2) * 5, np.ones(2), total_charge=np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="total_charge must be one real number"):
        jaxlr.qeq(R, np.zeros(2), np.ones(2) * 5, np.ones(2), total_charge="1")
    # the density front door says the same
    from jaxlr.equilibration import GaussianBasis
    basis = GaussianBasis(species=(1,), s_widths=((0.5,),), p_widths=((),))
    lin, loc = np.zeros((2, 1)), np.ones((2, 1, 1)) * 10.0
    for bad in (np.array([1.0, 0.0]), "1"):
        with pytest.raises(ValueError, match="total_charge must be one real number"):
            jaxlr.density_qeq(R, np.array([1, 1]), lin, loc, basis=basis, total_charge=bad)


def test_coincident_point_charges_are_refused():
    R = np.array([[0.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    q = np.array([1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match="atoms 1 and 2 sit at the same place"):
        jaxlr.coulomb(R, q)
    cell = np.eye(3) * 4.0
    with pytest.raises(ValueError, match="up to a lattice vector"):
        jaxlr.coulomb(np.array([[0.0, 0, 0], [4.0, 0, 0]]), np.array([1.0, -1.0]), cell=cell)
    # Gaussian charges at one place are finite
    res = jaxlr.coulomb(R, q, sigma=np.ones(3))
    assert np.isfinite(float(res.energy))


def test_neutrality_tolerance_is_relative_to_the_charges():
    rng = np.random.default_rng(0)
    cell = np.eye(3) * 12.0
    R = rng.uniform(0, 12, (64, 3))
    q = np.round(rng.normal(0, 0.4, 64), 6)
    q[-1] = np.round(q[-1] - q.sum(), 6) + 1e-6        # written to 6 decimals, Σq ≈ 1e-6
    res = jaxlr.coulomb(R, q, cell=cell, method="ewald", accuracy=1e-5)
    assert np.isfinite(float(res.energy))
    with pytest.raises(ValueError, match="subtract their mean.*background=True"):
        jaxlr.coulomb(R, q + 0.01, cell=cell, method="ewald", accuracy=1e-5)


def test_deprecated_keywords_warn_and_still_work():
    R = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    chi, J, sig = np.array([0.0, 2.0]), np.array([5.0, 5.0]), np.ones(2)
    new = jaxlr.qeq(R, chi, J, sig, solver="dense", method="direct", stress=False)
    with pytest.warns(DeprecationWarning, match="solver="):
        old = jaxlr.qeq(R, chi, J, sig, method="dense")
    np.testing.assert_allclose(old.charges, new.charges)
    with pytest.warns(DeprecationWarning, match="coulomb_method= is deprecated"):
        jaxlr.qeq(R, chi, J, sig, coulomb_method="direct")
    with pytest.warns(DeprecationWarning, match="want_stress= is deprecated"):
        res = jaxlr.coulomb(R, np.array([1.0, -1.0]), want_stress=False)
    assert res.stress is None
    with pytest.warns(DeprecationWarning, match="want_stress= is deprecated"):
        jaxlr.coulomb_terms(jnp.asarray(R), jnp.asarray([1.0, -1.0]), want_stress=False, method="direct")
    with pytest.raises(ValueError, match="pass stress= only"):
        jaxlr.coulomb(R, np.array([1.0, -1.0]), want_stress=False, stress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxlr.qeq(R, chi, J, sig, solver="dense")     # the new spelling warns about nothing


def test_solves_return_solver_info():
    R = np.array([[0.0, 0, 0], [3.0, 0, 0]])
    chi, J, sig = np.array([0.0, 2.0]), np.array([5.0, 5.0]), np.ones(2)
    res = jaxlr.qeq(R, chi, J, sig)
    assert isinstance(res.info, jaxlr.SolverInfo) and bool(res.converged) and res.iterations == res.info.iterations
    sol = jaxlr.qeq_solve(jnp.asarray(R), chi, J, sig)
    assert isinstance(sol.info, jaxlr.SolverInfo)
    q, lam, info = sol                                      # still unpacks as a tuple
    np.testing.assert_allclose(q, res.charges, atol=1e-12)


def test_density_warm_start_is_guess_and_results_nest_info():
    from jaxlr.equilibration import GaussianBasis

    basis = GaussianBasis(species=(1, 8), s_widths=((0.5,), (0.4, 0.9)), p_widths=((0.6,), (0.5,)))
    R = np.array([[0.0, 0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])
    Z = np.array([8, 1, 1])
    nb = basis.n_basis
    linear = np.zeros((3, nb))
    linear[0, 0], linear[1:, 0] = 2.0, -1.0
    local = np.broadcast_to(np.eye(nb) * 10.0, (3, nb, nb)).copy()
    res = jaxlr.density_qeq(R, Z, linear, local, basis=basis, solver="pcg", tol=1e-10)
    assert isinstance(res.info, jaxlr.SolverInfo) and res.converged is res.info.converged
    warm = jaxlr.density_qeq(R, Z, linear, local, basis=basis, solver="pcg", tol=1e-10, guess=res.coefficients)
    np.testing.assert_allclose(warm.coefficients, res.coefficients, atol=1e-8)
    assert int(warm.iterations) <= int(res.iterations)
    with pytest.warns(DeprecationWarning, match="x0= is deprecated"):
        old = jaxlr.density_qeq(R, Z, linear, local, basis=basis, solver="pcg", tol=1e-10, x0=res.coefficients)
    np.testing.assert_allclose(old.coefficients, warm.coefficients, atol=1e-12)
