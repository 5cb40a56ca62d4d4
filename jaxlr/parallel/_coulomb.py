"""One large periodic system across devices: Coulomb energy, potentials, forces, stress and Qeq.

Host preparation (:func:`slab_layout`, :func:`shard_system`) decides every shape: the
PME mesh is cut into P slabs along its first axis; the atoms are grouped by the slab
their B-spline stencil starts in, each group padded to C slots (padding slots: zero
charge, width 1 Å, no neighbours, placed inside their device's slab), and the full
neighbour list is renumbered to the slots.  Device d then owns rows d·C … d·C + C − 1 of
every per-atom array, its slab of the mesh, and the real-space rows of its atoms.

The jitted core (:func:`make_sharded_coulomb`) adds the sharded real-space sum
(:func:`jaxlr.parallel.make_sharded_real_space`), the slab-decomposed PME
(:func:`jaxlr.parallel.make_sharded_reciprocal`) and the self-energies; energies,
potentials φ_i = ∂E/∂q_i, forces and stress (1/V) ∂E/∂ε come from one
``value_and_grad`` through the custom derivative rules, as on one device.  The eager
front door :func:`coulomb_sharded` tunes, lays out, runs and returns the results in the
caller's atom order; :func:`qeq_sharded` solves charge equilibration by projected PCG
whose matrix–vector product is the sharded Coulomb operator, differentiated implicitly.

Conventions (units, ½ in the potentials, stress sign) are those of :func:`jaxlr.coulomb`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics import self_kernel
from ..electrostatics._params import CoulombParams
from ..electrostatics._pme import MeshSpec
from ..equilibration._solvers import SolverInfo, implicit_solve, solve_pcg
from ..system._cell import fft_friendly
from ..system._checks import check_accuracy, check_cell, check_per_atom, check_positions
from ..system._neighbors import Neighbors, neighbor_list
from ..tuning._coulomb import tune_coulomb
from ..units import KE
from ._devices import device_mesh, gather_global, n_devices, to_global
from ._mesh_pme import check_slab_mesh, make_sharded_reciprocal, slab_sizes
from ._rows import make_sharded_real_space

__all__ = ["SlabLayout", "ShardedSystem", "ShardedCoulombResult", "ShardedQeqResult", "slab_layout",
           "shard_system", "make_sharded_coulomb", "sharded_coulomb_terms", "coulomb_sharded", "qeq_sharded",
           "divisible_mesh", "sharded_memory"]

#: neighbour slots per block of rows summed at once (rows per block = this / capacity)
BLOCK_SLOTS = 1 << 15


@dataclasses.dataclass(frozen=True, eq=False)
class SlabLayout:
    """Where every atom lives on the devices (host, numpy; fixes all shapes).

    Attributes:
      mesh: the :class:`jax.sharding.Mesh` (P devices along its first axis).
      spec: the PME :class:`jaxlr.MeshSpec` (K1 and K2 multiples of P).
      capacity: C, atom slots per device (a multiple of ``block``).
      block: rows of the neighbour list summed at once.
      slots: (P·C,) the atom in each slot, −1 for padding.
      atom_slot: (N,) the slot of each atom.
    """

    mesh: object
    spec: MeshSpec
    capacity: int
    block: int
    slots: np.ndarray
    atom_slot: np.ndarray

    @property
    def n_devices(self) -> int:
        return n_devices(self.mesh)

    @property
    def live(self) -> np.ndarray:
        """(P·C,) bool, True for slots that hold an atom."""
        return self.slots >= 0

    def pad(self, values, fill=0.0):
        """Per-atom values (N, ...) → slot order (P·C, ...) with ``fill`` in padding slots (numpy)."""
        values = np.asarray(values)
        out = np.full((self.slots.shape[0],) + values.shape[1:], fill, dtype=values.dtype)
        out[self.atom_slot] = values
        return out

    def unpad(self, values):
        """Slot-order values (P·C, ...) → the caller's atom order (N, ...)."""
        return values[jnp.asarray(self.atom_slot)]


