"""Parameter tuning: requested accuracy → smearing, cutoff, mesh and spline order (host, numpy).

Error model (random-charge approximation, RMS force error per atom):

* real space (Kolafa & Perram 1992):  ΔF_r = 2 KE Σq² / √(N V r_c) · exp(−r_c²/2s²)
* Ewald k-sum (same derivation):       ΔF_k = 2 KE Σq² / (s √(N V k_c)) · exp(−k_c² s²/2)
* PME mesh:  ΔF_m = KE Σq² / √(N V s) · c_p(h/s), with h the largest mesh-plane spacing
  and c_p a fit (log-quadratic in h/s) of errors measured against converged Ewald sums
  for each spline order p — see ``benchmarks/calibrate_pme_error.py``, which produced
  :data:`PME_ERROR_FIT`.

The relative error is ΔF / F₀ with F₀ the RMS force scale of uncorrelated charges,
F₀² = (1/N) Σ_i KE² q_i² Σ_j q_j²/r_ij⁴ (short-range sum + continuum tail), which equals
the RMS force of a random system and stays meaningful for symmetric crystals whose
forces vanish.  For every smearing, a few shares of the squared error budget
(:data:`BUDGET_SHARES`) are tried for the real-space cutoff and the rest of the budget
goes to reciprocal space; the candidate (s, share, p) of least estimated cost is chosen.
Cost constants were measured on a 2-core CPU (:mod:`jaxlr.performance`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from ..electrostatics._pme import MeshSpec
from ..performance import costs as perf_costs
from ..system._cell import cell_volume, fft_friendly, perpendicular_widths, reduced_basis
from ..units import KE
from ._search import bisect, expected_capacity

__all__ = ['ORDERS', 'PME_ERROR_FIT', 'force_scale', 'real_space_error', 'ewald_kspace_error', 'pme_mesh_error', 'tune_coulomb']


ORDERS = (4, 5, 6, 7, 8)


_TUNED_ORDERS = (4, 5, 6, 7, 8)




#: log c_p(x) = a0 + a1 log x + a2 (log x)², x = h/s, per spline order (fit to measured errors)
PME_ERROR_FIT: dict[int, tuple[float, float, float]] = {
    4: (-3.2864, 3.9416, 0.2156),
    5: (-4.0848, 5.6092, 0.3892),
    6: (-4.5683, 6.8673, 0.3661),
    7: (-4.9861, 8.2716, 0.3656),
    8: (-5.2532, 9.4811, 0.3029),
}


#: the fit is multiplied by this margin (skewed cells measured up to 1.5× above the fit)
PME_ERROR_MARGIN = 1.5


_FIT_MIN_X = 0.15




#: real-space shares of the squared force-error budget that the tuner tries
BUDGET_SHARES = (0.1, 0.25, 0.5, 0.75, 0.9)


def force_scale(positions, charges, cell=None, r0: float | None = None) -> float:
    """RMS force scale F₀ (eV/Å) of uncorrelated charges; see the module docstring."""
    import vesin

    pos = np.asarray(positions, dtype=np.float64)
    q = np.asarray(charges, dtype=np.float64)
    n = len(q)
    q2 = float(np.sum(q * q))
    if q2 == 0.0 or n < 2:
        return 0.0
    if cell is not None:
        volume = cell_volume(cell)
    else:
        span = np.ptp(pos, axis=0) + 1.0
        volume = float(np.prod(span))
    spacing = (volume / n) ** (1.0 / 3.0)
    r0 = 2.5 * spacing if r0 is None else r0
    nl = vesin.NeighborList(cutoff=float(r0), full_list=True)
    if cell is not None:
        i, j, d = nl.compute(pos, np.asarray(cell, dtype=np.float64), True, "ijd")
    else:
        i, j, d = nl.compute(pos, np.zeros((3, 3)), False, "ijd")
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    s = np.bincount(i, weights=q[j] ** 2 / np.maximum(d, 1e-3) ** 4, minlength=n)
    tail = 4.0 * math.pi * (q2 / volume) / r0 if cell is not None else 0.0
    f2 = KE**2 * np.mean(q * q * (s + tail))
    return float(math.sqrt(f2))


def real_space_error(q2: float, n: int, volume: float, cutoff: float, smearing: float) -> float:
    """Absolute RMS real-space truncation error of forces (eV/Å)."""
    return 2.0 * KE * q2 / math.sqrt(n * volume * cutoff) * math.exp(-0.5 * (cutoff / smearing) ** 2)


def ewald_kspace_error(q2: float, n: int, volume: float, k_cutoff: float, smearing: float) -> float:
    """Absolute RMS error of forces (eV/Å) from truncating the Ewald k-sum at k_cutoff."""
    return (2.0 * KE * q2 / (smearing * math.sqrt(n * volume * k_cutoff))
            * math.exp(-0.5 * (k_cutoff * smearing) ** 2))


def pme_mesh_error(q2: float, n: int, volume: float, spacing: float, smearing: float, order: int) -> float:
    """Absolute RMS force error (eV/Å) of the PME mesh part for the largest plane spacing h."""
    a0, a1, a2 = PME_ERROR_FIT[order]
    lx = math.log(spacing / smearing)
    # below the calibrated range (h/s < 0.15) extrapolate with the asymptotic slope x^p
    lo = math.log(_FIT_MIN_X)
    extra = 0.0
    if lx < lo:
        extra, lx = order * (lx - lo), lo
    c = PME_ERROR_MARGIN * math.exp(a0 + a1 * lx + a2 * lx * lx + extra)
    return KE * q2 / math.sqrt(n * volume * smearing) * c


def _max_mesh_spacing(q2: float, n: int, volume: float, smearing: float, order: int, budget: float) -> float:
    """Largest h in [10⁻³ s, 2 s] with ``pme_mesh_error(h) <= budget`` (host, closed form).

    log c_p is quadratic in log(h/s) on the calibrated range and linear below it, so the
    boundary is a root of a quadratic (the tuner asks for it about 2,000 times per call;
    bisection took most of the tuning time).  Gives what :func:`bisect` would, to
    rounding: the result is checked and, if rounding put it just past the boundary,
    found by bisection instead.
    """
    def ok(h):
        return pme_mesh_error(q2, n, volume, h, smearing, order) <= budget

    good, bad = 1e-3 * smearing, 2.0 * smearing
    if not ok(good):
        return good
    if ok(bad):
        return bad
    a0, a1, a2 = PME_ERROR_FIT[order]
    target = math.log(budget / (PME_ERROR_MARGIN * KE * q2 / math.sqrt(n * volume * smearing)))
    lo = math.log(_FIT_MIN_X)
    at_lo = a0 + a1 * lo + a2 * lo * lo
    if target >= at_lo:
        lx = (-a1 + math.sqrt(a1 * a1 - 4.0 * a2 * (a0 - target))) / (2.0 * a2)
    else:
        lx = lo + (target - at_lo) / order
    h = smearing * math.exp(lx)
    for _ in range(8):  # rounding may put the root a few ulps past the boundary
        if ok(h):
            break
        h *= 1.0 - 1e-15
    if good <= h < bad and ok(h) and not ok(h * (1.0 + 1e-12)):
        return h
    return bisect(ok, good, bad)


#: nonzero alias offsets (a_1, a_2, a_3) ∈ {−2 … 2}³ searched by :func:`_alias_spacing`
_ALIAS_OFFSETS = np.array([v for v in np.ndindex(5, 5, 5) if v != (2, 2, 2)], dtype=np.float64) - 2.0


def _alias_spacing(mesh_cell: np.ndarray, shape, widths: np.ndarray) -> float:
    """Effective mesh spacing h = 1/|shortest nonzero alias vector Σ a_d K_d b_d| (Å).

    Equals the largest plane spacing width_d/K_d for orthogonal cells; larger for skewed ones.
    ``widths`` are the perpendicular widths of ``mesh_cell``.
    """
    k = np.asarray(shape, dtype=np.float64)
    recip = np.linalg.inv(mesh_cell).T * k[:, None]
    shortest = np.min(np.linalg.norm(_ALIAS_OFFSETS @ recip, axis=1))
    return float(max((widths / k).max(), 1.0 / shortest))


def _real_error(q2, n, volume, cutoff, smearing, gamma_max):
    """Real-space error including the truncated Gaussian correction erfc(r/√2γ)/r (γ_max > 0)."""
    e = real_space_error(q2, n, volume, cutoff, smearing)
    if gamma_max:
        e = max(e, real_space_error(q2, n, volume, cutoff, gamma_max))
    return e


def _real_cutoff(q2, n, volume, smearing, gamma_max, budget):
    return bisect(lambda rc: _real_error(q2, n, volume, rc, smearing, gamma_max) <= budget, 1e4, 0.5)


def tune_coulomb(positions, charges, cell, sigma=None, *, method="auto", accuracy=1e-6,
                 smearing=None, cutoff=None, mesh=None, order=None, k_cutoff=None,
                 background=False, n_atoms=None, dtype="float64", costs=None, estimate=False):
    """Choose method and parameters for a periodic Coulomb sum (host).

    Args:
      positions, charges, cell, sigma: concrete numpy arrays (positions/charges may be None
        when all parameters are given explicitly).
      method: "auto", "ewald" or "pme".  accuracy: target relative RMS force error.
      smearing, cutoff, mesh, order, k_cutoff: fixed values that the search respects.
      dtype: "float32" or "float64", selects the cost constants.
      costs: optional overrides of entries of :attr:`jaxlr.performance.Costs.tuner_costs` (seconds per unit of work),
        e.g. a cheaper "pair" when the pair kernels are computed once and reused (Qeq).
      estimate: with every parameter given, still compute ``estimated_error`` for these
        inputs (needs concrete positions, charges and cell); otherwise fully specified
        parameters are returned as they are, without an estimate.

    Returns:
      :class:`jaxlr.coulomb.CoulombParams`.
    """
    from ..electrostatics._params import CoulombParams

    explicit = (smearing is not None and cutoff is not None
                and (k_cutoff is not None if method == "ewald" else mesh is not None))
    if explicit and method != "auto" and not estimate:
        # fully specified: nothing to tune, no concrete inputs needed (works inside jit);
        # the mesh runs along the cell vectors as given
        spec = None
        if method == "pme":
            spec = mesh if isinstance(mesh, MeshSpec) else MeshSpec(tuple(int(k) for k in mesh), int(order or 6))
        return CoulombParams(method=method, smearing=float(smearing), cutoff=float(cutoff), mesh=spec,
                             k_cutoff=None if k_cutoff is None else float(k_cutoff), background=background)
    if estimate and (positions is None or charges is None or cell is None):
        raise ValueError("estimate=True needs concrete positions, charges and cell (numpy arrays, not "
                         "tracers): call it outside jit, or drop estimate= to take the parameters as given.")
    if cell is None:
        raise ValueError("automatic tuning needs a concrete cell; pass smearing, cutoff and mesh "
                         "(or k_cutoff) explicitly.")
    cell = np.asarray(cell, dtype=np.float64)
    volume = cell_volume(cell)
    if isinstance(mesh, MeshSpec):
        basis = np.asarray(mesh.basis)
    elif mesh is not None:
        basis = np.eye(3, dtype=np.int64)  # a user's (K1, K2, K3) runs along the cell vectors as given
    else:
        basis = reduced_basis(cell)
    mesh_cell = basis @ cell
    widths = perpendicular_widths(mesh_cell)
    spacings = {}  # _alias_spacing per mesh shape: the candidates below share most shapes

    def alias_spacing(shape):
        if shape not in spacings:
            spacings[shape] = _alias_spacing(mesh_cell, shape, widths)
        return spacings[shape]
    basis_t = tuple(tuple(int(v) for v in row) for row in basis)
    if charges is None or positions is None:
        raise ValueError("automatic tuning needs concrete positions and charges; pass smearing, cutoff "
                         "and mesh (or k_cutoff) explicitly.")
    n = int(n_atoms if n_atoms is not None else len(charges))
    q = np.asarray(charges, dtype=np.float64)
    q2 = float(np.sum(q * q))
    f0 = force_scale(positions, q, cell)
    if q2 == 0.0 or f0 == 0.0:
        f0, q2 = 1.0, max(q2, 1e-30)
    # round F0 down to a 5 % grid so that small moves of the atoms (MD) keep the same
    # static choices (mesh, capacity) and the compiled function is reused
    f0 = 10.0 ** (math.floor(20.0 * math.log10(f0)) / 20.0)
    target = accuracy * f0
    # fractions of the squared error budget tried for the real-space sum; the rest is
    # left to reciprocal space (a cheap real-space sum takes a small share and lets the
    # mesh be coarser, and vice versa)
    shares = BUDGET_SHARES if cutoff is None else (1.0,)
    gamma_max = float(math.sqrt(2.0) * np.max(sigma)) if sigma is not None else 0.0
    spacing = (volume / n) ** (1.0 / 3.0)
    pair_density = n / volume

    if smearing is not None:
        s_grid = [float(smearing)]
    else:
        s_grid = list(np.geomspace(0.25 * spacing, 0.6 * min(widths) + 0.5 * spacing, 48))

    costs = dict(perf_costs().tuner_costs["float32" if str(dtype) == "float32" else "float64"], **(costs or {}))
    best = None
    cutoffs = {}
    methods = ("ewald", "pme") if method == "auto" else (method,)
    for meth in methods:
        orders = ((int(order),) if order is not None else _TUNED_ORDERS) if meth == "pme" else (None,)
        for s, share in itertools.product(s_grid, shares):
            if cutoff is not None:
                rc = float(cutoff)
            else:  # the same for both methods
                if (s, share) not in cutoffs:
                    cutoffs[(s, share)] = _real_cutoff(q2, n, volume, s, gamma_max, target * math.sqrt(share))
                rc = cutoffs[(s, share)]
            e_real = _real_error(q2, n, volume, rc, s, gamma_max)
            slots = expected_capacity(4.0 / 3.0 * math.pi * rc**3 * pair_density, n)
            cost_real = costs["pair"] * n * slots
            # what the real-space sum leaves of the error budget goes to reciprocal space
            # (at least 30 % of it, so that a fixed, too short cutoff cannot ask for a
            # huge mesh; such candidates miss the target and rank by their error)
            budget = max(math.sqrt(max(target**2 - e_real**2, 0.0)), 0.3 * target)
            for p in orders:
                if meth == "ewald":
                    kc = (float(k_cutoff) if k_cutoff is not None else bisect(
                        lambda k: ewald_kspace_error(q2, n, volume, k, s) <= budget, 1e3, 1e-3))
                    e_rec = ewald_kspace_error(q2, n, volume, kc, s)
                    n_k = (4.0 / 3.0 * math.pi * kc**3) * volume / (8.0 * math.pi**3) / 2.0
                    cost = cost_real + costs["kvec"] * n * n_k
                    cand = dict(method="ewald", smearing=s, cutoff=rc, mesh=None, k_cutoff=kc)
                else:
                    if mesh is not None:
                        shape = tuple(int(k) for k in (mesh.shape if isinstance(mesh, MeshSpec) else mesh))
                    else:
                        x_max = _max_mesh_spacing(q2, n, volume, s, p, budget)
                        shape = tuple(max(p, fft_friendly(math.ceil(w / x_max))) for w in widths)
                        while alias_spacing(shape) > x_max * 1.0001:
                            shape = tuple(fft_friendly(k + 1) for k in shape)
                    h = alias_spacing(shape)
                    e_rec = pme_mesh_error(q2, n, volume, h, s, p)
                    n_mesh = float(np.prod(shape))
                    cost = (cost_real + costs["stencil"] * n * p**3
                            + costs["fft"] * n_mesh * math.log2(max(n_mesh, 2.0)) + costs["mesh"] * n_mesh)
                    cand = dict(method="pme", smearing=s, cutoff=rc, mesh=MeshSpec(shape, p, basis=basis_t),
                                k_cutoff=None)
                err = math.sqrt(e_real**2 + e_rec**2) / f0
                ok = err <= accuracy * 1.0001
                key = (0 if ok else 1, cost if ok else err)
                if best is None or key < best[0]:
                    best = (key, cand, err)
    _, cand, err = best
    return CoulombParams(background=background, estimated_error=err, **cand)


def standin_charges(n: int) -> np.ndarray:
    """Stand-in charges ±1 for tuning before the charges are known (errors are relative)."""
    q = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    if n % 2:
        q[-1] = 0.0
    return q
