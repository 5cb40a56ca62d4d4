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
import math
from functools import partial

import numpy as np
import jax
import jax.numpy as jnp

from . import reuse, tuning
from .ewald import ewald_reciprocal_energy, half_space_kvectors
from .kernels import self_kernel
from .neighbors import Neighbors, neighbor_list
from .pme import MeshSpec, pme_reciprocal_energy
from .realspace import real_space_energy
from .system import check_accuracy, check_cell, check_per_atom, check_positions, concrete_value
from .units import KE

__all__ = ["coulomb", "coulomb_energy", "coulomb_terms", "long_range_energy", "CoulombResult", "CoulombParams", "METHODS"]

METHODS = ("auto", "direct", "ewald", "pme")


@dataclasses.dataclass(frozen=True)
class CoulombParams:
    """Static choices of a Coulomb evaluation (hashable).

    Attributes:
      method: "direct", "ewald" or "pme".
      smearing: Ewald smearing s in Å (None for direct).
      cutoff: real-space cutoff in Å (None for direct: all pairs).
      mesh: :class:`jaxlr.pme.MeshSpec` for PME, else None.
      k_cutoff: reciprocal cutoff in 1/Å for Ewald, else None.
      background: uniform neutralising background for charged periodic cells.
      estimated_error: predicted relative RMS force error (None when not tuned).
    """

    method: str
    smearing: float | None = None
    cutoff: float | None = None
    mesh: MeshSpec | None = None
    k_cutoff: float | None = None
    background: bool = False
    estimated_error: float | None = None


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


def coulomb_energy(positions, charges, *, cell=None, sigma=None, smearing=None, neighbors=None,
                   kvectors=None, method: str = "pme", mesh: MeshSpec | None = None,
                   background: bool = False):
    """Total electrostatic energy (eV) — the pure, jittable functional core.

    Args:
      positions: (N, 3) Å.  charges: (N,) e.
      cell: (3, 3) Å, rows are lattice vectors; None for an open boundary.
      sigma: (N,) Gaussian widths σ_i in Å, or None for point charges.
      smearing: Ewald smearing s in Å (periodic methods); traced, so ∂E/∂s is available
        (it is zero up to the method's accuracy — a useful check).
      neighbors: :class:`jaxlr.Neighbors` full list with cutoff ≥ the real-space range;
        for ``method="direct"`` None means all pairs.
      kvectors: (n_chunks, chunk, 3) integer-valued half-space k-vectors for "ewald"
        (:func:`jaxlr.ewald.half_space_kvectors`).
      method: "direct", "ewald" or "pme" (static).  mesh: MeshSpec for "pme" (static).
      background: add the uniform neutralising background (static).

    Returns:
      scalar energy (eV).  Forces: ``-jax.grad(coulomb_energy)(positions, ...)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> R = jnp.array([[0.0, 0, 0], [1.0, 0, 0]]); q = jnp.array([1.0, -1.0])
      >>> round(float(coulomb_energy(R, q, method="direct")), 4)  # -KE / 1 Å
      -14.3996
    """
    if method == "direct":
        energy = real_space_energy(positions, charges, sigma, None, None, neighbors)
    else:
        if cell is None:
            raise ValueError(f"method={method!r} needs a periodic cell; use method='direct' for an open boundary.")
        smearing = jnp.asarray(smearing, positions.dtype)
        energy = real_space_energy(positions, charges, sigma, cell, smearing, neighbors)
    return energy + long_range_energy(positions, charges, cell=cell, sigma=sigma, smearing=smearing,
                                      kvectors=kvectors, method=method, mesh=mesh, background=background)


def long_range_energy(positions, charges, *, cell=None, sigma=None, smearing=None, kvectors=None,
                      method: str = "pme", mesh: MeshSpec | None = None, background: bool = False):
    """Everything in :func:`coulomb_energy` except the real-space pair sum (eV, jittable).

    Self-energies (Gaussian and Ewald), the reciprocal sum ("ewald" or "pme") and the
    neutralising background.  Solvers that apply the Coulomb operator many times at fixed
    positions (Qeq) cache the real-space pair kernels and add this part's potentials.
    Arguments, shapes and units as :func:`coulomb_energy`; returns a scalar in eV.

    Example:
      >>> import jax.numpy as jnp
      >>> R = jnp.zeros((1, 3)); q = jnp.ones(1); s = jnp.ones(1)
      >>> round(float(long_range_energy(R, q, sigma=s, method="direct")), 6)   # KE/(2√π σ)
      4.062065
    """
    dtype = positions.dtype
    if method == "direct":
        if sigma is None:
            return jnp.zeros((), dtype)
        return 0.5 * KE * jnp.sum(charges**2 * self_kernel(sigma, None, dtype))
    smearing = jnp.asarray(smearing, dtype)
    energy = 0.5 * KE * jnp.sum(charges**2 * self_kernel(sigma, smearing, dtype))
    if method == "ewald":
        energy = energy + ewald_reciprocal_energy(positions, charges, cell, smearing, kvectors)
    elif method == "pme":
        energy = energy + pme_reciprocal_energy(positions, charges, cell, smearing, mesh)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'direct', 'ewald' or 'pme'.")
    if background:
        volume = jnp.abs(jnp.linalg.det(cell))
        total = jnp.sum(charges)
        # the k = 0 component that the real-space lattice sum contains: ∫ erfc(r/√2s)/r d³r = 2πs²,
        # and −2πγ_ij² for the Gaussian correction (Σ_ij q_i q_j γ_ij² = 2 Q Σ_i q_i σ_i²)
        k0 = total**2 * smearing**2
        if sigma is not None:
            k0 = k0 - 2.0 * total * jnp.sum(charges * sigma**2)
        energy = energy - math.pi * KE * k0 / volume
    return energy


