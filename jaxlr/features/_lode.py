"""LODE features — the front door, the jittable dispatch and the parameter tuning.

Definition (Grisafi & Ceriotti, J. Chem. Phys. 151, 204105 (2019)): per species a,

    ρ_a(x) = Σ_{j∈a} (2πσ_L²)^{−3/2} exp(−|x − R_j|²/2σ_L²)     (unit Gaussians),
    V_a = ρ_a ∗ 1/r                                                (no Coulomb constant k_e),
    ⟨a n l m|V_i⟩ = ∫_{|x|<r_c} R_n(|x|) Y_lm(x̂) V_a(R_i + x) d³x,

with the orthonormal GTO radial basis R_n of :mod:`jaxlr.features` (∫_0^{r_c} R_n R_m
r² dr = δ_nm) and the real spherical harmonics of :mod:`jaxlr.features`
(orthonormal, no Condon–Shortley phase, l = 1 ∝ (y, z, x)).  Units: V_a in e/Å per unit
atom "charge" — multiply by k_e = 14.399645351950548 eV·Å/e² for volts — and features in
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
  (:mod:`jaxlr.features`);
* ``"pme"`` — smooth PME, O(N log N) (:mod:`jaxlr.features`);
* ``"direct"`` — open boundary, real-space quadrature over all pairs
  (:mod:`jaxlr.features`);
* ``"auto"`` — direct without a cell, PME with one.

Accuracy (``accuracy=``): the target *relative RMS feature error*,
``ε = ‖F − F_ref‖ / ‖F_ref‖`` with Frobenius norms over all atoms, species channels and
(n, l, m) components, F_ref the converged features (dominated by the large l = 0 features;
the error of a small high-l block relative to its own size is larger).  The tuner
(:func:`tune_lode`) estimates ε with the parameter-free error model of
:mod:`jaxlr.tuning` (ideal-gas atoms: the k-sum's truncated tail, and the
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
gradient).  The direct route is converged to ~1e-13 whatever ``accuracy`` says; with a pair-function
table (``LodeParams.n_table``, as the models use) to ~1e-10.

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

import jax
import jax.numpy as jnp

from ..electrostatics._pme import MeshSpec
from ._lode_direct import lode_direct, lode_direct_multipoles, masked_index
from ._lode_ksum import lode_ksum, lode_ksum_multipoles
from ._lode_pme import make_lode_pme, make_lode_pme_multipoles
from ._lode_table import direct_pair_table

__all__ = ['LODE_METHODS', 'MULTIPOLE_ERROR_FIT', 'LodeParams', 'LodeResult', 'LodeMultipoles', 'lode_features', 'multipole_features']


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
        table size of J_nl (PME), or of the pair functions Φ_nl(r) ("direct": None
        integrates every pair exactly; a size, e.g. from
        :func:`jaxlr.features.direct_table_size`, interpolates them — ~1e-10 relative,
        tens of times faster for clusters).
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
        raise ValueError("method='ksum' needs kvectors=jaxlr.electrostatics.half_space_kvectors(cell, params.k_cutoff).")
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
        for "ksum" (``jaxlr.electrostatics.half_space_kvectors(cell, params.k_cutoff)``).
      atom_mask: optional (N,) bool, False for padding atoms (same as species index −1):
        they contribute nothing, get zero features, and may sit anywhere — also on top
        of each other or of real atoms — with finite values and gradients.

    Returns:
      (N, n_species, max_radial, (max_angular+1)²).  Works under jit, grad (positions,
      cell, σ_L, widths) and vmap over padded structures sharing ``params``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxlr.features import gto_widths
      >>> p = LodeParams("direct", cutoff=3.0, max_radial=2, max_angular=1, n_species=1)
      >>> R = jnp.array([[0.0, 0, 0], [1.0, 0, 0]])
      >>> lode_features(R, jnp.array([0, 0]), sigma=0.5, widths=jnp.asarray(gto_widths(3.0, 2)), params=p).shape
      (2, 1, 2, 4)
    """
    dtype = positions.dtype
    sigma_in, widths_in = sigma, widths
    sigma = jnp.asarray(sigma, dtype)
    widths = jnp.asarray(widths, dtype)
    species_index = masked_index(species_index, atom_mask)
    common = dict(n_species=params.n_species, cutoff=params.cutoff, max_angular=params.max_angular)
    if params.method == "direct":
        table = None if params.n_table is None else direct_pair_table(sigma_in, widths_in, params, dtype)
        return lode_direct(positions, species_index, sigma, widths, exclude_center=params.exclude_center,
                           table=table, **common)
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
    species_index = masked_index(species_index, atom_mask)
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
