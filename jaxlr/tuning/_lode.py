"""Parameter choice for LODE features (:func:`tune_lode`, host): method, k-cutoff or mesh and spline order from a requested accuracy.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..electrostatics._pme import MeshSpec
from ..features._lode import DEFAULT_DENSITY, LODE_METHODS, LODE_ORDERS, MULTIPOLE_ERROR_FIT, LodeParams
from ..features._lode_kspace import TABLE_STEP, radial_points
from ..features._lode_ksum import ksum_cutoff
from ..features._lode_pme import K_NEGLIGIBLE
from ..features._radial import gto_widths
from ..performance import costs as perf_costs
from ..system._cell import fft_friendly, perpendicular_widths, reduced_basis
from ..system._checks import check_accuracy, check_cell
from ._lode_error import LodeErrorModel
from ._search import bisect

__all__ = ['multipole_pme_error', 'basis_extent', 'tune_lode']


# ---- tuning (host) -------------------------------------------------------------------------------
def multipole_pme_error(order: int, x: float) -> float:
    """Estimated error of the PME multipoles (largest relative RMS error of potential, field
    and field gradient) at spline order p and largest mesh spacing h = x·σ_L (host;
    :data:`MULTIPOLE_ERROR_FIT`, an upper envelope).

    Example:
      >>> multipole_pme_error(8, 0.3) < multipole_pme_error(8, 0.5) < multipole_pme_error(6, 0.5)
      True
    """
    if order not in MULTIPOLE_ERROR_FIT:
        raise ValueError(f"no multipole error fit for spline order {order}; use one of {sorted(MULTIPOLE_ERROR_FIT)}.")
    a, b = MULTIPOLE_ERROR_FIT[order]
    return math.exp(a + b * math.log(x))


def basis_extent(widths, cutoff: float) -> float:
    """Radius (Å, ≤ cutoff) beyond which every GTO primitive r^n e^{−r²/2σ_n²} is below 1e-8 of
    its maximum (host).  Sets the resolution of the J_nl table: J_nl varies on the scale
    1/extent in k, so the Hermite step is TABLE_STEP/extent.

    Example:
      >>> basis_extent(gto_widths(20.0, 6), 20.0)          # the basis fills the sphere
      20.0
      >>> round(basis_extent(gto_widths(4.0, 6), 20.0), 1) < 20.0
      True
    """
    w = np.asarray(widths, dtype=np.float64)
    r = np.linspace(0.0, float(cutoff), 4001)[1:]
    extent = 0.0
    for n, s in enumerate(w):
        logg = n * np.log(r) - r * r / (2.0 * s * s)
        alive = r[logg >= logg.max() - math.log(1e8)]
        extent = max(extent, float(alive.max()))
    return min(float(cutoff), extent)


def _mesh_kmax(mesh_cell: np.ndarray, shape) -> float:
    """Largest |k| on the mesh (1/Å): the corner 2π Σ_d (K_d/2) b_d, maximised over signs."""
    recip = np.linalg.inv(mesh_cell).T
    half = np.asarray(shape, dtype=np.float64) / 2.0
    best = 0.0
    for s in np.ndindex(2, 2, 2):
        v = ((2 * np.asarray(s) - 1) * half) @ recip
        best = max(best, float(np.linalg.norm(v)))
    return 2.0 * math.pi * best


def tune_lode(cell, sigma: float, *, cutoff: float, max_radial: int, max_angular: int, n_species: int,
              method: str = "auto", accuracy: float = 1e-6, exclude_center: bool = False,
              mesh=None, order: int | None = None, k_cutoff: float | None = None,
              n_atoms: int | None = None, multipoles: bool = False, dtype: str = "float64",
              radial_widths=None) -> LodeParams:
    """Choose the route and its parameters for a requested feature accuracy (host, numpy).

    ``accuracy`` is the target relative RMS error of all feature components,
    ‖F − F_ref‖/‖F_ref‖ against converged features (see the module docstring), estimated
    by :class:`jaxlr.tuning.LodeErrorModel` for atoms at random positions.  The
    k-sum gets the smallest cutoff whose estimate meets it; PME gets, among the spline
    orders 4 … 12 (≥ L + 2), the mesh of least estimated cost whose estimate meets it — a
    search with real-valued mesh sizes, rounded up to FFT-friendly sizes per axis and then
    coarsened axis by axis while the estimate still meets the target, so the estimate lands
    within a few tens of percent below the request.  For the multipole variant
    (``multipoles=True``) the envelope :data:`MULTIPOLE_ERROR_FIT` is used instead.

    Args:
      cell: (3, 3) concrete numpy cell, or None (open boundary → "direct").
      sigma: σ_L in Å (concrete, > 0).  cutoff (Å), max_radial, max_angular, n_species:
        the basis.
      method: "auto", "ksum", "pme" or "direct".  accuracy: target in (0, 1).
      mesh: (K1, K2, K3) along the cell vectors as given, or a full MeshSpec; order: spline
        order; k_cutoff: 1/Å — fixed values that the search respects.
      n_atoms: number of real atoms (error and cost models); default: 0.1 atoms/Å³ × V.
      multipoles: tune for :func:`lode_multipoles` (derivative order 2 instead of max_angular).
      dtype: "float64" or "float32" (cost model).
      radial_widths: concrete basis widths in Å (default ``gto_widths(cutoff, max_radial)``).

    Returns:
      :class:`LodeParams` (``estimated_error`` holds the model's estimate).  Results are
      cached: the same arguments return the same params without a new search.

    Raises:
      ValueError: a bad method, accuracy outside (0, 1), σ or cutoff not positive, bad
        basis sizes, a degenerate cell, an unsupported spline order.

    Example:
      >>> import numpy as np
      >>> p = tune_lode(np.eye(3) * 20.0, 1.0, cutoff=4.0, max_radial=4, max_angular=3, n_species=2,
      ...               accuracy=1e-4)
      >>> p.method, p.mesh.order >= 5, 1e-5 < p.estimated_error <= 1e-4
      ('pme', True, True)
    """
    if method not in LODE_METHODS:
        raise ValueError(f"method must be one of {LODE_METHODS}, got {method!r}.")
    accuracy = check_accuracy(accuracy, " (a relative RMS feature error)")
    sigma = _host_positive("sigma", sigma)
    cutoff = _host_positive("cutoff", cutoff)
    for name, v, lo in (("max_radial", max_radial, 1), ("max_angular", max_angular, 0), ("n_species", n_species, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}.")
    base = dict(cutoff=cutoff, max_radial=int(max_radial), max_angular=int(max_angular), n_species=int(n_species),
                exclude_center=bool(exclude_center))
    if cell is None:
        if method not in ("auto", "direct"):
            raise ValueError(f"method={method!r} needs a periodic cell; use method='direct' (or 'auto').")
        return LodeParams("direct", **base)
    if method == "direct":
        raise ValueError("method='direct' is the open-boundary route; for a periodic cell use 'ksum' or 'pme'.")
    cell = np.asarray(cell, dtype=np.float64)
    check_cell(cell)
    if order is not None and (isinstance(order, bool) or int(order) != order or order % 2 or not 4 <= order <= 12):
        raise ValueError(f"order must be an even spline order in 4…12, got {order!r}.")
    widths = gto_widths(cutoff, max_radial) if radial_widths is None else np.asarray(radial_widths, np.float64)
    if widths.shape != (int(max_radial),) or not (np.all(np.isfinite(widths)) and np.all(widths > 0)):
        raise ValueError(f"radial_widths must be ({max_radial},) positive finite widths in Å.")
    if n_atoms is None:
        n_atoms = max(1, round(DEFAULT_DENSITY * abs(float(np.linalg.det(cell)))))
    elif isinstance(n_atoms, bool) or int(n_atoms) != n_atoms or n_atoms < 1:
        raise ValueError(f"n_atoms must be a positive integer, got {n_atoms!r}.")
    if mesh is not None and not isinstance(mesh, MeshSpec):
        mesh = tuple(int(k) for k in mesh)
    return _tune_periodic(tuple(map(tuple, cell)), sigma, tuple(widths), method, accuracy, mesh,
                          None if order is None else int(order), None if k_cutoff is None else float(k_cutoff),
                          int(n_atoms), bool(multipoles), str(dtype), tuple(sorted(base.items())))


def _host_positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive finite number (Å), got {value!r}.") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number (Å), got {value!r}.")
    return v


@lru_cache(maxsize=256)
def _error_model(cell: tuple, sigma: float, widths: tuple, cutoff: float, max_angular: int,
                 n_atoms: int) -> LodeErrorModel:
    return LodeErrorModel(np.array(cell), sigma, np.array(widths), cutoff, max_angular, n_atoms)


def _fft_below(n: int) -> int:
    """Largest FFT-friendly size below n (0 if none)."""
    m = n - 1
    while m >= 1 and fft_friendly(m) != m:
        m -= 1
    return m


def _pme_rounded(error, order: int, widths: np.ndarray, sigma: float, accuracy: float, x0: float):
    """First guess of the coarsest mesh meeting ``accuracy``: ``(shape, estimate, x)``.

    Secant steps in log(spacing) with real-valued mesh sizes K_d = w_d/(xσ) (the error
    is close to a power of x), then FFT-friendly rounding up per axis, refined on the
    coarsest axis while the estimate still misses.
    """
    target = math.log(accuracy)
    lo, hi = math.log(1e-3), math.log(2.0)

    def at(lx):
        return math.log(max(error(widths / (math.exp(lx) * sigma)), 1e-300))

    lx = math.log(x0)
    le = at(lx)
    slope = 4.0
    for _ in range(6):
        if abs(le - target) < 0.1:
            break
        nx = min(max(lx + (target - le) / slope, lo), hi)
        if nx == lx:
            break
        ne = at(nx)
        slope = max((ne - le) / (nx - lx), 0.5)
        lx, le = nx, ne
    h = math.exp(lx) * sigma
    shape = [max(order, fft_friendly(math.ceil(w / h - 1e-9))) for w in widths]
    e = error(np.asarray(shape, float))
    for _ in range(12):
        if e <= accuracy:
            break
        d = int(np.argmax(widths / np.asarray(shape)))
        shape[d] = fft_friendly(shape[d] + 1)
        e = error(np.asarray(shape, float))
    return shape, e, math.exp(lx)


def _pme_coarsened(error, order: int, widths: np.ndarray, accuracy: float, shape, e):
    """Coarsen the axes of ``shape`` one FFT-friendly size at a time (finest axis first) while
    ``error`` stays within ``accuracy``."""
    shape = list(shape)
    changed = e <= accuracy
    while changed:
        changed = False
        for d in np.argsort(widths / np.asarray(shape)):
            smaller = _fft_below(shape[d])
            if smaller < order:
                continue
            trial = list(shape)
            trial[d] = smaller
            et = error(np.asarray(trial, float))
            if et <= accuracy:
                shape, e, changed = trial, et, True
    return tuple(int(k) for k in shape), e


@lru_cache(maxsize=256)
def _tune_periodic(cell_t, sigma, widths_t, method, accuracy, mesh, order, k_cutoff, n_atoms, multipoles, dtype,
                   base_items):
    """The periodic part of :func:`tune_lode` on hashable arguments (cached)."""
    base = dict(base_items)
    cell = np.array(cell_t)
    widths = np.array(widths_t)
    cutoff, L = base["cutoff"], base["max_angular"]
    if method == "ksum":
        if k_cutoff is not None:
            kc = k_cutoff
            estimate = None if multipoles else _error_model(cell_t, sigma, widths_t, cutoff, L, n_atoms).ksum(kc)
        elif multipoles:
            kc = ksum_cutoff(sigma, accuracy)
            estimate = None
        else:
            model = _error_model(cell_t, sigma, widths_t, cutoff, L, n_atoms)
            kc = bisect(lambda k: model.ksum(k) <= accuracy, 1.5 * K_NEGLIGIBLE / sigma, 0.1 / sigma, rtol=1e-3)
            estimate = model.ksum(kc)
        return LodeParams("ksum", k_cutoff=kc, n_points=radial_points(cutoff, kc), estimated_error=estimate, **base)
    # PME
    d_order = 2 if multipoles else L
    costs = perf_costs().tuner_costs["float32" if dtype == "float32" else "float64"]
    if order is not None and order < d_order + 2:
        raise ValueError(f"spline order {order} is too low: derivatives of order {d_order} need order ≥ "
                         f"{d_order + 2} (≥ {d_order + 4} recommended).")
    orders = (order,) if order is not None else tuple(p for p in LODE_ORDERS if p >= d_order + 2)
    if not orders:
        raise ValueError(f"no supported spline order ≥ {d_order + 2} for max_angular={L}; "
                         f"the largest is {LODE_ORDERS[-1]} (use method='ksum').")
    model = None if multipoles else _error_model(cell_t, sigma, widths_t, cutoff, L, n_atoms)

    def estimate(spec_order, mesh_cell, shape):
        if multipoles:
            x = float(np.max(perpendicular_widths(mesh_cell) / np.asarray(shape, float))) / sigma
            return multipole_pme_error(spec_order, x)
        return model.pme(spec_order, mesh_cell, shape)

    def cost(spec):
        m = float(np.prod(spec.shape))
        channels = base["n_species"] * (1 if multipoles else base["max_radial"])
        per_l = [3] if multipoles else [l + 1 for l in range(L + 1)]
        return channels * sum(costs["fft"] * m * math.log2(max(m, 2.0)) + 4 * costs["mesh"] * m
                              + costs["stencil"] * n_atoms * spec.order**3 * k / 2 for k in per_l)

    candidates = []
    if isinstance(mesh, MeshSpec):
        spec = mesh
        candidates.append((spec, estimate(spec.order, np.asarray(spec.basis) @ cell, spec.shape)))
    else:
        basis = np.eye(3, dtype=np.int64) if mesh is not None else reduced_basis(cell)
        basis_t = tuple(tuple(int(v) for v in row) for row in basis)
        mesh_cell = basis @ cell
        plane = perpendicular_widths(mesh_cell)
        x0 = 0.5
        for p in orders:
            if mesh is not None:
                shape = mesh
                e = estimate(p, mesh_cell, shape)
            elif multipoles:
                x = bisect(lambda x, p=p: multipole_pme_error(p, x) <= accuracy, 1e-3, 2.0)
                shape = tuple(max(p, fft_friendly(math.ceil(w / (x * sigma)))) for w in plane)
                e = estimate(p, mesh_cell, shape)
            else:
                shape, e, x0 = _pme_rounded(lambda k, p=p: model.pme(p, mesh_cell, k), p, plane, sigma, accuracy, x0)
            candidates.append((MeshSpec(tuple(shape), p, basis=basis_t), e))
        if mesh is None and not multipoles:
            # coarsen the two cheapest rounded candidates axis by axis (the rounding wastes up to ~2×)
            ranked = sorted(candidates, key=lambda c: (c[1] > accuracy, cost(c[0])))
            for spec, e in ranked[:2]:
                shape, e = _pme_coarsened(lambda k, p=spec.order: model.pme(p, mesh_cell, k), spec.order, plane,
                                          accuracy, spec.shape, e)
                candidates.append((spec._replace(shape=shape), e))
    best = None
    for spec, e in candidates:
        ok = e <= accuracy * 1.0001
        key = (0 if ok else 1, cost(spec) if ok else e)
        if best is None or key < best[0]:
            best = (key, spec, e)
    _, spec, e = best
    k_top = min(_mesh_kmax(np.asarray(spec.basis) @ cell, spec.shape), K_NEGLIGIBLE / sigma)
    n_table = int(math.ceil(k_top * basis_extent(widths, cutoff) / TABLE_STEP)) + 2
    return LodeParams("pme", mesh=spec, n_points=radial_points(cutoff, k_top), n_table=n_table,
                      estimated_error=e, **base)