def divisible_mesh(shape, p_devices: int) -> tuple[int, int, int]:
    """The smallest FFT-friendly mesh ≥ ``shape`` whose first two sizes are multiples of P.

    Example:
      >>> divisible_mesh((30, 27, 25), 4)
      (32, 28, 25)
    """
    out = []
    for axis, k in enumerate(shape):
        k = int(k)
        if axis < 2:
            k = fft_friendly(k)
            while k % p_devices:
                k = fft_friendly(k + 1)
        out.append(k)
    return tuple(out)


def _mesh_cell(cell, spec: MeshSpec):
    return np.asarray(spec.basis, np.float64) @ np.asarray(cell, np.float64)


def slab_layout(positions, cell, spec: MeshSpec, devices, *, capacity: int | None = None, max_neighbors: int = 64,
                margin: float = 0.0) -> SlabLayout:
    """Assign atoms to devices by the mesh slab their stencil starts in (host).

    Args:
      positions: (N, 3) Å.  cell: (3, 3) Å.  spec: the PME mesh.
      devices: device count or :class:`jax.sharding.Mesh`.
      capacity: atom slots per device (default: the fullest slab × (1 + margin), rounded
        up to a multiple of the row block).  max_neighbors: neighbour slots per row (sets
        the row block).  margin: spare slots for atoms that move between slabs.

    Raises:
      ValueError: a mesh that does not split into the devices (K1, K2 multiples of P,
        slabs at least p − 1 planes thick) — the message names the mesh to use — or a
        capacity below the fullest slab.

    Example:
      >>> import numpy as np
      >>> lay = slab_layout(np.random.rand(100, 3) * 10, np.eye(3) * 10, MeshSpec((8, 8, 8), order=4), 1)
      >>> int(lay.live.sum()), lay.n_devices
      (100, 1)
    """
    mesh = device_mesh(devices)
    p_dev = n_devices(mesh)
    check_slab_mesh(spec, p_dev)
    pos = np.asarray(positions, np.float64)
    frac = pos @ np.linalg.inv(_mesh_cell(cell, spec))
    k1 = spec.shape[0]
    slab, _ = slab_sizes(spec, p_dev)
    plane = np.mod(np.floor(frac[:, 0] * k1), k1).astype(np.int64)
    owner = plane // slab
    counts = np.bincount(owner, minlength=p_dev)
    block = int(max(8, min(BLOCK_SLOTS // max(int(max_neighbors), 1), 1024)))
    need = int(math.ceil(counts.max() * (1.0 + margin))) if len(pos) else 1
    if capacity is None:
        capacity = max(need, 1)
    elif capacity < counts.max():
        raise ValueError(f"capacity={capacity} atom slots per device, but a slab holds {int(counts.max())} atoms; "
                         "leave capacity out or raise it.")
    block = min(block, int(capacity))
    capacity = -(-int(capacity) // block) * block
    # within a device, atoms in spatial order (plane, then y and z cells) for cache-friendly gathers
    yz = np.floor(np.mod(frac[:, 1:], 1.0) * 8).astype(np.int64)
    order = np.lexsort((yz[:, 1], yz[:, 0], plane, owner))
    slots = np.full(p_dev * capacity, -1, np.int64)
    atom_slot = np.empty(len(pos), np.int64)
    start = 0
    for d in range(p_dev):
        mine = order[start:start + counts[d]]
        start += counts[d]
        slots[d * capacity:d * capacity + len(mine)] = mine
        atom_slot[mine] = d * capacity + np.arange(len(mine))
    return SlabLayout(mesh=mesh, spec=spec, capacity=int(capacity), block=block, slots=slots, atom_slot=atom_slot)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShardedSystem:
    """Slot-ordered arrays of one system on the devices (a pytree; leading axis P·C split).

    Attributes:
      positions: (P·C, 3) Å (padding slots inside their device's slab).
      charges: (P·C,) e (0 on padding).  sigma: (P·C,) Å (1 on padding) or None.
      neighbors: full list in slot numbering, (P·C, M) rows split over the devices.
      layout: the :class:`SlabLayout` (static).
    """

    positions: jax.Array
    charges: jax.Array
    sigma: jax.Array | None
    neighbors: Neighbors
    layout: SlabLayout = dataclasses.field(metadata=dict(static=True))


def shard_system(positions, charges, cell, *, spec: MeshSpec, cutoff: float, devices, sigma=None,
                 layout: SlabLayout | None = None, dtype=None) -> ShardedSystem:
    """Lay a system out over the devices and build its neighbour list (host).

    Args:
      positions (N, 3) Å, charges (N,) e, cell (3, 3) Å, sigma (N,) Å or None.
      spec: PME mesh.  cutoff: real-space cutoff (Å).  devices: count or Mesh.
      layout: reuse a :class:`SlabLayout` (e.g. with spare ``capacity``).
      dtype: float dtype of the arrays (default: jax's default float).

    Returns:
      :class:`ShardedSystem` with its arrays placed on the devices (global arrays; in a
      multi-process run each process fills only its own devices' rows,
      :func:`jaxlr.parallel.to_global`).

    Example:
      >>> import numpy as np
      >>> pos = np.random.default_rng(0).random((50, 3)) * 8
      >>> s = shard_system(pos, np.tile([1.0, -1.0], 25), np.eye(3) * 8, spec=MeshSpec((8, 8, 8), order=4),
      ...                  cutoff=3.0, devices=1)
      >>> s.positions.shape[0] >= 50
      True
    """
    pos = np.asarray(positions, np.float64)
    cell = np.asarray(cell, np.float64)
    if layout is None:
        nl = neighbor_list(pos, cutoff, cell)
        layout = slab_layout(pos, cell, spec, devices, max_neighbors=nl.idx.shape[1])
    else:
        nl = neighbor_list(pos, cutoff, cell)
    dt = dtype or jnp.zeros(()).dtype
    p_dev, cap = layout.n_devices, layout.capacity
    slab, _ = slab_sizes(spec, p_dev)
    # padding slots sit in the middle of their device's first plane: in range for the mesh
    mesh_cell = _mesh_cell(cell, spec)
    pad_frac = np.zeros((p_dev * cap, 3))
    pad_frac[:, 0] = (np.repeat(np.arange(p_dev) * slab, cap) + 0.5) / spec.shape[0]
    pad_frac[:, 1:] = 0.5
    slot_pos = pad_frac @ mesh_cell
    slot_pos[layout.atom_slot] = pos
    idx = np.asarray(nl.idx)
    mask = np.asarray(nl.mask)
    own = np.arange(p_dev * cap)[:, None]
    s_idx = np.broadcast_to(own, (p_dev * cap, idx.shape[1])).copy()
    s_idx[layout.atom_slot] = np.where(mask, layout.atom_slot[idx], layout.atom_slot[:, None])
    s_mask = layout.pad(mask, False)
    s_shift = layout.pad(np.where(mask[..., None], np.asarray(nl.shifts), 0).astype(np.int8), 0)

    def put(x, dtype=None):
        return to_global(np.asarray(x, dtype), layout.mesh)

    nbrs = Neighbors(idx=put(s_idx.astype(np.int32)), mask=put(s_mask), shifts=put(s_shift),
                     overflow=jnp.zeros((), bool))
    sig = None if sigma is None else put(layout.pad(np.asarray(sigma, np.float64), 1.0), dt)
    return ShardedSystem(positions=put(slot_pos, dt), charges=put(layout.pad(np.asarray(charges, np.float64)), dt),
                         sigma=sig, neighbors=nbrs, layout=layout)


def make_sharded_coulomb(layout: SlabLayout, gaussian: bool = False):
    """The jittable total energy ``f(positions, charges, sigma, cell, smearing, neighbors)`` (eV).

    Real-space rows and PME slabs on the devices of ``layout``; arguments in slot order
    (:class:`ShardedSystem`), cell (3, 3) Å and smearing s (Å) replicated.  Equals
    :func:`jaxlr.coulomb_energy` with ``method="pme"`` (tin-foil, neutral cell).

    Example:
      >>> import numpy as np
      >>> pos = np.random.default_rng(0).random((50, 3)) * 8
      >>> spec = MeshSpec((8, 8, 8), order=4)
      >>> s = shard_system(pos, np.tile([1.0, -1.0], 25), np.eye(3) * 8, spec=spec, cutoff=3.0, devices=1)
      >>> f = make_sharded_coulomb(s.layout)
      >>> bool(np.isfinite(f(s.positions, s.charges, None, np.eye(3) * 8, 1.0, s.neighbors)))
      True
    """
    real = make_sharded_real_space(layout.mesh, layout.block, bool(gaussian))
    recip = make_sharded_reciprocal(layout.spec, layout.mesh)
    basis = np.asarray(layout.spec.basis, np.float64)

    def energy(positions, charges, sigma, cell, smearing, neighbors):
        dtype = positions.dtype
        cell = jnp.asarray(cell, dtype)
        smearing = jnp.asarray(smearing, dtype)
        e = real(positions, charges, sigma, cell, smearing, neighbors.idx, neighbors.mask, neighbors.shifts)
        mesh_cell = jnp.asarray(basis, dtype) @ cell
        e = e + recip(positions @ jnp.linalg.inv(mesh_cell), charges, mesh_cell, smearing)
        return e + 0.5 * KE * jnp.sum(charges ** 2 * self_kernel(sigma, smearing, dtype))

    return energy


@lru_cache(maxsize=16)
def _jitted_terms(layout: SlabLayout, gaussian: bool, stress: bool):
    energy_fn = make_sharded_coulomb(layout, gaussian)

    def terms(positions, charges, sigma, cell, smearing, neighbors):
        if stress:
            energy, (g_r, g_q, g_c) = jax.value_and_grad(energy_fn, argnums=(0, 1, 3))(
                positions, charges, sigma, cell, smearing, neighbors)
            st = (positions.T @ g_r + cell.T @ g_c) / jnp.abs(jnp.linalg.det(cell))
        else:
            energy, (g_r, g_q) = jax.value_and_grad(energy_fn, argnums=(0, 1))(
                positions, charges, sigma, cell, smearing, neighbors)
            st = None
        return energy, g_q, -g_r, st

    return jax.jit(terms)


def sharded_coulomb_terms(system: ShardedSystem, cell, smearing, *, stress: bool = True):
    """Energy, potentials, forces and stress of a :class:`ShardedSystem` (jitted, cached).

    Returns ``(energy (), potentials (P·C,), forces (P·C, 3), stress (3, 3) or None)`` in
    slot order (``system.layout.unpad`` gives the atom order).
    """
    fn = _jitted_terms(system.layout, system.sigma is not None, bool(stress))
    dtype = system.positions.dtype
    return fn(system.positions, system.charges, system.sigma, np.asarray(cell, dtype),
              np.asarray(smearing, dtype), system.neighbors)


def sharded_memory(positions, charges, cell, *, devices=(1, 2, 4), accuracy: float = 1e-4, stress: bool = True,
                   dtype=None, **overrides) -> list[dict]:
    """Per-device buffer sizes of the compiled sharded Coulomb evaluation, from XLA (host).

    Compiles energy + potentials + forces (+ stress) for each device count with one set
    of PME parameters (tuned for the largest count, so every run does the same work) and
    reads ``jax.jit(...).lower(...).compile().memory_analysis()`` — the sizes of the
    per-device SPMD program.  Nothing is run.

    Args:
      positions (N, 3) Å, charges (N,) e, cell (3, 3) Å.  devices: the device counts.
      accuracy: PME accuracy.  stress, dtype: as :func:`coulomb_sharded`.
      **overrides: smearing=, cutoff=, mesh=, order= for the tuner.

    Returns:
      one dict per count: ``devices``, ``mesh`` (K1, K2, K3), ``capacity`` (atom slots
      per device), ``arguments``, ``outputs``, ``temporaries``, ``total`` (bytes per device).

    Example:
      >>> from jaxlr.testing import random_ionic_system
      >>> pos, q, cell = random_ionic_system(200, seed=1)
      >>> [row["devices"] for row in sharded_memory(pos, q, cell, devices=(1,))]
      [1]
    """
    pos, q, cell_np, _, _, accuracy = _validated(positions, charges, cell, None, max(devices), accuracy)
    dt = jnp.dtype(dtype or jnp.zeros(()).dtype)
    params = _sharded_params(pos, q, cell_np, None, max(devices), accuracy, overrides.get("smearing"),
                             overrides.get("cutoff"), overrides.get("mesh"), overrides.get("order"), dt.name)
    rows = []
    for count in devices:
        check_slab_mesh(params.mesh, count)
        system = shard_system(pos, q, cell_np, spec=params.mesh, cutoff=params.cutoff, devices=count, dtype=dt)
        fn = _jitted_terms(system.layout, False, bool(stress))
        args = (system.positions, system.charges, None, np.asarray(cell_np, dt), np.asarray(params.smearing, dt),
                system.neighbors)
        stats = fn.lower(*args).compile().memory_analysis()
        arg, out, tmp = (int(stats.argument_size_in_bytes), int(stats.output_size_in_bytes),
                         int(stats.temp_size_in_bytes))
        rows.append({"devices": count, "mesh": params.mesh.shape, "capacity": system.layout.capacity,
                     "arguments": arg, "outputs": out, "temporaries": tmp, "total": arg + out + tmp})
    return rows


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShardedCoulombResult:
    """Output of :func:`coulomb_sharded`, in the caller's atom order.

    Attributes:
      energy () eV; potentials (N,) V (∂E/∂q_i); forces (N, 3) eV/Å; stress (3, 3) eV/Å³
      or None; params: the :class:`jaxlr.CoulombParams` used; layout: the
      :class:`SlabLayout` (both static).
    """

    energy: jax.Array
    potentials: jax.Array
    forces: jax.Array
    stress: jax.Array | None
    params: CoulombParams = dataclasses.field(metadata=dict(static=True))
    layout: SlabLayout = dataclasses.field(metadata=dict(static=True))


def _sharded_params(pos, q, cell, sigma, p_dev, accuracy, smearing, cutoff, mesh, order, dtype):
    """Tuned PME parameters whose mesh splits into ``p_dev`` slabs (tuned meshes are enlarged)."""
    explicit = mesh is not None
    params = tune_coulomb(pos, q, cell, sigma, method="pme", accuracy=accuracy, smearing=smearing, cutoff=cutoff,
                          mesh=mesh, order=order, n_atoms=len(pos), dtype=dtype)
    spec = params.mesh
    try:
        check_slab_mesh(spec, p_dev)
    except ValueError:
        if explicit:
            raise
        # a finer mesh is at least as accurate: enlarge the tuned one to a multiple of P
        spec = spec._replace(shape=divisible_mesh(spec.shape, p_dev))
        check_slab_mesh(spec, p_dev)
        params = dataclasses.replace(params, mesh=spec)
    return params


def _validated(positions, charges, cell, sigma, devices, accuracy):
    positions = check_positions(positions)
    n = positions.shape[0]
    charges = check_per_atom("charges", charges, n)
    if sigma is not None:
        sigma = check_per_atom("sigma", sigma, n, positive=True)
    if cell is None:
        raise ValueError("the sharded Coulomb sum is periodic: pass cell=(3, 3); an open cluster fits one device "
                         "(jaxlr.coulomb).")
    cell = check_cell(cell)
    accuracy = check_accuracy(accuracy, " (a relative force error)")
    mesh = device_mesh(devices if devices is not None else len(jax.devices()))
    pos = np.asarray(positions, np.float64)
    q = np.asarray(charges, np.float64)
    total, scale = float(q.sum()), float(np.abs(q).sum())
    if abs(total) > 1e-6 * max(1.0, scale):
        raise ValueError(f"the cell carries a net charge of {total:.6g} e: the sharded PME needs a neutral cell "
                         "(subtract the mean charge).")
    sig = None if sigma is None else np.asarray(sigma, np.float64)
    return pos, q, np.asarray(cell, np.float64), sig, mesh, accuracy


def coulomb_sharded(positions, charges, *, cell, sigma=None, devices=None, accuracy: float = 1e-6,
                    smearing: float | None = None, cutoff: float | None = None, mesh=None, order: int | None = None,
                    stress: bool = True, dtype=None) -> ShardedCoulombResult:
    """Coulomb energy, potentials, forces and stress of one periodic system spread over devices.

    Args:
      positions: (N, 3) Å.  charges: (N,) e, neutral.  cell: (3, 3) Å (rows).
      sigma: (N,) Gaussian widths (Å) or None (point charges).
      devices: device count or :class:`jax.sharding.Mesh` (default: all devices).  In a
        multi-process run (:func:`jaxlr.parallel.initialize_distributed`) every process
        passes the same inputs, feeds only its own devices' atoms and gets every result.
      accuracy: target relative RMS force error (as :func:`jaxlr.coulomb`).
      smearing, cutoff, mesh, order: override the tuned PME parameters.  A tuned mesh
        whose first two sizes are not multiples of the device count is enlarged to the
        next FFT-friendly multiple (finer, so at least as accurate); an explicit one
        raises ``ValueError`` naming the mesh to use.
      stress: compute the stress.  dtype: float dtype (default: jax's default float).

    Returns:
      :class:`ShardedCoulombResult` — the same numbers as ``jaxlr.coulomb(...,
      method="pme")`` with the same parameters, up to the order of floating-point sums.

    Example:
      >>> import numpy as np
      >>> from jaxlr.testing import random_ionic_system
      >>> pos, q, cell = random_ionic_system(200, seed=1)
      >>> res = coulomb_sharded(pos, q, cell=cell, devices=1, accuracy=1e-4)
      >>> res.forces.shape
      (200, 3)
    """
    pos, q, cell_np, sig, dmesh, accuracy = _validated(positions, charges, cell, sigma, devices, accuracy)
    if isinstance(mesh, MeshSpec) and order is not None and order != mesh.order:
        raise ValueError(f"order={order} contradicts mesh.order={mesh.order}; pass one of them.")
    dt = jnp.dtype(dtype or jnp.zeros(()).dtype)
    params = _sharded_params(pos, q, cell_np, sig, n_devices(dmesh), accuracy, smearing, cutoff, mesh, order,
                             dt.name)
    system = shard_system(pos, q, cell_np, spec=params.mesh, cutoff=params.cutoff, devices=dmesh, sigma=sig, dtype=dt)
    energy, phi, forces, st = gather_global(sharded_coulomb_terms(system, cell_np, params.smearing, stress=stress))
    lay = system.layout
    return ShardedCoulombResult(energy=energy, potentials=lay.unpad(phi), forces=lay.unpad(forces), stress=st,
                                params=params, layout=lay)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ShardedQeqResult:
    """Output of :func:`qeq_sharded`: charges (N,) e in the caller's order, chemical
    potential (1,) V, :class:`jaxlr.SolverInfo`, and the static params and layout."""

    charges: jax.Array
    chemical_potential: jax.Array
    info: SolverInfo
    params: CoulombParams = dataclasses.field(metadata=dict(static=True))
    layout: SlabLayout = dataclasses.field(metadata=dict(static=True))


@lru_cache(maxsize=8)
def _jitted_qeq(layout: SlabLayout, tol: float, maxiter: int):
    energy_fn = make_sharded_coulomb(layout, True)

    def solve(positions, sigma, chi, hard, live, cell, smearing, neighbors, total):
        def potential(x):
            return jax.grad(energy_fn, argnums=1)(positions, x, sigma, cell, smearing, neighbors)

        def matvec(x):
            return live * (potential(live * x) + hard * x) + (1.0 - live) * x

        B = live[:, None]
        diagonal = jax.lax.stop_gradient(live * (hard + KE / (math.sqrt(math.pi) * sigma)) + (1.0 - live))

        def run(bb, cc):
            return solve_pcg(matvec, bb, B, cc, diagonal, tol=tol, maxiter=maxiter)

        return implicit_solve(matvec, -chi * live, B, total, run)

    return jax.jit(solve)


def qeq_sharded(positions, electronegativity, hardness, sigma, *, cell, devices=None, total_charge: float = 0.0,
                accuracy: float = 1e-6, tol: float = 1e-8, maxiter: int = 1000, smearing: float | None = None,
                cutoff: float | None = None, mesh=None, order: int | None = None, dtype=None) -> ShardedQeqResult:
    """Charge equilibration of one periodic system spread over devices (projected PCG).

    Minimises Σ_i (χ_i q_i + ½ J_i q_i²) + E_coul(q; σ) subject to Σ q_i = total_charge,
    as :func:`jaxlr.qeq` with ``method="pme", solver="pcg"``; every PCG iteration applies
    the sharded Coulomb operator q ↦ ∂E/∂q (real-space rows and PME slabs on the
    devices).  Differentiable implicitly (``jax.lax.custom_linear_solve``).

    Args:
      positions (N, 3) Å; electronegativity χ (N,) V; hardness J (N,) V/e ≥ 0; sigma (N,)
      Å > 0; cell (3, 3) Å; devices: count or Mesh (multi-process: as
      :func:`coulomb_sharded`); total_charge e; accuracy: the Coulomb
      operator's relative force accuracy; tol: PCG relative residual; smearing, cutoff,
      mesh, order: as :func:`coulomb_sharded`.

    Returns:
      :class:`ShardedQeqResult`.

    Example:
      >>> import numpy as np
      >>> from jaxlr.testing import random_ionic_system
      >>> pos, _, cell = random_ionic_system(100, seed=2)
      >>> chi = np.where(np.arange(100) % 2, 1.0, -1.0)
      >>> res = qeq_sharded(pos, chi, np.full(100, 8.0), np.full(100, 1.0), cell=cell, devices=1, accuracy=1e-4)
      >>> round(float(res.charges.sum()), 8), bool(res.info.converged)
      (0.0, True)
    """
    n = check_positions(positions).shape[0]
    chi = np.asarray(check_per_atom("electronegativity", electronegativity, n), np.float64)
    hard = np.asarray(check_per_atom("hardness", hardness, n), np.float64)
    if np.any(hard < 0):
        raise ValueError("hardness must be ≥ 0.")
    pos, _, cell_np, sig, dmesh, accuracy = _validated(positions, np.zeros(n), cell, sigma, devices, accuracy)
    if sig is None:
        raise ValueError("qeq_sharded needs Gaussian widths sigma (N,) > 0.")
    dt = jnp.dtype(dtype or jnp.zeros(()).dtype)
    # the operator's parameters are tuned for unit charges of alternating sign
    probe = np.where(np.arange(n) % 2, 1.0, -1.0) - (0.0 if n % 2 == 0 else -1.0 / n)
    params = _sharded_params(pos, probe, cell_np, sig, n_devices(dmesh), accuracy, smearing, cutoff, mesh, order,
                             dt.name)
    system = shard_system(pos, np.zeros(n), cell_np, spec=params.mesh, cutoff=params.cutoff, devices=dmesh,
                          sigma=sig, dtype=dt)
    lay = system.layout

    def put(x, fill):
        return to_global(np.asarray(lay.pad(x, fill), dt), lay.mesh)

    live = to_global(np.asarray(lay.live, dt), lay.mesh)
    fn = _jitted_qeq(lay, float(tol), int(maxiter))
    q, lam, info = gather_global(fn(system.positions, system.sigma, put(chi, 0.0), put(hard, 1.0), live,
                                    np.asarray(cell_np, dt), np.asarray(params.smearing, dt), system.neighbors,
                                    np.asarray([total_charge], dt)))
    return ShardedQeqResult(charges=lay.unpad(q), chemical_potential=lam, info=info, params=params, layout=lay)
