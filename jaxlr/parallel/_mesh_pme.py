"""Smooth PME reciprocal energy with the mesh in slabs across devices (``shard_map``).

The K1×K2×K3 mesh is cut into P slabs of L = K1/P planes along the first mesh axis;
device d owns planes d·L … d·L + L − 1 and the atoms whose stencil starts there
(:func:`jaxlr.parallel.slab_layout` assigns them on the host).  One evaluation:

1. spreading, local: each device spreads its atoms into (L + p − 1) planes — its slab
   and the p − 1 planes below it — and sends those p − 1 ghost planes to device d − 1,
   which adds them to its top planes (``ppermute``, periodic);
2. the distributed 3-D FFT: real FFT along z and FFT along y on the local slab, an
   ``all_to_all`` that trades the x-slabs for ky-chunks ((L, K2, K3/2+1) → (K1, K2/P,
   K3/2+1)), FFT along x;
3. the influence function G is evaluated only on the local ky-chunk; the energy
   ½ Σ G |Q̂|² is a local sum and one ``psum``;
4. for forces and potentials: G·Q̂ back along the same path (inverse FFT along x,
   ``all_to_all`` back, inverse FFTs along y and z), the p − 1 planes below each slab
   fetched from device d − 1 (``ppermute``), and the B-spline interpolation at the
   device's own atoms.

The derivative rule is that of :func:`jaxlr.electrostatics.make_reciprocal_energy`
(``jax.custom_jvp``): potentials and forces reuse the mesh potential of step 4, the cell
and smearing tangents multiply nine scalar slopes (Σ ½|Q̂|² ∂G/∂M over the local chunk,
one ``psum``).  Per device the memory is O(K1 K2 K3 / P + N/P); per evaluation each
device sends 2 × (P − 1)/P of its complex slab in the two transposes (four with forces)
and 2 (p − 1) K2 K3 numbers of halo planes.  Spreading and interpolation reuse
:func:`jaxlr.electrostatics.spread_charges` and the interpolation of the one-device PME on
a local mesh whose first axis is the slab with its halo.
"""

from __future__ import annotations

import math
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero
from jax.sharding import PartitionSpec as P

from ..electrostatics import alias_sum_u, alias_sum_u2, screened_inverse_square, spread_charges
from ..electrostatics._pme import SUPPORTED_ORDERS, MeshSpec, interpolate_mesh, k_squared
from ..units import KE
from ._devices import n_devices

__all__ = ["check_slab_mesh", "make_sharded_reciprocal", "metric_and_volume", "slab_sizes"]


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


def slab_sizes(spec: MeshSpec, p_devices: int) -> tuple[int, int]:
    """(L, Ky): mesh planes per slab along axis 0 and ky-chunk along axis 1 per device."""
    return spec.shape[0] // p_devices, spec.shape[1] // p_devices


