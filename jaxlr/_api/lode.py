"""LODE front doors (eager): :func:`lode` and :func:`lode_multipoles` — validation, tuning, spatial order, jitted features.

Definitions and conventions: :mod:`jaxlr.features` (``lode_features``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._ewald import half_space_kvectors
from ..electrostatics._pme import MeshSpec
from ..features._lode import LODE_METHODS, LodeMultipoles, LodeParams, LodeResult, lode_features, multipole_features
from ..features._radial import gto_widths
from ..performance import costs
from ..system._checks import check_accuracy, check_cell, check_positions, concrete_value
from ..system._order import spatial_order
from ..tuning._lode import tune_lode

__all__ = ['lode', 'lode_multipoles']


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
                         "eager call, or jaxlr.tuning.tune_lode(...)), or call the functional core "
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
      >>> import numpy as np, jaxlr as L
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
    if params.method == "pme" and positions.shape[0] > costs().sort_above and pos_np is not None:
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
      >>> import numpy as np, jaxlr as L
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
