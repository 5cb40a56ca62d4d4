"""The Coulomb front door: energies, potentials, forces and stress of point or Gaussian charges.

Two layers:

* :func:`coulomb_energy` — the pure, jittable functional core.  Given static choices
  (method, mesh, k-vectors, background) and traced arrays (positions, charges, cell,
  widths σ, smearing s), it returns the total electrostatic energy.  Everything else
  (potentials, forces, stress, hyperparameter gradients, second derivatives) follows by
  ``jax.grad``; :func:`coulomb_terms` packages the usual derivatives.
* :func:`coulomb` — the eager front door: validates inputs, tunes parameters from a
  requested accuracy, builds the neighbour list on the host, and calls the jitted core.

Energy conventions (DESIGN.md): ``E = ½ Σ_i Σ_j' q_i q_j KE K(r_ij)`` over all pairs
(and periodic images) plus, for Gaussian charges, each Gaussian's self-energy
``KE q_i²/(2√π σ_i)``.  Periodic sums are Ewald sums with tin-foil boundary conditions.
A net charge in a periodic cell needs ``background=True`` (uniform neutralising
background, i.e. the k = 0 term omitted).  Potentials are the physical ones,
``φ_i = ∂E/∂q_i`` (so ``E = ½ Σ q_i φ_i`` for point charges) — peers that report
``E = Σ q_i φ_i`` carry a factor ½ in theirs.  Stress is ``(1/V) ∂E/∂ε`` (ASE sign).
"""

from __future__ import annotations
import dataclasses
from functools import partial
import numpy as np
import jax
import jax.numpy as jnp
from ..tuning._plan import stable_capacity, tuned
from .. import tuning
from ..electrostatics._ewald import half_space_kvectors
from ..system._neighbors import Neighbors
from ..electrostatics._pme import MeshSpec
from ..system._checks import check_accuracy, check_cell, check_per_atom, check_positions, concrete_value
from ..electrostatics._params import CoulombParams
from ..electrostatics._energy import coulomb_terms
from ..system._order import sorted_neighbors
from ..electrostatics._params import METHODS

__all__ = ['CoulombResult', 'coulomb']


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CoulombResult:
    """Output of :func:`coulomb` (a pytree).

    Attributes:
      energy: () eV.  potentials: (N,) V, φ_i = ∂E/∂q_i.  forces: (N, 3) eV/Å, −∂E/∂R.
      stress: (3, 3) eV/Å³, (1/V) ∂E/∂ε, or None for an open boundary.
      params: the :class:`CoulombParams` used (static metadata).
    """

    energy: jax.Array
    potentials: jax.Array
    forces: jax.Array
    stress: jax.Array | None
    params: CoulombParams = dataclasses.field(metadata=dict(static=True))


@partial(jax.jit, static_argnames=("method", "mesh", "background", "want_stress"))
def evaluate_coulomb(positions, charges, cell, sigma, smearing, neighbors, kvectors, order=None, *, method, mesh,
              background, want_stress):
    """Jitted :func:`coulomb_terms`; ``order`` (N,) optionally permutes the atoms first.

    A spatially sorted atom order makes the mesh scatter/gather and the neighbour gathers
    cache-friendly for large systems; ``neighbors`` must then refer to the sorted order.
    Outputs are returned in the caller's order.
    """
    if order is not None:
        positions, charges = positions[order], charges[order]
        sigma = None if sigma is None else sigma[order]
    energy, potentials, forces, stress = coulomb_terms(
        positions, charges, cell=cell, want_stress=want_stress, sigma=sigma, smearing=smearing,
        neighbors=neighbors, kvectors=kvectors, method=method, mesh=mesh, background=background)
    if order is not None:
        inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
        potentials, forces = potentials[inverse], forces[inverse]
    return energy, potentials, forces, stress


