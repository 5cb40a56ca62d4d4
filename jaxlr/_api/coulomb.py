"""The Coulomb front door :func:`coulomb` (eager): validate, plan or tune, build the neighbour list, call the jitted core.

Conventions and the functional layer: :mod:`jaxlr.electrostatics`.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._energy import coulomb_terms
from ..electrostatics._ewald import half_space_kvectors
from ..electrostatics._params import METHODS, CoulombParams
from ..electrostatics._pme import MeshSpec
from ..system._checks import check_accuracy, check_cell, check_per_atom, check_positions, concrete_value
from ..system._deprecation import renamed_keyword
from ..system._neighbors import Neighbors
from ..system._order import sorted_neighbors
from ..tuning._coulomb import ORDERS, tune_coulomb
from ..tuning._plan import CoulombPlan, check_plan

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
def evaluate_coulomb(positions, charges, cell, sigma, smearing, neighbors, kvectors, perm=None, *, method, mesh,
              background, want_stress):
    """Jitted :func:`coulomb_terms`; ``perm`` (N,) optionally permutes the atoms first.

    A spatially sorted atom perm makes the mesh scatter/gather and the neighbour gathers
    cache-friendly for large systems; ``neighbors`` must then refer to the sorted perm.
    Outputs are returned in the caller's perm.
    """
    if perm is not None:
        positions, charges = positions[perm], charges[perm]
        sigma = None if sigma is None else sigma[perm]
    energy, potentials, forces, stress = coulomb_terms(
        positions, charges, cell=cell, stress=want_stress, sigma=sigma, smearing=smearing,
        neighbors=neighbors, kvectors=kvectors, method=method, mesh=mesh, background=background)
    if perm is not None:
        inverse = jnp.zeros_like(perm).at[perm].set(jnp.arange(perm.shape[0], dtype=perm.dtype))
        potentials, forces = potentials[inverse], forces[inverse]
    return energy, potentials, forces, stress


#: a periodic cell counts as neutral while |Σq| ≤ this × Σ|q| (charges rounded to ~6 decimals)
NEUTRALITY_RTOL = 1e-6


def _check_no_coincident(pos_np, cell_np) -> None:
    """Point charges at the same place (or periodic image) have an infinite energy: refuse them."""
    pos = np.asarray(pos_np, np.float64)
    if cell_np is not None:
        frac = pos @ np.linalg.inv(np.asarray(cell_np, np.float64))
        pos = np.round((frac - np.floor(frac)) % 1.0, 12)
    _, first, counts = np.unique(pos, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        k = int(np.nonzero(counts > 1)[0][0])
        i = int(first[k])
        j = int(np.nonzero(np.all(pos == pos[i], axis=1))[0][1])
        raise ValueError(f"atoms {i} and {j} sit at the same place{' (up to a lattice vector)' if cell_np is not None else ''}: "
                         "two point charges there have an infinite Coulomb energy; remove the duplicate or give "
                         "the charges Gaussian widths (sigma=).")


def coulomb(positions, charges, *, cell=None, sigma=None, method: str = "auto",
            accuracy: float = 1e-6, background: bool = False, smearing: float | None = None,
            cutoff: float | None = None, mesh: tuple[int, int, int] | None = None,
            order: int | None = None, k_cutoff: float | None = None,
            neighbors: Neighbors | None = None, stress: bool = True, plan: CoulombPlan | None = None,
            want_stress: bool | None = None) -> CoulombResult:
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
      stress: compute the stress (periodic only).
      plan: a :class:`jaxlr.tuning.CoulombPlan` (:func:`jaxlr.tuning.plan_coulomb`, moved
        along with its ``update``): its parameters and list capacity are used, so a moving
        system keeps its compiled function.
      want_stress: deprecated spelling of ``stress``.

    Returns:
      :class:`CoulombResult` with ``.energy`` (eV), ``.potentials`` (V, ∂E/∂q_i — the
      physical potential, E = ½ Σ q_i φ_i for point charges), ``.forces`` (eV/Å),
      ``.stress`` (eV/Å³, periodic only) and ``.params``.  Repeated calls with the same
      shapes and settings reuse the compiled function.  Without a plan or explicit
      parameters each call tunes afresh for the atoms it is given (the front door keeps no
      state); a moving system passes a plan to keep one compiled function.

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
    stress = renamed_keyword("want_stress", "stress", want_stress, stress, default=True, where="coulomb")
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
    if order is not None and order not in ORDERS:
        raise ValueError(f"PME spline order must be one of {ORDERS}, got {order!r}.")
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
            # relative to the charges' scale: charges written to ~6 decimals are neutral
            scale = float(np.sum(np.abs(q_np)))
            tol = max(10.0 * float(jnp.finfo(dtype).eps), NEUTRALITY_RTOL) * max(1.0, scale)
            if abs(total) > tol:
                raise ValueError(f"the cell carries a net charge of {total:.6g} e (more than {tol:.2g} e, "
                                 f"{NEUTRALITY_RTOL:g} of Σ|q|): a periodic sum needs a neutral cell — "
                                 "neutralise the charges (e.g. subtract their mean) or pass background=True "
                                 "for a uniform neutralising background.")

    if sigma is None and pos_np is not None:
        _check_no_coincident(pos_np, cell_np)
    if cell is None:
        params = CoulombParams(method="direct")
        return _run(positions, charges, None, sigma, None, neighbors, None, params, stress)

    if pos_np is None or cell_np is None:
        if neighbors is None or smearing is None or (method != "ewald" and mesh is None):
            raise ValueError("coulomb() was called with traced positions or cell (inside jit or grad "
                             "w.r.t. them); pass neighbors=, smearing= and mesh= (or use the .forces and "
                             ".stress of an eager call, or the functional layer jaxlr.coulomb_energy).")
    perm = None
    if plan is not None:
        check_plan(plan, n, cell, (smearing, cutoff, mesh, order, k_cutoff), where="coulomb")
        params = plan.params
    else:
        params = tune_coulomb(pos_np, q_np, cell_np, sig_np, accuracy=accuracy, smearing=smearing, cutoff=cutoff,
                              mesh=mesh, order=order, k_cutoff=k_cutoff, method=method, background=background,
                              n_atoms=n, dtype=jnp.dtype(dtype).name)
    if neighbors is None:
        neighbors, perm = sorted_neighbors(pos_np, cell_np, params.cutoff, sort=params.method == "pme")
        if plan is not None:
            neighbors = plan.neighbors(None, None, neighbors)
    kvectors = None
    if params.method == "ewald":
        kvectors = jnp.asarray(half_space_kvectors(cell_np, params.k_cutoff), dtype)
    return _run(positions, charges, cell, sigma, params.smearing, neighbors, kvectors, params, stress, perm)


def _run(positions, charges, cell, sigma, smearing, neighbors, kvectors, params, stress, perm=None):
    smear = None if smearing is None else jnp.asarray(smearing, positions.dtype)
    energy, potentials, forces, stress_out = evaluate_coulomb(
        positions, charges, cell, sigma, smear, neighbors, kvectors, perm, method=params.method,
        mesh=params.mesh, background=params.background, want_stress=bool(stress and cell is not None))
    return CoulombResult(energy=energy, potentials=potentials, forces=forces, stress=stress_out, params=params)
