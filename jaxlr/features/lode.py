"""LODE features — the front door, the jittable dispatch and the parameter tuning.

Definition (Grisafi & Ceriotti, J. Chem. Phys. 151, 204105 (2019)): per species a,

    ρ_a(x) = Σ_{j∈a} (2πσ_L²)^{−3/2} exp(−|x − R_j|²/2σ_L²)     (unit Gaussians),
    V_a = ρ_a ∗ 1/r                                                (no Coulomb constant k_e),
    ⟨a n l m|V_i⟩ = ∫_{|x|<r_c} R_n(|x|) Y_lm(x̂) V_a(R_i + x) d³x,

with the orthonormal GTO radial basis R_n of :mod:`jaxlr.features.radial` (∫_0^{r_c} R_n R_m
r² dr = δ_nm) and the real spherical harmonics of :mod:`jaxlr.features.harmonics`
(orthonormal, no Condon–Shortley phase, l = 1 ∝ (y, z, x)).  Units: V_a in e/Å per unit
atom "charge" — multiply by k_e = 14.399645 eV·Å/e² for volts — and features in
e/Å · Å^{3/2}.  All atoms count, the centre included, unless ``exclude_center=True``
(then the atom's own Gaussian is left out; in a periodic cell its images stay).

Periodic cells: the k = 0 term of each V_a is dropped, i.e. every species density is
neutralised by a uniform background of its own (the convention of featomic's
LodeSphericalExpansion and of Ewald sums in tin-foil boundary conditions).  So V_a has
zero cell average, and a periodic feature differs from an open-boundary one of the same
atoms by the background and image terms (for a cubic box of side L, V_per − V_open =
N_a(−ξ/L) + (2π/3L³) Σ_j (|x − R_j|² + 3σ_L²) + O(L⁻⁵), ξ = 2.837297…).

Three routes (``method``):

* ``"ksum"`` — explicit k-sum, O(N · N_k), the periodic reference
  (:mod:`jaxlr.features.lode_ksum`);
* ``"pme"`` — smooth PME, O(N log N) (:mod:`jaxlr.features.lode_pme`);
* ``"direct"`` — open boundary, real-space quadrature over all pairs
  (:mod:`jaxlr.features.lode_direct`);
* ``"auto"`` — direct without a cell, PME with one.

Accuracy (``accuracy=``): the target *relative RMS feature error*,
``ε = ‖F − F_ref‖ / ‖F_ref‖`` with Frobenius norms over all atoms, species channels and
(n, l, m) components, F_ref the converged features (dominated by the large l = 0 features;
the error of a small high-l block relative to its own size is larger).  The tuner
(:func:`tune_lode`) estimates ε with the parameter-free error model of
:mod:`jaxlr.features.lode_error` (ideal-gas atoms: the k-sum's truncated tail, and the
PME aliasing of spreading and of the l-th derivative of the B-spline interpolation,
including the coherent self term of each atom) and picks the k-sum cutoff, or the PME
spline order and mesh of least estimated cost, that meet the target.  Measured against
converged k-sums (``python benchmarks/calibrate_lode_error.py``; random two-species
cells, cubic and triclinic, σ_L = 0.6 … 1.5 Å, r_c = 3 … 4 Å, L ≤ 4) the achieved ε lies
between 0.4 and 1.7 times the request for 1e-3 … 1e-6 (PME and k-sum); the model itself
is within e^{−0.5} … e^{+0.8} of about 1,000 measured PME errors (p = 4 … 12,
σ_L = 0.5 … 2 Å, r_c = 2 … 20 Å, RMS of the log ratio 0.18).
For ordered or liquid structures, whose long-wavelength density fluctuations are
smaller than an ideal gas's, ‖F_ref‖ — and so ε — can differ from the estimate by a
factor of order one.  The multipole variant has its own fit (:data:`MULTIPOLE_ERROR_FIT`,
an upper envelope of the largest of the relative errors of potential, field and field
gradient).  The direct route is converged to ~1e-13 whatever ``accuracy`` says.

Relation to featomic's LodeSphericalExpansion (checked to 1e-10 in the tests): identical
definition, k = 0 convention, i^l sign, harmonics and normalisation; featomic's
``Gto(max_radial=N−1, radius=r0)`` has widths ``gto_widths(r0, N)`` but is orthonormalised
and projected on [0, 5·r0] (no sharp sphere), so it equals jaxlr's
``lode(..., cutoff=5*r0, max_radial=N, radial_widths=gto_widths(r0, N))`` with
``SmearedPowerLaw(smearing=σ_L, exponent=1)``.

The multipole variant (:func:`lode_multipoles`) gives the potential, field E = −∇V_a and
field gradient ∂E_α/∂x_β = −∂_α∂_β V_a of each species density at each atom (the l ≤ 2
"LODE multipoles").
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np
import jax
import jax.numpy as jnp

from ..coulomb import SORT_ABOVE, spatial_order
from ..ewald import half_space_kvectors
from ..pme import MeshSpec
from ..system import (check_accuracy, check_cell, check_positions, concrete_value, perpendicular_widths,
                      reduced_basis)
from ..tuning import COSTS, _bisect, fft_friendly
from .lode_direct import _masked_index, lode_direct, lode_direct_multipoles
from .lode_error import LodeErrorModel
from .lode_ksum import ksum_cutoff, lode_ksum, lode_ksum_multipoles
from .lode_kspace import TABLE_STEP, radial_points
from .lode_pme import K_NEGLIGIBLE, make_lode_pme, make_lode_pme_multipoles
from .radial import gto_widths

__all__ = ["lode", "lode_multipoles", "lode_features", "multipole_features", "tune_lode", "multipole_pme_error",
           "basis_extent", "LodeParams", "LodeResult", "LodeMultipoles", "LODE_METHODS", "MULTIPOLE_ERROR_FIT"]

LODE_METHODS = ("auto", "ksum", "pme", "direct")
#: spline orders the tuner tries
LODE_ORDERS = (4, 6, 8, 10, 12)

#: multipole error model (largest relative RMS error of potential, field, field gradient):
#: log ε = a + b·log(h/σ_L) per spline order p, upper envelope of the same measurements
MULTIPOLE_ERROR_FIT: dict[int, tuple[float, float]] = {
    4: (-2.532, 2.094), 6: (-4.169, 4.580), 8: (-4.952, 7.382), 10: (-4.999, 10.316), 12: (-4.428, 14.003),
}
#: atoms per Å³ assumed by the error and cost models when ``n_atoms`` is not given (water)
DEFAULT_DENSITY = 0.1


@dataclasses.dataclass(frozen=True)
class LodeParams:
    """Static choices of a LODE evaluation (hashable; fixes every array shape).

    Attributes:
      method: "ksum", "pme" or "direct".
      cutoff: r_c in Å.  max_radial: n_max.  max_angular: L.  n_species: A.
      exclude_center: leave out each atom's own Gaussian.
      mesh: :class:`jaxlr.MeshSpec` for "pme".  k_cutoff: 1/Å for "ksum".
      n_points: radial quadrature nodes of I_nl (k-space routes).  n_table: Hermite
        table size of J_nl (PME).
      estimated_error: predicted relative RMS feature error (None when not estimated).
        Informative only: it takes no part in equality and hashing, so two params that
        differ only in the estimate share one compiled function.
    """

    method: str
    cutoff: float
    max_radial: int
    max_angular: int
    n_species: int
    exclude_center: bool = False
    mesh: MeshSpec | None = None
    k_cutoff: float | None = None
    n_points: int | None = None
    n_table: int | None = None
    estimated_error: float | None = dataclasses.field(default=None, compare=False)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LodeResult:
    """Output of :func:`lode` (a pytree).

    Attributes:
      values: (N, n_species, max_radial, (max_angular+1)²) features ⟨a n l m|V_i⟩, species
        channels in the order of ``species``, (l, m) flat as l² + l + m; zero for padding atoms.
      species: tuple of atomic numbers of the channels (static).
      params: the :class:`LodeParams` used (static).
    """

    values: jax.Array
    species: tuple = dataclasses.field(metadata=dict(static=True))
    params: LodeParams = dataclasses.field(metadata=dict(static=True))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LodeMultipoles:
    """Output of :func:`lode_multipoles` (a pytree).

    Attributes:
      potential: (N, A) V_a(R_i) in e/Å.  field: (N, A, 3) E = −∇V_a in e/Å².
      field_gradient: (N, A, 3, 3) ∂E_α/∂x_β = −∂_α∂_β V_a in e/Å³ (symmetric; its trace is
        4π(ρ_a(R_i) − N_a/V) periodic, 4πρ_a(R_i) open).
      species, params: as in :class:`LodeResult` (static).
    """

    potential: jax.Array
    field: jax.Array
    field_gradient: jax.Array
    species: tuple = dataclasses.field(metadata=dict(static=True))
    params: LodeParams = dataclasses.field(metadata=dict(static=True))


# ---- functional core ---------------------------------------------------------------------------
def _periodic_cell(params: LodeParams, cell, kvectors, dtype):
    """The cell as an array of ``dtype``; a ValueError when a periodic route lacks its inputs."""
    if cell is None:
        raise ValueError(f"method={params.method!r} needs a periodic cell; use method='direct' for an open boundary.")
    if params.method == "ksum" and kvectors is None:
        raise ValueError("method='ksum' needs kvectors=jaxlr.half_space_kvectors(cell, params.k_cutoff).")
    return jnp.asarray(cell, dtype)


def lode_features(positions, species_index, *, sigma, widths, params: LodeParams, cell=None, kvectors=None,
                  atom_mask=None):
    """LODE features for static ``params`` — the pure, jittable functional core.

    Args:
      positions: (N, 3) Å.  species_index: (N,) int in [0, n_species), −1 for padding atoms.
      sigma: σ_L in Å (traced).  widths: (max_radial,) GTO widths in Å (traced), e.g.
        ``gto_widths(cutoff, max_radial)``.
      params: :class:`LodeParams` (static), e.g. from :func:`tune_lode`.
      cell: (3, 3) Å (traced; None for "direct").  kvectors: integer half-space vectors
        for "ksum" (``jaxlr.half_space_kvectors(cell, params.k_cutoff)``).
      atom_mask: optional (N,) bool, False for padding atoms (same as species index −1):
        they contribute nothing, get zero features, and may sit anywhere — also on top
        of each other or of real atoms — with finite values and gradients.

    Returns:
      (N, n_species, max_radial, (max_angular+1)²).  Works under jit, grad (positions,
      cell, σ_L, widths) and vmap over padded structures sharing ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> p = LodeParams("direct", cutoff=3.0, max_radial=2, max_angular=1, n_species=1)
      >>> R = jnp.array([[0.0, 0, 0], [1.0, 0, 0]])
      >>> lode_features(R, jnp.array([0, 0]), sigma=0.5, widths=jnp.asarray(gto_widths(3.0, 2)), params=p).shape
      (2, 1, 2, 4)
    """
    dtype = positions.dtype
    sigma = jnp.asarray(sigma, dtype)
    widths = jnp.asarray(widths, dtype)
    species_index = _masked_index(species_index, atom_mask)
    common = dict(n_species=params.n_species, cutoff=params.cutoff, max_angular=params.max_angular)
    if params.method == "direct":
        return lode_direct(positions, species_index, sigma, widths, exclude_center=params.exclude_center, **common)
    cell = _periodic_cell(params, cell, kvectors, dtype)
    if params.method == "ksum":
        return lode_ksum(positions, species_index, cell, sigma, widths, kvectors, n_points=params.n_points,
                         exclude_center=params.exclude_center, **common)
    if params.method == "pme":
        f = make_lode_pme(params.mesh, n_points=params.n_points, n_table=params.n_table,
                          exclude_center=params.exclude_center, **common)
        return f(positions, species_index, cell, sigma, widths)
    raise ValueError(f"unknown LODE method {params.method!r}; choose 'ksum', 'pme' or 'direct'.")


def multipole_features(positions, species_index, *, sigma, params: LodeParams, cell=None, kvectors=None,
                       atom_mask=None):
    """Potential, field and field gradient of each species density — jittable core.

    Args as :func:`lode_features` (no basis; ``params.cutoff``/``max_radial``/
    ``max_angular`` are unused).

    Returns:
      ``(potential (N, A), field (N, A, 3), field_gradient (N, A, 3, 3))``; see
      :class:`LodeMultipoles`.

    Example:
      >>> import jax.numpy as jnp
      >>> p = LodeParams("direct", cutoff=1.0, max_radial=1, max_angular=0, n_species=1)
      >>> pot, field, grad = multipole_features(jnp.array([[0.0, 0, 0], [1.0, 0, 0]]), jnp.array([0, 0]),
      ...                                       sigma=0.5, params=p)
      >>> pot.shape, field.shape, grad.shape
      ((2, 1), (2, 1, 3), (2, 1, 3, 3))
    """
    dtype = positions.dtype
    sigma = jnp.asarray(sigma, dtype)
    species_index = _masked_index(species_index, atom_mask)
    if params.method == "direct":
        return lode_direct_multipoles(positions, species_index, sigma, n_species=params.n_species,
                                      exclude_center=params.exclude_center)
    cell = _periodic_cell(params, cell, kvectors, dtype)
    if params.method == "ksum":
        return lode_ksum_multipoles(positions, species_index, cell, sigma, kvectors, n_species=params.n_species,
                                    exclude_center=params.exclude_center)
    if params.method == "pme":
        f = make_lode_pme_multipoles(params.mesh, n_species=params.n_species, exclude_center=params.exclude_center)
        return f(positions, species_index, cell, sigma)
    raise ValueError(f"unknown LODE method {params.method!r}; choose 'ksum', 'pme' or 'direct'.")


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
    by :class:`jaxlr.features.lode_error.LodeErrorModel` for atoms at random positions.  The
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
            kc = _bisect(lambda k: model.ksum(k) <= accuracy, 1.5 * K_NEGLIGIBLE / sigma, 0.1 / sigma, rtol=1e-3)
            estimate = model.ksum(kc)
        return LodeParams("ksum", k_cutoff=kc, n_points=radial_points(cutoff, kc), estimated_error=estimate, **base)
    # PME
    d_order = 2 if multipoles else L
    costs = COSTS["float32" if dtype == "float32" else "float64"]
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
                x = _bisect(lambda x, p=p: multipole_pme_error(p, x) <= accuracy, 1e-3, 2.0)
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


# ---- front doors -----------------------------------------------------------------------------------
def _positive(name, value):
    v = concrete_value(value)
    if v is None:
        return None
    if v.shape != () or not np.isfinite(v) or not v > 0:
        raise ValueError(f"{name} must be a positive finite number (Å), got {value!r}.")
    return float(v)


def _species_index(species, species_list, atom_mask, n: int):
    """Species channels (tuple of ints) and the (N,) index array (−1 for padding)."""
    if np.shape(species) != (n,):
        raise ValueError(f"species must have shape ({n},) to match positions, got {np.shape(species)}.")
    sp = concrete_value(species)
    mask = None if atom_mask is None else concrete_value(atom_mask)
    if atom_mask is not None and np.shape(atom_mask) != (n,):
        raise ValueError(f"atom_mask must have shape ({n},), got {np.shape(atom_mask)}.")
    if sp is not None and (not np.all(np.isfinite(sp)) or not np.all(sp == np.round(sp))):
        raise ValueError("species must be integer atomic numbers.")
    if species_list is None:
        if sp is None or (atom_mask is not None and mask is None):
            raise ValueError("species (and atom_mask) are traced: pass species_list=[...] to fix the channels.")
        real = sp if mask is None else sp[np.asarray(mask, bool)]
        channels = tuple(int(z) for z in np.unique(real))
    else:
        channels = tuple(int(z) for z in species_list)
        if len(set(channels)) != len(channels) or len(channels) == 0:
            raise ValueError(f"species_list must list distinct atomic numbers, got {species_list!r}.")
        if sp is not None:
            real = sp if mask is None else sp[np.asarray(mask, bool)]
            missing = sorted(set(int(z) for z in np.unique(real)) - set(channels))
            if missing:
                raise ValueError(f"species {missing} are not in species_list {list(channels)}.")
    if not channels:
        raise ValueError("no atoms: every atom is masked out.")
    table = jnp.asarray(channels)
    match = jnp.asarray(species)[:, None] == table[None, :]
    index = jnp.where(jnp.any(match, axis=1), jnp.argmax(match, axis=1), -1).astype(jnp.int32)
    if atom_mask is not None:
        index = jnp.where(jnp.asarray(atom_mask, bool), index, -1)
    return channels, index


def _prepare(positions, species, cell, sigma, method, accuracy, species_list, atom_mask, mesh, order, k_cutoff):
    """Validation shared by the front doors (host, before anything is compiled)."""
    if method not in LODE_METHODS:
        raise ValueError(f"method must be one of {LODE_METHODS}, got {method!r}.")
    accuracy = check_accuracy(accuracy, " (a relative RMS feature error)")
    positions = check_positions(positions)
    n = positions.shape[0]
    dtype = positions.dtype if jnp.issubdtype(positions.dtype, jnp.floating) else jnp.zeros(()).dtype
    positions = positions.astype(dtype)
    if np.shape(sigma) != ():
        raise ValueError(f"sigma (σ_L) must be a scalar width in Å, got shape {np.shape(sigma)}.")
    sigma_np = _positive("sigma", sigma)
    channels, index = _species_index(species, species_list, atom_mask, n)
    if cell is None:
        if method in ("ksum", "pme"):
            raise ValueError(f"method={method!r} needs a periodic cell; pass cell=... or use method='direct'.")
    else:
        if method == "direct":
            raise ValueError("method='direct' is the open-boundary route; for a periodic cell use 'ksum' or 'pme'.")
        cell = check_cell(cell).astype(dtype)
    if order is not None and (int(order) != order or order % 2 or not 4 <= order <= 12):
        raise ValueError(f"order must be an even spline order in 4…12, got {order!r}.")
    if mesh is not None and not isinstance(mesh, MeshSpec):
        mesh = tuple(int(k) for k in mesh)
        if len(mesh) != 3 or min(mesh) < (order or 4):
            raise ValueError(f"mesh must be three integers, each at least the spline order; got {mesh}.")
    if k_cutoff is not None:
        _positive("k_cutoff", k_cutoff)
    return positions, index, channels, cell, sigma_np, accuracy, dtype


def _params_for(cell, sigma_np, dtype, method, accuracy, mesh, order, k_cutoff, index, multipoles, **basis):
    """Tuned :class:`LodeParams` from concrete inputs (the cell and σ_L decide the mesh / k-cutoff;
    the number of real atoms enters the error and cost models)."""
    idx = concrete_value(index)
    n = int(index.shape[0]) if idx is None else max(1, int(np.sum(idx >= 0)))
    cell_np = None if cell is None else concrete_value(cell)
    if cell is not None and (cell_np is None or sigma_np is None):
        raise ValueError("the cell or sigma is traced (inside jit): pass params=... (e.g. result.params of an "
                         "eager call, or jaxlr.features.lode.tune_lode(...)), or call the functional core "
                         "lode_features.")
    return tune_lode(cell_np, 1.0 if sigma_np is None else sigma_np, method=method, accuracy=accuracy, mesh=mesh,
                     order=order, k_cutoff=k_cutoff, n_atoms=n, multipoles=multipoles,
                     dtype=jnp.dtype(dtype).name, **basis)


def _check_params(params: LodeParams, cell, **expected) -> None:
    """A user-supplied LodeParams must describe the same basis and boundary as the call."""
    for key, value in expected.items():
        if getattr(params, key) != value:
            raise ValueError(f"params.{key}={getattr(params, key)!r} contradicts {key}={value!r}; "
                             "tune new params or pass matching arguments.")
    if (cell is None) != (params.method == "direct"):
        raise ValueError(f"params.method={params.method!r} does not match "
                         f"{'an open boundary' if cell is None else 'a periodic cell'}.")


def _kvectors(params, cell, dtype):
    if params.method != "ksum":
        return None
    cell_np = concrete_value(cell)
    if cell_np is None:
        raise ValueError("method='ksum' inside jit needs the functional core lode_features(..., kvectors=...).")
    return jnp.asarray(half_space_kvectors(cell_np, params.k_cutoff), dtype)


def _features_in_order(positions, species_index, order, *, sigma, widths, params, cell, kvectors):
    """:func:`lode_features` evaluated on the atoms permuted by ``order`` (None: as given),
    returned in the caller's order.  A spatially sorted order makes the mesh scatter and
    gathers cache-friendly for large systems."""
    if order is None:
        return lode_features(positions, species_index, sigma=sigma, widths=widths, params=params, cell=cell,
                             kvectors=kvectors)
    values = lode_features(positions[order], species_index[order], sigma=sigma, widths=widths, params=params,
                           cell=cell, kvectors=kvectors)
    inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    return values[inverse]


_evaluate = jax.jit(_features_in_order, static_argnames=("params",))
_evaluate_multipoles = jax.jit(multipole_features, static_argnames=("params",))


def lode(positions, species, *, cell=None, cutoff: float, max_radial: int, max_angular: int, sigma,
         method: str = "auto", accuracy: float = 1e-6, species_list=None, exclude_center: bool = False,
         radial_widths=None, atom_mask=None, mesh=None, order: int | None = None,
         k_cutoff: float | None = None, params: LodeParams | None = None) -> LodeResult:
    """LODE features ⟨a n l m|V_i⟩ of every atom (see the module docstring for the definition).

    Args:
      positions: (N, 3) Å.
      species: (N,) atomic numbers (int).
      cell: (3, 3) Å, rows are lattice vectors (periodic in 3D), or None (open boundary).
      cutoff: r_c in Å, radius of the projection sphere.  max_radial: number of radial
        functions n_max.  max_angular: L (features for l = 0 … L).
      sigma: σ_L in Å, width of the atom Gaussians (traced: differentiable).
      method: "auto" (direct when open, PME when periodic), "ksum", "pme" or "direct".
      accuracy: target relative RMS error of all feature components, ‖F − F_ref‖/‖F_ref‖,
        in (0, 1) (k-space routes; achieved within a factor 3, typically 0.4–1.7×, see
        the module docstring).
      species_list: atomic numbers of the channels, in order (default: sorted unique
        species of the real atoms); needed when ``species`` is traced.
      exclude_center: leave out the atom's own Gaussian (its periodic images stay).
      radial_widths: (max_radial,) GTO widths in Å (default ``gto_widths(cutoff,
        max_radial)``; traced: differentiable).
      atom_mask: (N,) bool, False for padding atoms (they contribute nothing and get
        zero features).
      mesh, order, k_cutoff: override the tuned PME mesh ((K1, K2, K3) or a MeshSpec),
        spline order, or k-sum cutoff (1/Å).
      params: a full :class:`LodeParams` (e.g. ``result.params`` of an earlier call):
        skips tuning; needed inside ``jax.jit`` with a traced cell or σ_L.

    Returns:
      :class:`LodeResult` with ``.values`` (N, n_species, max_radial, (max_angular+1)²)
      in e/Å·Å^{3/2} (no k_e), ``.species`` and ``.params``.  Repeated calls with the same
      shapes and settings reuse the compiled function.

    Raises:
      ValueError: bad shapes, NaN/inf, σ ≤ 0, cutoff ≤ 0, a degenerate cell, method/cell
        mismatch, unknown method, accuracy outside (0, 1), species outside species_list.

    Example:
      >>> import numpy as np, jaxlr.features.lode as L
      >>> R = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
      >>> res = L.lode(R, [8, 1, 1], cutoff=3.0, max_radial=4, max_angular=2, sigma=1.0)
      >>> res.values.shape, res.species
      ((3, 2, 4, 9), (1, 8))
    """
    positions, index, channels, cell, sigma_np, accuracy, dtype = _prepare(
        positions, species, cell, sigma, method, accuracy, species_list, atom_mask, mesh, order, k_cutoff)
    cutoff_v = _positive("cutoff", cutoff)
    if cutoff_v is None:
        raise ValueError("cutoff must be a concrete Python number (Å).")
    for name, v, lo in (("max_radial", max_radial, 1), ("max_angular", max_angular, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer ≥ {lo}, got {v!r}.")
    if radial_widths is None:
        widths = jnp.asarray(gto_widths(cutoff_v, max_radial), dtype)
    else:
        if np.shape(radial_widths) != (max_radial,):
            raise ValueError(f"radial_widths must have shape ({max_radial},), got {np.shape(radial_widths)}.")
        w = concrete_value(radial_widths)
        if w is not None and not (np.all(np.isfinite(w)) and np.all(w > 0)):
            raise ValueError("radial_widths must be positive finite widths in Å.")
        widths = jnp.asarray(radial_widths, dtype)
    basis = dict(cutoff=cutoff_v, max_radial=int(max_radial), max_angular=int(max_angular),
                 n_species=len(channels), exclude_center=bool(exclude_center))
    if params is None:
        params = _params_for(cell, sigma_np, dtype, method, accuracy, mesh, order, k_cutoff, index,
                             False, radial_widths=concrete_value(widths), **basis)
    else:
        _check_params(params, cell, **basis)
    kvectors = _kvectors(params, cell, dtype)
    sort = None
    pos_np = concrete_value(positions)
    if params.method == "pme" and positions.shape[0] > SORT_ABOVE and pos_np is not None:
        sort = jnp.asarray(spatial_order(pos_np, concrete_value(cell)))
    values = _evaluate(positions, index, sort, sigma=jnp.asarray(sigma, dtype), widths=widths, params=params,
                       cell=cell, kvectors=kvectors)
    return LodeResult(values=values, species=channels, params=params)


def lode_multipoles(positions, species, *, cell=None, sigma, method: str = "auto", accuracy: float = 1e-6,
                    species_list=None, exclude_center: bool = False, atom_mask=None, mesh=None,
                    order: int | None = None, k_cutoff: float | None = None,
                    params: LodeParams | None = None) -> LodeMultipoles:
    """Potential, field and field gradient of each species' Gaussian density at each atom.

    ``V_a(R_i)`` (l = 0), ``E = −∇V_a`` (l = 1) and ``∂E_α/∂x_β = −∂_α∂_β V_a`` (l = 2) for
    ρ_a = Σ_{j∈a} unit Gaussians of width σ_L, no k_e factor, k = 0 dropped when periodic.
    PME differentiates the B-spline interpolation of one mesh potential per species.

    Args:
      as :func:`lode` (no radial basis).  ``accuracy`` is the largest of the relative RMS
      errors of the three outputs.

    Returns:
      :class:`LodeMultipoles`.

    Example:
      >>> import numpy as np, jaxlr.features.lode as L
      >>> R = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
      >>> m = L.lode_multipoles(R, [1, 1], sigma=0.5, exclude_center=True)
      >>> round(float(m.potential[0, 0]), 6), round(float(m.field[0, 0, 0]), 6)   # 1/r, −1/r² (erf ≈ 1)
      (0.25, -0.0625)
    """
    positions, index, channels, cell, sigma_np, accuracy, dtype = _prepare(
        positions, species, cell, sigma, method, accuracy, species_list, atom_mask, mesh, order, k_cutoff)
    basis = dict(cutoff=1.0, max_radial=1, max_angular=0, n_species=len(channels),
                 exclude_center=bool(exclude_center))
    if params is None:
        params = _params_for(cell, sigma_np, dtype, method, accuracy, mesh, order, k_cutoff, index,
                             True, **basis)
    else:
        _check_params(params, cell, n_species=len(channels), exclude_center=bool(exclude_center))
    kvectors = _kvectors(params, cell, dtype)
    pot, field, grad = _evaluate_multipoles(positions, index, sigma=jnp.asarray(sigma, dtype), params=params,
                                            cell=cell, kvectors=kvectors)
    return LodeMultipoles(potential=pot, field=field, field_gradient=grad, species=channels, params=params)