def coulomb(positions, charges, *, cell=None, sigma=None, method: str = "auto",
            accuracy: float = 1e-6, background: bool = False, smearing: float | None = None,
            cutoff: float | None = None, mesh: tuple[int, int, int] | None = None,
            order: int | None = None, k_cutoff: float | None = None,
            neighbors: Neighbors | None = None, want_stress: bool = True) -> CoulombResult:
    """Electrostatic energy, potentials, forces and stress of point or Gaussian charges.

    Args:
      positions: (N, 3) Å.
      charges: (N,) e.
      cell: (3, 3) Å, rows are lattice vectors (periodic in 3D), or None (open boundary).
      sigma: (N,) Gaussian charge widths σ_i > 0 in Å (ρ_i ∝ exp(−r²/2σ_i²)), or None for
        point charges.
      method: "auto" (direct when open, Ewald for small cells, PME otherwise), "direct",
        "ewald" or "pme".
      accuracy: target relative RMS force error, 0 < accuracy < 1.  Errors are measured
        against the force scale F₀ of uncorrelated charges (F₀² = ⟨Σ_j (KE q_i q_j/r_ij²)²⟩,
        equal to the RMS force of a random system); the tuner picks smearing, cutoff,
        mesh and spline order (or k-cutoff) of least estimated cost.
      background: allow a net charge in a periodic cell via a uniform neutralising
        background (otherwise a net charge raises ``ValueError``).
      smearing, cutoff, mesh, order, k_cutoff: override the tuned parameters (Å, Å,
        (K1, K2, K3) along the cell vectors as given — or a full :class:`MeshSpec`, e.g.
        ``result.params.mesh`` of an earlier call —, spline order 4–8, 1/Å).
      neighbors: a prebuilt :class:`jaxlr.Neighbors` (full list, cutoff ≥ ``cutoff``).
      want_stress: compute the stress (periodic only).

    Returns:
      :class:`CoulombResult` with ``.energy`` (eV), ``.potentials`` (V, ∂E/∂q_i — the
      physical potential, E = ½ Σ q_i φ_i for point charges), ``.forces`` (eV/Å),
      ``.stress`` (eV/Å³, periodic only) and ``.params``.  Repeated calls with the same
      shapes and settings reuse the compiled function.  Without explicit parameters, the
      tuned ones and the neighbour-list capacity of the last call on the same kind of
      system (N, dtype, method, accuracy, background, point or Gaussian charges) are
      kept while they still meet ``accuracy`` for the new positions and cell, so a moving
      system keeps its compiled function (:mod:`jaxlr.reuse`;
      :func:`jaxlr.clear_tuning_cache` forgets them).

    Raises:
      ValueError: bad shapes, NaN/inf, a degenerate cell, σ ≤ 0, net charge without
        ``background=True``, unsupported spline order, accuracy outside (0, 1).

    Example:
      >>> import numpy as np, jaxlr
      >>> a = 5.64; cell = np.eye(3) * a
      >>> frac = np.array([[0, 0, 0], [.5, .5, 0], [.5, 0, .5], [0, .5, .5],
      ...                  [.5, 0, 0], [0, .5, 0], [0, 0, .5], [.5, .5, .5]])
      >>> q = np.array([1.0] * 4 + [-1.0] * 4)
      >>> res = jaxlr.coulomb(frac @ cell, q, cell=cell, method="ewald", accuracy=1e-10)
      >>> round(-float(res.energy) / 4 / jaxlr.KE * a / 2, 6)   # NaCl Madelung constant
      1.747565
    """
    # concrete values of the user's inputs (numpy or eager arrays), taken before any
    # conversion: inside jit even jnp.asarray(numpy_array) is a tracer
    pos_np = concrete_value(positions)
    q_np = concrete_value(charges)
    cell_np = None if cell is None else concrete_value(cell)
    sig_np = None if sigma is None else concrete_value(sigma)
    positions = check_positions(positions)
    n = positions.shape[0]
    charges = check_per_atom("charges", charges, n)
    if sigma is not None:
        sigma = check_per_atom("sigma", sigma, n, positive=True)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    accuracy = check_accuracy(accuracy, " (a relative force error)")
    if order is not None and order not in tuning.ORDERS:
        raise ValueError(f"PME spline order must be one of {tuning.ORDERS}, got {order!r}.")
    for name, value in (("smearing", smearing), ("cutoff", cutoff), ("k_cutoff", k_cutoff)):
        if value is not None and not (np.isfinite(float(value)) and float(value) > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    if isinstance(mesh, MeshSpec):
        if order is not None and order != mesh.order:
            raise ValueError(f"order={order} contradicts mesh.order={mesh.order}; pass one of them.")
        order = mesh.order
    elif mesh is not None:
        mesh = tuple(int(k) for k in mesh)
        if len(mesh) != 3 or min(mesh) < (order or 6):
            raise ValueError(f"mesh must be three integers, each at least the spline order {order or 6}; "
                             f"got {mesh}.")
    if cell is not None:
        cell = check_cell(cell)
    if cell is None and method in ("ewald", "pme"):
        raise ValueError(f"method={method!r} needs a periodic cell; pass cell=... or use method='direct'.")
    if cell is not None and method == "direct":
        raise ValueError("method='direct' is the open-boundary sum; for a periodic cell use 'ewald' or 'pme'.")
    dtype = jnp.result_type(positions.dtype, charges.dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.zeros(()).dtype
    positions = positions.astype(dtype)
    charges = charges.astype(dtype)
    sigma = None if sigma is None else sigma.astype(dtype)

    if cell is not None:
        cell = cell.astype(dtype)
        if q_np is not None and not background:
            total = float(np.sum(q_np))
            tol = 10.0 * float(jnp.finfo(dtype).eps) * max(1.0, float(np.sum(np.abs(q_np))))
            if abs(total) > tol:
                raise ValueError(f"the cell carries a net charge of {total:.6g} e: a periodic sum needs a "
                                 "neutral cell, or background=True for a uniform neutralising background.")

    if cell is None:
        params = CoulombParams(method="direct")
        return _run(positions, charges, None, sigma, None, neighbors, None, params, want_stress)

    if pos_np is None or cell_np is None:
        if neighbors is None or smearing is None or (method != "ewald" and mesh is None):
            raise ValueError("coulomb() was called with traced positions or cell (inside jit or grad "
                             "w.r.t. them); pass neighbors=, smearing= and mesh= (or use the .forces and "
                             ".stress of an eager call, or the functional layer jaxlr.coulomb_energy).")
    tune_kw = dict(method=method, background=background, n_atoms=n, dtype=jnp.dtype(dtype).name)
    # nothing given explicitly: keep the last parameters and list capacity of this kind of
    # system while they fit, so a moving system does not recompile (jaxlr.reuse)
    key = None
    if all(v is None for v in (smearing, cutoff, mesh, order, k_cutoff)):
        key = ("coulomb", n, tune_kw["dtype"], method, float(accuracy), bool(background), sigma is None)
    params = tuned(key, pos_np, q_np, cell_np, sig_np, accuracy=accuracy, smearing=smearing,
                         cutoff=cutoff, mesh=mesh, order=order, k_cutoff=k_cutoff, **tune_kw)
    order = None
    if neighbors is None:
        neighbors, order = sorted_neighbors(pos_np, cell_np, params.cutoff, sort=params.method == "pme")
        neighbors = stable_capacity(None if key is None else key + (params.cutoff,), neighbors)
    kvectors = None
    if params.method == "ewald":
        kvectors = jnp.asarray(half_space_kvectors(cell_np, params.k_cutoff), dtype)
    return _run(positions, charges, cell, sigma, params.smearing, neighbors, kvectors, params, want_stress,
                order)


def _run(positions, charges, cell, sigma, smearing, neighbors, kvectors, params, want_stress, order=None):
    smear = None if smearing is None else jnp.asarray(smearing, positions.dtype)
    energy, potentials, forces, stress = evaluate_coulomb(
        positions, charges, cell, sigma, smear, neighbors, kvectors, order, method=params.method,
        mesh=params.mesh, background=params.background, want_stress=bool(want_stress and cell is not None))
    return CoulombResult(energy=energy, potentials=potentials, forces=forces, stress=stress, params=params)