def check_slab_mesh(spec: MeshSpec, p_devices: int) -> None:
    """ValueError unless the mesh splits into P slabs (K1 and K2 multiples of P, K1/P ≥ p − 1).

    Example:
      >>> check_slab_mesh(MeshSpec((32, 32, 30), order=6), 4)
      >>> try:
      ...     check_slab_mesh(MeshSpec((30, 30, 30), order=6), 4)
      ... except ValueError as err:
      ...     print(str(err)[:60])
      the PME mesh (30, 30, 30) cannot be cut into 4 slabs: its fi
    """
    k1, k2, _ = spec.shape
    p = spec.order
    if spec.order not in SUPPORTED_ORDERS:
        raise ValueError(f"PME spline order must be one of {SUPPORTED_ORDERS}, got {spec.order}.")
    if k1 % p_devices or k2 % p_devices:
        def up(k):
            return -(-k // p_devices) * p_devices
        raise ValueError(f"the PME mesh {spec.shape} cannot be cut into {p_devices} slabs: its first two "
                         f"dimensions must be multiples of the device count (the slabs split axis 0, the "
                         f"transposed FFT axis 1); use mesh=({up(k1)}, {up(k2)}, {spec.shape[2]}) or "
                         f"pick devices dividing {math.gcd(k1, k2)}.")
    if k1 // p_devices < p - 1:
        raise ValueError(f"slabs of {k1 // p_devices} planes are thinner than the spline halo of {p - 1} planes "
                         f"(order {p}): use at most {k1 // (p - 1)} devices for this mesh, or a finer mesh.")


def metric_and_volume(cell):
    """(M, V): reciprocal metric M = (2π)² B Bᵀ (k² = mᵀ M m) and the volume |det cell|."""
    recip = jnp.linalg.inv(cell).T
    return (2.0 * math.pi) ** 2 * (recip @ recip.T), jnp.abs(jnp.linalg.det(cell))


@lru_cache(maxsize=32)
def _axis_tables(spec: MeshSpec):
    """Per-axis numpy tables: frequencies, 1/denominator, numerator alias weights, rfft weights."""
    k1, k2, k3 = spec.shape
    p = spec.order
    ms = (np.fft.fftfreq(k1, 1.0 / k1), np.fft.fftfreq(k2, 1.0 / k2), np.arange(k3 // 2 + 1, dtype=np.float64))
    if spec.influence == "spme":
        inv_den = [1.0 / alias_sum_u(m, k, p) ** 2 for m, k in zip(ms, spec.shape)]
    else:
        inv_den = [1.0 / alias_sum_u2(m, k, p) ** 2 for m, k in zip(ms, spec.shape)]
    shells = tuple(range(-spec.aliases, spec.aliases + 1)) if spec.influence == "optimal" else (0,)
    u2 = []
    for m, k in zip(ms, spec.shape):
        x = m / k
        per = {}
        for a in shells:
            with np.errstate(divide="ignore", invalid="ignore"):
                per[a] = np.where(x + a == 0, 1.0, (np.sin(np.pi * x) / (np.pi * (x + a))) ** (2 * p))
        u2.append(per)
    wt = np.full(k3 // 2 + 1, 2.0)
    wt[0] = 1.0
    if k3 % 2 == 0:
        wt[-1] = 1.0
    return ms, inv_den, u2, shells, wt


def _block_influence(metric, volume, smearing, spec: MeshSpec, start, ky: int, dtype):
    """G(m) on the ky-chunk ``start … start + ky − 1`` of the half mesh: (K1, ky, K3/2+1)."""
    ms, inv_den, u2, shells, _ = _axis_tables(spec)

    def chunk(v):
        return jax.lax.dynamic_slice_in_dim(jnp.asarray(v, dtype), start, ky)

    m = (jnp.asarray(ms[0], dtype), chunk(ms[1]), jnp.asarray(ms[2], dtype))
    num = None
    for a in ((a1, a2, a3) for a1 in shells for a2 in shells for a3 in shells):
        x = [m[d] + a[d] * spec.shape[d] for d in range(3)]
        psi = 4.0 * math.pi * screened_inverse_square(k_squared(metric, x), smearing)[0]
        if spec.influence == "optimal":
            psi = psi * (jnp.asarray(u2[0][a[0]], dtype)[:, None, None] * chunk(u2[1][a[1]])[None, :, None]
                         * jnp.asarray(u2[2][a[2]], dtype)[None, None, :])
        num = psi if num is None else num + psi
    den = (jnp.asarray(inv_den[0], dtype)[:, None, None] * chunk(inv_den[1])[None, :, None]
           * jnp.asarray(inv_den[2], dtype)[None, None, :])
    return (KE / volume) * num * den


@lru_cache(maxsize=32)
def make_sharded_reciprocal(spec: MeshSpec, mesh):
    """Build ``f(frac, charges, cell, smearing) -> E_rec`` (eV) with the mesh in slabs over ``mesh``.

    Args of the returned function (global arrays, the atom axis split over the devices):
      frac: (P·C, 3) fractional coordinates along the rows of the mesh cell; the atoms of
      device d (rows d·C … d·C + C − 1) must have their stencil start in slab d
      (:func:`jaxlr.parallel.slab_layout`).  charges: (P·C,) e (0 on padding slots).
      cell: (3, 3) Å, the mesh cell (rows).  smearing: scalar s (Å).

    The returned function has a ``jax.custom_jvp`` rule as the one-device
    :func:`jaxlr.electrostatics.make_reciprocal_energy` (forces reuse the mesh potential;
    stress and ∂E/∂s from scalar slopes).  ``f.terms(frac, charges, cell, smearing)``
    returns ``(energy, potentials (P·C,), fractional gradients (P·C, 3), misplaced)`` with
    ``misplaced`` the number of atoms outside their device's slab (should be 0; a moved
    system needs a new layout).

    Example:
      >>> from jaxlr.parallel import device_mesh
      >>> f = make_sharded_reciprocal(MeshSpec((16, 16, 16), order=4), device_mesh(1))
    """
    p_dev = n_devices(mesh)
    check_slab_mesh(spec, p_dev)
    if spec.influence not in ("optimal", "spme"):
        raise ValueError(f"influence must be 'optimal' or 'spme', got {spec.influence!r}.")
    axis = mesh.axis_names[0]
    k1, k2, k3 = spec.shape
    order = spec.order
    slab, ky = slab_sizes(spec, p_dev)
    halo = order - 1
    local_spec = MeshSpec((slab + halo, k2, k3), order=order)
    n_total = float(np.prod(spec.shape))
    down = [(j, (j - 1) % p_dev) for j in range(p_dev)]
    up = [(j, (j + 1) % p_dev) for j in range(p_dev)]
    wt_np = _axis_tables(spec)[4]

    def local_frac(frac):
        """Coordinates on the local mesh (slab with its halo below) and the misplaced count."""
        d = jax.lax.axis_index(axis)
        w = frac[:, 0] * k1
        base = jnp.floor(w)
        plane = jnp.mod(base, k1) - d * slab
        misplaced = jnp.sum((plane < 0) | (plane >= slab))
        plane = jnp.clip(plane, 0, slab - 1)
        u0 = (plane + halo + (w - base)) / (slab + halo)
        return jnp.concatenate([u0[:, None], frac[:, 1:]], axis=1), misplaced

    def forward(frac, charges):
        """Q̂ on the local ky-chunk (K1, Ky, K3/2+1) from the device's atoms."""
        f_loc, misplaced = local_frac(frac)
        local = spread_charges(f_loc, charges, local_spec)              # (L + p − 1, K2, K3)
        ghost = jax.lax.ppermute(local[:halo], axis, down)
        own = local[halo:]
        own = jnp.concatenate([own[:slab - halo], own[slab - halo:] + ghost], axis=0)
        x = jnp.fft.fft(jnp.fft.rfft(own, axis=2), axis=1)               # (L, K2, K3h)
        x = jax.lax.all_to_all(x, axis, 1, 0, tiled=True)                # (K1, Ky, K3h)
        return jnp.fft.fft(x, axis=0), f_loc, misplaced

    def backward(xh):
        """The real mesh field of the half-mesh chunk ``xh`` on the local slab with its halo."""
        x = jnp.fft.ifft(xh, axis=0)
        x = jax.lax.all_to_all(x, axis, 0, 1, tiled=True)                # (L, K2, K3h)
        field = jnp.fft.irfft(jnp.fft.ifft(x, axis=1), n=k3, axis=2)     # (L, K2, K3)
        below = jax.lax.ppermute(field[slab - halo:], axis, up)
        return jnp.concatenate([below, field], axis=0)                   # (L + p − 1, K2, K3)

    def local_terms(frac, charges, cell, smearing, want_phi, want_slopes):
        dtype = frac.dtype
        qh, f_loc, misplaced = forward(frac, charges)
        metric, volume = metric_and_volume(cell)
        start = jax.lax.axis_index(axis) * ky
        power = jnp.asarray(wt_np, dtype) * (qh.real ** 2 + qh.imag ** 2)
        g = _block_influence(metric, volume, smearing, spec, start, ky, dtype)
        energy = jax.lax.psum(0.5 * jnp.sum(g * power), axis)
        out = [energy, jax.lax.psum(misplaced, axis)]
        if want_slopes:
            # slopes of the local chunk, summed over the devices (the shard_map runs without
            # replication tracking, so the gradient of a local sum is the local slope)
            def weighted(m, s):
                return 0.5 * jnp.sum(power * _block_influence(m, volume, s, spec, start, ky, dtype))
            out += [jax.lax.psum(t, axis) for t in jax.grad(weighted, argnums=(0, 1))(metric, smearing)]
        if want_phi:
            phi, grad = interpolate_mesh(backward(g * qh * n_total), f_loc, local_spec)
            grad = grad * jnp.asarray([k1 / (slab + halo), 1.0, 1.0], dtype)
            out += [phi, grad]
        return tuple(out)

    def run(frac, charges, cell, smearing, want_phi, want_slopes):
        out_specs = (P(), P()) + ((P(), P()) if want_slopes else ()) + ((P(axis), P(axis)) if want_phi else ())
        # check_vma=False: the blocked spreading loop of the one-device PME starts from an
        # unsharded zero mesh, which replication tracking would refuse as a loop carry
        fn = jax.shard_map(lambda f, q, c, s: local_terms(f, q, c, s, want_phi, want_slopes), mesh=mesh,
                           in_specs=(P(axis), P(axis), P(), P()), out_specs=out_specs, check_vma=False)
        return fn(frac, charges, cell, smearing)

    @jax.custom_jvp
    def reciprocal_energy(frac, charges, cell, smearing):
        return run(frac, charges, cell, smearing, False, False)[0]

    def jvp(primals, tangents):
        frac, charges, cell, smearing = primals
        t_frac, t_q, t_cell, t_s = tangents
        slopes = not (_is_zero(t_cell) and _is_zero(t_s))
        phi_needed = not (_is_zero(t_q) and _is_zero(t_frac))
        out = list(run(frac, charges, cell, smearing, phi_needed, slopes))
        energy = out.pop(0)
        out.pop(0)
        tangent = jnp.zeros((), energy.dtype)
        if slopes:
            t_metric, t_smear = out.pop(0), out.pop(0)
            if not _is_zero(t_cell):
                (_, volume), (d_metric, d_volume) = jax.jvp(metric_and_volume, (cell,), (t_cell,))
                tangent = tangent + jnp.sum(t_metric * d_metric) - energy * d_volume / volume
            if not _is_zero(t_s):
                tangent = tangent + t_smear * t_s
        if phi_needed:
            phi, grad_u = out
            if not _is_zero(t_q):
                tangent = tangent + jnp.sum(phi * t_q)
            if not _is_zero(t_frac):
                tangent = tangent + jnp.sum(charges[:, None] * grad_u * t_frac)
        return energy, tangent

    reciprocal_energy.defjvp(jvp, symbolic_zeros=True)

    def terms(frac, charges, cell, smearing):
        energy, misplaced, phi, grad = run(frac, charges, cell, jnp.asarray(smearing, frac.dtype), True, False)
        return energy, phi, grad, misplaced

    reciprocal_energy.terms = terms
    return reciprocal_energy
