"""``jaxlr.md.energy_drift``: the drift of an MD energy and an error bar that survives correlation.

References independent of the code: numpy's least-squares fit for the slope; the exact
statistical inefficiency of an AR(1) process, g = (1 + φ)/(1 − φ); and coverage — over many
synthetic runs with a known drift buried in correlated noise, the error bar must describe the
scatter of the fitted slopes (the naive, uncorrelated error bar is shown to fail there).
"""

from __future__ import annotations

import numpy as np
import pytest

from jaxlr.md import EnergyDrift, energy_drift, statistical_inefficiency


def _ar1(rng, n, phi, sigma=1.0):
    """An AR(1) series x_t = φ x_{t-1} + ε_t, started from its stationary distribution."""
    eps = rng.normal(scale=sigma, size=n)
    x = np.empty(n)
    x[0] = eps[0] / np.sqrt(1.0 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + eps[i]
    return x


def test_slope_and_fluctuation_match_numpy():
    rng = np.random.default_rng(1)
    t = np.linspace(0.0, 20.0, 401)
    e = -512.0 + 3e-4 * t + 1e-3 * rng.normal(size=t.size)          # eV, 64 atoms
    d = energy_drift(t, e, 64)
    assert isinstance(d, EnergyDrift) and d.n_samples == 401
    slope = np.polyfit(t, e / 64 * 1e3, 1)[0]
    np.testing.assert_allclose(d.slope, slope, rtol=1e-10)
    np.testing.assert_allclose(d.fluctuation, np.std(e / 64 * 1e3), rtol=1e-12)
    # white noise: g near 1, error near the textbook least-squares error
    assert 1.0 <= d.inefficiency < 1.3
    resid = e / 64 * 1e3 - np.polyval(np.polyfit(t, e / 64 * 1e3, 1), t)
    naive = np.sqrt(np.sum(resid**2) / (t.size - 2) / np.sum((t - t.mean()) ** 2))
    np.testing.assert_allclose(d.stderr, naive * np.sqrt(d.inefficiency), rtol=1e-10)


def test_exact_line_has_zero_error():
    t = np.arange(10.0)
    d = energy_drift(t, 5.0 + 0.25 * t, 5)
    np.testing.assert_allclose(d.slope, 50.0, rtol=1e-12)          # 0.25 eV/ps / 5 atoms = 50 meV/atom/ps
    assert d.stderr == pytest.approx(0.0, abs=1e-9) and d.inefficiency == 1.0


@pytest.mark.parametrize("phi", [0.5, 0.9])
def test_inefficiency_of_ar1(phi):
    """g of a long AR(1) series within 15 % of (1 + φ)/(1 − φ)."""
    x = _ar1(np.random.default_rng(7), 200_000, phi)
    exact = (1 + phi) / (1 - phi)
    assert statistical_inefficiency(x) == pytest.approx(exact, rel=0.15)


def test_error_bar_covers_a_known_drift_in_correlated_noise():
    """200 runs of 2,000 samples, true drift 0.01 meV/atom/ps, AR(1) noise with φ = 0.95 (a
    correlation time of ~20 samples, like MD energies sampled every few steps): the z-scores
    (fit − truth)/stderr scatter with a standard deviation near 1 and ~95 % fall within 2;
    the naive error bar (g = 1) would be ~6× too small."""
    rng = np.random.default_rng(11)
    t = np.arange(2000) * 0.01                                         # ps
    true = 0.01                                                        # meV/atom/ps
    z, naive_z = [], []
    for _ in range(200):
        e_mev = true * t + 0.05 * _ar1(rng, t.size, 0.95)              # meV/atom
        d = energy_drift(t, e_mev * 1e-3 * 100, 100)                    # 100 atoms, eV in
        z.append((d.slope - true) / d.stderr)
        naive_z.append((d.slope - true) / (d.stderr / np.sqrt(d.inefficiency)))
    z, naive_z = np.asarray(z), np.asarray(naive_z)
    assert 0.75 < np.std(z) < 1.35
    assert 0.88 < np.mean(np.abs(z) < 2.0) <= 1.0
    assert np.std(naive_z) > 3.0


def test_inputs_not_mutated_and_lists_accepted():
    t = np.linspace(0, 1, 5)
    e = np.array([1.0, 1.1, 0.9, 1.05, 1.0])
    t0, e0 = t.copy(), e.copy()
    a = energy_drift(t, e, 2)
    b = energy_drift(list(t), list(e), 2)
    assert a == b
    np.testing.assert_array_equal(t, t0)
    np.testing.assert_array_equal(e, e0)


@pytest.mark.parametrize("args, match", [
    ((np.arange(2.0), np.zeros(2), 4), "at least 3"),
    ((np.arange(4.0), np.zeros(3), 4), "same length"),
    ((np.arange(4.0), np.array([0, np.nan, 0, 0]), 4), "finite"),
    ((np.array([0.0, 1.0, 1.0, 2.0]), np.zeros(4), 4), "increase"),
    ((np.arange(4.0), np.zeros(4), 0), "positive integer"),
    ((np.arange(4.0), np.zeros(4), 2.5), "positive integer"),
])
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        energy_drift(*args)
