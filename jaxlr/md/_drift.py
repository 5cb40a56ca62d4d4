"""Energy drift of an MD run: the slope of the conserved energy, with an honest error bar.

A drift is the least-squares slope of the total (or conserved) energy per atom against
time.  Its naive standard error assumes independent residuals; MD energies wander with a
correlation time of many samples, so the naive error is too small and a random walk passes
for a drift.  :func:`energy_drift` scales the error by √g, g the statistical inefficiency of
the residuals (g = 1 + 2 Σ_k ρ_k, summed up to the first lag whose autocorrelation is not
positive; Flyvbjerg & Petersen, J. Chem. Phys. 91, 461 (1989) give the block-averaging
equivalent).  Host side (numpy); nothing here is jitted.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["EnergyDrift", "energy_drift", "statistical_inefficiency"]


class EnergyDrift(NamedTuple):
    """What :func:`energy_drift` returns (energies per atom).

    Attributes:
      slope: drift, meV/atom/ps (least-squares slope).
      stderr: its standard error, meV/atom/ps (least squares × √g).
      fluctuation: standard deviation of the energy per atom over the run, meV/atom.
      inefficiency: g, the statistical inefficiency of the fit's residuals (≥ 1).
      n_samples: number of energies fitted.
    """

    slope: float
    stderr: float
    fluctuation: float
    inefficiency: float
    n_samples: int


def statistical_inefficiency(x) -> float:
    """g = 1 + 2 Σ_{k≥1} ρ_k of a series, the sum stopped at the first ρ_k ≤ 0 (k < n/2).

    The number of samples per independent one: the variance of the mean of ``x`` is
    g·var(x)/n.  1 for uncorrelated data, (1 + φ)/(1 − φ) for an AR(1) process of
    coefficient φ.

    Args:
      x: (n,) series.

    Returns:
      g ≥ 1 (1 for a constant or a series of fewer than 4 values).

    Example:
      >>> import numpy as np
      >>> statistical_inefficiency(np.array([1.0, -1.0] * 50))   # anticorrelated: no gain
      1.0
      >>> round(statistical_inefficiency(np.repeat(np.random.default_rng(0).normal(size=200), 10)), 0) >= 9
      True
    """
    r = np.asarray(x, dtype=np.float64).reshape(-1)
    r = r - r.mean()
    denom = float(np.dot(r, r))
    g = 1.0
    if len(r) < 4 or denom == 0.0:
        return g
    for k in range(1, len(r) // 2):
        rho = float(np.dot(r[:-k], r[k:])) / denom
        if rho <= 0.0:
            break
        g += 2.0 * rho
    return g


def energy_drift(time_ps, energy_ev, n_atoms: int) -> EnergyDrift:
    """The drift of an MD run's total (or conserved) energy, per atom, with its error.

    Args:
      time_ps: (n,) times, ps, strictly increasing (e.g. ``MDResult.thermo["time_ps"]``).
      energy_ev: (n,) total energies of the whole system, eV (``thermo["total_eV"]`` for NVE,
        ``thermo["conserved_eV"]`` for a thermostatted run).
      n_atoms: atoms in the system (the energies are divided by it).

    Returns:
      :class:`EnergyDrift`: slope and its standard error in meV/atom/ps, the fluctuation in
      meV/atom, the statistical inefficiency g of the residuals and n.

    Raises:
      ValueError: for fewer than 3 samples, mismatched lengths, non-finite values, times that
        do not increase, or ``n_atoms`` < 1.

    Example:
      >>> import numpy as np
      >>> t = np.linspace(0.0, 10.0, 201)                       # ps
      >>> e = -100.0 + 2e-3 * t + 1e-4 * np.sin(7.0 * t)        # eV, 100 atoms: +0.02 meV/atom/ps
      >>> d = energy_drift(t, e, 100)
      >>> round(d.slope, 3), d.stderr < 1e-3, d.n_samples
      (0.02, True, 201)
    """
    n = int(n_atoms) if np.ndim(n_atoms) == 0 and float(n_atoms) == int(n_atoms) else 0
    if n < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms!r}.")
    t = np.asarray(time_ps, dtype=np.float64).reshape(-1)
    e = np.asarray(energy_ev, dtype=np.float64).reshape(-1)
    if t.shape != e.shape:
        raise ValueError(f"time_ps and energy_ev must have the same length, got {t.size} and {e.size}.")
    if t.size < 3:
        raise ValueError(f"a drift needs at least 3 energies, got {t.size}.")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(e))):
        raise ValueError("time_ps and energy_ev must be finite (the run blew up, or a value is missing).")
    if np.any(np.diff(t) <= 0):
        raise ValueError("time_ps must increase strictly (concatenated restarts? sort them, drop repeats).")
    e = e / n * 1e3                                     # meV/atom
    tc = t - t.mean()
    sxx = float(np.dot(tc, tc))
    slope = float(np.dot(tc, e - e.mean()) / sxx)
    res = e - e.mean() - slope * tc
    g = statistical_inefficiency(res)
    stderr = float(np.sqrt(np.dot(res, res) / (t.size - 2) / sxx * g))
    return EnergyDrift(slope, stderr, float(np.std(e)), g, int(t.size))
