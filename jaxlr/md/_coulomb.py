"""Fixed-charge Coulomb energy as a jax-md energy function: :func:`coulomb_neighbor_list`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..electrostatics import CoulombParams, coulomb_energy, half_space_kvectors
from ..system import check_accuracy, concrete_or_none, is_concrete
from ..tuning import tune_coulomb
from ._space import Geometry, make_geometry, real_positions, validate_setup

__all__ = ["CoulombEnergy", "coulomb_neighbor_list", "tune_for_box", "standin_positions"]


def _dtype_name() -> str:
    return jnp.zeros(()).dtype.name


def standin_positions(n: int, box: np.ndarray) -> np.ndarray:
    """Uniform random positions (Å) of n atoms in a box, for tuning without a reference configuration."""
    return np.random.default_rng(0).random((n, 3)) @ box.T


def tune_for_box(positions, charges, box: np.ndarray, sigma, *, method: str, accuracy: float, background: bool,
                 dr_threshold: float, costs=None) -> CoulombParams:
    """``tune_coulomb`` with the real-space cutoff capped at half the box minus the skin (host).

    jax-md lists use the minimum image, so the cutoff plus the skin must stay below half
    the smallest perpendicular width; if the unconstrained optimum is longer, the
    parameters are re-tuned at the longest allowed cutoff (smaller smearing, finer mesh).
    Raises ``ValueError`` when the requested accuracy cannot be met at that cutoff.
    """
    from ..system import perpendicular_widths

    cell = box.T
    kw = dict(method=method, accuracy=accuracy, background=background, dtype=_dtype_name(), costs=costs)
    params = tune_coulomb(positions, charges, cell, sigma, **kw)
    cap = 0.5 * float(perpendicular_widths(cell).min()) - dr_threshold
    if params.cutoff > cap:
        if cap <= 0:
            raise ValueError(f"the box (half width {cap + dr_threshold:.4g} Å) leaves no room for a real-space "
                             f"cutoff with the skin dr_threshold={dr_threshold:g} Å; use a larger supercell.")
        params = tune_coulomb(positions, charges, cell, sigma, cutoff=cap, **kw)
        wide = ("" if sigma is None else
                f" (Gaussian widths up to {float(np.max(sigma)):.3g} Å decay as erfc(r/2σ) in real space, "
                "whatever the smearing)")
        if params.estimated_error is not None and params.estimated_error > 1.0001 * accuracy:
            raise ValueError(f"accuracy={accuracy:g} is out of reach in this box: the minimum image limits the "
                             f"real-space cutoff to {cap:.4g} Å (half width minus the skin), where the best "
                             f"estimate is {params.estimated_error:.3g}{wide}. Use a larger supercell, a smaller "
                             "dr_threshold or a looser accuracy.")
    return params


def _standin_charges(n: int) -> np.ndarray:
    q = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    if n % 2:
        q[-1] = 0.0
    return q


class CoulombEnergy:
    """The jittable energy function of :func:`coulomb_neighbor_list` (a callable object).

    ``energy_fn(R, neighbor, *, charges=None, sigma=None, box=None, perturbation=None)``
    → scalar energy in eV; see :func:`coulomb_neighbor_list` for the arguments.

    Attributes:
      params: the :class:`jaxlr.CoulombParams` in use (method, smearing, cutoff, mesh).
      charges: (N,) default charges (e) or None.  sigma: (N,) default widths (Å) or None.
      background: uniform neutralising background for a net charge.
      fractional_coordinates: positions are fractional (jax-md's default).
    """

    def __init__(self, geometry: Geometry, params: CoulombParams, charges, sigma, background: bool, kvectors):
        self._geometry = geometry
        self.params = params
        self.charges = charges
        self.sigma = sigma
        self.background = bool(background)
        self._kvectors = kvectors

    @property
    def fractional_coordinates(self) -> bool:
        return self._geometry.fractional

    def __call__(self, R, neighbor=None, *, charges=None, sigma=None, box=None, perturbation=None, **kwargs):
        if kwargs:
            raise ValueError(f"unknown keyword argument(s) {sorted(kwargs)}; the Coulomb energy takes neighbor=, "
                             "charges=, sigma=, box= and perturbation=.")
        geo = self._geometry
        R_real, cell = geo.real(R, box, perturbation)
        n = R_real.shape[0]
        q = self.charges if charges is None else jnp.asarray(charges)
        if q is None:
            raise ValueError("no charges: pass charges= when building the energy function or when calling it.")
        if q.shape != (n,):
            raise ValueError(f"charges must have shape ({n},), got {q.shape}.")
        q_np = concrete_or_none(q)
        if q_np is not None:
            if not np.all(np.isfinite(q_np)):
                raise ValueError("charges contain NaN or inf.")
            total = float(np.sum(q_np))
            if not self.background and abs(total) > 1e-8 * max(1.0, float(np.sum(np.abs(q_np)))):
                raise ValueError(f"the charges sum to {total:.6g} e in a periodic cell: make them neutral or build "
                                 "the energy function with background=True (uniform neutralising background).")
        sig = self.sigma if sigma is None else jnp.asarray(sigma)
        if sig is not None:
            if sig.shape != (n,):
                raise ValueError(f"sigma must have shape ({n},), got {sig.shape}.")
            if is_concrete(sig) and np.any(np.asarray(sig) <= 0):
                raise ValueError("sigma must be > 0 (use sigma=None for point charges).")
            sig = sig.astype(R_real.dtype)
        nbrs = geo.neighbors(neighbor, R_real, cell)
        p = self.params
        return coulomb_energy(R_real, q.astype(R_real.dtype), cell=cell, sigma=sig,
                              smearing=jnp.asarray(p.smearing, R_real.dtype), neighbors=nbrs,
                              kvectors=None if self._kvectors is None else self._kvectors.astype(R_real.dtype),
                              method=p.method, mesh=p.mesh, background=self.background)


def coulomb_neighbor_list(displacement_fn, box, *, charges=None, sigma=None, accuracy: float = 1e-5,
                          method: str = "pme", fractional_coordinates: bool = True, dr_threshold: float = 0.5,
                          capacity_multiplier: float = 1.25, format=None, positions_for_tuning=None,
                          background: bool = False, params: CoulombParams | None = None):
    """Periodic Coulomb energy in the jax-md idiom: ``neighbor_fn, energy_fn`` (host set-up).

    Like ``jax_md.energy.lennard_jones_neighbor_list``: the parameters (Ewald smearing,
    real-space cutoff, PME mesh) are tuned once on the host for ``accuracy`` (the relative
    RMS force error of :func:`jaxlr.coulomb`), with the real-space cutoff kept below half
    the box minus the skin (jax-md lists use the minimum image).  The energy is the one of
    :func:`jaxlr.coulomb_energy`: Ewald sums with tin-foil boundary conditions, Gaussian
    charges when ``sigma`` is given (self-energy included).

    Conventions (read them twice):

    * ``box`` is jax-md's: a scalar, a (3,) vector or a (3, 3) matrix whose COLUMNS are the
      lattice vectors (upper triangular with fractional coordinates); jaxlr's cell is
      ``box.T``.
    * ``fractional_coordinates`` must match the space: ``jax_md.space.periodic_general(box)``
      is fractional by default (positions in [0, 1)³, ``R_real = R @ box.T``); the
      displacement function is probed on the host and a mismatch raises ``ValueError``.
      Forces ``-grad(energy_fn)(R)`` are in eV/Å in both conventions.
    * Only ``jax_md.partition.Dense`` lists; pairs beyond the cutoff (inside the skin) are
      masked, so the energy does not depend on when the list was rebuilt.
    * Overflow: an overflowed list misses pairs.  Called eagerly, ``energy_fn`` raises
      ``ValueError`` on it; inside ``jit`` the flag stays on the list, so check it after
      each block of steps and reallocate::

          nbrs = neighbor_fn.update(R, nbrs)      # inside the jitted step
          if nbrs.did_buffer_overflow:            # outside jit
              nbrs = neighbor_fn.allocate(R)      # and redo the block

    Args:
      displacement_fn: from ``jax_md.space.periodic_general(box, fractional_coordinates=…)``
        (``space.periodic`` for a cube works too, with ``fractional_coordinates=False``).
      box: the jax-md box (Å), concrete.
      charges: (N,) default charges (e); may be replaced per call (``charges=``).  Without
        them the tuner uses ±1 stand-in charges (errors are relative).
      sigma: (N,) Gaussian widths (Å) or None for point charges.
      accuracy: target relative RMS force error (as in :func:`jaxlr.coulomb`).
      method: "pme" (default) or "ewald".
      fractional_coordinates: positions are fractional (jax-md's default).
      dr_threshold: neighbour-list skin (Å); the list is rebuilt when an atom moved more
        than half of it.  capacity_multiplier: spare list capacity (jax-md).
      format: must be ``jax_md.partition.Dense`` (default); Sparse lists raise ``ValueError``.
      positions_for_tuning: (N, 3) reference configuration, in the same coordinates as the
        simulation; default: uniform random positions of N atoms.
      background: allow a net charge (uniform neutralising background).
      params: explicit :class:`jaxlr.CoulombParams` (method "pme" or "ewald") instead of
        tuning; its cutoff plus ``dr_threshold`` must fit in half the box.

    Returns:
      ``(neighbor_fn, energy_fn)``: a jax-md ``NeighborListFns`` (``allocate``/``update``,
      cutoff ``params.cutoff`` + skin) and a :class:`CoulombEnergy`,
      ``energy_fn(R, neighbor, *, charges=None, sigma=None, box=None, perturbation=None)``
      → energy (eV), jittable and differentiable in R, charges, sigma, box and
      perturbation.  ``box=`` (NPT) and ``perturbation=`` (``jax_md.quantity.stress`` /
      ``pressure``: ``R' = R_real @ P.T``, ``cell' = cell @ P.T``) act on the real-space
      and the reciprocal sums alike.  jax-md's ``quantity.stress`` is
      ``-(1/V) ∂E/∂ε`` with ε straining column vectors, i.e. ``-CoulombResult.stress.T``
      (jaxlr: ASE sign, rows strained); the transpose matters only for the tiny
      antisymmetric part that PME's mesh error leaves.

    Raises:
      ValueError: Sparse format, a box/coordinate mismatch with ``displacement_fn``, a
        cutoff (plus skin) beyond half the box, an accuracy out of reach in this box, a
        net charge without ``background``; at call time: a list from another
        neighbour function or an overflowed list (eagerly).

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import coulomb_neighbor_list
      >>> box = 12.0
      >>> R = jnp.asarray(np.random.default_rng(0).random((16, 3)))   # fractional
      >>> q = jnp.asarray(np.tile([1.0, -1.0], 8))
      >>> displacement, shift = space.periodic_general(box)
      >>> neighbor_fn, energy_fn = coulomb_neighbor_list(displacement, box, charges=q, accuracy=1e-3,
      ...                                                positions_for_tuning=R)
      >>> nbrs = neighbor_fn.allocate(R)
      >>> forces = -jax.grad(energy_fn)(R, nbrs)                     # eV/Å
      >>> forces.shape
      (16, 3)
    """
    from jax_md import partition

    if format is None:
        format = partition.Dense
    accuracy = check_accuracy(accuracy)
    if method not in ("pme", "ewald"):
        raise ValueError(f"method must be 'pme' or 'ewald' for a jax-md simulation, got {method!r}.")
    if box is None:
        raise ValueError("coulomb_neighbor_list is for periodic boxes; for an open boundary call "
                         "jaxlr.coulomb_energy(R, q, method='direct') in your energy function.")
    b = validate_setup(displacement_fn, box, fractional_coordinates=fractional_coordinates,
                       dr_threshold=dr_threshold, capacity_multiplier=capacity_multiplier, format=format)
    n = None
    q = None
    if charges is not None:
        q = jnp.asarray(charges)
        if q.ndim != 1:
            raise ValueError(f"charges must have shape (N,), got {q.shape}.")
        n = q.shape[0]
        if not np.all(np.isfinite(np.asarray(q))):
            raise ValueError("charges contain NaN or inf.")
        total = float(np.sum(np.asarray(q)))
        if not background and abs(total) > 1e-8 * max(1.0, float(np.sum(np.abs(np.asarray(q))))):
            raise ValueError(f"the charges sum to {total:.6g} e in a periodic cell: make them neutral or pass "
                             "background=True (uniform neutralising background).")
    sig = None
    if sigma is not None:
        sig = jnp.asarray(sigma)
        if sig.ndim != 1 or (n is not None and sig.shape[0] != n):
            raise ValueError(f"sigma must have shape ({n if n is not None else 'N'},), got {sig.shape}.")
        if np.any(np.asarray(sig) <= 0) or not np.all(np.isfinite(np.asarray(sig))):
            raise ValueError("sigma must be finite and > 0 (sigma=None for point charges).")
        n = sig.shape[0] if n is None else n
    pos = None
    if positions_for_tuning is not None:
        pos = real_positions(positions_for_tuning, b, fractional_coordinates)
        if n is not None and pos.shape[0] != n:
            raise ValueError(f"positions_for_tuning holds {pos.shape[0]} atoms but charges/sigma {n}.")
        n = pos.shape[0]
    if params is None:
        if n is None:
            raise ValueError("nothing to tune on: pass charges=, positions_for_tuning= or explicit params=.")
        if pos is None:
            pos = standin_positions(n, b)
        q_tune = np.asarray(q, dtype=np.float64) if q is not None else _standin_charges(n)
        if not np.any(q_tune):
            q_tune = _standin_charges(n)
        params = tune_for_box(pos, q_tune, b, None if sig is None else np.asarray(sig, dtype=np.float64),
                              method=method, accuracy=accuracy, background=background,
                              dr_threshold=float(dr_threshold))
    else:
        if not isinstance(params, CoulombParams) or params.method not in ("pme", "ewald"):
            raise ValueError("params must be a jaxlr.CoulombParams with method 'pme' or 'ewald' (e.g. from "
                             "jaxlr.tune_coulomb).")
        if params.cutoff is None or params.smearing is None:
            raise ValueError("params needs a smearing and a cutoff.")
        if params.method == "pme" and params.mesh is None:
            raise ValueError("params with method='pme' needs a mesh (jaxlr.MeshSpec).")
        if params.method == "ewald" and params.k_cutoff is None:
            raise ValueError("params with method='ewald' needs a k_cutoff.")
    geometry = make_geometry(displacement_fn, box, cutoff=params.cutoff, n_atoms=n,
                             fractional_coordinates=fractional_coordinates, dr_threshold=dr_threshold,
                             capacity_multiplier=capacity_multiplier, format=format, what="the real-space cutoff")
    kvectors = None
    if params.method == "ewald":
        kvectors = jnp.asarray(half_space_kvectors(b.T, params.k_cutoff))
    energy_fn = CoulombEnergy(geometry, params, q, sig, background, kvectors)
    return geometry.neighbor_fn, energy_fn
