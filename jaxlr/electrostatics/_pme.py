"""Smooth particle-mesh Ewald (SPME) reciprocal-space energy with a lattice-optimal influence function.

The reciprocal (long-range) Ewald energy of point charges,

    E_rec = (KE / 2V) Σ_{k≠0} (4π/k²) exp(−k² s²/2) |S(k)|²,   S(k) = Σ_j q_j exp(i k·R_j),

is approximated on a K1×K2×K3 mesh in fractional coordinates: charges are spread with
cardinal B-splines of order p (:mod:`jaxlr.electrostatics`), the mesh is Fourier
transformed, multiplied by an influence function G(m) and transformed back; the mesh
potential is interpolated at the atoms with the same B-splines.  With
``Q̂ = FFT(spread charges)``,  ``E_rec = ½ Σ_m G(m) |Q̂(m)|²``.

Influence functions (``influence=``):

* ``"optimal"`` (default) — the energy-optimal function of the P3M literature
  (Hockney & Eastwood; Ballenegger, Cerdà & Holm, JCTC 8, 936 (2012)):
  ``G(m) = (KE/V) Σ_a Û²(k_a) ψ(k_a) / [Σ_a Û²(k_a)]²`` with ψ(k) = 4π e^{−k²s²/2}/k²,
  Û the B-spline's Fourier transform and k_a the aliases of k.  The denominator alias
  sum is exact (closed form, :func:`jaxlr.electrostatics.alias_sum_u2`); the numerator sums
  ``aliases`` alias shells per axis (0 = the principal image only).
* ``"spme"`` — Essmann et al. (1995): ``G = (KE/V) ψ(k) / [Σ_a Û(k_a)]²``.

Any mesh size is accepted (pick 2·3·5·7-smooth sizes for fast FFTs; see
:func:`jaxlr.system.fft_friendly`).  Triclinic cells are exact: k is built from the
reciprocal vectors of the traced cell.

Derivatives: :func:`make_reciprocal_energy` returns a ``jax.custom_jvp`` function whose
rule reuses the mesh potential: potentials φ_i = ∂E/∂q_i and fractional-coordinate
gradients come from *one* gather of the p³ mesh values around each atom, contracted with
the B-spline weights and their derivatives — so forces cost one inverse FFT and a gather
more than the energy, instead of the second full mesh pass of plain reverse-mode
autodiff.  Cell and smearing derivatives (stress, hyperparameter gradients) contract
½|Q̂|² with the derivative of G: G depends on the cell only through the volume and the
reciprocal metric M (k² = mᵀ M m), so the rule computes nine scalar slopes (six second
moments of ½|Q̂|² ∂G/∂k² over the separable frequencies, Σ ½|Q̂|² ∂G/∂s, and the energy
for the volume) and the tangents of cell and smearing only multiply them.  The rule is
itself made of differentiable operations, so second derivatives are exact.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ..performance import costs
from ..units import KE
from ._ewald import screened_inverse_square
from ._fused import fused_sums
from ._splines import alias_sum_u, alias_sum_u2, bspline_weights

__all__ = ["MeshSpec", "influence_function", "make_reciprocal_energy", "pme_reciprocal_energy",
           "spread_charges"]

#: spline orders of the mesh.  Odd orders need the optimal influence function: the
#: SPME b-factor of an odd-order spline vanishes at the Nyquist frequency of even meshes.
SUPPORTED_ORDERS = (2, 3, 4, 5, 6, 7, 8, 10, 12)


class MeshSpec(NamedTuple):
    """Static description of the PME mesh (hashable; fixes array shapes).

    Attributes:
      shape: mesh points along the three cell vectors (K1, K2, K3).
      order: B-spline order p: 2 … 12; odd orders (3, 5, 7) only with the optimal
        influence function.
      influence: ``"optimal"`` or ``"spme"``.
      aliases: alias shells per axis in the numerator of the optimal influence function.
      basis: integer unimodular 3×3 matrix T (tuple of tuples); the mesh runs along the
        rows of ``T @ cell`` (a reduced basis of the same lattice, see
        :func:`jaxlr.system.reduced_basis`).  Identity by default.
    """

    shape: tuple[int, int, int]
    order: int = 6
    influence: str = "optimal"
    aliases: int = 0
    basis: tuple = ((1, 0, 0), (0, 1, 0), (0, 0, 1))


def _is_zero(t) -> bool:
    return t is None or isinstance(t, SymbolicZero)


@lru_cache(maxsize=64)
def _host_tables(spec: MeshSpec):
    """Static numpy tables of the influence function (depend on mesh and order only)."""
    k1, k2, k3 = spec.shape
    p = spec.order
    m1 = np.fft.fftfreq(k1, 1.0 / k1)
    m2 = np.fft.fftfreq(k2, 1.0 / k2)
    m3 = np.arange(k3 // 2 + 1, dtype=np.float64)
    ms = (m1, m2, m3)
    if spec.influence == "spme":
        den = [alias_sum_u(m, k, p) ** 2 for m, k in zip(ms, spec.shape)]
    else:
        den = [alias_sum_u2(m, k, p) ** 2 for m, k in zip(ms, spec.shape)]
    inv_den = (1.0 / den[0])[:, None, None] * (1.0 / den[1])[None, :, None] * (1.0 / den[2])[None, None, :]
    # numerator weights Û²(k_a) for alias offsets a (per axis, separable)
    shells = range(-spec.aliases, spec.aliases + 1)
    u2 = []
    for m, k in zip(ms, spec.shape):
        x = m / k
        per = {}
        for a in shells:
            with np.errstate(divide="ignore", invalid="ignore"):
                val = np.where(x + a == 0, 1.0, (np.sin(np.pi * x) / (np.pi * (x + a))) ** (2 * p))
            per[a] = val
        u2.append(per)
    # rfft weights: each m3 column stands for itself and its mirror -m3, except 0 and Nyquist
    wt = np.full(k3 // 2 + 1, 2.0)
    wt[0] = 1.0
    if k3 % 2 == 0:
        wt[-1] = 1.0
    return ms, inv_den, u2, wt


def _metric_and_volume(cell):
    """(M, V): the reciprocal metric M = (2π)² B Bᵀ (B rows: reciprocal vectors b_d with
    a_i · b_j = δ_ij), so that k² = mᵀ M m for integer frequencies m, and the volume |det cell|."""
    recip = jnp.linalg.inv(cell).T
    return (2.0 * math.pi) ** 2 * (recip @ recip.T), jnp.abs(jnp.linalg.det(cell))


def _shells(spec: MeshSpec, dtype):
    """The alias shells of the influence function's numerator.

    Yields ``(x, w)``: x the three frequency vectors m_d + a_d K_d of the shell (1-D,
    lengths K1, K2, K3//2+1) and w its constant weight Û²(k_a) on the half mesh (None for
    ``"spme"``, whose numerator is the principal image alone).
    """
    ms, _, u2, _ = _host_tables(spec)
    shells = range(-spec.aliases, spec.aliases + 1) if spec.influence == "optimal" else (0,)
    for a in ((a1, a2, a3) for a1 in shells for a2 in shells for a3 in shells):
        x = [jnp.asarray(m + a_d * k, dtype) for m, a_d, k in zip(ms, a, spec.shape)]
        w = None
        if spec.influence == "optimal":
            w = jnp.asarray(u2[0][a[0]][:, None, None] * u2[1][a[1]][None, :, None]
                            * u2[2][a[2]][None, None, :], dtype)
        yield x, w


def k_squared(metric, x):
    """k² = mᵀ M m on the half mesh for the frequency vectors x = (x1, x2, x3) (1-D each)."""
    x1, x2, x3 = x[0][:, None, None], x[1][None, :, None], x[2][None, None, :]
    return (metric[0, 0] * x1 * x1 + metric[1, 1] * x2 * x2 + metric[2, 2] * x3 * x3
            + 2.0 * (metric[0, 1] * x1 * x2 + metric[0, 2] * x1 * x3 + metric[1, 2] * x2 * x3))


def influence_function(cell, smearing, spec: MeshSpec):
    """Influence function G(m) on the rfft half mesh, (K1, K2, K3//2+1), in eV·Å... per e².

    ``E_rec = ½ Σ_m G(m)|Q̂(m)|²`` with Q̂ the FFT of the spread charges; G includes
    KE/V.  G(0) = 0 (tin-foil boundary, neutral or background-neutralised cell).
    Jittable and differentiable in ``cell`` (3, 3) and ``smearing`` (scalar, Å).
    """
    dtype = cell.dtype
    _, inv_den, _, _ = _host_tables(spec)
    metric, volume = _metric_and_volume(cell)
    num = None
    for x, w in _shells(spec, dtype):
        psi = 4.0 * math.pi * screened_inverse_square(k_squared(metric, x), smearing)[0]
        psi = psi if w is None else psi * w
        num = psi if num is None else num + psi
    return (KE / volume) * num * jnp.asarray(inv_den, dtype)


def _second_moments(h, x):
    """(3, 3) matrix Σ_m h(m) x_c(m_c) x_d(m_d) of a half-mesh array h and frequency vectors x.

    The frequencies are separable, so the only pass over the mesh is one contraction of
    its last axis with (1, x3, x3²); the rest runs on (K1, K2, 3) and smaller arrays.
    """
    powers = [jnp.stack([jnp.ones_like(v), v, v * v], axis=-1) for v in x]  # (K_d, 3)
    mu = jnp.einsum("ijc,jb,ia->abc", jnp.tensordot(h, powers[2], axes=(2, 0)), powers[1], powers[0])
    return jnp.stack([jnp.stack([mu[2, 0, 0], mu[1, 1, 0], mu[1, 0, 1]]),
                      jnp.stack([mu[1, 1, 0], mu[0, 2, 0], mu[0, 1, 1]]),
                      jnp.stack([mu[1, 0, 1], mu[0, 1, 1], mu[0, 0, 2]])])


def _influence_slopes(cell, smearing, spec: MeshSpec, weight, want_metric=True, want_smearing=True):
    """Slopes of ``Σ_m weight(m) G(m)`` in the reciprocal metric and the smearing.

    Returns ``(T, t_s)``: T (3, 3) = Σ_m weight ∂G/∂M_cd at fixed volume (M the metric
    of :func:`_metric_and_volume`, k² = mᵀ M m), and t_s = Σ_m weight ∂G/∂s (None when not
    wanted).  With them, d(Σ weight·G) = Σ_cd T_cd dM_cd − (Σ weight·G) dV/V + t_s ds:
    the cell's and smearing's tangents enter through scalars, so reverse mode stores no
    mesh-sized residuals of G (stress at 16,000 atoms in float64 cost 8 ms on top of the
    forces when JAX differentiated :func:`influence_function` itself).
    ψ = e^{−k²s²/2}/k² has ∂ψ/∂k² = −ψ (s²/2 + 1/k²) and ∂ψ/∂s = −s k² ψ.
    """
    dtype = cell.dtype
    _, inv_den, _, _ = _host_tables(spec)
    metric, volume = _metric_and_volume(cell)
    scale = (4.0 * math.pi * KE / volume) * jnp.asarray(inv_den, dtype) * weight
    t_metric = jnp.zeros((3, 3), dtype) if want_metric else None
    t_s = jnp.zeros((), dtype) if want_smearing else None
    for x, w in _shells(spec, dtype):
        psi, k2 = screened_inverse_square(k_squared(metric, x), smearing)  # ψ = 0 at k = 0
        h = scale if w is None else scale * w
        if want_metric:
            t_metric = t_metric + _second_moments(-h * psi * (0.5 * smearing**2 + 1.0 / k2), x)
        if want_smearing:
            t_s = t_s - smearing * jnp.sum(h * k2 * psi)
    return t_metric, t_s


def _window_offsets(frac, spec: MeshSpec):
    """Window starts ``floor(K u) mod K`` (N, 3) int32 and offsets ``K u − floor(K u)`` (N, 3)."""
    w = frac * jnp.asarray(spec.shape, frac.dtype)
    base = jnp.floor(w)
    return base.astype(jnp.int32) % jnp.asarray(spec.shape, jnp.int32), w - base


def _stencil(frac, spec: MeshSpec):
    """Window starts (N, 3) and B-spline weights (N, 3, p) of each atom's p×p×p stencil.

    Atom i touches mesh points ``floor(K u) − j`` (j = 0 … p−1) with weight
    ``M_p(K u − floor(K u) + j)``.  On a mesh padded with p−1 ghost planes below index 0
    these points form one contiguous window starting at ``floor(K u) mod K``; the weights
    are returned in window order (j = p−1 … 0), so spreading and interpolation are single
    windowed scatter/gather operations (several times faster than per-point indexing).
    """
    starts, t = _window_offsets(frac, spec)
    wts, dwts = bspline_weights(t, spec.order)
    return starts, wts[..., ::-1], dwts[..., ::-1]


#: spreading scatters one (p, p) plane of the stencil per atom and x offset: XLA's CPU
#: scatter adds these n·p planes about twice as fast as n whole (p, p, p) windows
_SCATTER_DIMS = jax.lax.ScatterDimensionNumbers(
    update_window_dims=(1, 2), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0, 1, 2))
_GATHER_DIMS = jax.lax.GatherDimensionNumbers(
    offset_dims=(1, 2, 3), collapsed_slice_dims=(), start_index_map=(0, 1, 2))




def _atom_blocks(frac, charges, order, points=None):
    """Zero-charge-padded (frac, charges, n_blocks, block) for blocks of ≈ ``points`` stencil points.

    Returns None when all atoms fit in one block.  Block k holds rows ``k·block … k·block +
    block − 1`` of the padded arrays (:func:`_block_rows`).
    """
    points = costs().spread_block_points if points is None else points
    n = frac.shape[0]
    block = max(64, points // order**3)
    if n <= block:
        return None
    n_blocks = -(-n // block)
    pad = n_blocks * block - n
    frac = jnp.concatenate([frac, jnp.zeros((pad, 3), frac.dtype)])
    charges = jnp.concatenate([charges, jnp.zeros((pad,), charges.dtype)])
    return frac, charges, n_blocks, block


def _block_rows(x, k, block):
    """Rows ``k·block … k·block + block − 1`` of x, gathered into a contiguous copy.

    Loops over blocks read their rows this way rather than through the dynamic slices of
    ``lax.scan``/``lax.map`` over stacked blocks, which XLA's CPU backend fuses into every
    consumer: spreading and interpolation were 5–17 % slower that way (16,000 atoms in
    float64, 64,000 in float32).
    """
    return x.at[k * block + jnp.arange(block)].get(mode="promise_in_bounds")


def spread_charges(frac, charges, spec: MeshSpec):
    """Mesh charges Q (K1, K2, K3): Σ_i q_i Π_d M_p(K_d u_id − k_d) (jittable).

    ``frac`` are fractional coordinates u = R · cell⁻¹ (N, 3), any real values.
    """
    p = spec.order

    def add(padded, f, q):
        starts, w, _ = _stencil(f, spec)
        vals = q[:, None, None, None] * w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]
        x = (starts[:, 0, None] + jnp.arange(p, dtype=starts.dtype)[None, :]).reshape(-1)
        planes = jnp.stack([x, jnp.repeat(starts[:, 1], p), jnp.repeat(starts[:, 2], p)], axis=-1)
        return jax.lax.scatter_add(padded, planes, vals.reshape(-1, p, p), _SCATTER_DIMS,
                                   mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)

    padded = jnp.zeros(tuple(k + p - 1 for k in spec.shape), jnp.result_type(frac, charges))
    blocks = _atom_blocks(frac, charges, p)
    if blocks is None:
        padded = add(padded, frac, charges)
    else:
        frac_pad, q_pad, n_blocks, block = blocks
        padded = jax.lax.fori_loop(0, n_blocks, lambda k, m: add(
            m, _block_rows(frac_pad, k, block), _block_rows(q_pad, k, block)), padded)
    # fold the p−1 ghost planes below index 0 onto the top of each axis (periodicity)
    for axis, k in enumerate(spec.shape):
        main = jax.lax.slice_in_dim(padded, p - 1, k + p - 1, axis=axis)
        ghost = jax.lax.slice_in_dim(padded, 0, p - 1, axis=axis)
        top = jax.lax.slice_in_dim(main, k - p + 1, k, axis=axis) + ghost
        padded = jax.lax.concatenate([jax.lax.slice_in_dim(main, 0, k - p + 1, axis=axis), top], axis)
    return padded


def _interpolation_stencil(frac, spec: MeshSpec):
    """Window starts (N, 3) and B-spline weights and slopes (3, p, N), atoms last.

    The same stencil as :func:`_stencil`, with the weights laid out for the separable
    sums of :func:`interpolate_mesh`, which run along the atoms: built in this layout they are
    read contiguously (transposed from (N, 3, p) afterwards, XLA kept the atoms-major
    layout and the interpolation took 15–18 % longer: 16,000 atoms in float64, 8.7 against
    7.1 ms).
    """
    starts, t = _window_offsets(frac, spec)
    wts, dwts = bspline_weights(t.T, spec.order, axis=1)
    return starts, wts[:, ::-1], dwts[:, ::-1]


def interpolate_mesh(mesh, frac, spec: MeshSpec):
    """Values φ_i (N,) and fractional gradients ∂φ/∂u_i (N, 3) of a mesh field at the atoms."""
    p = spec.order
    # periodic ghost planes below index 0, in one gather (three chained concatenations
    # took twice as long: 1.1 against 0.5 ms on a 96³ float64 mesh)
    wrap = [jnp.asarray((np.arange(k + p - 1) - (p - 1)) % k, jnp.int32) for k in spec.shape]
    padded = mesh[wrap[0][:, None, None], wrap[1][None, :, None], wrap[2][None, None, :]]
    kvec = jnp.asarray(spec.shape, mesh.dtype)
    n = frac.shape[0]
    blocks = _atom_blocks(frac, jnp.zeros((n,), frac.dtype), p, costs().interp_block_points)
    # small systems go through the same loop, as one block (as fast as without the loop;
    # the variadic first stage the loop-free form used to take was up to 3× slower in
    # float64 with the weights atoms-last: 1,000 atoms, p = 7, 1.47 against 0.52 ms)
    frac_pad, _, n_blocks, block = blocks if blocks is not None else (frac, None, 1, n)

    def at(k):
        # the weights of each block are computed inside the loop, from its atoms' fractional
        # coordinates (computing all atoms' weights first was no faster and, for large
        # systems, pushed the scratch memory of energy + forces over glibc's 32 MB
        # threshold, see benchmarks/README.md)
        starts, w, dw = _interpolation_stencil(_block_rows(frac_pad, k, block), spec)  # w, dw: (3, p, n)
        # windows gathered as (n, p, p, p) and read with the atoms last: every separable
        # stage sums over the *major* axis of an atoms-minor array
        vals = jax.lax.gather(padded, starts, _GATHER_DIMS, slice_sizes=(p, p, p),
                              mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS)
        vals = jnp.transpose(vals, (3, 1, 2, 0))  # (p_z, p_x, p_y, n)
        # inside the block loop XLA materialises the gathered windows and
        # sums the first stage as p multiply-adds of whole (p_x, p_y, n) slices; a variadic
        # reduce with the gather fused in took 2–4 ns per stencil value, most of the
        # interpolation (``bench_forces_overhead.py --profile``)
        vz = sum(vals[c] * w[2][c] for c in range(p))  # (p_x, p_y, n)
        dvz = sum(vals[c] * dw[2][c] for c in range(p))
        vz, dvz = jnp.swapaxes(vz, 0, 1), jnp.swapaxes(dvz, 0, 1)  # (p_y, p_x, n)
        vyz, vdyz, dvyz = fused_sums(0, vz * w[1][:, None], vz * dw[1][:, None], dvz * w[1][:, None])  # (p_x, n)
        phi, gx, gy, gz = fused_sums(0, vyz * w[0], vyz * dw[0], vdyz * w[0], dvyz * w[0])
        return phi, jnp.stack([gx, gy, gz], axis=-1) * kvec

    phi, grad = jax.lax.map(at, jnp.arange(n_blocks))
    return phi.reshape(-1)[:n], grad.reshape(-1, 3)[:n]


@lru_cache(maxsize=64)
def make_reciprocal_energy(spec: MeshSpec):
    """Build the jittable reciprocal energy ``f(frac, charges, cell, smearing) -> E_rec`` (eV).

    Args of the returned function:
      frac: (N, 3) fractional coordinates u = R · cell⁻¹.  charges: (N,) e.
      cell: (3, 3) Å, rows are lattice vectors.  smearing: scalar s in Å.

    The result excludes the Ewald self term and the neutralising background (see
    :mod:`jaxlr.electrostatics`).  Cached per ``spec``.

    Example:
      >>> f = make_reciprocal_energy(MeshSpec((32, 32, 32), order=6))
      >>> # e = f(R @ jnp.linalg.inv(cell), q, cell, 1.2)
    """
    if spec.order not in SUPPORTED_ORDERS:
        raise ValueError(f"PME spline order must be one of {SUPPORTED_ORDERS}, got {spec.order}.")
    if min(spec.shape) < spec.order:
        raise ValueError(f"every mesh dimension must be at least the spline order {spec.order}, got {spec.shape}.")
    if spec.influence not in ("optimal", "spme"):
        raise ValueError(f"influence must be 'optimal' or 'spme', got {spec.influence!r}.")
    if spec.influence == "spme" and spec.order % 2:
        raise ValueError(f"influence='spme' needs an even spline order, got {spec.order} "
                         "(use the default influence='optimal').")
    _, _, _, wt_np = _host_tables(spec)
    n_total = float(np.prod(spec.shape))

    def weighted_power(qh):
        return jnp.asarray(wt_np, qh.real.dtype) * (qh.real**2 + qh.imag**2)

    @jax.custom_jvp
    def reciprocal_energy(frac, charges, cell, smearing):
        qh = jnp.fft.rfftn(spread_charges(frac, charges, spec))
        g = influence_function(cell, smearing, spec)
        return 0.5 * jnp.sum(g * weighted_power(qh))

    def jvp(primals, tangents):
        frac, charges, cell, smearing = primals
        t_frac, t_q, t_cell, t_s = tangents
        qh = jnp.fft.rfftn(spread_charges(frac, charges, spec))
        power = weighted_power(qh)
        g = influence_function(cell, smearing, spec)
        energy = 0.5 * jnp.sum(g * power)
        tangent = jnp.zeros((), power.dtype)
        if not (_is_zero(t_cell) and _is_zero(t_s)):
            # the cell and smearing tangents multiply scalar slopes (see _influence_slopes)
            t_metric, t_smear = _influence_slopes(cell, smearing, spec, 0.5 * power,
                                                  not _is_zero(t_cell), not _is_zero(t_s))
            if not _is_zero(t_cell):
                (_, volume), (d_metric, d_volume) = jax.jvp(_metric_and_volume, (cell,), (t_cell,))
                tangent = tangent + jnp.sum(t_metric * d_metric) - energy * d_volume / volume
            if not _is_zero(t_s):
                tangent = tangent + t_smear * t_s
        if not (_is_zero(t_q) and _is_zero(t_frac)):
            mesh_phi = jnp.fft.irfftn(g * qh * n_total, s=spec.shape)
            phi, grad_u = interpolate_mesh(mesh_phi, frac, spec)
            if not _is_zero(t_q):
                tangent = tangent + jnp.sum(phi * t_q)
            if not _is_zero(t_frac):
                tangent = tangent + jnp.sum(charges[:, None] * grad_u * t_frac)
        return energy, tangent

    reciprocal_energy.defjvp(jvp, symbolic_zeros=True)
    return reciprocal_energy


def pme_reciprocal_energy(positions, charges, cell, smearing, spec: MeshSpec):
    """SPME reciprocal energy (eV) from Cartesian positions (N, 3) Å; see the module docstring.

    The mesh runs along the rows of ``spec.basis @ cell`` (same lattice as ``cell``).
    """
    mesh_cell = jnp.asarray(spec.basis, cell.dtype) @ cell
    frac = positions @ jnp.linalg.inv(mesh_cell)
    return make_reciprocal_energy(spec)(frac, charges, mesh_cell, smearing)