def coulomb_terms(positions, charges, *, cell=None, want_stress: bool = True, **kwargs):
    """Energy, potentials, forces and (periodic) stress from :func:`coulomb_energy` (jittable).

    Returns ``(energy, potentials (N,), forces (N, 3), stress (3, 3) or None)``; the
    keyword arguments are those of :func:`coulomb_energy`.  One forward pass and one
    cheap transposition: the custom derivative rules reuse the mesh potential and the
    pair kernels, so this costs little more than the energy alone.
    """
    periodic = cell is not None
    if periodic and want_stress:
        def f(r, q, c):
            return coulomb_energy(r, q, cell=c, **kwargs)
        energy, (g_r, g_q, g_c) = jax.value_and_grad(f, argnums=(0, 1, 2))(positions, charges, cell)
        volume = jnp.abs(jnp.linalg.det(cell))
        stress = (positions.T @ g_r + cell.T @ g_c) / volume
    else:
        def f(r, q):
            return coulomb_energy(r, q, cell=cell, **kwargs)
        energy, (g_r, g_q) = jax.value_and_grad(f, argnums=(0, 1))(positions, charges)
        stress = None
    return energy, g_q, -g_r, stress


@partial(jax.jit, static_argnames=("method", "mesh", "background", "want_stress"))
def _evaluate(positions, charges, cell, sigma, smearing, neighbors, kvectors, order=None, *, method, mesh,
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


#: systems with more atoms than this are evaluated in a spatially sorted order
SORT_ABOVE = 4096


def spatial_order(positions: np.ndarray, cell: np.ndarray, spacing: float = 4.0) -> np.ndarray:
    """Permutation that sorts atoms by coarse cells of about ``spacing`` Å (host, numpy).

    Row-major order of the cells of a grid laid along the cell vectors; atoms in the
    same or neighbouring cells end up close in memory.
    """
    frac = np.asarray(positions, dtype=np.float64) @ np.linalg.inv(cell)
    widths = np.array([abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[(d + 1) % 3], cell[(d + 2) % 3]))
                       for d in range(3)])
    bins = np.maximum(1, np.floor(widths / spacing)).astype(np.int64)
    idx = np.floor((frac - np.floor(frac)) * bins).astype(np.int64) % bins
    key = (idx[:, 0] * bins[1] + idx[:, 1]) * bins[2] + idx[:, 2]
    return np.argsort(key, kind="stable").astype(np.int32)


def sorted_neighbors(positions: np.ndarray, cell: np.ndarray, params: CoulombParams):
    """Host neighbour list for ``params``, in spatial order for large PME systems.

    Returns ``(neighbors, order)``: above :data:`SORT_ABOVE` atoms with PME, ``order`` is
    the (N,) permutation of :func:`spatial_order` and the list refers to the permuted
    atoms; otherwise ``order`` is None and the list refers to the atoms as given.
    """
    if positions.shape[0] > SORT_ABOVE and params.method == "pme":
        order = spatial_order(positions, cell)
        return neighbor_list(positions[order], params.cutoff, cell), jnp.asarray(order)
    return neighbor_list(positions, params.cutoff, cell), None


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
    params = reuse.tuned(key, pos_np, q_np, cell_np, sig_np, accuracy=accuracy, smearing=smearing,
                         cutoff=cutoff, mesh=mesh, order=order, k_cutoff=k_cutoff, **tune_kw)
    order = None
    if neighbors is None:
        neighbors, order = sorted_neighbors(pos_np, cell_np, params)
        neighbors = reuse.stable_capacity(None if key is None else key + (params.cutoff,), neighbors)
    kvectors = None
    if params.method == "ewald":
        kvectors = jnp.asarray(half_space_kvectors(cell_np, params.k_cutoff), dtype)
    return _run(positions, charges, cell, sigma, params.smearing, neighbors, kvectors, params, want_stress,
                order)


def _run(positions, charges, cell, sigma, smearing, neighbors, kvectors, params, want_stress, order=None):
    smear = None if smearing is None else jnp.asarray(smearing, positions.dtype)
    energy, potentials, forces, stress = _evaluate(
        positions, charges, cell, sigma, smear, neighbors, kvectors, order, method=params.method,
        mesh=params.mesh, background=params.background, want_stress=bool(want_stress and cell is not None))
    return CoulombResult(energy=energy, potentials=potentials, forces=forces, stress=stress, params=params)
